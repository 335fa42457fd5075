"""What keeps the parties' addresses apart: masking every string, and the files that may pass.

Every string of every dispute mail is masked (``masked``): nobody reads the
other side's address, and the administration reads neither, since its mail
may be forwarded. Files that carry their sender's address by design are kept
with the message but never passed on (``withheld``). No database and no mail is touched
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


# --- files ---------------------------------------------------------------------------

def withheld(content_type: str, filename: str) -> bool:
    """Files that carry their sender's address by design (contact cards, forwarded mail,
    S/MIME and PGP signatures and keys): kept with the message, never passed on."""
    return content_type.lower() in CARRY_ADDRESS or filename.lower().endswith(CARRY_ADDRESS_NAMES)


def passed_on(attachments: AttachmentStore, stored) -> tuple[tuple[str, str, str], ...]:
    """The files relayed to the others: accepted ones that do not carry an address."""
    return tuple((a.filename, a.content_type, str(attachments.path_for(a.sha256)))
                 for a in stored if not a.refused and a.sha256 and not withheld(a.content_type, a.filename))


def listed(stored) -> list[dict]:
    return [{"filename": a.filename, "size": a.size, "content_type": a.content_type, "refused": a.refused,
             "withheld": not a.refused and withheld(a.content_type, a.filename)}
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
