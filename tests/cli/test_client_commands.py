"""The client commands as a new user meets them, run as subprocesses against a real server:
options anywhere, `identities list`, `ca` = `admin ca`, serials in any common spelling,
one "cannot reach meshca" line for every client command, and a next step after every 409."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import insert, select

from meshca.infra.db.engine import open_engine
from meshca.infra.db.schema import issued_certificates
from tests.cli.clitools import clean_env, meshca, ok
from tests.support import MeshcaProcess, csr_pem, start_meshca


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshcaProcess]:
    process = start_meshca(tmp_path_factory.mktemp("client-cli") / "data")
    yield process
    process.stop()


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    return tmp_path


def _issue(server: MeshcaProcess, account: str) -> str:
    chain = server.create_certificate(csr_pem(), token=server.token("cli", account))
    return f"{x509.load_pem_x509_certificate(chain[0].encode()).serial_number:x}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---- options anywhere; names ------------------------------------------------------------------

@pytest.mark.parametrize("words", [
    ("admin", "{dd}", "certs", "list"),          # before the resource
    ("admin", "certs", "{dd}", "list"),          # between resource and action
    ("admin", "certs", "list", "{dd}"),          # after the action
])
def test_connection_options_are_accepted_anywhere(server: MeshcaProcess, cwd: Path,
                                                  words: tuple[str, ...]) -> None:
    _issue(server, "anywhere")
    args: list[str] = []
    for word in words:
        args += ["--data-dir", str(server.data_dir), "--json"] if word == "{dd}" else [word]
    assert ok(meshca(*args, cwd=cwd)).json()["items"]


def test_server_and_token_given_before_the_command(server: MeshcaProcess, cwd: Path) -> None:
    result = ok(meshca("admin", "--server", f"https://{server.admin_addr}", "--token-file",
                       str(server.data_dir / "admin-token"), "--ca-file",
                       str(server.data_dir / "root-cert.pem"), "ca", "status", "--json", cwd=cwd))
    assert result.json()["generations"]


def test_a_leaf_value_wins_over_the_same_option_higher_up(server: MeshcaProcess, cwd: Path) -> None:
    result = meshca("admin", "--data-dir", str(cwd / "nowhere"), "ca", "--data-dir",
                    str(server.data_dir), cwd=cwd)
    assert result.rc == 0, result.stderr


def test_identities_list_like_certs_list(server: MeshcaProcess, cwd: Path) -> None:
    identity = "spiffe://cluster.local/ns/cli/sa/listed"
    ok(meshca("admin", "identities", "block", identity, "--data-dir", str(server.data_dir), cwd=cwd))
    listed = ok(meshca("admin", "identities", "list", "--data-dir", str(server.data_dir), cwd=cwd))
    assert identity in listed.stdout
    old_name = ok(meshca("admin", "identities", "blocked", "--data-dir", str(server.data_dir),
                         cwd=cwd))
    assert old_name.stdout == listed.stdout


def test_ca_and_admin_ca_are_the_same_command(server: MeshcaProcess, cwd: Path) -> None:
    data = ["--data-dir", str(server.data_dir), "--json"]
    outputs = [ok(meshca(*words, *data, cwd=cwd)).json() for words in
               (("ca",), ("ca", "status"), ("admin", "ca"), ("admin", "ca", "status"))]
    assert all(output == outputs[0] for output in outputs)
    helped = ok(meshca("admin", "ca", "--help", cwd=cwd)).stdout
    assert "prepare" in helped and "activate" in helped and "taint" in helped


# ---- serials ----------------------------------------------------------------------------------

def test_serials_in_every_common_spelling(server: MeshcaProcess, cwd: Path) -> None:
    serial = _issue(server, "spelling")
    openssl_form = f"{int(serial, 16):X}"  # `openssl x509 -serial`: upper case, even length
    openssl_form = ("0" * (len(openssl_form) % 2)) + openssl_form
    colons = ":".join(openssl_form[i:i + 2] for i in range(0, len(openssl_form), 2))
    for spelling in (serial, serial.upper(), f"serial={openssl_form}", colons, serial[:8],
                     serial[:12].upper()):
        shown = ok(meshca("admin", "certs", "show", spelling, "--json", "--data-dir",
                          str(server.data_dir), cwd=cwd)).json()
        assert shown["serial"] == serial, spelling


def test_a_prefix_shorter_than_eight_digits_is_not_guessed(server: MeshcaProcess, cwd: Path) -> None:
    serial = _issue(server, "short")
    result = meshca("admin", "certs", "show", serial[:7], "--data-dir", str(server.data_dir), cwd=cwd)
    assert result.rc == 1 and "404" in result.stderr


def test_an_ambiguous_prefix_is_refused_with_the_candidates(server: MeshcaProcess, cwd: Path) -> None:
    serial = _issue(server, "twin")
    twin = serial[:10] + ("0" if serial[10] != "0" else "1") + serial[11:]
    engine = open_engine(server.database_url)
    try:
        with engine.begin() as connection:
            row = dict(connection.execute(select(issued_certificates).where(
                issued_certificates.c.serial == serial)).mappings().one())
            connection.execute(insert(issued_certificates).values({**row, "serial": twin}))
    finally:
        engine.dispose()
    result = meshca("admin", "certs", "revoke", serial[:9], "--reason", "superseded",
                    "--data-dir", str(server.data_dir), cwd=cwd)
    assert result.rc == 1
    assert f"serial prefix {serial[:9]} is ambiguous" in result.stderr
    assert serial in result.stderr and twin in result.stderr
    assert "give more digits" in result.stderr
    # Enough digits to tell them apart: it works.
    ok(meshca("admin", "certs", "show", serial[:11], "--data-dir", str(server.data_dir), cwd=cwd))


def test_a_serial_that_is_not_hex_is_an_argument_error(cwd: Path) -> None:
    result = meshca("admin", "certs", "show", "3ec31g", cwd=cwd)
    assert result.rc == 2 and "is not a certificate serial" in result.stderr


# ---- cannot reach meshca ----------------------------------------------------------------------

def test_every_client_command_says_the_same_when_meshca_is_down(server: MeshcaProcess,
                                                                cwd: Path) -> None:
    port = _free_port()
    admin = ["--server", f"https://127.0.0.1:{port}", "--token-file",
             str(server.data_dir / "admin-token"), "--ca-file", str(server.data_dir / "root-cert.pem")]
    commands = [
        ("request", "--data-dir", str(server.data_dir), "--namespace", "cli", "--service-account",
         "down", "--out", str(cwd / "out"), "--addr", f"127.0.0.1:{port}"),
        ("admin", "certs", "list", *admin),
        ("ca", "status", *admin),
        ("admin", "policies", "list", *admin),
    ]
    for command in commands:
        result = meshca(*command, cwd=cwd, env=clean_env())
        assert result.rc == 1, command
        assert "cannot reach meshca at " in result.stderr and f"127.0.0.1:{port}" in result.stderr
        assert "is `meshca serve` running?" in result.stderr, result.stderr
        assert "UNAVAILABLE" not in result.stderr and "Traceback" not in result.stderr


# ---- 409s say what to do next -----------------------------------------------------------------

def test_a_409_says_what_to_do_next(server: MeshcaProcess, cwd: Path) -> None:
    data = ["--data-dir", str(server.data_dir)]
    serial = _issue(server, "conflicts")
    ok(meshca("admin", "certs", "revoke", serial, "--reason", "superseded", *data, cwd=cwd))
    twice = meshca("admin", "certs", "revoke", serial, "--reason", "superseded", *data, cwd=cwd)
    assert twice.rc == 1 and "409" in twice.stderr
    assert f"next: nothing to do; `meshca admin certs show {serial}`" in twice.stderr

    ok(meshca("ca", "prepare", "root", *data, cwd=cwd))
    early = meshca("ca", "activate", "root", *data, cwd=cwd)
    assert early.rc == 1 and "409" in early.stderr
    assert "--waive-publish-lead" in early.stderr, early.stderr
    again = meshca("ca", "prepare", "root", *data, cwd=cwd)  # one root waits already
    assert again.rc == 1 and "409" in again.stderr and "is already prepared" in again.stderr
    assert "next: activate it: `meshca ca activate root`, or withdraw it" in again.stderr, again.stderr
    none_prepared = meshca("ca", "activate", "intermediate", *data, cwd=cwd)
    assert none_prepared.rc == 1
    assert "next: prepare one first: `meshca ca prepare intermediate`" in none_prepared.stderr
