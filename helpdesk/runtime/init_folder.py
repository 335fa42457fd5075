"""``helpdesk init [DIR]``: a ready folder for a helpdesk installed from a wheel.

A checkout brings its own ``config.toml`` and ``mailboxes/``; an installed
helpdesk has neither, and its first ``helpdesk run`` would stop at a missing
config. ``init`` writes the shipped, commented ``config.toml`` (the same file as
a checkout's), then makes what that config names: the Maildirs, the data folder
and the secret key (0600). It never overwrites a config: an existing one is a
one-line error, so running it twice cannot reset a live installation.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from helpdesk.config.loader import load_config
from helpdesk.errors import UserError
from helpdesk.runtime import shipped
from helpdesk.runtime.app import load_secret


@dataclass(frozen=True)
class Made:
    config: Path
    maildirs: tuple[Path, ...]
    secret_key: Path


def init_folder(folder: Path) -> Made:
    """Write ``folder/config.toml`` and make what it names; UserError if it exists already."""
    folder = folder.absolute()
    config_path = folder / "config.toml"
    if config_path.exists() or config_path.is_symlink():
        raise UserError(f"{config_path} exists already; not overwritten (remove it first to start afresh)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(shipped.config_toml(), "rb") as source, open(config_path, "xb") as target:
            shutil.copyfileobj(source, target)
    except OSError as exc:
        raise UserError(f"cannot write {config_path}: {exc.strerror or exc}") from None
    config = load_config(config_path)
    maildirs = [m.maildir for m in config.mailboxes if m.maildir is not None]
    outgoing = config.outgoing.transport
    if outgoing.startswith("maildir:"):
        maildirs.append(Path(outgoing.removeprefix("maildir:")))
    try:
        for path in (config.helpdesk.data_dir, config.helpdesk.attachments_dir):
            path.mkdir(parents=True, exist_ok=True)
        for maildir in maildirs:
            for sub in ("new", "cur", "tmp"):
                (maildir / sub).mkdir(parents=True, exist_ok=True)
        load_secret(config)      # made 0600 when missing; an existing key is kept
    except OSError as exc:
        raise UserError(f"cannot prepare {folder}: {exc.strerror or exc}") from None
    return Made(config_path, tuple(maildirs), config.helpdesk.secret_key_file)


def describe(made: Made) -> str:
    """What ``init`` made, for the operator: relative to the folder, and what to do next."""
    base = made.config.parent

    def shown(path: Path) -> str:
        return os.path.relpath(path, base)

    maildirs = ", ".join(shown(m) for m in made.maildirs)
    return (f"made {made.config}\n"
            f"  Maildirs: {maildirs}\n"
            f"  secret key: {shown(made.secret_key)} (mode 0600)\n"
            f"next: edit config.toml (addresses, staff, [outgoing] transport), then: "
            + ("helpdesk run" if base == Path.cwd() else f"cd {base} && helpdesk run"))
