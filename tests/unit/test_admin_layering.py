"""The admin API's layers: its transport and use cases import neither infra nor SQLAlchemy
(they reach the database only through the ports of service/admin_ports.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "meshca"
LAYERED = sorted([*(ROOT / "transport" / "rest").rglob("*.py"),
                  *(ROOT / "service" / "admin").rglob("*.py"),
                  ROOT / "service" / "admin_ports.py", ROOT / "service" / "admin_auth.py"])
FORBIDDEN = ("meshca.infra", "sqlalchemy")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_walk_finds_the_admin_modules() -> None:
    assert {p.name for p in LAYERED} >= {"app.py", "certificates.py", "ca.py", "admin_ports.py"}


@pytest.mark.parametrize("path", LAYERED, ids=[str(p.relative_to(ROOT)) for p in LAYERED])
def test_no_infra_or_sqlalchemy_import(path: Path) -> None:
    bad = sorted(n for n in imported(path)
                 if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))
    assert bad == [], f"{path.relative_to(ROOT)} imports {bad}"


def test_the_rule_catches_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from sqlalchemy.exc import SQLAlchemyError\nimport meshca.infra.db\n")
    assert imported(module) >= {"sqlalchemy.exc", "meshca.infra.db"}
