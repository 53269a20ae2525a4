"""docs/use-your-certificate.md as written: mutual TLS between two meshca identities with
OpenSSL's s_server and s_client, curl presenting a certificate to the admin API, Python's `ssl`
on both ends, and py-spiffe reading the files."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.docs.doc_server import ROOT, DocServer, command_lines, start_documented
from tests.docs.markdown import marked_blocks, shell_commands

PAGE = "use-your-certificate.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocServer]:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("scripts/run uses the clone's .venv; make it with scripts/test first")
    [serve] = command_lines(marked_blocks(PAGE)["serve"].text)
    running = start_documented(serve, tmp_path_factory.mktemp("clone"))
    running.sh(shell_commands(marked_blocks(PAGE)["identities"]))
    yield running
    running.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def s_server(server: DocServer) -> Iterator[int]:
    """The page's `openssl s_server`, on a free port instead of 8444."""
    port = _free_port()
    [command] = command_lines(shell_commands(marked_blocks(PAGE)["s_server"]))
    assert "127.0.0.1:8444" in command
    process = subprocess.Popen(["bash", "-c", "exec " + command.replace("8444", str(port))],
                               cwd=server.workdir, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "s_server did not start"
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(10)


def test_openssl_mutual_tls(server: DocServer, s_server: int) -> None:
    client = shell_commands(marked_blocks(PAGE)["s_client"]).replace("8444", str(s_server))
    done = server.sh(client, timeout=30)
    assert "URI:spiffe://cluster.local/ns/default/sa/api" in done.stdout
    assert "Verify return code: 0 (ok)" in done.stdout


def test_openssl_server_refuses_a_client_without_a_certificate(server: DocServer, s_server: int) -> None:
    anonymous = (f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | openssl s_client -quiet"
                 f" -connect 127.0.0.1:{s_server} -CAfile api/root-cert.pem -verify_return_error")
    done = server.sh(anonymous, timeout=30, check=False)
    assert "URI:spiffe" not in done.stdout
    assert "Verify return code: 0 (ok)" not in done.stdout
    assert "certificate required" in done.stderr


def test_curl_presents_the_certificate_to_the_admin_api(server: DocServer) -> None:
    curl = shell_commands(marked_blocks(PAGE)["curl"])
    done = server.sh(curl.replace("curl ", "curl -sS --fail-with-body ", 1))
    assert '"generations"' in done.stdout
    # the same call as another identity, not mapped to a role, is refused
    other = server.sh(curl.replace("web/", "api/")
                      .replace("curl ", "curl -sS -o /dev/null -w '%{http_code}' ", 1), check=False)
    assert other.stdout == "403"


def test_python_ssl_example(server: DocServer) -> None:
    block = marked_blocks(PAGE)["python-ssl"]
    assert block.lang == "python"
    done = subprocess.run([sys.executable, "-c", block.text], cwd=server.workdir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello spiffe://cluster.local/ns/default/sa/api"


def test_python_ssl_example_refuses_the_wrong_peer(server: DocServer) -> None:
    """The example's SPIFFE ID check bites: with the client expecting another server ID it stops."""
    text = marked_blocks(PAGE)["python-ssl"].text.replace(
        'EXPECTED_SERVER = "spiffe://cluster.local/ns/default/sa/web"',
        'EXPECTED_SERVER = "spiffe://cluster.local/ns/default/sa/db"')
    done = subprocess.run([sys.executable, "-c", text], cwd=server.workdir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "not the server we meant to reach" in done.stderr


def test_py_spiffe_example(server: DocServer) -> None:
    done = subprocess.run([sys.executable, "-c", marked_blocks(PAGE)["py-spiffe"].text],
                          cwd=server.workdir, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    spiffe_id, _, rest = done.stdout.partition(" ")
    assert spiffe_id == "spiffe://cluster.local/ns/default/sa/web"
    assert rest.split()[-1] == "1"  # one root in the bundle
