"""Every key the loader accepts is documented in ``docs/configuration.md``'s table, in its section."""

from __future__ import annotations

import re
from pathlib import Path

from helpdesk.config.loader import SECTIONS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented(text: str) -> set[tuple[str, str]]:
    """(section, key) of every table row: ``| `[tickets]` | `first_response` | ...``; a row with
    an empty first cell continues the section above, and one cell may name several keys
    (``password_env` / `password_file``)."""
    found, section = set(), None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 2:
            continue
        named = re.fullmatch(r"`\[\[?([a-z_]+)\]\]?`", cells[0])
        if named:
            section = named.group(1)
        elif cells[0]:
            section = None                 # another table
        if section is not None:
            found |= {(section, key) for key in re.findall(r"`([a-z_][a-z0-9_]*)`", cells[1])}
    return found


def test_every_config_key_is_documented():
    keys = {(name, key) for name, section in SECTIONS.items() for key in section.keys}
    missing = sorted(f"[{section}] {key}" for section, key in keys - documented(DOCS.read_text()))
    assert missing == [], f"document these in {DOCS.name}"


def test_the_reader_of_the_table_finds_what_is_there_and_only_that():
    text = ("| section | key | default |\n|---|---|---|\n| `[helpdesk]` | `name` | x |\n"
            "| | `password_env` / `password_file` | |\n| `[[staff]]` | `address`, `name` | |\n"
            "\n| other | `not_a_key` | |\n")
    assert documented(text) == {("helpdesk", "name"), ("helpdesk", "password_env"),
                                ("helpdesk", "password_file"), ("staff", "address"), ("staff", "name")}
