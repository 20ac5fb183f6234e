"""The layout tells the architecture: the core is pure, adapters do not know each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mailflow"
IMPURE = ("asyncio", "sqlmodel", "sqlalchemy", "jinja2", "aiosmtplib", "aioimaplib", "socket", "logging", "time")
OUTSIDE_CORE = ("mailflow.adapters", "mailflow.render", "mailflow.inbox", "mailflow.outbox", "mailflow.config",
                "mailflow.store", "mailflow.effects", "mailflow.cli", "mailflow.runner", "mailflow.daemon")  # fmt: skip


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_core_is_pure(path: Path) -> None:
    bad = {n for n in imports(path) if n.split(".")[0] in IMPURE or n.startswith(OUTSIDE_CORE)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_adapters_are_independent() -> None:
    for path in (PACKAGE / "adapters").glob("*.py"):
        others = {f"mailflow.adapters.{p.stem}" for p in (PACKAGE / "adapters").glob("*.py")} - {f"mailflow.adapters.{path.stem}"}
        others -= {"mailflow.adapters.tables", "mailflow.adapters.__init__"} if path.stem == "db" else set()
        assert not (imports(path) & others), path.name
