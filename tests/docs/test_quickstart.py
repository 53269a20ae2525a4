"""The quick start, word for word: `scripts/run` as written, then each documented command in a
directory laid out like the clone's top, against that server."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from meshca.gen.istio.v1.auth import ca_pb2, ca_pb2_grpc
from tests.docs.doc_server import ROOT, DocServer, command_lines, start_documented, words
from tests.docs.markdown import code_blocks, marked_blocks, shell_commands

PAGE = "quickstart.md"
WEB = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocServer]:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("scripts/run uses the clone's .venv; make it with scripts/test first")
    start = command_lines(marked_blocks(PAGE)["start"].text)
    assert [words(line) for line in start] == [["scripts/run"], ["scripts/test"]], start
    # scripts/test is the suite itself; the quick start's server is scripts/run, as written.
    running = start_documented(start[0], tmp_path_factory.mktemp("clone"))
    yield running
    running.stop()


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    loaded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(loaded, dict)
    return loaded


def test_the_first_run_keeps_its_state_where_the_page_says(server: DocServer) -> None:
    data = server.data_dir
    for name in ("meshca.db", "root-cert.pem", "admin-token", "dev-token-issuer.key"):
        assert (data / name).is_file(), name
    assert (data / "admin-token").stat().st_mode & 0o777 == 0o600
    kek = server.workdir / "meshca-data.kek"
    assert kek.is_file() and kek.stat().st_mode & 0o777 == 0o600
    assert not (data / "meshca-data.kek").exists()


def test_request_a_certificate_as_written(server: DocServer) -> None:
    done = server.sh(shell_commands(marked_blocks(PAGE)["request"]))
    assert f"{WEB} valid until " in done.stdout
    assert "wrote web/cert-chain.pem, key.pem, root-cert.pem" in done.stdout
    assert "web/cert-chain.pem: OK" in done.stdout
    assert (server.workdir / "web" / "key.pem").stat().st_mode & 0o777 == 0o600
    leaf = x509.load_pem_x509_certificates((server.workdir / "web" / "cert-chain.pem").read_bytes())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]


def test_development_tokens_as_written(server: DocServer) -> None:
    tokens = server.sh(shell_commands(marked_blocks(PAGE)["token"])).stdout.split()
    assert len(tokens) == 2
    plain, shaped = (_claims(t) for t in tokens)
    assert plain["sub"] == shaped["sub"] == "system:serviceaccount:default:web"
    assert plain["aud"] == shaped["aud"] == ["istio-ca"]
    assert isinstance(shaped["exp"], int) and isinstance(shaped["iat"], int)
    assert shaped["exp"] - shaped["iat"] == 3600
    assert "web-0" in json.dumps(shaped["kubernetes.io"])


def test_the_grpcurl_recipe(server: DocServer) -> None:
    """Everything the recipe does up to the call runs as written; the call itself runs with
    grpcurl where it is installed, else the same JSON and token go through grpc's own stub."""
    lines = command_lines(shell_commands(marked_blocks(PAGE)["grpcurl"]))
    assert lines[-1].startswith("grpcurl ")
    if shutil.which("grpcurl"):
        done = server.sh(shell_commands(marked_blocks(PAGE)["grpcurl"]))
        chain = json.loads(done.stdout)["certChain"]
    else:
        done = server.sh("\n".join(lines[:-1]) + '\nprintf %s "$TOKEN"')
        request = json.loads((server.workdir / "request.json").read_text())
        assert request["csr"].startswith("-----BEGIN CERTIFICATE REQUEST-----\n")
        import grpc

        credentials = grpc.ssl_channel_credentials((server.data_dir / "root-cert.pem").read_bytes())
        with grpc.secure_channel(server.endpoints["grpc"], credentials,
                                 options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
            response = ca_pb2_grpc.IstioCertificateServiceStub(channel).CreateCertificate(
                ca_pb2.IstioCertificateRequest(csr=request["csr"]),
                metadata=[("authorization", f"Bearer {done.stdout}")], timeout=30)
        chain = list(response.cert_chain)
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    key = (server.workdir / "grpc-key.pem").read_bytes()
    assert b"PRIVATE KEY" in key
    assert len(chain) == 3  # leaf, intermediate, and the bundle as one string


def test_the_page_shows_the_addresses_the_server_uses_by_default() -> None:
    """The quick start names the default ports; the server's defaults must still be those."""
    from meshca.config import Settings

    text = (Path(__file__).resolve().parents[2] / "docs" / PAGE).read_text()
    defaults = Settings()
    for addr in (defaults.grpc_addr, defaults.admin_addr, defaults.metrics_addr):
        assert addr in text, addr


def test_the_readme_quick_start_is_the_tested_one() -> None:
    """README.md repeats the quick start: its commands must be the ones this module runs."""
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):readme.index("\n## ", readme.index("## Quick start") + 1)]
    shown = [command_lines(b.text) for b in code_blocks(quick) if b.lang == "sh"]
    assert shown == [command_lines(marked_blocks(PAGE)["start"].text),
                     command_lines(marked_blocks(PAGE)["request"].text)]


def test_scraping_metrics_as_the_metrics_page_shows(server: DocServer) -> None:
    server.sh(shell_commands(marked_blocks(PAGE)["request"]))  # at least one issuance to count
    # `| head` may close the pipe early, as it does in a terminal: judge by what was printed
    done = server.sh("set +o pipefail\n" + shell_commands(marked_blocks("metrics.md")["scrape"]))
    names = {line.split("{")[0].split()[0] for line in done.stdout.splitlines()}
    assert names and all(n.startswith(("citadel_", "meshca_")) for n in names)
