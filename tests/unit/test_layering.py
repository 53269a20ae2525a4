"""The layering, as an import rule that holds for every module (docs/architecture.md).

- `meshca/service/` and `meshca/transport/` reach storage, Vault and Kubernetes only through
  ports: they import no `meshca.infra`, `sqlalchemy`, `hvac` or `kubernetes`.
- `meshca/core/` is pure: the standard library, `cryptography`, `meshca.core` and
  `meshca.errors`, nothing else.
- `meshca/agent/` (the node agent, its own process) builds on core, transport and the generated
  protos, never on the server's use cases, storage or settings: no `meshca.service`,
  `meshca.infra`, `meshca.wiring`, `meshca.cli`, `meshca.config`, `sqlalchemy`, `alembic`, `hvac`
  or `kubernetes`.

Every import counts, including those inside functions and under `TYPE_CHECKING`: an edge that
only type-checks is still a dependency of the layer.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "meshca"

FORBIDDEN_ABOVE_INFRA = ("meshca.infra", "sqlalchemy", "hvac", "kubernetes")
CORE_MAY_IMPORT = ("cryptography", "meshca.core", "meshca.errors")
FORBIDDEN_IN_AGENT = ("meshca.service", "meshca.infra", "meshca.wiring", "meshca.cli", "meshca.config",
                      "sqlalchemy", "alembic", "hvac", "kubernetes")


@dataclass(frozen=True, slots=True)
class Edge:
    path: str  # relative to the repository
    line: int
    imported: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.imported}"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "__future__":
                continue
            if node.module and target != "meshca":
                yield node.lineno, target
                continue
            # `from . import x` and `from meshca import infra` import modules by their names.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _is_stdlib(name: str) -> bool:
    return name.partition(".")[0] in sys.stdlib_module_names


def offending_edges(package: Path = PACKAGE) -> list[Edge]:
    edges: list[Edge] = []
    root = package.parent
    for path in sorted(package.rglob("*.py")):
        layer = path.relative_to(package).parts[0]
        if layer not in ("service", "transport", "core", "agent"):
            continue
        module = _module_name(path, root)
        for line, name in imports(path.read_text(), module, path.name == "__init__.py"):
            if layer == "core":
                bad = not (_is_stdlib(name) or _within(name, CORE_MAY_IMPORT))
            elif layer == "agent":
                bad = _within(name, FORBIDDEN_IN_AGENT)
            else:
                bad = _within(name, FORBIDDEN_ABOVE_INFRA)
            if bad:
                edges.append(Edge(str(path.relative_to(root)), line, name))
    return edges


def test_no_layer_imports_what_it_must_not() -> None:
    edges = offending_edges()
    for edge in edges:
        print(edge)
    assert not edges, f"{len(edges)} imports break the layering:\n" + "\n".join(map(str, edges))


# ---- the checker itself -----------------------------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "meshca"
    for name, source in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return package


def test_the_checker_finds_each_kind_of_edge(tmp_path: Path) -> None:
    package = _tree(tmp_path, {
        "service/__init__.py": "",
        "service/uses.py": (
            "from __future__ import annotations\n"
            "from typing import TYPE_CHECKING\n"
            "import sqlalchemy.engine\n"
            "from meshca import infra\n"
            "from ..infra.db import schema\n"
            "if TYPE_CHECKING:\n"
            "    from hvac import Client\n"
            "def late() -> None:\n"
            "    import kubernetes\n"
            "from meshca.service.ports import Port\n"
            "from meshca.infrastructure import ok\n"
        ),
        "transport/grpc/server.py": "from . import status\nfrom ...infra import db\n",
        "core/pure.py": "import json\nfrom cryptography import x509\nfrom meshca.errors import NotFound\n"
                        "from meshca.core.spiffe import SpiffeId\nfrom . import spiffe\n"
                        "import jwt\nfrom meshca.service import ports\n",
        "infra/db.py": "import sqlalchemy\n",
        "agent/cache.py": "from meshca.transport.tls_front import relay_connection\n"
                          "from meshca.service.issuance import IssuanceService\n"
                          "from meshca.config import Settings\n",
    })
    found = {(edge.path, edge.line, edge.imported) for edge in offending_edges(package)}
    assert found == {
        ("meshca/service/uses.py", 3, "sqlalchemy.engine"),
        ("meshca/service/uses.py", 4, "meshca.infra"),
        ("meshca/service/uses.py", 5, "meshca.infra.db"),
        ("meshca/service/uses.py", 7, "hvac"),
        ("meshca/service/uses.py", 9, "kubernetes"),
        ("meshca/transport/grpc/server.py", 2, "meshca.infra"),
        ("meshca/core/pure.py", 6, "jwt"),
        ("meshca/core/pure.py", 7, "meshca.service"),
        ("meshca/agent/cache.py", 2, "meshca.service.issuance"),
        ("meshca/agent/cache.py", 3, "meshca.config"),
    }
