"""docs/admin-api.md against the real admin API: one example per operation of the server's own
OpenAPI document (no more, no fewer), and every example runs, as written, in order, with success."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs.markdown import code_blocks, marked_blocks, page, sections, shell_commands
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca

PAGE = "admin-api.md"
OPERATION = re.compile(r"^`(GET|POST|PUT|DELETE|PATCH) (/\S*)`$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    running = start_meshca(tmp_path_factory.mktemp("clone") / "meshca-data", "--workers", "1")
    yield running
    running.stop()


def _examples() -> dict[str, str]:
    text = page(PAGE)
    part = text[text.index("## One example per route"):text.index("## Errors")]
    return sections(part)


def _documented() -> set[tuple[str, str]]:
    found = set()
    for title in _examples():
        match = OPERATION.match(title)
        assert match, f"not an operation heading: {title}"
        found.add((match[1], match[2]))
    return found


def test_every_operation_has_an_example_and_no_example_is_stale(server: MeshcaProcess) -> None:
    spec = AdminClient(server).get("/openapi.json", token=admin_token(server)).json()
    served = {(method.upper(), path) for path, item in spec["paths"].items() for method in item
              if method in ("get", "post", "put", "delete", "patch")}
    assert served, "the OpenAPI document lists no operation"
    documented = _documented()
    assert served - documented == set(), "operations without an example"
    assert documented - served == set(), "examples of operations the server does not have"
    for title, body in _examples().items():
        blocks = code_blocks(body)
        assert any("curl " in b.text for b in blocks), f"{title} has no curl example"
    table = page(PAGE)[:page(PAGE).index("## One example per route")]
    for _method, path in served:
        assert path.split("{")[0].rstrip("/:") in table, f"{path} is not in the routes table"


def test_every_example_runs_against_a_real_server(server: MeshcaProcess) -> None:
    """The examples in order, as one script from the directory holding meshca-data; curl fails
    on an error status. Only addresses change: the admin port, and the federation example's
    foreign host becomes a local address nothing listens on, so no traffic leaves the machine."""
    server.create_certificate(csr_pem())  # the page's examples start after the quick start's
    admin_port = server.admin_addr.rpartition(":")[2]
    script = ["set -e -o pipefail", shell_commands(marked_blocks(PAGE)["setup"])]
    for title, body in _examples().items():
        for block in code_blocks(body):
            script += [f"echo '=== {title}'", shell_commands(block)]
    text = "\n".join(script).replace("localhost:8443", f"localhost:{admin_port}")
    text = re.sub(r"b\.example:\d+", "127.0.0.1:9", text)
    text = re.sub(r"(^|\| |\$\()curl ", r"\1curl -sS --fail-with-body ", text, flags=re.M)
    done = subprocess.run(["bash", "-c", text], cwd=Path(server.data_dir).parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert '"status":"ok"' in out and '"status":"ready"' in out
    assert "-----BEGIN CERTIFICATE-----" in out and "Certificate Revocation List" in out
    assert '"decision":"ALLOW"' in out and '"decision":"DENY"' in out
    # what the examples did is what the page says they do
    client, token = AdminClient(server), admin_token(server)
    revoked = [c for c in client.get("/v1/certificates?limit=1000", token=token).json()["items"]
               if c["revoked_at"]]
    assert len(revoked) == 1 and revoked[0]["revocation_reason"] == "keyCompromise"
    tokens = {t["name"]: t for t in client.get("/v1/admin-tokens", token=token).json()}
    assert tokens["grafana"]["revoked_at"] is not None
    generations = client.get("/v1/ca", token=token).json()["generations"]
    assert any(g["state"] == "tainted" for g in generations)
    actions = [e["action"] for e in client.get("/v1/audit?limit=1000", token=token).json()["items"]]
    for action in ("certificate.revoke", "federation.put", "federation.delete"):
        assert action in actions, (action, json.dumps(actions))
