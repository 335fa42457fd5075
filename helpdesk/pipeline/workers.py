"""Parse worker processes that cannot stall or outlive the service.

Hostile mail is cheap to write and may be costly to read, so a parse that runs
away must cost one message, not the service: each worker has an address-space
limit (``RLIMIT_AS``: a MemoryError, or the worker's death, instead of the
machine swapping), a message parsed alone is killed when it runs over its time,
and every process started here dies with its parent (``PR_SET_PDEATHSIG``), so
``kill -9`` of the service leaves no forkserver or worker behind. Workers come
from the forkserver: forked from a clean process that has imported only the
parser, never from the service with its threads, sockets and locks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

_PR_SET_PDEATHSIG = 1
_FORKSERVER_MAIN = os.path.join("multiprocessing", "forkserver.py")


@dataclass(frozen=True)
class ParseLimits:
    """What one message may cost a parse worker (``[limits]`` in the config)."""

    max_parts: int = 1000               # MIME parts read per message
    timeout: float = 30.0               # seconds per message parsed alone; per share of a batch
    memory: int = 1 << 30               # bytes of address space per worker; 0: no limit
    alone_above: int = 256 * 1024       # messages larger than this are parsed alone

    @classmethod
    def of(cls, limits) -> ParseLimits:
        """From the config's ``[limits]`` (a ``LimitSettings``)."""
        return cls(max_parts=limits.max_parts, timeout=limits.parse_timeout.total_seconds(),
                   memory=limits.parse_memory)


def context(module: str):
    """The forkserver context, preloading ``module`` (what the workers run: the parser)
    and this one (see ``_in_forkserver``), each by its real name."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([module, __name__])
    return ctx


def prepare_worker(memory: int) -> None:
    """First thing in every worker: cap the address space (it already dies with its
    parent: see ``_serve``)."""
    if memory > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when ``parent`` goes (elsewhere: nothing).

    Set after the fork, so the parent may already be gone: then the process
    was handed to init (or a subreaper) and exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):   # no prctl: the old behaviour, nothing worse
        return
    if os.getppid() != parent or not _alive(parent):
        os._exit(1)


def _serve() -> None:
    """In the forkserver: die with the service, and make every child die with the forkserver.

    The death signal is not inherited across fork, so it is set in each child
    right after the fork (``register_at_fork``), before it unpickles or runs
    anything: set later (in a pool's initializer) a worker that was still
    starting when the service died would outlive it.
    """
    die_with_parent(os.getppid())
    server = os.getpid()
    os.register_at_fork(after_in_child=lambda: die_with_parent(server))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_alone(target: Callable[..., Any], args: tuple, limits: ParseLimits) -> tuple[str, Any]:
    """``target(*args)`` in a process of its own: ("ok", result), ("timeout", None) or
    ("died", exit code). A process of its own can be killed without touching any other
    message, which a pool cannot do to one task."""
    ctx = context(target.__module__)
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_alone, args=(sender, target, args, limits.memory), daemon=True)
    process.start()
    sender.close()
    try:
        if receiver.poll(limits.timeout):
            try:
                return "ok", receiver.recv()
            except (EOFError, OSError):
                pass
            process.join(5)
            return "died", process.exitcode
        return "timeout", None
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join()
        process.close()


def _alone(sender: Connection, target: Callable[..., Any], args: tuple, memory: int) -> None:
    """A process of ``run_alone``: limited, it runs ``target`` and sends back the result."""
    prepare_worker(memory)
    sender.send(target(*args))
    sender.close()


def kill_pool(pool) -> None:
    """Stop a pool now, its running tasks too (``shutdown`` would wait for them)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def deadline_left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _in_forkserver() -> bool:
    """True while the forkserver imports its preload modules (its ``main`` is on the stack).

    The forkserver is forked by the service: it must die with it too, and this
    module being preloaded is the one hook into that process that multiprocessing
    offers. Anywhere else importing this module does nothing.
    """
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith(_FORKSERVER_MAIN):
            return True
        frame = frame.f_back
    return False


if _in_forkserver():
    _serve()
