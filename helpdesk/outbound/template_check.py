"""Every template is checked before any mail is taken: a broken one stops the start.

A template fails only when it is first rendered, and the helpdesk renders its
notices inside the transaction that applies a customer's mail, so a missing file
or a misspelt variable would quarantine that customer's mail (and every one like
it) with nobody told. ``verify`` renders each event once with its sample context
(handed in: ``runtime.samples``, whose contexts are compared with real
conversations' by the tests) under ``StrictUndefined`` and compiles every file of the
search path, so that the same fault is one :class:`TemplateError` line naming the
file, when the service or a command starts. A file in a deployment's own folder
that overrides no shipped template (a misspelt name would otherwise be ignored
silently) is an error too, unless it is a partial (``_name.txt.j2``) for includes.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from helpdesk.errors import TemplateError
from helpdesk.outbound.notify import Renderer

PARTS = ("subject", "txt", "html")
_verified: set[tuple] = set()    # search paths found good in this process, with their files' sizes and times


def verify(renderer: Renderer, samples: dict[tuple[str, str], dict]) -> None:
    """TemplateError naming the first file that is missing, does not compile or does not render;
    ``samples``: (audience, event) -> a context as the code fills it in."""
    files = [_template_files(folder) for folder in renderer.search_path]
    key = tuple((folder, tuple(sorted((name, _stamp(path)) for name, path in found.items())))
                for folder, found in zip(renderer.search_path, files, strict=True))
    if key in _verified:
        return       # every command and test builds an app; the same files need checking once
    _no_strays(renderer.search_path, files)
    for name in sorted(set().union(*files)):
        _checked(renderer, name, lambda name=name: renderer.env.get_template(name))
    for (audience, event), context in samples.items():
        _checked(renderer, f"{audience}/{event}",
                 lambda a=audience, e=event, c=context: renderer.render(a, e, c))
    _verified.add(key)


def _template_files(folder: Path) -> dict[str, Path]:
    """``customer/ack.txt.j2`` -> its path, for every template file under ``folder``."""
    if not folder.is_dir():
        raise TemplateError(f"templates folder {folder} does not exist")
    return {path.relative_to(folder).as_posix(): path for path in folder.rglob("*.j2")}


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _no_strays(search_path: tuple[Path, ...], files: list[dict[str, Path]]) -> None:
    shipped = files[-1]
    for found in files[:-1]:
        for name, path in sorted(found.items()):
            if name not in shipped and not path.name.startswith("_"):
                raise TemplateError(f"template {path}: overrides none of the shipped templates "
                                    f"(in {search_path[-1]}); a partial for includes starts with _")


def _checked(renderer: Renderer, what: str, action) -> None:
    try:
        action()
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {exc.filename or exc.name}:{exc.lineno}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        folders = " or ".join(str(folder) for folder in renderer.search_path)
        raise TemplateError(f"template {exc.name} is missing (looked in {folders})") from None
    except Exception as exc:  # noqa: BLE001 - any fault in a template is the template's, named below
        raise TemplateError(f"template {_where(exc, what)}: {type(exc).__name__}: {exc}") from None


def _where(exc: Exception, what: str) -> str:
    """The template file and line a render failed in (Jinja puts them in the traceback)."""
    found = what
    frame = exc.__traceback__
    while frame is not None:
        filename = frame.tb_frame.f_code.co_filename
        if filename.endswith(".j2") and os.path.isfile(filename):
            found = f"{filename}:{frame.tb_lineno}"
        frame = frame.tb_next
    return found
