"""The identity rules stay a pure core: no module under ``profilehub/identity`` imports a database
library or any part of profilehub outside the core (the store, services, HTTP), directly or by a
lazy import inside a function. Storage reaches the rules only through
``identity.storage.ProfileStorage``."""

from __future__ import annotations

import ast
from pathlib import Path

import profilehub.identity

CORE = Path(profilehub.identity.__file__).parent
# What the core may import from profilehub: itself and the one error model.
ALLOWED_OWN = ("profilehub.identity", "profilehub.errors")
FORBIDDEN_LIBRARIES = ("sqlalchemy", "psycopg", "sqlite3", "alembic", "fastapi", "starlette")


def _imports(source: str, package: str) -> list[tuple[int, str]]:
    """Every module ``source`` (a module of ``package``) imports, as absolute names."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            # ``from profilehub import store`` imports the module profilehub.store
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            found.append((node.lineno, base))
    return found


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations(source: str, name: str, package: str) -> list[str]:
    bad = []
    for line, imported in _imports(source, package):
        if any(_is_under(imported, lib) for lib in FORBIDDEN_LIBRARIES) or (
            _is_under(imported, "profilehub")
            and imported != "profilehub"
            and not any(_is_under(imported, ok) for ok in ALLOWED_OWN)
        ):
            bad.append(f"{name}:{line} imports {imported}")
    return bad


def test_the_core_imports_no_store_and_no_sql() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert {p.name for p in modules} >= {"resolve.py", "strategy.py", "normalize.py", "storage.py"}
    problems = []
    for path in modules:
        package = ".".join(("profilehub", *path.relative_to(CORE.parent).parts[:-1]))
        problems += _violations(path.read_text(), path.name, package)
    assert problems == []


def test_the_check_catches_store_and_sql_imports() -> None:
    # The walk must see imports wherever they hide: nested in functions, relative, or aliased.
    sample = (
        "import sqlalchemy as sa\n"
        "from profilehub import store\n"
        "def f() -> None:\n"
        "    from ..store.batch_store import BatchStore\n"
        "    from . import normalize\n"
        "    import profilehub.errors\n"
        "    import psycopg.sql\n"
    )
    assert _violations(sample, "sample.py", "profilehub.identity") == [
        "sample.py:1 imports sqlalchemy",
        "sample.py:2 imports profilehub.store",
        "sample.py:4 imports profilehub.store.batch_store.BatchStore",
        "sample.py:4 imports profilehub.store.batch_store",
        "sample.py:7 imports psycopg.sql",
    ]
