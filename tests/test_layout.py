"""The layout's rules, read from the source (no database): the network-neutral core never imports
a radio network's adapter, and no module outside heron.db knows which database it runs on."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HERON = SRC / "heron"
CORE = [HERON / name for name in ("uplink", "downlink", "delivery", "messages", "stations")] + [HERON / "radio.py"]
DIALECT_NAMES = {"sqlite", "postgresql", "postgresql+psycopg"}
DIALECT_ATTRIBUTES = {"dialect", "paramstyle", "exec_driver_sql"}


def _modules(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from [root] if root.is_file() else sorted(root.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an import names, a relative one resolved against the importing module."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_network(name: str) -> bool:
    return name == "heron.network" or name.startswith("heron.network.")


def network_imports(source: str, module: str = "heron.uplink.example", is_package: bool = False) -> list[int]:
    """Lines importing heron.network (any form, at any depth: inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(_is_network(alias.name) for alias in node.names):
                found.append(node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            if _is_network(target) or any(_is_network(f"{target}.{alias.name}") for alias in node.names):
                found.append(node.lineno)
    return sorted(found)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def dialect_branches(source: str) -> list[tuple[int, str]]:
    """(line, what) of everything that knows the database: a sqlalchemy.dialects import, a
    `.dialect`/`.paramstyle` access, driver-level SQL, a per-dialect @compiles, a dialect's name."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("sqlalchemy.dialects")]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            if module.startswith("sqlalchemy.dialects") or (
                module == "sqlalchemy" and any(a.name == "dialects" for a in node.names)
            ):
                found.append((node.lineno, f"from {module} import"))
        elif isinstance(node, ast.Attribute) and node.attr in DIALECT_ATTRIBUTES:
            found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Name) and node.id == "exec_driver_sql":
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Constant) and node.value in DIALECT_NAMES and id(node) not in docstrings:
            # Compared, passed (`@compiles(..., "sqlite")`, `with_variant(..., "sqlite")`) or kept.
            found.append((node.lineno, repr(node.value)))
    return sorted(found)


def _where(path: Path, line: int, what: str = "") -> str:
    return f"{path.relative_to(SRC.parent)}:{line}" + (f" {what}" if what else "")


def test_the_core_does_not_import_a_radio_network() -> None:
    core = list(_modules(*CORE))
    assert len(core) > 10  # the paths above are right: the check reads the core
    bad = [
        _where(path, line)
        for path in core
        for line in network_imports(path.read_text(), _module_name(path), path.name == "__init__.py")
    ]
    assert not bad, "the network-neutral core imports heron.network:\n" + "\n".join(bad)


def test_no_dialect_branch_outside_db() -> None:
    outside = [p for p in _modules(HERON) if not p.is_relative_to(HERON / "db")]
    assert len(outside) > 100
    bad = [_where(path, line, what) for path in outside for line, what in dialect_branches(path.read_text())]
    assert not bad, "only heron.db may know the database:\n" + "\n".join(bad)


def test_the_import_check_catches_every_form() -> None:
    source = '''
import heron.network.sigfox.radio
from heron.network.sigfox import radio
from heron import network
from heron.network import sigfox as s
import json, heron.network
from ..network.sigfox import radio as r
from .. import network as n


def later():
    from heron.network.sigfox.radio import SigfoxNetwork
    import heron.network as net

from heron.networking import fine
from heron import radio
from . import network_neutral
"""heron.network in a docstring is no import."""
'''
    assert network_imports(source, "heron.uplink.store") == [2, 3, 4, 5, 6, 7, 8, 12, 13]
    assert network_imports("from .. import network\n", "heron.uplink", is_package=True) == [1]
    assert network_imports("from . import network\n", "heron", is_package=True) == [1]


def test_the_dialect_check_catches_every_form() -> None:
    source = '''"""Docstrings may say sqlite and "postgresql" freely."""
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert
import sqlalchemy.dialects.postgresql
from sqlalchemy import dialects


def f(session, conn, compiles, Thing, Integer, BigInteger):
    """sqlite"""
    if session.get_bind().dialect.name == "postgresql":
        pass
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql("SELECT 1")
    kind = BigInteger().with_variant(Integer(), "sqlite")
    if "postgresql+psycopg" in session.url:
        pass

    @compiles(Thing, "sqlite")
    def render(element, compiler, **kw):
        return ""

    # "sqlite" in a comment is no branch
    return "sqlite:///heron.db", "sqlite_where", kind, mark, render
'''
    found = dialect_branches(source)
    assert [line for line, _ in found] == [2, 3, 4, 5, 10, 10, 12, 12, 13, 14, 15, 18]
    assert (12, ".paramstyle") in found and (13, ".exec_driver_sql") in found and (18, "'sqlite'") in found
