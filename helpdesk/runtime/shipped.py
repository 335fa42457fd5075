"""Where the files shipped beside the code are: the default templates and the commented config.toml.

The top-level ``templates/`` and ``config.toml`` of a checkout are their source;
a wheel carries copies as package data, in ``helpdesk/shipped/`` (``pyproject.toml``
maps that package onto the checkout's top level, so nothing is duplicated in git).
An installed helpdesk finds the copies; a checkout finds its own files, so an edit
there shows at once, as before.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]      # helpdesk/


def folder() -> Path:
    """``helpdesk/shipped`` when installed from a wheel, else the checkout's top level."""
    installed = _PACKAGE / "shipped"
    return installed if installed.is_dir() else _PACKAGE.parent


def templates() -> Path:
    return folder() / "templates"


def config_toml() -> Path:
    return folder() / "config.toml"
