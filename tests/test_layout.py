"""The package's floor plan, checked by reading every import (ast), so it holds from now on.

Three rules (see ``docs/layout.md``):
1. no import cycle between modules, and no import that climbs to a higher floor;
2. only ``helpdesk/store/`` touches peewee, the models or the prepared statements;
3. ``mail/`` and the pure decision modules reach nothing that touches the
   database or the network, however indirectly.
Each checker is also run on a small package written for the test, so a checker
that stopped finding anything would fail here too.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "helpdesk"

# A package may import its own modules and anything on a lower floor; never a higher one.
FLOORS = {
    "errors": 0, "units": 0, "clock": 0,
    "config": 1, "mail": 1,
    "store": 2, "oauth2": 2,
    "routing": 3, "outbound": 3, "intake": 3,
    "tickets": 4,
    "staff": 5,
    "disputes": 6,
    "reports": 7,
    "pipeline": 8,
    "runtime": 9,
    "cli": 10, "__main__": 11, "__init__": 11,
}

# Pure: decisions and conversions, no database, no network. Anyone may import them.
PURE = ("helpdesk.mail", "helpdesk.routing", "helpdesk.units", "helpdesk.clock", "helpdesk.errors",
        "helpdesk.config", "helpdesk.tickets.route", "helpdesk.disputes.route", "helpdesk.disputes.rules",
        "helpdesk.staff.commands")
IMPURE_HELPDESK = ("helpdesk.store", "helpdesk.intake", "helpdesk.outbound", "helpdesk.runtime",
                   "helpdesk.pipeline")
IMPURE_OUTSIDE = ("peewee", "playhouse", "psycopg", "psycopg2", "sqlite3", "socket", "ssl", "smtplib",
                  "imaplib", "imapclient", "aiosmtpd", "asyncio", "http", "urllib.request", "selectors")
STORE_ONLY = ("peewee", "playhouse", "helpdesk.store.schema", "helpdesk.store.sql")


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> dict[str, set[str]]:
    """Every module of the package and what it imports, function-level and relative imports
    included (``from ..store import schema`` is ``helpdesk.store.schema``)."""
    return {name: {target for target, _ in imported_names(root, name, path)}
            for name, path in modules_of(root).items()}


def modules_of(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def imported_names(root: Path, name: str, path: Path) -> list[tuple[str, str | None]]:
    """(module, name imported from it or None) for every import statement of a module."""
    modules, found = modules_of(root), []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.append((whole, None) if whole in modules else (base, alias.name))
    return found


def internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the path that closes it (depth-first, white/grey/black)."""
    edges, state, stack, found = internal(graph), {}, [], []

    def visit(node: str) -> None:
        state[node] = "grey"
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "grey":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "black"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def floor_of(root_name: str, module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "__init__"
    return top, FLOORS[top]


def climbs(graph: dict[str, set[str]], root_name: str = "helpdesk", pure=PURE) -> list[str]:
    """Imports from a module to a higher floor (pure modules may be imported from anywhere)."""
    bad = []
    for module, targets in internal(graph).items():
        top, floor = floor_of(root_name, module)
        for target in sorted(targets):
            target_top, target_floor = floor_of(root_name, target)
            if target_top != top and target_floor >= floor and not within(target, pure):
                bad.append(f"{module} -> {target} (floor {floor} -> {target_floor})")
    return bad


def outside_store(graph: dict[str, set[str]], store: str = "helpdesk.store") -> list[str]:
    return [f"{module} imports {target}" for module, targets in sorted(graph.items())
            if not within(module, (store,)) for target in sorted(targets) if within(target, STORE_ONLY)]


def real_attribute(module: str, attribute: str):
    import importlib
    return getattr(importlib.import_module(module), attribute, None)


def peewee_objects_outside_store(root: Path, lookup=real_attribute) -> list[str]:
    """Names taken from a store module that are peewee's own objects (a model, the database,
    a field, an expression): handing one out would let a domain build its own queries."""
    import peewee as pw

    bad = []
    for name, path in modules_of(root).items():
        if within(name, ("helpdesk.store",)):
            continue
        for module, attribute in imported_names(root, name, path):
            if attribute is None or not within(module, ("helpdesk.store",)):
                continue
            value = lookup(module, attribute)
            if isinstance(value, (pw.Database, pw.DatabaseProxy, pw.Node, pw.Field)) or (
                    isinstance(value, type) and issubclass(value, (pw.Model, pw.Database, pw.Field))):
                bad.append(f"{name} takes {attribute} from {module}")
    return bad


def may_import(init: Path) -> set[str]:
    """The helpdesk modules a subpackage's docstring allows it: the names in ``...`` on its
    'May import:' line (which runs to the end of its paragraph)."""
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    paragraph = doc[doc.index("May import"):].split("\n\n")[0] if "May import" in doc else ""
    return {token.removeprefix("helpdesk.") for token in re.findall(r"``([\w.]+)``", paragraph)}


def undeclared(graph: dict[str, set[str]], root: Path = PACKAGE) -> list[str]:
    """Imports a subpackage makes that its own docstring does not allow."""
    bad = []
    for init in sorted(root.glob("*/__init__.py")):
        top, allowed = init.parent.name, may_import(init)
        for module, targets in sorted(internal(graph).items()):
            if module.split(".")[1:2] != [top]:
                continue
            for target in sorted(targets):
                rest = target.split(".", 1)[1] if "." in target else ""
                if rest.split(".")[0] != top and not any(rest == a or rest.startswith(a + ".")
                                                         for a in allowed):
                    bad.append(f"{module} -> {target}: not in {top}/__init__.py's 'May import'")
    return bad


def impure_reach(graph: dict[str, set[str]], pure=PURE) -> list[str]:
    """For each pure module, anything it reaches (transitively) that touches a database or network."""
    edges, bad = internal(graph), []
    for module in sorted(m for m in graph if within(m, pure)):
        seen, todo = {module}, [module]
        while todo:
            current = todo.pop()
            for target in graph[current]:
                if within(target, IMPURE_OUTSIDE) or within(target, IMPURE_HELPDESK):
                    bad.append(f"{module} reaches {target} through {current}")
            todo.extend(t for t in edges[current] if t not in seen and not seen.add(t))
    return bad


GRAPH = imports(PACKAGE)


def test_every_top_level_module_and_subpackage_has_a_floor():
    tops = {m.split(".")[1] if "." in m else "__init__" for m in GRAPH}
    assert tops <= set(FLOORS), f"no floor for {sorted(tops - set(FLOORS))}: add it to FLOORS and docs/layout.md"


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_no_import_climbs_to_a_higher_floor():
    assert climbs(GRAPH) == []


def test_only_the_store_touches_peewee_the_models_and_the_statements():
    assert outside_store(GRAPH) == []


def test_no_peewee_object_is_handed_out_of_the_store():
    assert peewee_objects_outside_store(PACKAGE) == []


def test_each_subpackage_imports_only_what_its_docstring_allows():
    assert undeclared(GRAPH) == []


def test_mail_and_the_pure_modules_reach_no_database_and_no_network():
    assert impure_reach(GRAPH) == []


def test_every_subpackage_says_what_it_is_for_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(PACKAGE.parent)}: docstring lacks 'May import'"


# --- the checkers find what they look for ------------------------------------------

def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "helpdesk" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "helpdesk"


@pytest.fixture
def bad_package(tmp_path) -> dict[str, set[str]]:
    return imports(write(tmp_path, {
        "__init__.py": "",
        "store/__init__.py": "",
        "store/schema.py": "import peewee\n",
        "tickets/__init__.py": "",
        "tickets/desk.py": "from helpdesk.store.schema import Ticket\nfrom helpdesk.tickets import lifecycle\n",
        "tickets/lifecycle.py": "def f():\n    from helpdesk.tickets.desk import Desk\n",
        "routing.py": "from helpdesk.tickets import desk\n",
        "mail/__init__.py": "",
        "mail/parse.py": "from helpdesk import units\n",
        "units.py": "import smtplib\n",
    }))


def test_relative_imports_and_peewee_objects_are_seen(tmp_path):
    root = write(tmp_path, {
        "__init__.py": "",
        "store/__init__.py": "",
        "store/schema.py": "import peewee\nclass Ticket(peewee.Model):\n    pass\n",
        "store/tickets.py": "from .schema import Ticket\n",
        "tickets/__init__.py": '"""Tickets.\n\nMay import: ``store``.\n"""\n',
        "tickets/desk.py": "from ..store import schema\nfrom ..routing import x\n",
        "routing.py": "",
    })
    graph = imports(root)
    assert graph["helpdesk.tickets.desk"] == {"helpdesk.store.schema", "helpdesk.routing"}
    assert outside_store(graph) == ["helpdesk.tickets.desk imports helpdesk.store.schema"]
    assert undeclared(graph, root) == [
        "helpdesk.tickets.desk -> helpdesk.routing: not in tickets/__init__.py's 'May import'"]


def test_a_model_or_the_database_taken_from_a_store_module_is_a_leak(tmp_path):
    from helpdesk.store import schema
    root = write(tmp_path, {
        "__init__.py": "",
        "store/__init__.py": "",
        "store/tickets.py": "",
        "tickets/__init__.py": "",
        "tickets/desk.py": "from helpdesk.store.tickets import Ticket, db, create\n",
    })
    values = {"Ticket": schema.Ticket, "db": schema.db, "create": lambda: None}
    found = peewee_objects_outside_store(root, lambda module, attribute: values[attribute])
    assert found == ["helpdesk.tickets.desk takes Ticket from helpdesk.store.tickets",
                     "helpdesk.tickets.desk takes db from helpdesk.store.tickets"]


def test_the_checkers_find_a_cycle_a_climb_a_leak_and_an_impure_reach(bad_package):
    assert cycles(bad_package) == [["helpdesk.tickets.desk", "helpdesk.tickets.lifecycle", "helpdesk.tickets.desk"]]
    assert climbs(bad_package, pure=()) == ["helpdesk.routing -> helpdesk.tickets.desk (floor 3 -> 4)"]
    assert outside_store(bad_package) == ["helpdesk.tickets.desk imports helpdesk.store.schema"]
    assert impure_reach(bad_package) == ["helpdesk.mail.parse reaches smtplib through helpdesk.units",
                                         "helpdesk.routing reaches helpdesk.store.schema through helpdesk.tickets.desk",
                                         "helpdesk.routing reaches peewee through helpdesk.store.schema",
                                         "helpdesk.units reaches smtplib through helpdesk.units"]
