"""What keeps the parties' addresses apart: masking every string, and the files that may pass.

Every string of every dispute mail is masked (``masked``): nobody reads the
other side's address, and the administration reads neither, since its mail
may be forwarded. Only the file types of an allowlist are passed on; every other file
is kept with the message and listed to the others with the reason (``withheld``). No database and no mail is touched
here: it decides on what the caller read.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal

from helpdesk.disputes.parties import Loaded, Party
from helpdesk.store.attachments import AttachmentStore

MASK = "[address hidden]"
CARRY_ADDRESS = frozenset({
    "text/vcard", "text/x-vcard", "text/directory", "message/rfc822", "message/global",
    "application/pkcs7-signature", "application/x-pkcs7-signature", "application/pkcs7-mime",
    "application/x-pkcs7-mime", "application/pgp-keys", "application/pgp-signature"})
CARRY_ADDRESS_NAMES = (".vcf", ".vcard", ".eml", ".p7s", ".p7m", ".p7c", ".asc")
FileTypes = tuple[tuple[str, tuple[str, ...]], ...]     # ``[disputes] relay_file_types``


# --- files ---------------------------------------------------------------------------

def withheld(content_type: str, filename: str, allowed: FileTypes) -> str:
    """Why a file is kept from the other parties, or "" when it may be passed on.

    An allowlist (``[disputes] relay_file_types``): the declared type must be
    listed and the name must end as that type's files do. Anything else may
    carry the sender's address (calendar invitations, Outlook's winmail.dat and
    .msg, message headers, contact cards, signatures) or pass for what it is not
    (``invoice<U+202E>gpj.exe`` declared as image/jpeg); it stays with the
    message, for the administration.
    """
    kind, name = content_type.lower(), filename.lower()
    if kind in CARRY_ADDRESS or name.endswith(CARRY_ADDRESS_NAMES):
        return "it carries its sender's address"
    endings = next((ends for listed_kind, ends in allowed if listed_kind == kind), None)
    if endings is None:
        return f"files of type {kind or 'unknown'} are not passed on"
    if not name.endswith(endings):
        return f"its name does not end in {' or '.join(endings)}, as a {kind} file's does"
    return ""


def passed_on(attachments: AttachmentStore, stored, allowed: FileTypes) -> tuple[tuple[str, str, str], ...]:
    """The files relayed to the others: accepted ones that the allowlist lets through."""
    return tuple((a.filename, a.content_type, str(attachments.path_for(a.sha256)))
                 for a in stored
                 if not a.refused and a.sha256 and not withheld(a.content_type, a.filename, allowed))


def listed(stored, allowed: FileTypes) -> list[dict]:
    """Every file of a message for a template: ``refused`` and ``withheld`` are reasons, or empty."""
    return [{"filename": a.filename, "size": a.size, "content_type": a.content_type, "refused": a.refused,
             "withheld": "" if a.refused else withheld(a.content_type, a.filename, allowed)}
            for a in stored]


# --- masking -------------------------------------------------------------------------

def hidden_from(loaded: Loaded, reader: Party) -> tuple[str, ...]:
    """The addresses a reader must not see: the other party's; both for the administration,
    whose mail may be forwarded to either."""
    return tuple(a for a in (loaded.row.buyer, loaded.row.seller)
                 if a and (reader.role == "admin" or a != reader.address))


def masker(addresses: tuple[str, ...]) -> Callable[[str], str]:
    if not addresses:
        return lambda text: text
    pattern = re.compile("|".join(re.escape(a) for a in sorted(set(addresses), key=len, reverse=True)),
                         re.IGNORECASE)
    return lambda text: pattern.sub(MASK, text) if text else text


def masked(value, mask: Callable[[str], str]):
    """Every string of a template context masked, however deep: no field, present or future,
    can carry an address out. A value of any other kind is a bug, and fails loudly."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: masked(item, mask) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(item, mask) for item in value]
    if value is None or isinstance(value, (bool, int, float, Decimal, dt.date, dt.timedelta)):
        return value
    raise TypeError(f"cannot mask a {type(value).__name__} in a dispute mail's context")
