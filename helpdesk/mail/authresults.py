"""What a trusted receiving MTA said about a mail's sender (RFC 8601 ``Authentication-Results``).

Anyone can write an ``Authentication-Results`` header into the mail they send;
only the one our own MTA added counts. It is the topmost header naming one of
the configured ``authserv_ids`` (an MTA adds its header on top and removes
copies of its own id it received), so every other header is the sender's own
words and is ignored. Parsed with the ``authres`` library, pure: no DNS, no I/O.

Proof: ``dmarc=pass`` naming the From domain (``header.from``: a pass that does
not say for which domain proves nothing), or ``dkim=pass`` whose signing domain
is aligned with the From domain (relaxed alignment, simplified: equal, or one a
subdomain of the other) — unless the same header says ``dmarc=fail``, which is
the MTA's last word on the From domain. Failure: ``dmarc=fail`` or ``spf=fail``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import authres


@dataclass(frozen=True)
class Verdict:
    """The trusted MTA's word: how the sender is proven, or how it failed (both None: nothing said)."""

    proven: str | None = None      # "dmarc" or "dkim d=<domain>"
    failed: str | None = None      # "dmarc=fail" or "spf=fail"
    authserv_id: str | None = None


NOTHING = Verdict()
_COMMENT = re.compile(r"\([^()]*\)")


def verdict(values: Iterable[str], authserv_ids: Iterable[str], from_addr: str) -> Verdict:
    """The verdict of the topmost header from a trusted authserv-id, for this From address."""
    trusted = frozenset(i.lower() for i in authserv_ids)
    if not trusted or "@" not in from_addr:
        return NOTHING
    header = _topmost_trusted(values, trusted)
    if header is None:
        return NOTHING
    domain = from_addr.rpartition("@")[2].lower().rstrip(".")
    failed = _failure(header)
    proven = None if failed == "dmarc=fail" else _proof(header, domain)
    return Verdict(proven, failed, header.authserv_id.lower())


def aligned(signer: str, domain: str) -> bool:
    """Relaxed alignment, simplified: the same domain, or one a subdomain of the other.

    A signer without a dot (``d=com``) is nobody's organisational domain.
    """
    signer, domain = signer.lower().rstrip("."), domain.lower().rstrip(".")
    if not signer or not domain or "." not in signer or "." not in domain:
        return False
    return signer == domain or domain.endswith("." + signer) or signer.endswith("." + domain)


def _topmost_trusted(values: Iterable[str], trusted: frozenset[str]):
    """The first (topmost) header whose authserv-id is trusted; an unparseable one of ours ends the search,
    so a garbled header of our MTA never lets a lower, forged one speak instead."""
    for value in values:
        try:
            header = authres.AuthenticationResultsHeader.parse_value(value)
        except Exception:  # noqa: BLE001 - authres raises several kinds on garbage
            if _uncommented(value.split(";", 1)[0]).strip().lower() in trusted:
                return None
            continue
        if str(header.authserv_id or "").lower() in trusted:
            return header
    return None


def _proof(header, domain: str) -> str | None:
    for result in header.results:
        method, outcome = str(result.method).lower(), str(result.result).lower()
        if outcome != "pass":
            continue
        if method == "dmarc":
            said = _property(result, "header", "from")
            if said is not None and said.lower().rstrip(".") == domain:
                return "dmarc"
        elif method == "dkim":
            signer = _property(result, "header", "d") or _property(result, "header", "i") or ""
            signer = signer.rpartition("@")[2]
            if aligned(signer, domain):
                return f"dkim d={signer.lower()}"
    return None


def _failure(header) -> str | None:
    """``dmarc=fail`` before ``spf=fail``: the first cancels a DKIM pass, the second does not."""
    said = {(str(r.method).lower(), str(r.result).lower()) for r in header.results}
    for method in ("dmarc", "spf"):
        if (method, "fail") in said:
            return f"{method}=fail"
    return None


def _uncommented(text: str) -> str:
    """Without RFC 5322 comments, innermost first, so ``(x) mx.shop.example`` is our id too.
    Each pass removes at least two characters: linear in passes, and ids are short."""
    while True:
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            return text
        text = stripped


def _property(result, kind: str, name: str) -> str | None:
    for prop in result.properties:
        if str(prop.type).lower() == kind and str(prop.name).lower() == name:
            return str(prop.value)
    return None
