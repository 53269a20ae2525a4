"""docs/operations.md's backup and restore, as written: a backup of a running server, the data
dir and the KEK lost, the restore, and the same CA back with what it knew at the backup."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cryptography import x509

from tests.docs.markdown import marked_blocks, shell_commands
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem, start_meshca

PAGE = "operations.md"
ELSEWHERE = "/somewhere/else"


def _run(block: str, cwd: Path, safe: Path) -> None:
    script = shell_commands(marked_blocks(PAGE)[block]).replace(ELSEWHERE, str(safe))
    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _serials(server: MeshcaProcess) -> set[str]:
    page = AdminClient(server).get("/v1/certificates?limit=1000", token=admin_token(server)).json()
    return {item["serial"] for item in page["items"]}


def _issue(server: MeshcaProcess) -> str:
    leaf = x509.load_pem_x509_certificate(server.create_certificate(csr_pem())[0].encode())
    return f"{leaf.serial_number:x}"


def test_backup_of_a_running_server_then_restore(tmp_path: Path) -> None:
    clone, safe = tmp_path / "clone", tmp_path / "safe"
    safe.mkdir()
    data = clone / "meshca-data"
    server = start_meshca(data, "--workers", "1")
    try:
        before = _issue(server)
        blocked = AdminClient(server).post(
            "/v1/identities/spiffe%3A%2F%2Fcluster.local%2Fns%2Fshop%2Fsa%2Fcart:block",
            {"reason": "incident 42"}, token=admin_token(server))
        assert blocked.status == 200
        root = (data / "root-cert.pem").read_bytes()
        token = admin_token(server)
        _run("backup", clone, safe)
        after = _issue(server)  # made after the backup: the restore cannot know it
    finally:
        server.stop()
    assert (safe / "meshca-data.kek").is_file()
    assert not list((clone / "backup").glob("*.kek")), "the KEK must not be beside the backup"

    shutil.rmtree(data)
    (clone / "meshca-data.kek").unlink()
    _run("restore", clone, safe)

    restored = start_meshca(data, "--workers", "1")
    try:
        assert (data / "root-cert.pem").read_bytes() == root  # the same CA, not a new one
        assert admin_token(restored) == token
        serials = _serials(restored)
        assert before in serials and after not in serials
        listed = AdminClient(restored).get("/v1/identities:blocked", token=token).json()
        assert [b["spiffe_id"] for b in listed] == ["spiffe://cluster.local/ns/shop/sa/cart"]
        chain_file = tmp_path / "chain.pem"
        chain_file.write_text("".join(restored.create_certificate(csr_pem())[:2]))
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", str(data / "root-cert.pem"), "-untrusted", str(chain_file),
             str(chain_file)], capture_output=True, text=True, timeout=30)
        assert verified.returncode == 0, verified.stderr
        key_modes = {p.stat().st_mode & 0o777 for p in (data / "keys").iterdir()}
        assert key_modes == {0o600}
    finally:
        restored.stop()
