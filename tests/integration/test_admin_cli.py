"""`meshca admin …` run as a subprocess against a real server: output, --json, errors."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from tests.support import MeshcaProcess, csr_pem, start_meshca


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("admin-cli") / "data")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty working directory: no ./meshca-data to fall back on."""
    return tmp_path_factory.mktemp("cwd")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESHCA_") and k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    completed = subprocess.run([sys.executable, "-m", "meshca", "admin", *args], cwd=cwd,
                               env=env or _env(), capture_output=True, text=True, timeout=60)
    result = Result(completed.returncode, completed.stdout, completed.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "\x1b[" not in result.stdout, "colour codes in piped output"
    return result


def admin(server: MeshcaProcess, workdir: Path, *args: str) -> Result:
    """The CLI with the server's data directory (admin token, endpoints, bundle)."""
    return cli(*args, "--data-dir", str(server.data_dir), cwd=workdir)


def ok(result: Result) -> Result:
    assert result.rc == 0, result.stderr
    return result


def api(server: MeshcaProcess, path: str, method: str = "GET") -> Any:
    """The admin API itself, for comparing the CLI's --json with it."""
    context = ssl.create_default_context(cafile=str(server.data_dir / "root-cert.pem"))
    token = (server.data_dir / "admin-token").read_text().strip()
    request = urllib.request.Request(f"https://{server.admin_addr}{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return json.loads(response.read())


def issue(server: MeshcaProcess, namespace: str, account: str) -> str:
    chain = server.create_certificate(csr_pem(), token=server.token(namespace, account))
    return f"{x509.load_pem_x509_certificate(chain[0].encode()).serial_number:x}"


def spiffe(namespace: str, account: str) -> str:
    return f"spiffe://cluster.local/ns/{namespace}/sa/{account}"


# ---- reading ----------------------------------------------------------------------------

def test_ca_shows_root_and_signing_intermediate(server: MeshcaProcess, workdir: Path) -> None:
    expected = api(server, "/v1/ca")
    human = ok(admin(server, workdir, "ca")).stdout
    for generation in expected["generations"]:
        assert generation["serial"] in human
    assert "meshca root g1" in human and "meshca intermediate g1" in human
    assert "3 CA generations" in human and "JWT-SVID key g1" in human  # root, inter., JWT
    signing = next(line for line in human.splitlines() if "intermediate g1" in line)
    assert signing.rstrip().endswith("yes")
    assert "T" not in signing.split("meshca intermediate g1")[1], "times are shortened"
    assert ok(admin(server, workdir, "ca", "--json")).json() == expected


def test_certs_list_filters(server: MeshcaProcess, workdir: Path) -> None:
    first, second = issue(server, "listing", "alpha"), issue(server, "listing", "beta")
    other = issue(server, "elsewhere", "alpha")

    human = ok(admin(server, workdir, "certs", "list", "--namespace", "listing")).stdout
    assert first in human and second in human and other not in human
    assert spiffe("listing", "alpha") in human and spiffe("listing", "beta") in human
    assert "active" in human and "2 certificates" in human

    by_account = ok(admin(server, workdir, "certs", "list", "--service-account", "alpha",
                          "--json")).json()
    assert {first, other} <= {item["serial"] for item in by_account["items"]}
    assert second not in {item["serial"] for item in by_account["items"]}

    by_prefix = ok(admin(server, workdir, "certs", "list", "--spiffe-id-prefix",
                         "spiffe://cluster.local/ns/listing/sa/b", "--json")).json()
    assert [item["serial"] for item in by_prefix["items"]] == [second]

    none = ok(admin(server, workdir, "certs", "list", "--namespace", "listing",
                    "--expiring-before", "2000-01-01T00:00:00Z"))
    assert "no certificates match" in none.stdout
    soon = ok(admin(server, workdir, "certs", "list", "--namespace", "listing",
                    "--expiring-before", "30d", "--json")).json()
    assert len(soon["items"]) == 2


def test_certs_list_json_matches_the_api(server: MeshcaProcess, workdir: Path) -> None:
    issue(server, "jsonlist", "web")
    printed = ok(admin(server, workdir, "certs", "list", "--namespace", "jsonlist", "--json")).json()
    assert printed == api(server, "/v1/certificates?namespace=jsonlist")
    assert printed["next_cursor"] is None and len(printed["items"]) == 1


def test_certs_show(server: MeshcaProcess, workdir: Path) -> None:
    serial = issue(server, "showing", "web")
    human = ok(admin(server, workdir, "certs", "show", serial)).stdout
    detail = api(server, f"/v1/certificates/{serial}")
    for value in (serial, spiffe("showing", "web"), detail["fingerprint_sha256"], "showing", "active"):
        assert value in human
    assert "BEGIN CERTIFICATE" not in human

    assert ok(admin(server, workdir, "certs", "show", serial, "--json")).json() == detail
    pem = ok(admin(server, workdir, "certs", "show", serial, "--pem")).stdout
    assert x509.load_pem_x509_certificate(pem.encode()).serial_number == int(serial, 16)
    # OpenSSL's upper-case, colon-separated form names the same certificate
    openssl_form = ":".join(serial.upper()[i:i + 2] for i in range(0, len(serial), 2))
    assert serial in ok(admin(server, workdir, "certs", "show", openssl_form)).stdout


def test_revoke_then_show(server: MeshcaProcess, workdir: Path) -> None:
    serial = issue(server, "revoking", "web")
    revoked = ok(admin(server, workdir, "certs", "revoke", serial, "--reason", "keyCompromise"))
    assert f"revoked {serial}" in revoked.stdout and "keyCompromise" in revoked.stdout

    human = ok(admin(server, workdir, "certs", "show", serial)).stdout
    assert "revoked (keyCompromise)" in human and "Revoked at" in human
    detail = ok(admin(server, workdir, "certs", "show", serial, "--json")).json()
    assert detail["revocation_reason"] == "keyCompromise" and detail["revoked_at"]

    inactive = ok(admin(server, workdir, "certs", "list", "--namespace", "revoking", "--inactive"))
    assert serial in inactive.stdout
    active = ok(admin(server, workdir, "certs", "list", "--namespace", "revoking", "--active"))
    assert "no certificates match" in active.stdout

    again = admin(server, workdir, "certs", "revoke", serial, "--reason", "superseded")
    assert again.rc == 1
    assert again.stderr.startswith("meshca: 409 Conflict:") and "already revoked" in again.stderr


def test_revoke_json(server: MeshcaProcess, workdir: Path) -> None:
    serial = issue(server, "revoking-json", "web")
    body = ok(admin(server, workdir, "certs", "revoke", serial, "--reason", "superseded",
                    "--json")).json()
    assert body["serial"] == serial and body["revocation_reason"] == "superseded"
    assert "certificate_pem" not in body


def test_pagination_walks_every_page(server: MeshcaProcess, workdir: Path) -> None:
    serials = [issue(server, "paging", f"sa{i}") for i in range(5)]

    one_page = ok(admin(server, workdir, "certs", "list", "--namespace", "paging", "--limit", "2",
                        "--json")).json()
    assert len(one_page["items"]) == 2 and one_page["next_cursor"]

    every = ok(admin(server, workdir, "certs", "list", "--namespace", "paging", "--limit", "2",
                     "--all", "--json")).json()
    assert [item["serial"] for item in every["items"]] == serials  # issue order, no repeats
    assert every["next_cursor"] is None

    human = ok(admin(server, workdir, "certs", "list", "--namespace", "paging", "--limit", "2",
                     "--all"))
    assert all(serial in human.stdout for serial in serials) and "5 certificates" in human.stdout
    assert "--all" not in human.stderr

    first = ok(admin(server, workdir, "certs", "list", "--namespace", "paging", "--limit", "2"))
    assert sum(serial in first.stdout for serial in serials) == 2
    assert "--all" in first.stderr and one_page["next_cursor"] in first.stderr

    rest = ok(admin(server, workdir, "certs", "list", "--namespace", "paging", "--limit", "2",
                    "--cursor", one_page["next_cursor"], "--all", "--json")).json()
    assert [item["serial"] for item in rest["items"]] == serials[2:]


# ---- identities ---------------------------------------------------------------------------

def test_block_and_unblock_an_identity(server: MeshcaProcess, workdir: Path) -> None:
    identity = spiffe("blocking", "web")
    blocked = ok(admin(server, workdir, "identities", "block", identity, "--reason", "stolen [key]"))
    assert f"blocked {identity}" in blocked.stdout

    listing = ok(admin(server, workdir, "identities", "blocked")).stdout
    line = next(line for line in listing.splitlines() if identity in line)
    assert "stolen [key]" in line and "token:bootstrap-admin" in line
    as_json = ok(admin(server, workdir, "identities", "blocked", "--json")).json()
    assert as_json == api(server, "/v1/identities:blocked")
    assert {"spiffe_id": identity, "reason": "stolen [key]"}.items() <= next(
        item for item in as_json if item["spiffe_id"] == identity).items()

    with pytest.raises(grpc.RpcError) as refused:
        issue(server, "blocking", "web")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    twice = admin(server, workdir, "identities", "block", identity)
    assert twice.rc == 1 and "409 Conflict" in twice.stderr

    assert ok(admin(server, workdir, "identities", "unblock", identity, "--json")).json() == {
        "status": "unblocked"}
    assert identity not in ok(admin(server, workdir, "identities", "blocked")).stdout
    issue(server, "blocking", "web")

    again = admin(server, workdir, "identities", "unblock", identity)
    assert again.rc == 1 and again.stderr.startswith("meshca: 404 Not Found:")

    bad = admin(server, workdir, "identities", "block", "not-a-spiffe-id")
    assert bad.rc == 1 and bad.stderr.startswith("meshca: 4")  # 400 or 422, by the API's version
    assert "spiffe" in bad.stderr.lower()


# ---- audit --------------------------------------------------------------------------------

def test_audit(server: MeshcaProcess, workdir: Path) -> None:
    identity = spiffe("auditing", "web")
    ok(admin(server, workdir, "identities", "block", identity, "--reason", "audit-me"))
    ok(admin(server, workdir, "identities", "unblock", identity))

    human = ok(admin(server, workdir, "audit", "--all")).stdout
    block_line = next(line for line in human.splitlines() if "identity.block" in line and identity in line)
    assert "token:bootstrap-admin" in block_line and "ok" in block_line and "audit-me" in block_line
    assert "admin-token.create" in human and "bootstrap-admin" in human

    walked = ok(admin(server, workdir, "audit", "--limit", "2", "--all", "--json")).json()
    ids = [entry["id"] for entry in walked["items"]]
    assert len(ids) > 2 and ids == sorted(set(ids)) and walked["next_cursor"] is None
    first = ok(admin(server, workdir, "audit", "--limit", "2", "--json")).json()
    assert first == api(server, "/v1/audit?limit=2")
    assert [entry["id"] for entry in first["items"]] == ids[:2]


# ---- tokens and roles ---------------------------------------------------------------------

def test_viewer_token_reads_but_cannot_revoke(server: MeshcaProcess, workdir: Path,
                                              tmp_path: Path) -> None:
    serial = issue(server, "viewer", "web")
    created = ok(admin(server, workdir, "token", "create", "--role", "viewer", "--name", "cli-viewer"))
    token = created.stdout.strip()
    assert token.startswith("mca_") and "\n" not in token
    assert "cli-viewer" in created.stderr and "only time" in created.stderr
    token_file = tmp_path / "viewer-token"
    token_file.write_text(token + "\n")
    remote = ("--server", f"https://{server.admin_addr}", "--token-file", str(token_file),
              "--ca-file", str(server.data_dir / "root-cert.pem"))

    listing = ok(cli("certs", "list", "--namespace", "viewer", *remote, cwd=workdir))
    assert serial in listing.stdout

    refused = cli("certs", "revoke", serial, "--reason", "superseded", *remote, cwd=workdir)
    assert refused.rc == 1
    assert refused.stderr.startswith("meshca: 403 Forbidden:")
    assert "token:cli-viewer has role viewer; this needs operator" in refused.stderr
    assert "active" in ok(admin(server, workdir, "certs", "show", serial)).stdout

    tokens = ok(admin(server, workdir, "token", "list")).stdout
    line = next(line for line in tokens.splitlines() if line.startswith("cli-viewer"))
    assert "viewer" in line and "token:bootstrap-admin" in line and "active" in line
    assert token not in tokens

    assert "revoked admin token cli-viewer" in ok(admin(server, workdir, "token", "revoke",
                                                        "cli-viewer")).stdout
    after = cli("certs", "list", *remote, cwd=workdir)
    assert after.rc == 1 and after.stderr.startswith("meshca: 401 Unauthorized:")
    assert "unknown or revoked" in after.stderr
    assert f"(the token was read from {token_file})" in after.stderr

    listed = ok(admin(server, workdir, "token", "list", "--json")).json()
    assert listed == api(server, "/v1/admin-tokens")
    entry = next(item for item in listed if item["name"] == "cli-viewer")
    assert entry["role"] == "viewer" and entry["revoked_at"]


def test_token_create_json_and_conflicts(server: MeshcaProcess, workdir: Path) -> None:
    created = ok(admin(server, workdir, "token", "create", "--role", "operator", "--name",
                       "cli-operator", "--json")).json()
    assert created["name"] == "cli-operator" and created["role"] == "operator"
    assert created["token"].startswith("mca_")

    taken = admin(server, workdir, "token", "create", "--role", "viewer", "--name", "cli-operator")
    assert taken.rc == 1 and "409 Conflict" in taken.stderr

    bad_name = admin(server, workdir, "token", "create", "--role", "viewer", "--name", "no spaces")
    assert bad_name.rc == 1 and "422" in bad_name.stderr
    assert "  body.name: " in bad_name.stderr  # the field error, on its own line

    unknown = admin(server, workdir, "token", "revoke", "never-created")
    assert unknown.rc == 1 and "404 Not Found" in unknown.stderr

    bad_role = admin(server, workdir, "token", "create", "--role", "root", "--name", "x")
    assert bad_role.rc == 2 and "invalid choice" in bad_role.stderr


# ---- where the server is ------------------------------------------------------------------

def test_data_dir_from_environment(server: MeshcaProcess, workdir: Path) -> None:
    result = ok(cli("ca", "--json", cwd=workdir, env=_env(MESHCA_DATA_DIR=str(server.data_dir))))
    assert result.json() == api(server, "/v1/ca")


def test_server_without_ca_file_fails_verification(server: MeshcaProcess, workdir: Path) -> None:
    result = cli("ca", "--server", f"https://{server.admin_addr}",
                 "--token-file", str(server.data_dir / "admin-token"), cwd=workdir)
    assert result.rc == 1
    assert "TLS verification failed" in result.stderr and "--ca-file" in result.stderr


# ---- bad inputs ---------------------------------------------------------------------------

def test_unknown_serial_is_404(server: MeshcaProcess, workdir: Path) -> None:
    for command in (("certs", "show", "deadbeef"),
                    ("certs", "revoke", "deadbeef", "--reason", "superseded")):
        result = admin(server, workdir, *command)
        assert result.rc == 1 and result.stdout == ""
        assert result.stderr.startswith("meshca: 404 Not Found:") and "deadbeef" in result.stderr


def test_argument_errors_exit_2(server: MeshcaProcess, workdir: Path) -> None:
    bad_reason = admin(server, workdir, "certs", "revoke", "abc123", "--reason", "becauseISaidSo")
    assert bad_reason.rc == 2 and "invalid choice" in bad_reason.stderr
    assert "keyCompromise" in bad_reason.stderr
    missing_reason = admin(server, workdir, "certs", "revoke", "abc123")
    assert missing_reason.rc == 2 and "--reason" in missing_reason.stderr
    bad_serial = admin(server, workdir, "certs", "show", "not-hex")
    assert bad_serial.rc == 2 and "serial" in bad_serial.stderr
    naive_time = admin(server, workdir, "certs", "list", "--expiring-before", "2030-01-01T00:00:00")
    assert naive_time.rc == 2 and "time zone" in naive_time.stderr
    both = admin(server, workdir, "certs", "list", "--active", "--inactive")
    assert both.rc == 2 and "not allowed with" in both.stderr
    big = admin(server, workdir, "audit", "--limit", "5000")
    assert big.rc == 2 and "--limit" in big.stderr
    plain_http = cli("ca", "--server", "http://127.0.0.1:1", cwd=workdir)
    assert plain_http.rc == 2 and "HTTPS" in plain_http.stderr


def test_missing_data_dir(workdir: Path) -> None:
    default = cli("certs", "list", cwd=workdir)
    assert default.rc == 1 and default.stdout == ""
    assert default.stderr == ("meshca: data directory meshca-data does not exist; pass --data-dir "
                              "(or env MESHCA_DATA_DIR) or --server\n")
    named = cli("ca", "--data-dir", str(workdir / "nowhere"), cwd=workdir)
    assert named.rc == 1 and str(workdir / "nowhere") in named.stderr


def test_data_dir_without_a_running_server(workdir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    no_endpoints = cli("ca", "--data-dir", str(data_dir), cwd=workdir)
    assert no_endpoints.rc == 1 and str(data_dir / "endpoints.json") in no_endpoints.stderr

    (data_dir / "endpoints.json").write_text(json.dumps({"admin": "127.0.0.1:1"}))
    no_token = cli("ca", "--data-dir", str(data_dir), cwd=workdir)
    assert no_token.rc == 1 and str(data_dir / "admin-token") in no_token.stderr

    (data_dir / "admin-token").write_text("mca_whatever\n")
    no_bundle = cli("ca", "--data-dir", str(data_dir), cwd=workdir)
    assert no_bundle.rc == 1 and str(data_dir / "root-cert.pem") in no_bundle.stderr

    (data_dir / "root-cert.pem").write_text("not a certificate\n")
    bad_bundle = cli("ca", "--data-dir", str(data_dir), cwd=workdir)
    assert bad_bundle.rc == 1
    assert bad_bundle.stderr.startswith(f"meshca: cannot load the trust bundle {data_dir / 'root-cert.pem'}")


def test_connection_refused(server: MeshcaProcess, workdir: Path) -> None:
    result = cli("ca", "--server", "https://127.0.0.1:1", "--token-file",
                 str(server.data_dir / "admin-token"), "--ca-file",
                 str(server.data_dir / "root-cert.pem"), cwd=workdir)
    assert result.rc == 1
    assert result.stderr == ("meshca: cannot reach meshca at https://127.0.0.1:1: "
                             "connection refused; is `meshca serve` running?\n")


@pytest.mark.parametrize(("bound", "url"), [("0.0.0.0:1", "https://localhost:1"),
                                           ("::1:1", "https://[::1]:1")])
def test_endpoint_address_becomes_a_url(server: MeshcaProcess, workdir: Path, tmp_path: Path,
                                        bound: str, url: str) -> None:
    """A wildcard bind address is reached as localhost; an IPv6 one gets brackets."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "endpoints.json").write_text(json.dumps({"admin": bound}))
    (data_dir / "admin-token").write_text("mca_whatever\n")
    (data_dir / "root-cert.pem").write_bytes(server.bundle_pem)
    result = cli("ca", "--data-dir", str(data_dir), cwd=workdir)
    assert result.rc == 1
    assert result.stderr.startswith(f"meshca: cannot reach meshca at {url}: "), result.stderr


def test_empty_token_file(server: MeshcaProcess, workdir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    result = admin(server, workdir, "ca", "--token-file", str(empty))
    assert result.rc == 1 and str(empty) in result.stderr and "empty" in result.stderr
