"""systemd's readiness protocol, without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd holds back units ordered after the helpdesk until it
says ``READY=1`` (the SMTP server listens, the watchers run), shows ``STATUS=``
in ``systemctl status``, and knows a reload (``RELOADING=1`` ... ``READY=1``) or a
stop (``STOPPING=1``) is under way. Outside systemd the variable is unset and
every call is a no-op; a socket that cannot be reached is logged, never fatal.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("helpdesk.systemd")


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ...) as one datagram; False when there is no one to tell."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):                       # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
    except OSError as exc:
        log.warning("cannot tell systemd %s: %s", fields[0], exc)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def reloading() -> bool:
    # MONOTONIC_USEC lets systemd (Type=notify-reload, 253+) match this to its own SIGHUP
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                  "STATUS=reloading the configuration")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping: finishing the batch in hand")
