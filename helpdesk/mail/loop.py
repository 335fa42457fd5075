"""This helpdesk's ``X-Helpdesk-Loop`` value: an id of its own, derived from its secret.

Every mail the helpdesk sends carries the header; a mail coming back with it
is our own (an auto-reply that kept it, a forward to our address) and is
dropped. Compared by value, not by presence: another helpdesk's staff answer
to one of our customers carries *its* header, and must reach us. The id is an
HMAC of the secret key, so it is stable across restarts and hosts of one
installation, differs between installations, and reveals nothing of the key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

HEADER = "X-Helpdesk-Loop"


@functools.lru_cache(maxsize=8)
def loop_id(secret: bytes) -> str:
    """16 hex digits naming this installation (same secret, same id)."""
    return hmac.new(secret, b"helpdesk X-Helpdesk-Loop id", hashlib.sha256).hexdigest()[:16]
