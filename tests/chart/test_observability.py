"""The chart's Grafana dashboard and Prometheus alerts: well-formed, shipped as the sidecar and
the operator want them, and every metric they name is one meshca exports (read from the
/metrics of a real `meshca serve` that has seen traffic). Alert rules go through `promtool check
rules` and a `promtool test rules` unit test of their own."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.chart.conftest import CHART_DIR, NAMESPACE, Manifest
from tests.chart.kube_schema import check_object
from tests.support import AdminClient, MeshcaProcess, admin_token, csr_pem

DASHBOARD = CHART_DIR / "dashboards" / "meshca.json"
ROOT = CHART_DIR.parents[1]
ON = {"grafanaDashboard": {"enabled": True, "folder": "mesh"},
      "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}}}
# Exported only with a Vault key store (meshca/transport/ca_metrics.py): a server on file keys
# cannot show it, so its name is checked against the source instead.
CONDITIONAL = {"meshca_vault_alert": ROOT / "meshca" / "transport" / "ca_metrics.py"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "time", "histogram_quantile",
    "label_values", "offset", "bool", "abs", "clamp_min", "clamp_max", "topk", "bottomk",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, grouping labels, strings,
    ranges and functions left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {w for w in words - PROMQL_WORDS if not re.fullmatch(r"[0-9.e]+|\$\w+", w)}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def rendered(render: Callable[..., list[Manifest]], kind: str) -> Manifest:
    found = [o for o in render(ON) if o["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def rules(render: Callable[..., list[Manifest]]) -> list[dict[str, Any]]:
    return [r for g in rendered(render, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


# ---- the dashboard ------------------------------------------------------------------------

def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "meshca-overview" and board["title"] == "meshca"
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "bargauge", "table", "gauge"}, panel
        assert panel["title"] and panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        assert all(t["expr"].strip() and t["datasource"] == panel["datasource"]
                   for t in panel["targets"])


def test_dashboard_covers_what_operators_ask() -> None:
    titles = {p["title"] for p in dashboard()["panels"]}
    assert {"Issuance rate", "Issuance latency", "Failures by reason", "Authentication failures",
            "Token cache hit ratio", "Kubernetes API calls", "CA expiry per generation",
            "Rotation events", "Rotation failing / Vault alert", "ext_authz decisions"} <= titles


def test_the_chart_ships_the_dashboard_for_grafanas_sidecar(render: Callable[..., list[Manifest]],
                                                           ) -> None:
    assert not [o for o in render({}) if o["kind"] in ("PrometheusRule", "ConfigMap")]
    config_map = rendered(render, "ConfigMap")
    check_object(config_map, NAMESPACE)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "mesh"}
    assert json.loads(config_map["data"]["meshca.json"]) == dashboard()


# ---- the alerts ---------------------------------------------------------------------------

def test_the_chart_ships_one_rule_per_alert_with_its_runbook(render: Callable[..., list[Manifest]],
                                                             ) -> None:
    rule = rendered(render, "PrometheusRule")
    check_object(rule, NAMESPACE)
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    names = [r["alert"] for r in rules(render)]
    assert names == ["MeshcaCaExpiresWithoutSuccessor", "MeshcaRotationFailing", "MeshcaVaultAlert",
                     "MeshcaIssuanceFailureRatioHigh", "MeshcaNoIssuance",
                     "MeshcaTokenKeysUnavailable"]
    runbooks = (ROOT / "docs" / "alerts.md").read_text()
    for name in names:
        assert re.search(rf"^## {name}$", runbooks, re.MULTILINE), f"docs/alerts.md has no {name}"
    assert all(f'job="{"meshca"}"' in r["expr"] for r in rules(render))


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: scripts/test installs Debian's prometheus")
        pytest.skip("promtool is not installed (Debian's prometheus package provides it)")
    return found


def test_promtool_accepts_the_rules(render: Callable[..., list[Manifest]], tmp_path: Path) -> None:
    promtool = _promtool()
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rendered(render, "PrometheusRule")["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout + result.stderr


def test_alerts_fire_when_they_should(render: Callable[..., list[Manifest]], tmp_path: Path) -> None:
    """`promtool test rules`: series over time in, the alerts that must fire (and only those)."""
    promtool = _promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rendered(render, "PrometheusRule")["spec"]))
    job = 'job="meshca"'
    day = 86400
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [
        {   # CSRs keep arriving, nothing is issued; the intermediate is 2 days from expiry with
            # nothing prepared, while the root has a prepared successor.
            "interval": "1m",
            "input_series": [
                {"series": f"citadel_server_csr_count{{{job}}}", "values": "0+10x60"},
                {"series": f"citadel_server_success_cert_issuance_count{{{job}}}", "values": "0+0x60"},
                {"series": f"citadel_server_csr_sign_err_count{{{job},error=\"unavailable\"}}",
                 "values": "0+10x60"},
                {"series": f'meshca_ca_generation_expiry_timestamp_seconds{{{job},generation="2",'
                           f'kind="intermediate",state="active"}}', "values": f"{2 * day}x60"},
                {"series": f'meshca_ca_generation_expiry_timestamp_seconds{{{job},generation="1",'
                           f'kind="root",state="active"}}', "values": f"{30 * day}x60"},
                {"series": f'meshca_ca_generation_expiry_timestamp_seconds{{{job},generation="3",'
                           f'kind="root",state="prepared"}}', "values": f"{400 * day}x60"},
                {"series": f"meshca_ca_rotation_failing{{{job}}}", "values": "0x60"},
            ],
            "alert_rule_test": [
                {"eval_time": "40m", "alertname": "MeshcaNoIssuance",
                 "exp_alerts": [{"exp_labels": {"severity": "critical"},
                                 "exp_annotations": {
                                     "summary": "Certificate requests arrive but meshca has "
                                                "issued nothing for 15 minutes"}}]},
                {"eval_time": "40m", "alertname": "MeshcaIssuanceFailureRatioHigh",
                 "exp_alerts": [{"exp_labels": {"severity": "warning"},
                                 "exp_annotations": {
                                     "summary": "More than 5% of certificate requests fail",
                                     "description": "100% of CreateCertificate requests ended "
                                                    "without a certificate."}}]},
                {"eval_time": "40m", "alertname": "MeshcaCaExpiresWithoutSuccessor",
                 "exp_alerts": [{"exp_labels": {"severity": "critical", "kind": "intermediate"},
                                 "exp_annotations": {
                                     "summary": "meshca's active intermediate expires within its "
                                                "rotation window and no successor is prepared",
                                     "description": "It expires in 1d 23h 20m 0s; the rotator "
                                                    "should have prepared a successor by now."}}]},
                {"eval_time": "40m", "alertname": "MeshcaRotationFailing", "exp_alerts": []},
            ],
        },
    ]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- every name exists in meshca's /metrics ----------------------------------------------

@pytest.fixture(scope="module")
def exported(meshca: MeshcaProcess) -> set[str]:
    """Metric names a real server exports once it has issued, refused and rotated: sample
    names, and the families its TYPE lines declare (a family with no sample yet is still
    exported)."""
    meshca.create_certificate(csr_pem())
    with pytest.raises(grpc.RpcError):
        meshca.create_certificate("not a CSR")
    with pytest.raises(grpc.RpcError):
        meshca.create_certificate(csr_pem(), token="not-a-token")
    client = AdminClient(meshca)
    assert client.post("/v1/ca:prepare", {"kind": "intermediate"},
                       token=admin_token(meshca)).status == 201
    text = urllib.request.urlopen(f"http://{meshca.metrics_addr}/metrics", timeout=10).read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (error) (rate(a_total{job=~"$job",x="y"}[5m])) / on (kind) '
                        'count(b) unless c > 0.05') == {"a_total", "b", "c"}


def test_every_dashboard_query_names_an_exported_metric(exported: set[str]) -> None:
    used = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    variable = re.fullmatch(r"label_values\((\w+), job\)",
                            dashboard()["templating"]["list"][1]["definition"])
    assert variable is not None
    used.add(variable.group(1))
    assert len(used) >= 12
    _check(used, exported)


def test_every_alert_names_an_exported_metric(exported: set[str],
                                             render: Callable[..., list[Manifest]]) -> None:
    used = {name for rule in rules(render) for name in metric_names(rule["expr"])}
    assert "citadel_server_csr_count" in used and "meshca_vault_alert" in used
    _check(used, exported)


def _check(used: set[str], exported: set[str]) -> None:
    missing = sorted(name for name in used - exported
                     if not (name in CONDITIONAL and f'"{name}"' in CONDITIONAL[name].read_text()))
    assert missing == [], f"not in meshca's /metrics: {missing}"
