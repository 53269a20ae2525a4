"""/metrics as scrapers read it: Prometheus' own Python parser types every family as meshca
means it (no `unknown`), Istio's counters keep their exact names, and promtool (when
installed) accepts the exposition."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import MeshcaProcess, csr_pem

ISTIO_COUNTERS = ("citadel_server_csr_count", "citadel_server_success_cert_issuance_count",
                  "citadel_server_authentication_failure_count", "citadel_server_csr_sign_err_count")


def _scrape(server: MeshcaProcess) -> str:
    with urllib.request.urlopen(f"http://{server.metrics_addr}/metrics", timeout=10) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def exposition(meshca: MeshcaProcess) -> str:
    # A success, a refusal and a bad request: every Istio family has samples.
    meshca.create_certificate(csr_pem())
    with pytest.raises(grpc.RpcError):
        meshca.create_certificate(csr_pem(), token="not-a-token")
    with pytest.raises(grpc.RpcError):
        meshca.create_certificate("not a CSR")
    return _scrape(meshca)


def test_every_family_is_typed_and_istio_counters_keep_their_names(exposition: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    untyped = sorted(name for name, f in families.items() if f.type in ("unknown", "untyped"))
    assert untyped == [], f"families the parser could not type: {untyped}"
    for name in ISTIO_COUNTERS:
        assert families[name].type == "counter", name
        assert f"# TYPE {name} counter\n" in exposition
    lines = exposition.splitlines()
    # The samples themselves carry Istio's names, with no `_total`.
    assert any(line.startswith("citadel_server_csr_count ") for line in lines)
    assert any(line.startswith('citadel_server_csr_sign_err_count{error="invalid_argument"} ')
               for line in lines)
    assert not any(line.startswith("citadel_server_csr_count_total") for line in lines)
    assert families["citadel_server_root_cert_expiry_timestamp"].type == "gauge"
    assert families["meshca_issuance_duration_seconds"].type == "histogram"
    assert families["meshca_authentication_failures"].type == "counter"
    issued = families["citadel_server_success_cert_issuance_count"].samples
    assert [(s.name, s.value) for s in issued] == [("citadel_server_success_cert_issuance_count_total", 1.0)]


def test_every_type_line_names_a_family_that_has_its_samples(exposition: str) -> None:
    """The mismatch the parser tripped on: `# TYPE x_total counter` above samples named x."""
    lines = exposition.splitlines()
    typed = [line.split()[2] for line in lines if line.startswith("# TYPE ")]
    samples = {line.split("{")[0].split(" ")[0] for line in lines if line and not line.startswith("#")}
    for name in typed:
        follows = {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        owned = [s for s in samples if s in follows]
        families_without_samples = owned == [] and not any(s.startswith(name) for s in samples)
        assert owned or families_without_samples, f"# TYPE {name} has no sample named after it"


def test_promtool_accepts_the_exposition(exposition: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's `prometheus` package, ~100 MB; "
                    "scripts/test installs it when MESHCA_TEST_PROMTOOL=1)")
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, text=True,
                            capture_output=True, timeout=60, check=False)
    # promtool's naming lint dislikes a `_count` suffix on a counter; Istio's names are kept
    # exactly as Istio has them, so only those complaints are expected. A parse error, or a
    # lint complaint about any other family, fails.
    output = (result.stdout + result.stderr).splitlines()
    problems = [line for line in output if line.strip() and not (
        line.split()[0] in ISTIO_COUNTERS and "suffix" in line)]
    assert problems == [], "\n".join(problems)


def test_the_process_families_describe_the_process_that_answers(meshca: MeshcaProcess,
                                                                 exposition: str) -> None:
    """Stock dashboards read `process_*` and `python_gc_*`: they must be there, typed, and be the
    serving process's own figures (its RSS as /proc tells it, not a constant)."""
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    rss = families["process_resident_memory_bytes"]
    assert rss.type == "gauge"
    status = dict(line.split(":", 1) for line in
                  open(f"/proc/{meshca.process.pid}/status").read().splitlines() if ":" in line)
    proc_rss = int(status["VmRSS"].split()[0]) * 1024
    # Scraped a moment apart: within a quarter, and far from zero or another process's size.
    assert 0.75 * proc_rss < rss.samples[0].value < 1.25 * proc_rss
    assert families["process_open_fds"].samples[0].value > 0
    collections = {s.labels["generation"]: s.value for s in families["python_gc_collections"].samples}
    assert families["python_gc_collections"].type == "counter"
    assert set(collections) == {"0", "1", "2"} and collections["0"] > 0
    assert families["python_info"].samples[0].labels["implementation"] == "CPython"
