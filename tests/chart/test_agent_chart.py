"""The chart's optional node agent (agent.enabled): a DaemonSet running `meshca agent`, rendered by
Helm's own engine and checked against the agent's own settings, the server it talks to and the
privileges docs/agent-helm.md admits to."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from typing import Any

import pytest
import yaml

from meshca.agent.settings import AgentSettings
from meshca.core.flags import Flag, flag_of
from tests.chart.conftest import CHART_DIR, ROOT, Manifest, of_kind, one
from tests.chart.kube_schema import check_object
from tests.chart.value_sets import AGENT_SETS, VALUE_SETS, AgentSet, ValueSet

pytestmark = pytest.mark.timeout(120)

agent_sets = pytest.mark.parametrize("case", AGENT_SETS, ids=str)
# What the kubelet puts in $(VAR) references, by the env entry's fieldPath.
FIELD_SAMPLES = {"status.hostIP": "10.1.2.3"}
_VAR = re.compile(r"\$\((\w+)\)")


def _objects(render: Any, case: AgentSet) -> list[Manifest]:
    objects: list[Manifest] = render(case.values, namespace=case.namespace)
    return objects


def _daemonset(objects: list[Manifest]) -> Manifest:
    return one(objects, "DaemonSet")


def _pod(objects: list[Manifest]) -> dict[str, Any]:
    pod: dict[str, Any] = _daemonset(objects)["spec"]["template"]["spec"]
    return pod


def _agent(objects: list[Manifest]) -> dict[str, Any]:
    containers = _pod(objects)["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    container: dict[str, Any] = containers[0]
    return container


def _server_args(objects: list[Manifest]) -> list[str]:
    args: list[str] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _values_of(args: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]


def _one_value(args: list[str], flag: str) -> str:
    values = _values_of(args, flag)
    assert len(values) == 1, f"{flag} given {len(values)} times in {args}"
    return values[0]


def _named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _expanded_args(container: dict[str, Any]) -> list[str]:
    """The args as the kubelet hands them over: $(VAR) replaced from the container's env."""
    env = {}
    for entry in container.get("env", []):
        field_path = entry["valueFrom"]["fieldRef"]["fieldPath"]
        env[entry["name"]] = FIELD_SAMPLES[field_path]

    def expand(arg: str) -> str:
        for name in _VAR.findall(arg):
            assert name in env, f"{arg} refers to ${name}, which the container's env lacks"
        return _VAR.sub(lambda m: env[m.group(1)], arg)

    return [expand(a) for a in container["args"]]


def _agent_flags() -> dict[str, tuple[dataclasses.Field[Any], Flag]]:
    return {flag_of(f).name: (f, flag_of(f)) for f in dataclasses.fields(AgentSettings)}


def _settings_from(args: list[str]) -> AgentSettings:
    """Every arg names an AgentSettings flag and its value goes through that flag's own
    choices and parser; the settings object then runs its cross-field checks."""
    flags = _agent_flags()
    kwargs: dict[str, Any] = {}
    for arg in args:
        name, has_value, text = arg.partition("=")
        assert name in flags, f"{name} is not a `meshca agent` flag ({sorted(flags)})"
        field, spec = flags[name]
        if spec.switch:
            assert not has_value, f"{name} is a switch and takes no value"
            kwargs[field.name] = True
            continue
        assert has_value, f"{name} needs a value"
        if spec.choices is not None:
            assert text in spec.choices, f"{name}={text}: not one of {spec.choices}"
        value = spec.parse(text) if spec.parse is not None else text
        if spec.repeatable:
            kwargs[field.name] = (*kwargs.get(field.name, ()), value)
        else:
            assert field.name not in kwargs, f"{name} given twice"
            kwargs[field.name] = value
    return AgentSettings(**kwargs)


# ---- rendering and the Kubernetes schema ----------------------------------------------------

@agent_sets
def test_lint_is_clean_with_the_agent(helm: Any, case: AgentSet) -> None:
    report = helm.lint(CHART_DIR, case.values, strict=True, namespace=case.namespace)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@agent_sets
def test_agent_objects_match_the_kubernetes_schema(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    for obj in objects:
        check_object(obj, case.namespace)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"
    account = case.extra["account"]
    _named(objects, "ServiceAccount", account)
    assert len(of_kind(objects, "ClusterRole")) == len(of_kind(objects, "ClusterRoleBinding")) == 2
    policies = of_kind(objects, "NetworkPolicy")
    assert len(policies) == (0 if case.values.get("networkPolicy", {}).get("enabled") is False else 2)


@pytest.mark.parametrize("case", VALUE_SETS, ids=str)
def test_no_agent_unless_enabled(render: Any, case: ValueSet) -> None:
    objects = render(case.values, namespace=case.namespace)
    assert of_kind(objects, "DaemonSet") == []
    assert not [o for o in objects if o["metadata"]["name"].endswith("-agent")
                or "-agent-" in o["metadata"]["name"]]
    assert not [a for a in _server_args(objects) if "-agent" in a]


# ---- the agent's command line ---------------------------------------------------------------

@agent_sets
def test_agent_args_are_agent_settings_flags_whose_values_parse(render: Any, case: AgentSet) -> None:
    container = _agent(_objects(render, case))
    assert container["command"] == ["meshca", "agent"], "the image's entrypoint is `meshca serve`"
    args = container["args"]
    assert all(a.startswith("--") for a in args), args
    missing = [f for f in case.flags if f not in args]
    assert not missing, f"missing {missing} in {args}"
    present = [a for a in args for prefix in case.absent if a.startswith(prefix)]
    assert not present, f"unexpected {present}"
    settings = _settings_from(_expanded_args(container))
    assert settings.attestor == "kubernetes"
    assert settings.kubelet_insecure == (settings.kubelet_ca is None)
    assert settings.sds_socket is not None and settings.socket.parent == settings.sds_socket.parent


def test_a_wrong_flag_or_value_is_caught_by_the_arg_check() -> None:
    """The check above would catch what `meshca agent` would refuse."""
    good = ["--server=meshca.ns.svc:15012", "--kubelet-insecure"]
    assert _settings_from(good).server == "meshca.ns.svc:15012"
    for bad in (["--kubelet-insecur"], ["--attestor=docker"], ["--svid-ttl=soon"],
                ["--kubelet-insecure=yes"], ["--server=no-port"],
                ["--kubelet-insecure", "--kubelet-ca=/ca.pem"]):
        with pytest.raises((AssertionError, ValueError)):
            _settings_from(bad)


@agent_sets
def test_meshca_agent_cli_accepts_the_args(render: Any, case: AgentSet) -> None:
    """Through the CLI's own parser, once `meshca agent` is a subcommand."""
    import argparse

    from meshca.cli.main import build_parser

    parser = build_parser()
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not any("agent" in action.choices for action in commands):
        pytest.skip("`meshca agent` is not a subcommand of this CLI yet")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser.parse_args(["agent", *_expanded_args(_agent(_objects(render, case)))])
    except SystemExit:
        pytest.fail(f"meshca agent refuses the chart's args: {errors.getvalue().strip()}")


@agent_sets
def test_meshca_serve_accepts_its_args_with_the_agent_on(render: Any, case: AgentSet) -> None:
    from meshca.cli.main import build_parser

    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            build_parser().parse_args(["serve", *_server_args(_objects(render, case))])
    except SystemExit:
        pytest.fail(f"meshca serve refuses the chart's args: {errors.getvalue().strip()}")


# ---- agent and server agree -----------------------------------------------------------------

@agent_sets
def test_the_server_trusts_exactly_the_agents_service_account(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    account = case.extra["account"]
    assert _pod(objects)["serviceAccountName"] == account
    sa = _named(objects, "ServiceAccount", account)
    trusted = _values_of(_server_args(objects), "--trusted-node-account")
    assert trusted.count(f"{sa['metadata']['namespace']}/{account}") == 1, trusted
    listed = case.values.get("tokens", {}).get("trustedNodeAccounts", [])
    assert sorted(trusted) == sorted({*listed, f"{case.namespace}/{account}"})
    # The server checks that an asked-for identity runs on the agent's node: it lists pods.
    server_role = _named(objects, "ClusterRole", f"{one(objects, 'Deployment')['metadata']['name']}"
                                                 f"-{case.namespace}")
    pod_rules = [r for r in server_role["rules"] if "pods" in r.get("resources", [])]
    assert [sorted(r["verbs"]) for r in pod_rules] == [["get", "list"]]


@agent_sets
def test_the_agent_dials_the_servers_service_and_verifies_its_name(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    args = _agent(objects)["args"]
    host, port = _one_value(args, "--server").rsplit(":", 1)
    service = one(objects, "Service")
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert host == f"{service['metadata']['name']}.{case.namespace}.svc"
    assert int(port) == grpc["port"]
    assert "--server-name" not in " ".join(args), "the host of --server is the name to verify"
    # The server's certificate carries that name, and both sides use one trust domain.
    server_args = _server_args(objects)
    assert host in _values_of(server_args, "--server-dns-name")
    assert _one_value(args, "--trust-domain") == _one_value(server_args, "--trust-domain")


@agent_sets
def test_the_token_is_projected_for_an_audience_the_server_accepts(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    container, pod = _agent(objects), _pod(objects)
    token_file = _one_value(container["args"], "--token-file")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tokens = [(name, s["serviceAccountToken"]) for name, v in volumes.items()
              for s in v.get("projected", {}).get("sources", []) if "serviceAccountToken" in s]
    assert len(tokens) == 1, tokens
    name, token = tokens[0]
    assert f"{mounts[name]['mountPath']}/{token['path']}" == token_file
    assert token["audience"] == case.extra["audience"]
    assert token["audience"] in _values_of(_server_args(objects), "--token-audience")
    assert token["expirationSeconds"] == 3600
    # The API-audience token the kubelet accepts (GET /pods is reviewed for that audience).
    assert pod["automountServiceAccountToken"] is True


@agent_sets
def test_the_server_ca_is_the_published_trust_bundle(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    container, pod = _agent(objects), _pod(objects)
    server_ca = _one_value(container["args"], "--server-ca")
    directory, _, filename = server_ca.rpartition("/")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    assert "subPath" not in mount, "a subPath mount is never updated when the bundle rotates"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == case.extra["server_ca_configmap"]
    assert volume["configMap"]["items"] == [{"key": "root-cert.pem", "path": filename}]
    if case.extra["server_ca_configmap"] == "istio-ca-root-cert":
        # The one meshca publishes, which needs --publish-configmaps on the server.
        assert _values_of(_server_args(objects), "--publish-configmaps")


@agent_sets
def test_the_kubelet_is_this_nodes_and_verified_as_asked(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    container, pod = _agent(objects), _pod(objects)
    args = container["args"]
    assert "$(HOST_IP)" in _one_value(args, "--kubelet-url")
    assert container["env"] == [{"name": "HOST_IP",
                                 "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    host_file, configmap = case.extra.get("kubelet_ca_host_file"), case.extra.get("kubelet_ca_configmap")
    if not (host_file or configmap):
        assert "--kubelet-insecure" in args and "kubelet-ca" not in volumes
        return
    assert "--kubelet-insecure" not in args
    ca = _one_value(args, "--kubelet-ca")
    mount = mounts["kubelet-ca"]
    assert mount["readOnly"] is True
    if host_file:
        assert mount["mountPath"] == ca
        assert volumes["kubelet-ca"]["hostPath"] == {"path": host_file, "type": "File"}
    else:
        assert f"{mount['mountPath']}/ca.crt" == ca
        assert volumes["kubelet-ca"]["configMap"] == {"name": configmap,
                                                      "items": [{"key": "ca.crt", "path": "ca.crt"}]}


# ---- privileges -----------------------------------------------------------------------------

@agent_sets
def test_host_access_is_the_pid_namespace_and_the_socket_directory_only(render: Any,
                                                                       case: AgentSet) -> None:
    objects = _objects(render, case)
    pod, container = _pod(objects), _agent(objects)
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostIPC")
    socket_dir = case.extra["socket_dir"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {name: v["hostPath"] for name, v in volumes.items() if "hostPath" in v}
    expected = {"sockets": {"path": socket_dir, "type": "DirectoryOrCreate"}}
    if "kubelet_ca_host_file" in case.extra:
        expected["kubelet-ca"] = {"path": case.extra["kubelet_ca_host_file"], "type": "File"}
    assert host_paths == expected
    args = container["args"]
    assert _one_value(args, "--socket") == f"{socket_dir}/agent.sock"
    assert _one_value(args, "--sds-socket") == f"{socket_dir}/sds.sock"
    # Read-only everywhere but the socket directory.
    mounts = container["volumeMounts"]
    assert {m["name"] for m in mounts} <= set(volumes), "a mount without a volume"
    writable = [m for m in mounts if not m.get("readOnly")]
    assert writable == [{"name": "sockets", "mountPath": socket_dir}]
    assert not any("subPath" in m for m in mounts)


@agent_sets
def test_the_agent_runs_unprivileged_and_only_the_init_container_is_root(render: Any,
                                                                         case: AgentSet) -> None:
    objects = _objects(render, case)
    pod, container = _pod(objects), _agent(objects)
    uid = case.extra["uid"]
    server_pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert uid != server_pod["securityContext"]["runAsUser"], \
        "with hostPID, the agent's uid could signal the server's processes"
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid and sc["runAsGroup"] == uid
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["workingDir"] == "/", "the image's WORKDIR is the server's 0700 directory"

    [init] = pod["initContainers"]
    socket_dir = case.extra["socket_dir"]
    assert init["command"] == ["chown", f"{uid}:{uid}", socket_dir]
    assert init["volumeMounts"] == [{"name": "sockets", "mountPath": socket_dir}]
    isc = init["securityContext"]
    assert isc["runAsUser"] == 0 and isc["runAsNonRoot"] is False
    assert isc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert isc["allowPrivilegeEscalation"] is False and isc["privileged"] is False
    assert isc["readOnlyRootFilesystem"] is True
    assert init["image"] == container["image"] == case.extra["image"]


@agent_sets
def test_cluster_role_is_exactly_get_on_one_kubelet_subresource(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    account = case.extra["account"]
    bindings = [b for b in of_kind(objects, "ClusterRoleBinding")
                if b["subjects"][0]["name"] == account]
    assert len(bindings) == 1
    binding = bindings[0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                    "namespace": case.namespace}]
    role = _named(objects, "ClusterRole", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": [case.extra["subresource"]],
                              "verbs": ["get"]}]
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert not any("*" in item for item in rule[key]), rule
    assert not [b for b in of_kind(objects, "RoleBinding") if b["subjects"][0]["name"] == account]


@agent_sets
def test_probes_and_health_port_agree_with_the_health_address(render: Any, case: AgentSet) -> None:
    container = _agent(_objects(render, case))
    host, port = _one_value(container["args"], "--health-addr").rsplit(":", 1)
    assert host == "0.0.0.0"  # noqa: S104 (in a pod; the NetworkPolicy narrows it)
    assert container["ports"] == [{"name": "http-health", "containerPort": int(port),
                                   "protocol": "TCP"}]
    assert int(port) == case.extra["health_port"]
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        assert container[probe]["httpGet"] == {"path": path, "port": "http-health", "scheme": "HTTP"}


@agent_sets
def test_runs_on_every_node_it_is_told_to_and_rolls_one_at_a_time(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    daemonset, pod = _daemonset(objects), _pod(objects)
    agent_values = case.values["agent"]
    assert pod.get("tolerations") == case.extra["tolerations"]
    assert pod.get("nodeSelector", {}) == agent_values.get("nodeSelector", {})
    assert pod.get("priorityClassName") == agent_values.get("priorityClassName")
    strategy = agent_values.get("updateStrategy",
                                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
    assert daemonset["spec"]["updateStrategy"] == strategy
    resources = _agent(objects)["resources"]
    assert resources["limits"]["memory"] and resources["requests"]["cpu"]


# ---- selectors and network policy -----------------------------------------------------------

def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@agent_sets
def test_server_and_agent_selectors_never_pick_each_others_pods(render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    daemonset, deployment = _daemonset(objects), one(objects, "Deployment")
    agent_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    server_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _matches(daemonset["spec"]["selector"]["matchLabels"], agent_labels)
    assert not _matches(daemonset["spec"]["selector"]["matchLabels"], server_labels)
    for selector in (deployment["spec"]["selector"]["matchLabels"],
                     one(objects, "Service")["spec"]["selector"]):
        assert not _matches(selector, agent_labels), "the server's Service would pick an agent pod"


@agent_sets
def test_network_policies_admit_the_agent_to_grpc_and_open_only_its_health_port(
        render: Any, case: AgentSet) -> None:
    objects = _objects(render, case)
    if case.values.get("networkPolicy", {}).get("enabled") is False:
        assert of_kind(objects, "NetworkPolicy") == []
        return
    agent_labels = _daemonset(objects)["spec"]["template"]["metadata"]["labels"]
    server_name = one(objects, "Deployment")["metadata"]["name"]
    server_policy = _named(objects, "NetworkPolicy", server_name)["spec"]
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in server_policy["ingress"]}
    own_pods = [p for p in rules["grpc"] if "podSelector" in p and "namespaceSelector" not in p]
    assert any(_matches(p["podSelector"]["matchLabels"], agent_labels) for p in own_pods), rules["grpc"]
    grpc_from = case.values.get("networkPolicy", {}).get("grpcFrom")
    if grpc_from:
        assert all(peer in rules["grpc"] for peer in grpc_from)
    assert not _matches(server_policy["podSelector"]["matchLabels"], agent_labels)

    agent_policy = _named(objects, "NetworkPolicy", _daemonset(objects)["metadata"]["name"])["spec"]
    assert _matches(agent_policy["podSelector"]["matchLabels"], agent_labels)
    assert agent_policy["policyTypes"] == ["Ingress"]
    metrics_from = case.values.get("networkPolicy", {}).get("metricsFrom")
    assert agent_policy["ingress"] == [{
        "ports": [{"port": "http-health", "protocol": "TCP"}],
        "from": metrics_from or [{"namespaceSelector": {}}]}]


# ---- the operator's documentation -----------------------------------------------------------

# Kubernetes objects passed through whole: documented as one value.
PASSED_THROUGH = {"resources", "updateStrategy", "nodeSelector", "podAnnotations", "annotations"}


def _leaves(node: Any, prefix: str) -> list[str]:
    if isinstance(node, dict) and prefix.rpartition(".")[2] not in PASSED_THROUGH:
        return [leaf for key, child in node.items() for leaf in _leaves(child, f"{prefix}.{key}")]
    return [prefix]


def test_docs_list_every_agent_value_and_every_privilege() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["agent"]
    doc = (ROOT / "docs" / "agent-helm.md").read_text()
    missing = [key for key in _leaves(values, "agent") if f"`{key}`" not in doc]
    assert not missing, f"docs/agent-helm.md does not list {missing}"
    for privilege in ("hostPID", "hostPath", "nodes/proxy", "root", "CAP_CHOWN",
                      "automountServiceAccountToken"):
        assert privilege in doc, privilege
