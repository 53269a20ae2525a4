"""The Helm chart, rendered by Helm's own engine for each value set and checked object by object."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from tests.chart.conftest import CHART_DIR, Manifest, of_kind, one
from tests.chart.kube_schema import check_object
from tests.chart.serve_args import serve_settings
from tests.chart.value_sets import BAD_VALUES, REFUSED, VALUE_SETS, ValueSet

pytestmark = pytest.mark.timeout(120)

sets = pytest.mark.parametrize("case", VALUE_SETS, ids=str)


def _objects(render: Any, case: ValueSet) -> list[Manifest]:
    objects: list[Manifest] = render(case.values, namespace=case.namespace)
    return objects


def _container(objects: list[Manifest]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["meshca"]
    container: dict[str, Any] = containers[0]
    return container


def _flag_value(args: list[str], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} given {len(values)} times"
    return values[0]


@sets
def test_lint_is_clean(helm: Any, case: ValueSet) -> None:
    report = helm.lint(CHART_DIR, case.values, strict=True, namespace=case.namespace)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@sets
def test_every_object_matches_the_kubernetes_schema_of_its_kind(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"} <= {o["kind"] for o in objects}
    for obj in objects:
        check_object(obj, case.namespace)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"


@sets
def test_container_args_carry_the_flags_of_the_values(render: Any, case: ValueSet) -> None:
    container = _container(_objects(render, case))
    assert "command" not in container, "the image's entrypoint (meshca serve) must stay"
    args = container["args"]
    assert all(a.startswith("--") for a in args), args
    missing = [f for f in case.flags if f not in args]
    assert not missing, f"missing {missing} in {args}"
    present = [a for a in args for prefix in case.absent if a.startswith(prefix)]
    assert not present, f"unexpected {present}"
    single = [a.split("=", 1)[0] for a in args if not a.startswith(
        ("--server-dns-name", "--token-audience", "--admin-", "--trusted-node-account",
         "--federate-with"))]
    assert len(single) == len(set(single)), f"a single-valued flag is repeated: {args}"


@sets
def test_meshca_serve_accepts_the_rendered_args(render: Any, case: ValueSet) -> None:
    """The args go through meshca's own command-line parser and the checks `meshca serve` makes
    across settings before it starts."""
    settings = serve_settings(_container(_objects(render, case))["args"])
    assert settings.trust_domain


@sets
def test_database_url_comes_from_the_secret_never_from_the_spec(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    env = {e["name"]: e for e in _container(objects).get("env", [])}
    secret = case.extra.get("database_secret")
    if secret:
        ref = env["MESHCA_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret, "key": "url"}
        assert "value" not in env["MESHCA_DATABASE_URL"]
    else:
        assert "MESHCA_DATABASE_URL" not in env
    assert "postgresql://" not in json.dumps(objects)


@sets
def test_security_context_is_locked_down(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert pod["automountServiceAccountToken"] is True  # it calls the API server
    container = _container(objects)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged") is False

    volumes = {v["name"]: v for v in pod["volumes"]}
    assert not any("hostPath" in v for v in volumes.values())
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert {m["name"] for m in mounts.values()} <= set(volumes), "a mount without a volume"
    # The root filesystem is read-only: the data dir and /tmp must be volumes.
    data = volumes[mounts["/var/lib/meshca"]["name"]]
    if case.extra.get("pvc"):
        claim = one(objects, "PersistentVolumeClaim")
        assert data["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    else:
        assert data == {"name": "data", "emptyDir": {}}
        assert not of_kind(objects, "PersistentVolumeClaim")
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    for path, secret in case.extra.get("secret_mounts", {}).items():
        assert mounts[path].get("readOnly") is True
        assert volumes[mounts[path]["name"]]["secret"]["secretName"] == secret


@sets
def test_probes_and_ports_agree_with_the_listen_addresses(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    container = _container(objects)
    args = container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert all(len(name) <= 15 for name in ports), "port names are IANA service names (≤15)"
    expected = {"grpc": 15012, "https-admin": 8443, "http-metrics": 15014}
    listeners = [("--grpc-addr", "grpc"), ("--admin-addr", "https-admin"),
                 ("--metrics-addr", "http-metrics")]
    if case.extra.get("ext_authz"):
        expected["grpc-ext-authz"] = 9191
        listeners.append(("--ext-authz-addr", "grpc-ext-authz"))
    if case.extra.get("federation_port"):
        expected["https-federate"] = case.extra["federation_port"]
        listeners.append(("--federation-addr", "https-federate"))
    assert ports == expected
    for flag, name in listeners:
        host, port = _flag_value(args, flag).rsplit(":", 1)
        assert host == "0.0.0.0" and int(port) == ports[name], flag  # noqa: S104 (in a pod)

    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")]:
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["scheme"] == "HTTPS", probe
        assert ports[get["port"]] == 8443, f"{probe} must hit the admin port"

    # The chart's Service has the Deployment's name; federation.service adds one of its own.
    deployment = one(objects, "Deployment")
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    service = services.pop(deployment["metadata"]["name"])
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert service_ports == {name: (number, name) for name, number in expected.items()}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for other in services.values():
        assert other["spec"]["selector"].items() <= pod_labels.items()
        assert [p["targetPort"] for p in other["spec"]["ports"]] == ["https-federate"]


@sets
def test_rbac_is_minimal(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role"):
        for rule in role["rules"]:
            for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(key, [])), f"{role['kind']}: {rule}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "secrets" not in rule.get("resources", []), "meshca reads no Secret through the API"

    def flat(rules: list[dict[str, Any]]) -> set[tuple[str, str, frozenset[str]]]:
        out = set()
        for rule in rules:
            verbs = frozenset(rule["verbs"])
            for url in rule.get("nonResourceURLs", []):
                out.add(("url", url, verbs))
            for group in rule.get("apiGroups", []):
                for resource in rule["resources"]:
                    out.add((group, resource, verbs))
        return out

    cluster_roles = of_kind(objects, "ClusterRole")
    got = flat(cluster_roles[0]["rules"]) if cluster_roles else set()
    assert got == case.cluster_rules
    assert len(of_kind(objects, "ClusterRoleBinding")) == len(cluster_roles) == (1 if got else 0)

    role = one(objects, "Role")
    assert flat(role["rules"]) == {("coordination.k8s.io", "leases", frozenset({"get", "create", "update"}))}
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    for binding in of_kind(objects, "RoleBinding") + of_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                        "namespace": case.namespace}]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account


@sets
def test_replicas_spread_and_disruption_budget(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    deployment = one(objects, "Deployment")
    replicas = case.values.get("replicaCount", 1)
    assert deployment["spec"]["replicas"] == replicas
    pdbs = of_kind(objects, "PodDisruptionBudget")
    if replicas > 1:
        assert [p["spec"]["maxUnavailable"] for p in pdbs] == [1]
        assert pdbs[0]["spec"]["selector"] == deployment["spec"]["selector"]
    else:
        assert pdbs == [], "a PDB on one replica blocks every node drain"
    affinity = deployment["spec"]["template"]["spec"].get("affinity", {}).get("podAntiAffinity", {})
    mode = case.values.get("podAntiAffinity", "soft")
    terms = {"soft": "preferredDuringSchedulingIgnoredDuringExecution",
             "hard": "requiredDuringSchedulingIgnoredDuringExecution"}
    assert list(affinity) == ([terms[mode]] if mode in terms else [])
    if "strategy" in case.extra:
        assert deployment["spec"]["strategy"]["type"] == case.extra["strategy"]


def test_service_monitor_when_enabled(render: Any) -> None:
    case = next(c for c in VALUE_SETS if c.name == "ha-postgres")
    monitor = one(_objects(render, case), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert not of_kind(render({}), "ServiceMonitor")


@sets
def test_network_policy_is_on_by_default_and_every_port_names_its_peers(
        render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    policies = of_kind(objects, "NetworkPolicy")
    if case.values.get("networkPolicy", {}).get("enabled") is False:
        assert policies == []
        return
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"].items() <= one(
        objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    rules = {rule["ports"][0]["port"]: rule for rule in policy["ingress"]}
    assert all(len(rule["ports"]) == 1 for rule in policy["ingress"])
    # A rule without peers would admit any source, in the cluster or not.
    assert all(rule.get("from") for rule in rules.values()), rules
    container_ports = {p["name"] for p in _container(objects)["ports"]}
    assert set(rules) == container_ports, "every port the pod opens, and only those, has a rule"
    values = case.values.get("networkPolicy", {})
    assert rules["grpc"]["from"] == (values.get("grpcFrom") or [{"namespaceSelector": {}}])
    assert rules["https-admin"]["from"] == (values.get("adminFrom") or [{"podSelector": {}}])
    assert rules["http-metrics"]["from"] == (values.get("metricsFrom") or [{"namespaceSelector": {}}])
    if case.extra.get("ext_authz"):
        assert rules["grpc-ext-authz"]["from"] == case.values["extAuthz"]["callers"]
    if case.extra.get("federation_port"):
        assert rules["https-federate"]["from"] == (values.get("federationFrom") or [
            {"namespaceSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}},
            {"ipBlock": {"cidr": "::/0"}}])


@sets
def test_the_kek_is_in_a_secret_of_its_own_mounted_read_only(render: Any, case: ValueSet) -> None:
    objects = _objects(render, case)
    container = _container(objects)
    kek_file = _flag_value(container["args"], "--kek-file")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    keystore = case.values.get("keystore", {})
    created = [s for s in of_kind(objects, "Secret") if s["metadata"]["name"].endswith("-kek")]
    if not keystore.get("kekSecret") and keystore.get("createKekSecret") is False:
        assert kek_file == "/var/lib/meshca/data.kek" and "/etc/meshca/kek" not in mounts
        assert created == []
        return
    assert kek_file == "/etc/meshca/kek/kek"
    assert not kek_file.startswith("/var/lib/meshca/"), "a copy of the data volume must hold no key"
    mount = mounts["/etc/meshca/kek"]
    assert mount["readOnly"] is True
    secret_volume = volumes[mount["name"]]["secret"]
    assert secret_volume["items"] == [{"key": "kek", "path": "kek"}]
    assert secret_volume["defaultMode"] == 0o440
    if keystore.get("kekSecret"):
        assert created == [] and secret_volume["secretName"] == keystore["kekSecret"]
        return
    secret = one(objects, "Secret")
    assert secret_volume["secretName"] == secret["metadata"]["name"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"kek"} and "stringData" not in secret
    kek = base64.b64decode(base64.b64decode(secret["data"]["kek"]), validate=True)
    assert len(kek) == 32


def test_the_created_kek_is_random_and_opens_as_meshca_reads_it(chart: Any) -> None:
    from meshca.infra.keyfiles import KeyEncryptionKey

    def kek() -> str:
        files = chart.render({}, name="meshca", namespace="meshca-system", is_install=True)
        secret = yaml.safe_load(next(text for path, text in files.items()
                                     if path.endswith("kek-secret.yaml")))
        return base64.b64decode(secret["data"]["kek"]).decode()

    first, second = kek(), kek()
    assert first != second
    assert KeyEncryptionKey.from_text(first, "kek").key_id != KeyEncryptionKey.from_text(
        second, "kek").key_id


def test_an_upgrade_that_would_replace_the_kek_fails_with_the_way_out(helm: Any, chart: Any) -> None:
    """Without a cluster to look the Secret up in, an upgrade looks like one from a chart that
    kept the key on the data volume: a new random key would lock meshca out of its keys."""
    with pytest.raises(helm.HelmRenderError) as failure:
        chart.render({}, name="meshca", namespace="meshca-system", is_upgrade=True)
    message = str(failure.value)
    assert "/var/lib/meshca/data.kek" in message and "keystore.kekSecret=meshca-kek" in message
    for values in ({"keystore": {"kekSecret": "mine"}}, {"keystore": {"createKekSecret": False}}):
        assert chart.render(values, name="meshca", namespace="meshca-system", is_upgrade=True)


@pytest.mark.parametrize(("values", "word"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(helm: Any, chart: Any, values: dict[str, Any], word: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=word):
        chart.render(values, name="meshca", namespace="meshca-system")
    report = helm.lint(CHART_DIR, values, namespace="meshca-system")
    assert any(word in error for error in report["errors"]), report


@pytest.mark.parametrize(("values", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_unworkable_values_fail_with_a_clear_message(helm: Any, chart: Any, values: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as failure:
        chart.render(values, name="meshca", namespace="meshca-system")
    assert message in str(failure.value)


def test_schema_is_draft_07_and_closed(chart: Any) -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    # Free-form maps (labels, annotations, resources) and Kubernetes objects passed through as
    # they are (checked against the API schema once rendered) are the only open objects.
    open_maps = {"affinity", "nodeSelector", "podAnnotations", "podLabels", "annotations", "labels",
                 "requests", "limits", "tolerations[]", "topologySpreadConstraints[]",
                 "adminFrom[]", "metricsFrom[]", "grpcFrom[]", "callers[]", "federationFrom[]"}

    def walk(node: dict[str, Any], name: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{name} accepts unknown keys"
        elif node.get("type") == "object":
            assert name in open_maps, f"{name} is an object with no declared properties"
        for key, child in node.get("properties", {}).items():
            walk(child, key)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{name}[]")

    walk(schema, "values")
