"""SPIFFE federation in the chart (federation.*): the flags, and the port, Services, network
policy and mounts that must agree with them. The value sets in value_sets.py also go through
every generic check of test_chart.py (lint, Kubernetes schema, meshca's parser, ports, policy)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from meshca.cli.serve_args import settings_from
from meshca.core.federation import ENDPOINT_PATH, FlagEntry
from tests.chart.conftest import Manifest, of_kind, one
from tests.chart.serve_args import parsed_serve_args, serve_settings
from tests.chart.value_sets import VALUE_SETS, ValueSet

pytestmark = pytest.mark.timeout(120)

SPIFFE = next(c for c in VALUE_SETS if c.name == "federation-spiffe")
WEB = next(c for c in VALUE_SETS if c.name == "federation-web")
OFF = next(c for c in VALUE_SETS if c.name == "federation-off-with-entries")
PORT_NAME = "https-federate"


def _objects(render: Any, case: ValueSet) -> list[Manifest]:
    objects: list[Manifest] = render(case.values, namespace=case.namespace)
    return objects


def _pod(objects: list[Manifest]) -> dict[str, Any]:
    pod: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return pod


def _args(objects: list[Manifest]) -> list[str]:
    args: list[str] = _pod(objects)["containers"][0]["args"]
    return args


def _services(objects: list[Manifest]) -> dict[str, Manifest]:
    return {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}


def _file_source(objects: list[Manifest], path: str) -> tuple[str, str, str]:
    """(kind of volume, its ConfigMap or Secret, key) of the file at `path` in the container."""
    pod = _pod(objects)
    file = PurePosixPath(path)
    mounts = [m for m in pod["containers"][0]["volumeMounts"]
              if file.parent == PurePosixPath(m["mountPath"])]
    assert len(mounts) == 1, f"{path} is not in exactly one mount: {mounts}"
    assert mounts[0].get("readOnly") is True and "subPath" not in mounts[0]
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    kind = "configMap" if "configMap" in volume else "secret"
    source = volume[kind]
    items = {item["path"]: item["key"] for item in source["items"]}
    assert file.name in items, f"{path}: the volume has no item {file.name} ({items})"
    return kind, source.get("name") or source["secretName"], items[file.name]


@pytest.mark.parametrize("case", [c for c in VALUE_SETS if not c.values.get(
    "federation", {}).get("enabled")], ids=str)
def test_federation_off_renders_no_flag_port_service_rule_or_mount(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    assert not [a for a in _args(objects) if a.startswith(("--federat", "--istio-include-federated"))]
    pod = _pod(objects)
    assert PORT_NAME not in {p["name"] for p in pod["containers"][0]["ports"]}
    assert [s["metadata"]["name"] for s in of_kind(objects, "Service")] == [
        one(objects, "Deployment")["metadata"]["name"]]
    assert PORT_NAME not in {p["name"] for p in one(objects, "Service")["spec"]["ports"]}
    for policy in of_kind(objects, "NetworkPolicy"):
        assert PORT_NAME not in [r["ports"][0]["port"] for r in policy["spec"]["ingress"]]
    assert not [v["name"] for v in pod["volumes"] if "federat" in v["name"]]
    assert not parsed_serve_args(_args(objects)).federate_with


def test_federation_off_is_what_the_off_set_tests(render: Any) -> None:
    """The off set does carry a full federation block, so the test above means something."""
    federation = OFF.values["federation"]
    assert federation["enabled"] is False and federation["federateWith"]
    on = render({"federation": {**federation, "enabled": True, "profile": "https_spiffe",
                                "webCertSecret": ""}})
    assert any(a.startswith("--federate-with=") for a in _args(on))


def test_https_spiffe_serves_on_the_pod_network_with_its_own_svid(render: Any) -> None:
    objects = _objects(render, SPIFFE)
    args = _args(objects)
    settings = serve_settings(args)
    assert settings.federation_addr == "0.0.0.0:8444"
    assert settings.federation_profile == "https_spiffe"
    assert settings.federation_cert is None and settings.federation_key is None
    assert (settings.federation_refresh_min.total_seconds(), settings.federation_refresh_max.total_seconds(),
            settings.federation_fetch_timeout.total_seconds()) == (60, 1800, 5)
    assert settings.istio_include_federated is True

    pod = _pod(objects)
    port = next(p for p in pod["containers"][0]["ports"] if p["name"] == PORT_NAME)
    assert port == {"name": PORT_NAME, "containerPort": 8444, "protocol": "TCP"}
    assert not [v for v in pod["volumes"] if v["name"] == "federation-tls"]


def test_the_endpoint_is_on_the_charts_service_and_alone_on_its_own(render: Any) -> None:
    objects = _objects(render, SPIFFE)
    services = _services(objects)
    assert set(services) == {"meshca", "meshca-federation"}
    main = {p["name"]: p for p in services["meshca"]["spec"]["ports"]}
    assert main[PORT_NAME] == {"name": PORT_NAME, "port": 8444, "targetPort": PORT_NAME,
                               "protocol": "TCP"}
    own = services["meshca-federation"]
    assert own["spec"]["type"] == "LoadBalancer"
    assert own["spec"]["ports"] == [{"name": PORT_NAME, "port": 443, "targetPort": PORT_NAME,
                                     "protocol": "TCP"}]
    assert own["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    assert own["metadata"]["annotations"] == SPIFFE.values["federation"]["service"]["annotations"]
    assert own["spec"]["selector"] == services["meshca"]["spec"]["selector"]

    web = _services(_objects(render, WEB))
    assert web["ca"]["spec"]["type"] == "ClusterIP"
    assert web["ca-federation"]["spec"]["type"] == "NodePort"
    assert web["ca-federation"]["spec"]["ports"] == [{"name": PORT_NAME, "port": 8443,
                                                      "targetPort": PORT_NAME, "protocol": "TCP",
                                                      "nodePort": 30443}]
    assert "loadBalancerSourceRanges" not in web["ca-federation"]["spec"]


def test_no_service_of_its_own_unless_asked_for(render: Any) -> None:
    values = {"federation": {"enabled": True, "service": {"enabled": False}}}
    assert list(_services(render(values))) == ["meshca"]


def test_the_federation_service_name_fits_a_dns_label(render: Any) -> None:
    name = "m" * 63
    services = _services(render({"fullnameOverride": name, **SPIFFE.values}))
    assert set(services) == {name, "m" * 52 + "-federation"}
    assert all(len(n) <= 63 for n in services)


def test_the_network_policy_admits_anyone_to_the_endpoint_unless_narrowed(render: Any) -> None:
    def federation_rule(objects: list[Manifest]) -> dict[str, Any]:
        rules: list[dict[str, Any]] = [
            r for r in one(objects, "NetworkPolicy")["spec"]["ingress"]
            if r["ports"] == [{"port": PORT_NAME, "protocol": "TCP"}]]
        assert len(rules) == 1
        return rules[0]

    default = federation_rule(_objects(render, SPIFFE))
    # Other clusters' servers come from addresses, in-cluster callers from pods.
    assert default["from"] == [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}},
                               {"ipBlock": {"cidr": "::/0"}}]
    narrowed = federation_rule(_objects(render, WEB))
    assert narrowed["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]


def test_federate_with_files_are_the_mounted_configmaps(render: Any) -> None:
    objects = _objects(render, SPIFFE)
    entries = serve_settings(_args(objects)).federate_with
    assert entries == (
        FlagEntry("b.example.com", "https://federation.b.example.com/", "https_spiffe",
                  # The chart's default endpoint ID: what a meshca endpoint presents.
                  f"spiffe://b.example.com{ENDPOINT_PATH}",
                  "/etc/meshca/federate-with/b.example.com/bundle", None),
        FlagEntry("spire.example.org", "https://spire.example.org:8443/", "https_spiffe",
                  "spiffe://spire.example.org/spire/server",
                  "/etc/meshca/federate-with/spire.example.org/bundle", None),
    )
    assert [_file_source(objects, e.bundle_file) for e in entries if e.bundle_file] == [
        ("configMap", "b-example-com-bundle", "bundle"), ("configMap", "spire-bundle", "bundle")]

    web = _objects(render, WEB)
    entries = serve_settings(_args(web)).federate_with
    assert entries == (
        FlagEntry("c.example.net", "https://bundles.c.example.net/c.json", "https_web"),
        FlagEntry("d.internal", "https://federation.d.internal/", "https_web",
                  ca_file="/etc/meshca/federate-with/d.internal/ca.crt"),
    )
    assert entries[1].ca_file is not None
    assert _file_source(web, entries[1].ca_file) == ("configMap", "d-internal-ca", "ca.crt")
    # Only d.internal has a file to mount.
    assert [v["name"] for v in _pod(web)["volumes"] if v["name"].startswith("federate-with")] == [
        "federate-with-1"]


def test_https_web_reads_its_certificate_from_the_tls_secret(render: Any) -> None:
    objects = _objects(render, WEB)
    settings = serve_settings(_args(objects))
    assert settings.federation_addr == "0.0.0.0:9443"
    assert settings.federation_profile == "https_web"
    assert settings.federation_cert is not None and settings.federation_key is not None
    assert _file_source(objects, str(settings.federation_cert)) == ("secret", "federation-tls", "tls.crt")
    assert _file_source(objects, str(settings.federation_key)) == ("secret", "federation-tls", "tls.key")
    volume = next(v for v in _pod(objects)["volumes"] if v["name"] == "federation-tls")
    assert volume["secret"]["defaultMode"] == 0o440


def test_https_web_without_a_certificate_fails_with_the_way_out(helm: Any, chart: Any) -> None:
    values = {"federation": {"enabled": True, "profile": "https_web"}}
    with pytest.raises(helm.HelmRenderError) as failure:
        chart.render(values, name="meshca", namespace="meshca-system")
    message = str(failure.value)
    assert "federation.profile https_web needs federation.webCertSecret" in message
    assert "kubernetes.io/tls" in message
    values["federation"]["webCertSecret"] = "federation-tls"
    assert chart.render(values, name="meshca", namespace="meshca-system")


def test_refresh_bounds_meshca_refuses_are_caught_by_the_settings_check(render: Any) -> None:
    """The check the tests above rely on is meshca's own: it refuses min > max."""
    values: dict[str, Any] = {"federation": {"enabled": True}}  # on the chart's defaults
    assert serve_settings(_args(render(values))).federation_addr
    values["federation"].update(refreshMin="2h", refreshMax="1h")
    with pytest.raises(ValueError, match="--federation-refresh-min"):
        settings_from(parsed_serve_args(_args(render(values))))


def test_notes_tell_peers_what_they_need(chart: Any) -> None:
    def notes(values: dict[str, Any]) -> str:
        files = chart.render(values, name="meshca", namespace="meshca-system", is_install=True)
        text: str = next(t for p, t in files.items() if p.endswith("NOTES.txt"))
        return text

    spiffe = notes(SPIFFE.values)
    assert "https://meshca.meshca-system.svc:8444/" in spiffe
    assert "endpoint SPIFFE ID spiffe://a.example.com/meshca/federation" in spiffe
    assert "kubectl -n meshca-system get service meshca-federation" in spiffe
    assert "Trusts b.example.com: https://federation.b.example.com/ (https_spiffe)" in spiffe
    inside = notes({"federation": {"enabled": True}})
    assert "federation.service.enabled" in inside and "meshca-federation" not in inside
    assert "Federation:" not in notes(OFF.values)
