"""What a wheel is made of: every package, the shipped files, the metadata, tested floors.

The wheel itself is built, installed outside the checkout and sent a mail by
``.ci/wheel-smoke``; these keep the declarations it is built from true.
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import helpdesk

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed_for_the_wheel():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "helpdesk").rglob("__init__.py")}
    assert set(PROJECT["tool"]["setuptools"]["packages"]) == found | {"helpdesk.shipped"}


def test_the_wheel_carries_every_template_and_the_config():
    setuptools = PROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"]["helpdesk.shipped"] == "."
    patterns = setuptools["package-data"]["helpdesk.shipped"]
    shipped = ["config.toml"] + [p.relative_to(ROOT).as_posix() for p in (ROOT / "templates").rglob("*")
                                 if p.is_file()]
    missing = [name for name in shipped
               if not any(fnmatch(name, pattern.replace("**/", "*")) for pattern in patterns)]
    assert missing == []


def test_metadata_is_complete():
    project = PROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert project["authors"] and project["keywords"] and project["classifiers"] and project["readme"]
    assert project["dynamic"] == ["version"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "helpdesk.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", helpdesk.__version__)


def test_each_floor_is_pinned_in_the_lowest_constraints():
    """.ci/lowest.txt is what the suite runs against to prove the floors: it must be them."""
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    project = PROJECT["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    floors = {}
    for requirement in requirements:
        [spec] = requirement.specifier
        assert spec.operator == ">=", f"{requirement}: a floor, not {spec.operator}"
        floors[canonicalize_name(requirement.name)] = Version(spec.version)
    assert {name: pins.get(name) for name in floors} == floors
    assert pins["psycopg-binary"] == pins["psycopg"]      # psycopg[binary] brings the same version
