"""HTML-only mail → text, with quoted history marked by "> " as a plain-text client would.

One inscriptis pass does it all, whatever the nesting: inscriptis annotates
where each ``<blockquote>`` lands in its output, and each line then gets one
"> " per quote around it. An earlier version converted each blockquote's HTML
again on its own and nested its text into the outer one, so a mail of 4 MB with
250 nested quotes was converted 250 times (25 s, 2 GB); this costs one
conversion plus a sort of the quotes' offsets, linear in the size of the mail.
"""

from __future__ import annotations

import bisect
import re

from inscriptis import get_annotated_text, get_text
from inscriptis.model.config import ParserConfig

__all__ = ["html_to_text"]

_QUOTE = "quote"
_MARKING = ParserConfig(annotation_rules={"blockquote": [_QUOTE]})
_TAG = re.compile(r"<[^>]*>")
_BLANK_RUNS = re.compile(r"\n{3,}")
# Deeper quotes are marked as this deep: the prefix must not multiply the text by
# the nesting (250 levels on each of a million short lines would be 500 MB).
MAX_MARKED_DEPTH = 10


def html_to_text(html: str) -> str:
    """Readable text from HTML-only mail (inscriptis keeps lists and tables legible).

    Quoted history in ``<blockquote>`` comes out with "> " on each line (one per
    level), so quote stripping finds it: an agent's HTML reply must not relay
    the quoted notice to the customer.
    """
    try:
        if "<blockquote" in html.lower():
            text = _quotes_marked(get_annotated_text(html, _MARKING))
        else:
            text = get_text(html)
    except Exception:  # noqa: BLE001 - unparseable HTML still yields its text
        end = html.rfind(">") + 1       # no tag closes after the last ">": each "<" there would
        text = _TAG.sub(" ", html[:end]) + html[end:]   # scan to the end again (quadratic)
    lines = [line.rstrip() for line in text.splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _quotes_marked(annotated: dict) -> str:
    """Each non-blank line prefixed by one "> " per blockquote it lies in.

    A line's depth is the number of quote spans that overlap it: those that
    start before its end, less those that end at or before its start (two
    binary searches over the sorted offsets). The prefix goes after the line's
    indentation, where the quoted block starts, and stops at ``MAX_MARKED_DEPTH``
    levels, so the text stays within a constant factor of the mail.
    """
    text = annotated.get("text", "")
    spans = [(start, end) for start, end, label in annotated.get("label", ()) if label == _QUOTE]
    starts = sorted(start for start, _ in spans)
    ends = sorted(end for _, end in spans)
    out, position = [], 0
    for line in text.split("\n"):
        end = position + len(line)
        depth = bisect.bisect_left(starts, end) - bisect.bisect_right(ends, position)
        body = line.lstrip()
        if depth > 0 and body:
            line = line[:len(line) - len(body)] + "> " * min(depth, MAX_MARKED_DEPTH) + body
        out.append(line)
        position = end + 1
    return "\n".join(out)
