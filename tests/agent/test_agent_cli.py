"""`meshca agent` as an operator meets it: its help, and start-up refusals that say what is
wrong (exit 2, for flags that do not fit and for a configuration it cannot start with alike)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meshca.agent.settings import AgentSettings
from meshca.cli.agent_args import agent_settings_from
from meshca.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]


def agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshca", "agent", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_help_explains_the_agent_and_every_group() -> None:
    shown = agent("--help")
    assert shown.returncode == 0
    for words in ("SPIFFE_ENDPOINT_SOCKET", "--trusted-node-account", "workload sockets",
                  "meshca server", "workload attestation", "SVIDs and bundles", "operations",
                  "--kubelet-insecure", "MESHCA_SOCKET", "examples:"):
        assert words in shown.stdout, words


def test_defaults_are_those_of_a_kubernetes_node() -> None:
    settings = agent_settings_from(build_parser().parse_args(["agent"]))
    assert settings == AgentSettings()
    assert str(settings.socket) == "/run/meshca/agent.sock"
    assert settings.attestor == "kubernetes"
    assert settings.verified_server_name == "meshca.meshca-system.svc"


def test_environment_variables_set_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCA_SDS_SOCKET", "off")
    monkeypatch.setenv("MESHCA_SVID_TTL", "1h")
    settings = agent_settings_from(build_parser().parse_args(["agent"]))
    assert settings.sds_socket is None
    assert settings.svid_ttl is not None and settings.svid_ttl.total_seconds() == 3600


@pytest.mark.parametrize(("args", "message"), [
    (["--attestor", "unix"], "needs at least one --workload"),
    (["--workload", "w=uid:1=spiffe://cluster.local/ns/a/sa/b"], "are for --attestor unix"),
    (["--server", "no-port"], "is not HOST:PORT"),
    (["--sds-socket", "/run/meshca/agent.sock"], "must differ from --socket"),
    (["--svid-ttl", "2s"], "at least 10s"),
    (["--attestor", "ldap"], "invalid choice"),
    (["--trust-domain", "Not A Domain"], "trust domain"),
])
def test_flags_that_do_not_fit_are_refused_before_anything_starts(args: list[str], message: str) -> None:
    refused = agent(*args)
    assert refused.returncode == 2
    assert message in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_missing_token_file_stops_the_agent_with_a_clear_message(tmp_path: Path) -> None:
    refused = agent("--attestor", "unix", "--workload", "w=uid:0=spiffe://cluster.local/ns/a/sa/b",
                    "--token-file", str(tmp_path / "nope"), "--socket", str(tmp_path / "a.sock"),
                    "--sds-socket", "off", "--health-addr", "off")
    assert refused.returncode == 2
    assert "--token-file" in refused.stderr and "No such file" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_unix_entry_the_server_cannot_sign_is_refused_at_start(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x")
    refused = agent("--attestor", "unix", "--workload", "ops=uid:0=spiffe://cluster.local/ops",
                    "--token-file", str(token), "--socket", str(tmp_path / "a.sock"),
                    "--sds-socket", "off", "--health-addr", "off")
    assert refused.returncode == 2
    assert "signs only" in refused.stderr and "ns/<namespace>/sa/" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_cli_does_not_load_the_workload_api_protos() -> None:
    """The PyPI `spiffe` client and meshca's Workload API modules cannot share a process; the
    CLI (imported by tests and tools beside that client) must not load them until it runs."""
    probe = ("import sys, meshca.cli.main; "
             "print(any(m.startswith('meshca.gen.spiffe') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"



def test_bundle_source_choice() -> None:
    # (The wiring itself is not imported here: it pulls in meshca's Workload API protos, which
    # cannot share a process with py-spiffe's; the end-to-end tests run every source.)
    def source(*args: str) -> str:
        return agent_settings_from(build_parser().parse_args(["agent", *args])) \
            .effective_bundle_source

    assert source() == "server"
    assert source("--bundle-source", "file") == "file"
    url = ("--bundle-url", "https://meshca:8443/v1/bundle")
    assert source(*url) == source("--bundle-source", "url", *url) == "url"
    for refused in (("--bundle-source", "url"), ("--bundle-source", "file", *url)):
        with pytest.raises(ValueError, match="bundle"):
            source(*refused)
