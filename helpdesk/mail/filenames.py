"""A file name as the helpdesk keeps and shows it: no controls, no bidi overrides, no path.

A name is the sender's own words, shown to staff and to the other party of a
dispute. ``invoice<U+202E>gpj.exe`` is displayed as "invoiceexe.jpg": Unicode
format characters (category Cf: bidi embeddings, overrides and isolates,
zero-width characters) and controls (Cc) let a name read as something it is
not, so each becomes "_" where the name is parsed, stored and sent on; the
real characters of the name stay in their real order.
"""

from __future__ import annotations

import unicodedata

_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp"})
MAX_LENGTH = 255


def neutralised(name: str) -> str:
    """``name`` with every control, format and line-separator character and every path
    separator turned into "_", trimmed to ``MAX_LENGTH``."""
    if name.isascii() and name.isprintable() and "/" not in name and "\\" not in name:
        return name.strip()[:MAX_LENGTH]      # most names: nothing to look at
    shown = "".join("_" if c in "/\\" or unicodedata.category(c) in _HIDDEN else c for c in name)
    return shown.strip()[:MAX_LENGTH]
