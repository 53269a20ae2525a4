"""Value sets the chart is rendered with, and what each must produce.

`flags`: arguments that must be in the container's args, exactly.
`absent`: flag prefixes that must not appear.
`cluster_rules`: the exact ClusterRole rules, as (apiGroup or "url", resource or URL, verbs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DISCOVERY = {
    ("url", "/.well-known/openid-configuration", frozenset({"get"})),
    ("url", "/openid/v1/jwks", frozenset({"get"})),
}
PUBLISH = {
    ("", "namespaces", frozenset({"list", "watch"})),
    ("", "configmaps", frozenset({"get", "list", "create", "update", "delete"})),
}
TOKENREVIEW = {("authentication.k8s.io", "tokenreviews", frozenset({"create"}))}

BASE_FLAGS = (
    "--data-dir=/var/lib/meshca/data",
    "--grpc-addr=0.0.0.0:15012",
    "--admin-addr=0.0.0.0:8443",
    "--metrics-addr=0.0.0.0:15014",
)


@dataclass(frozen=True)
class ValueSet:
    name: str
    values: dict[str, Any]
    flags: tuple[str, ...]
    absent: tuple[str, ...]
    cluster_rules: frozenset[tuple[str, str, frozenset[str]]]
    namespace: str = "meshca-system"
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


# The pods whose Envoy calls ext_authz.
INGRESS_GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}},
                   "podSelector": {"matchLabels": {"istio": "ingressgateway"}}}

POSTGRES = {"database": {"existingSecret": "meshca-db", "secretKey": "url"},
            "persistence": {"enabled": False}}

VALUE_SETS = [
    ValueSet(
        "defaults",
        {},
        flags=(*BASE_FLAGS,
               "--server-dns-name=meshca.meshca-system.svc",
               "--server-dns-name=meshca.meshca-system.svc.cluster.local",
               "--server-dns-name=localhost",
               "--trust-domain=cluster.local", "--default-ttl=24h", "--max-ttl=28h",
               "--token-validation=jwks", "--token-audience=istio-ca",
               "--publish-configmaps=", "--kek-file=/etc/meshca/kek/kek"),
        absent=("--database-url", "--ca-dir", "--ext-authz-", "--vault-", "--keystore",
                "--token-issuer", "--verify-pod-binding", "--watch-kube-policies"),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        extra={"pvc": True, "pdb": False, "strategy": "Recreate",
               "secret_mounts": {"/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        "ha-postgres",
        # Several replicas share a plugged-in CA (from the organisation's PKI) and PostgreSQL.
        {"replicaCount": 3, **POSTGRES, "caSecret": "corp-intermediate", "trustDomain": "prod.example.com",
         "ttl": {"default": "1h", "max": "2d"},
         "tokens": {"validation": "tokenreview"},
         "podAntiAffinity": "hard",
         "publishConfigMaps": {"enabled": True, "selector": "istio-injection=enabled"},
         "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
         "grafanaDashboard": {"enabled": True, "folder": "mesh"},
         "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
         "networkPolicy": {"enabled": True,
                           "metricsFrom": [{"namespaceSelector": {"matchLabels": {
                               "kubernetes.io/metadata.name": "monitoring"}}}]}},
        flags=(*BASE_FLAGS, "--token-validation=tokenreview", "--trust-domain=prod.example.com",
               "--default-ttl=1h", "--max-ttl=2d", "--publish-configmaps=istio-injection=enabled",
               "--ca-dir=/etc/meshca/cacerts"),
        absent=("--database-url", "--vault-", "--keystore"),
        cluster_rules=frozenset(TOKENREVIEW | PUBLISH),
        extra={"pvc": False, "pdb": True, "strategy": "RollingUpdate", "database_secret": "meshca-db",
               "secret_mounts": {"/etc/meshca/cacerts": "corp-intermediate",
                                 "/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        "vault-transit-kubernetes",
        {"replicaCount": 2, **POSTGRES,
         "keystore": {"type": "vault-transit",
                      "vault": {"addr": "https://vault.vault.svc:8200", "namespace": "team-a",
                                "caCertSecret": "vault-ca", "auth": "kubernetes", "role": "meshca",
                                "transitMount": "meshca-transit"}},
         "tokens": {"validation": "both", "verifyPodBinding": True}},
        flags=(*BASE_FLAGS, "--keystore=vault-transit", "--vault-addr=https://vault.vault.svc:8200",
               "--vault-namespace=team-a", "--vault-ca-cert=/etc/meshca/vault-ca/ca.crt",
               "--vault-auth=kubernetes", "--vault-role=meshca",
               "--vault-transit-mount=meshca-transit", "--token-validation=both",
               "--verify-pod-binding"),
        absent=("--vault-kv-mount", "--vault-token-file", "--vault-role-id", "--database-url"),
        cluster_rules=frozenset(TOKENREVIEW | DISCOVERY | PUBLISH
                                | {("", "pods", frozenset({"get"}))}),
        extra={"pvc": False, "pdb": True, "database_secret": "meshca-db",
               "secret_mounts": {"/etc/meshca/vault-ca": "vault-ca", "/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        "vault-kv-token",
        {"keystore": {"type": "vault-kv",
                      "vault": {"addr": "https://vault.example.com", "auth": "token",
                                "tokenSecret": "vault-token", "kvMount": "kv"}},
         "tokens": {"issuer": "https://oidc.example.com", "jwks": "https://oidc.example.com/keys"},
         "rootRotation": "cross-sign",
         "publishConfigMaps": {"enabled": False},
         "persistence": {"enabled": False}},
        flags=(*BASE_FLAGS, "--keystore=vault-kv", "--vault-addr=https://vault.example.com",
               "--vault-auth=token", "--vault-token-file=/etc/meshca/vault-token/token",
               "--vault-kv-mount=kv", "--token-issuer=https://oidc.example.com",
               "--token-jwks=https://oidc.example.com/keys", "--root-rotation=cross-sign"),
        absent=("--vault-role", "--vault-transit-mount", "--publish-configmaps", "--vault-ca-cert",
                "--vault-namespace", "--upstream", "--vault-pki-mount"),
        # Keys from a URL, nothing published, no TokenReview: no cluster-wide access at all.
        cluster_rules=frozenset(),
        extra={"pvc": False, "secret_mounts": {"/etc/meshca/vault-token": "vault-token",
                                               "/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        "vault-pki-upstream",
        # The organisation's Vault PKI signs meshca's intermediates; their keys are sealed files.
        {"keystore": {"upstream": "vault-pki",
                      "vault": {"addr": "https://vault.vault.svc:8200", "auth": "kubernetes",
                                "role": "meshca", "pkiMount": "pki-corp"}}},
        flags=(*BASE_FLAGS, "--upstream=vault-pki", "--vault-pki-mount=pki-corp",
               "--vault-addr=https://vault.vault.svc:8200", "--vault-auth=kubernetes",
               "--vault-role=meshca"),
        absent=("--keystore", "--vault-transit-mount", "--vault-kv-mount", "--root-rotation",
                "--vault-token-file"),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        extra={"pvc": True, "secret_mounts": {"/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        "vault-approle",
        {"keystore": {"type": "vault-transit",
                      "vault": {"addr": "https://vault.example.com", "auth": "approle",
                                "approle": {"roleId": "4f1c-role-id",
                                            "secretIdSecret": "vault-approle"}}}},
        flags=(*BASE_FLAGS, "--keystore=vault-transit", "--vault-auth=approle",
               "--vault-role-id=4f1c-role-id",
               "--vault-secret-id-file=/etc/meshca/vault-approle/secret-id",
               "--vault-transit-mount=transit"),
        absent=("--vault-token-file", "--vault-kv-mount", "--vault-role="),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        extra={"pvc": True, "secret_mounts": {"/etc/meshca/vault-approle": "vault-approle",
                                              "/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        "plugged-ca-admin-extauthz",
        {"caSecret": "cacerts",
         "admin": {"serviceAccounts": ["ops/meshctl=admin", "monitoring/grafana=viewer"],
                   "spiffeIds": ["spiffe://cluster.local/ns/ops/sa/oncall=operator"]},
         "extAuthz": {"enabled": True, "rootNamespace": "mesh-root", "watchKubePolicies": True,
                      "tls": True, "callers": [INGRESS_GATEWAY]},
         "tokens": {"trustedNodeAccounts": ["istio-system/ztunnel"]},
         "extraDnsNames": ["ca.mesh.example.com"], "extraArgs": ["--token-cache-ttl=2m"],
         "logLevel": "DEBUG", "workers": 2, "caKeyType": "ec-p384"},
        flags=(*BASE_FLAGS, "--ca-dir=/etc/meshca/cacerts",
               "--admin-service-account=ops/meshctl=admin",
               "--admin-service-account=monitoring/grafana=viewer",
               "--admin-spiffe-id=spiffe://cluster.local/ns/ops/sa/oncall=operator",
               "--ext-authz-addr=0.0.0.0:9191", "--authz-root-namespace=mesh-root",
               "--ext-authz-tls",
               "--watch-kube-policies", "--trusted-node-account=istio-system/ztunnel",
               "--server-dns-name=ca.mesh.example.com", "--token-cache-ttl=2m",
               "--log-level=DEBUG", "--workers=2", "--ca-key-type=ec-p384"),
        absent=("--vault-", "--keystore", "--ext-authz-verbose"),
        cluster_rules=frozenset(DISCOVERY | PUBLISH | {
            ("", "pods", frozenset({"get", "list"})),
            ("security.istio.io", "authorizationpolicies", frozenset({"list", "watch"})),
        }),
        extra={"pvc": True, "ext_authz": True, "secret_mounts": {"/etc/meshca/cacerts": "cacerts",
                                                                 "/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        "file-kek-renamed",
        {"fullnameOverride": "ca", "keystore": {"type": "file", "kekSecret": "meshca-kek"},
         "persistence": {"enabled": True, "storageClass": "fast", "size": "5Gi"},
         "podAntiAffinity": "none", "clusterDomain": "corp.internal"},
        flags=(*BASE_FLAGS, "--kek-file=/etc/meshca/kek/kek",
               "--server-dns-name=ca.security.svc", "--server-dns-name=ca.security.svc.corp.internal"),
        absent=("--vault-", "--server-dns-name=meshca."),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        namespace="security",
        extra={"pvc": True, "secret_mounts": {"/etc/meshca/kek": "meshca-kek"}},
    ),
    ValueSet(
        # The old layout, asked for: the KEK on the data volume; no network policy.
        "kek-on-volume-no-network-policy",
        {"keystore": {"type": "file", "createKekSecret": False},
         "networkPolicy": {"enabled": False}, "extAuthz": {"enabled": True}},
        flags=(*BASE_FLAGS, "--kek-file=/var/lib/meshca/data.kek", "--ext-authz-addr=0.0.0.0:9191"),
        absent=("--ext-authz-tls", "--vault-"),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        extra={"pvc": True, "ext_authz": True},
    ),
    ValueSet(
        # Serves its bundle with its own SVID, exposed alone by a LoadBalancer; trusts one meshca
        # peer (https_spiffe, default endpoint ID) and one SPIRE peer (its own endpoint ID).
        "federation-spiffe",
        {"trustDomain": "a.example.com", "ttl": {"default": "12h", "max": "1d"},
         "federation": {"enabled": True, "refreshMin": "1m", "refreshMax": "30m",
                        "fetchTimeout": "5s", "istioIncludeFederated": True,
                        "service": {"enabled": True, "type": "LoadBalancer",
                                    "annotations": {"service.beta.kubernetes.io/aws-load-balancer-scheme":
                                                    "internet-facing"},
                                    "loadBalancerSourceRanges": ["198.51.100.0/24"]},
                        "federateWith": [
                            {"trustDomain": "b.example.com", "url": "https://federation.b.example.com/",
                             "profile": "https_spiffe", "bundleConfigMap": "b-example-com-bundle"},
                            {"trustDomain": "spire.example.org",
                             "url": "https://spire.example.org:8443/", "profile": "https_spiffe",
                             "endpointSpiffeId": "spiffe://spire.example.org/spire/server",
                             "bundleConfigMap": "spire-bundle"}]}},
        flags=(*BASE_FLAGS, "--trust-domain=a.example.com",
               "--federation-addr=0.0.0.0:8444", "--federation-profile=https_spiffe",
               "--federation-refresh-min=1m", "--federation-refresh-max=30m",
               "--federation-fetch-timeout=5s", "--istio-include-federated",
               "--federate-with=b.example.com=https://federation.b.example.com/,profile=https_spiffe,"
               "endpoint-spiffe-id=spiffe://b.example.com/meshca/federation,"
               "bundle=/etc/meshca/federate-with/b.example.com/bundle",
               "--federate-with=spire.example.org=https://spire.example.org:8443/,profile=https_spiffe,"
               "endpoint-spiffe-id=spiffe://spire.example.org/spire/server,"
               "bundle=/etc/meshca/federate-with/spire.example.org/bundle"),
        absent=("--federation-cert", "--federation-key", "--vault-"),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        extra={"pvc": True, "secret_mounts": {"/etc/meshca/kek": "meshca-kek"},
               "federation_port": 8444},
    ),
    ValueSet(
        # A Web-PKI certificate on its own port, a node port, narrowed network policy; trusts a
        # public https_web endpoint and one under a private CA.
        "federation-web",
        {"fullnameOverride": "ca", "ttl": {"default": "12h", "max": "1d"},
         "federation": {"enabled": True, "port": 9443, "profile": "https_web",
                        "webCertSecret": "federation-tls",
                        "service": {"enabled": True, "type": "NodePort", "port": 8443,
                                    "nodePort": 30443},
                        "federateWith": [
                            {"trustDomain": "c.example.net", "url": "https://bundles.c.example.net/c.json",
                             "profile": "https_web"},
                            {"trustDomain": "d.internal", "url": "https://federation.d.internal/",
                             "profile": "https_web", "caConfigMap": "d-internal-ca"}]},
         "networkPolicy": {"enabled": True,
                           "federationFrom": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}},
        flags=(*BASE_FLAGS, "--federation-addr=0.0.0.0:9443", "--federation-profile=https_web",
               "--federation-cert=/etc/meshca/federation-tls/tls.crt",
               "--federation-key=/etc/meshca/federation-tls/tls.key",
               "--federate-with=c.example.net=https://bundles.c.example.net/c.json,profile=https_web",
               "--federate-with=d.internal=https://federation.d.internal/,profile=https_web,"
               "ca=/etc/meshca/federate-with/d.internal/ca.crt"),
        absent=("--federation-refresh", "--federation-fetch-timeout", "--istio-include-federated"),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        namespace="security",
        extra={"pvc": True, "federation_port": 9443,
               "secret_mounts": {"/etc/meshca/federation-tls": "federation-tls",
                                 "/etc/meshca/kek": "ca-kek"}},
    ),
    ValueSet(
        # Federation off: whatever else its block says, nothing of it is rendered.
        "federation-off-with-entries",
        {"federation": {"enabled": False, "profile": "https_web", "webCertSecret": "unused",
                        "istioIncludeFederated": True, "service": {"enabled": True},
                        "federateWith": [{"trustDomain": "b.example.com",
                                          "url": "https://federation.b.example.com/",
                                          "profile": "https_spiffe", "bundleConfigMap": "b-bundle"}]}},
        flags=BASE_FLAGS,
        absent=("--federat", "--istio-include-federated"),
        cluster_rules=frozenset(DISCOVERY | PUBLISH),
        extra={"pvc": True, "secret_mounts": {"/etc/meshca/kek": "meshca-kek"}},
    ),
]

FEDERATION_ON = {"enabled": True}
B_SPIFFE = {"trustDomain": "b.example.com", "url": "https://federation.b.example.com/",
            "profile": "https_spiffe", "bundleConfigMap": "b-bundle"}

# Values that values.schema.json must refuse, and the word its message must name.
BAD_VALUES = [
    ({"replicaCont": 2}, "replicaCont"),
    ({"keystore": {"upstream": "vault"}}, "upstream"),
    ({"rootRotation": "cross"}, "rootRotation"),
    ({"tokens": {"validaton": "jwks"}}, "validaton"),
    ({"keystore": {"type": "vault"}}, "type"),
    ({"admin": {"serviceAccounts": ["ops/meshctl=root"]}}, "serviceAccounts"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"ttl": {"default": "1 day", "max": "7d"}}, "default"),
    ({"persistence": {"enabled": "yes"}}, "enabled"),
    ({"keystore": {"type": "vault-kv", "vault": {"adress": "https://vault"}}}, "adress"),
    ({"extAuthz": {"enabled": True, "tls": "yes"}}, "tls"),
    ({"keystore": {"createKekSecret": "no"}}, "createKekSecret"),
    ({"networkPolicy": {"grpcFrom": {"namespaceSelector": {}}}}, "grpcFrom"),
    ({"federation": {**FEDERATION_ON, "profile": "spiffe"}}, "profile"),
    ({"federation": {**FEDERATION_ON, "port": 443}}, "port"),
    ({"federation": {**FEDERATION_ON, "refreshMin": "soon"}}, "refreshMin"),
    ({"federation": {**FEDERATION_ON, "enable": True}}, "enable"),
    ({"federation": {**FEDERATION_ON, "service": {"type": "Ingress"}}}, "type"),
    ({"federation": {**FEDERATION_ON, "federateWith": [
        {k: v for k, v in B_SPIFFE.items() if k != "trustDomain"}]}}, "trustDomain"),
    ({"federation": {**FEDERATION_ON, "federateWith": [{**B_SPIFFE, "profile": "spiffe"}]}},
     "profile"),
    ({"federation": {**FEDERATION_ON, "federateWith": [{**B_SPIFFE, "trustDomain": "B.Example"}]}},
     "trustDomain"),
    ({"federation": {**FEDERATION_ON, "federateWith": [{**B_SPIFFE, "trustDomain": ".."}]}},
     "trustDomain"),
    ({"federation": {**FEDERATION_ON, "federateWith": [
        {**B_SPIFFE, "url": "http://federation.b.example.com/"}]}}, "url"),
    ({"federation": {**FEDERATION_ON, "federateWith": [
        {**B_SPIFFE, "url": "https://federation.b.example.com/,profile=https_web"}]}}, "url"),
    ({"federation": {**FEDERATION_ON, "federateWith": [
        {**B_SPIFFE, "endpointSpiffeId": "b.example.com/meshca/federation"}]}}, "endpointSpiffeId"),
    ({"federation": {**FEDERATION_ON, "federateWith": [{**B_SPIFFE, "bundle": "b-bundle"}]}},
     "bundle"),
]

# Values the schema allows but that cannot work: the chart fails with a message saying why.
REFUSED = [
    ({"replicaCount": 3}, "replicaCount 3 needs a shared PostgreSQL database"),
    ({"replicaCount": 2, "database": {"existingSecret": "db", "secretKey": "url"}},
     "cannot share one PersistentVolumeClaim"),
    ({"keystore": {"type": "vault-transit"}}, "needs keystore.vault.addr"),
    ({"keystore": {"upstream": "vault-pki"}}, "needs keystore.vault.addr"),
    ({"keystore": {"upstream": "vault-pki", "vault": {"addr": "https://v", "role": "r"}},
      "caSecret": "corp"}, "keystore.upstream and caSecret"),
    ({"rootRotation": "cross-sign", "caSecret": "corp"}, "rootRotation cross-sign concerns roots"),
    ({"keystore": {"type": "vault-kv", "vault": {"addr": "https://v", "auth": "token"}}},
     "needs keystore.vault.tokenSecret"),
    ({"keystore": {"type": "vault-kv", "vault": {"addr": "https://v", "auth": "kubernetes"}}},
     "keystore.vault.auth kubernetes needs keystore.vault.role"),
    ({"keystore": {"type": "vault-kv", "vault": {"addr": "https://v", "auth": "approle",
                                                 "approle": {"roleId": "r"}}}},
     "needs keystore.vault.approle.roleId and keystore.vault.approle.secretIdSecret"),
    ({"replicaCount": 2, **POSTGRES}, "would give each pod CA keys of its own"),
    ({"tokens": {"jwks": "https://example.com/keys"}}, "tokens.jwks needs tokens.issuer"),
    ({"extAuthz": {"enabled": True}}, "extAuthz.enabled with networkPolicy.enabled needs extAuthz.callers"),
    ({"federation": {**FEDERATION_ON, "profile": "https_web"}},
     "federation.profile https_web needs federation.webCertSecret"),
    ({"federation": {**FEDERATION_ON, "webCertSecret": "federation-tls"}},
     "federation.webCertSecret is only read with federation.profile https_web"),
    ({"federation": {**FEDERATION_ON, "port": 15014}}, "federation.port 15014 is meshca's metrics port"),
    ({"federation": {**FEDERATION_ON, "port": 9191}, "extAuthz": {"enabled": True, "callers": [{}]}},
     "federation.port 9191 is meshca's ext_authz port"),
    ({"federation": {**FEDERATION_ON, "federateWith": [
        {k: v for k, v in B_SPIFFE.items() if k != "bundleConfigMap"}]}},
     "federation.federateWith b.example.com (profile https_spiffe) needs bundleConfigMap"),
    ({"federation": {**FEDERATION_ON, "federateWith": [{**B_SPIFFE, "caConfigMap": "b-ca"}]}},
     "federation.federateWith b.example.com: caConfigMap is only read with profile https_web"),
    ({"federation": {**FEDERATION_ON, "federateWith": [{**B_SPIFFE, "profile": "https_web"}]}},
     "bundleConfigMap and endpointSpiffeId are only read with profile https_spiffe"),
    ({"federation": {**FEDERATION_ON, "federateWith": [B_SPIFFE, {**B_SPIFFE, "url": "https://b/"}]}},
     "federation.federateWith names trust domain b.example.com twice"),
    ({"federation": {**FEDERATION_ON, "federateWith": [{**B_SPIFFE, "trustDomain": "cluster.local"}]}},
     "federation.federateWith names cluster.local, this release's own trustDomain"),
]


# ---- the node agent (agent.enabled) --------------------------------------------------------

@dataclass(frozen=True)
class AgentSet:
    """Values with the agent on. `flags`: exact `meshca agent` args; `absent`: flag prefixes
    that must not appear; `extra`: what else the case expects (names, mounts, rules)."""

    name: str
    values: dict[str, Any]
    flags: tuple[str, ...]
    absent: tuple[str, ...]
    namespace: str = "meshca-system"
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
MESH = {"namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}}

AGENT_SETS = [
    AgentSet(
        "agent-defaults",
        {"agent": {"enabled": True}},
        flags=("--server=meshca.meshca-system.svc:15012",
               "--server-ca=/var/run/secrets/meshca/root-cert.pem",
               "--token-file=/var/run/secrets/tokens/meshca-agent",
               "--trust-domain=cluster.local", "--attestor=kubernetes",
               "--kubelet-url=https://$(HOST_IP):10250/pods", "--kubelet-insecure",
               "--socket=/run/meshca/agent.sock", "--sds-socket=/run/meshca/sds.sock",
               "--health-addr=0.0.0.0:8089", "--log-level=INFO"),
        absent=("--kubelet-ca", "--svid-ttl", "--workload", "--bundle-url", "--proc-root"),
        extra={"account": "meshca-agent", "socket_dir": "/run/meshca", "uid": 10002,
               "audience": "istio-ca", "server_ca_configmap": "istio-ca-root-cert",
               "subresource": "nodes/proxy", "image": "meshca:0.1.0",
               "tolerations": [{"operator": "Exists"}], "health_port": 8089},
    ),
    AgentSet(
        # Renamed release in its own namespace, narrowed network, verified kubelet, every knob.
        "agent-hardened",
        {"fullnameOverride": "ca", "trustDomain": "prod.example.com",
         "tokens": {"validation": "jwks", "audiences": ["meshca", "istio-ca"]},
         "networkPolicy": {"enabled": True, "grpcFrom": [MESH], "metricsFrom": [MONITORING]},
         "agent": {"enabled": True,
                   "image": {"repository": "registry.example.com/meshca", "tag": "0.2.0",
                             "pullPolicy": "Always"},
                   "socketDir": "/var/run/spiffe",
                   "kubelet": {"verify": "ca", "caFile": "/etc/kubernetes/pki/ca.crt",
                               "subresource": "pods"},
                   "svidTtl": "1h", "logLevel": "DEBUG", "healthPort": 9099, "runAsUser": 20000,
                   "serviceAccount": {"name": "spiffe-agent"},
                   "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mesh",
                                    "effect": "NoSchedule"}],
                   "nodeSelector": {"kubernetes.io/os": "linux"},
                   "priorityClassName": "system-node-critical",
                   "updateStrategy": {"type": "RollingUpdate",
                                      "rollingUpdate": {"maxUnavailable": "10%"}},
                   "extraArgs": ["--retry-max=30s"]}},
        flags=("--server=ca.security.svc:15012", "--trust-domain=prod.example.com",
               "--kubelet-ca=/etc/meshca/kubelet-ca/ca.crt",
               "--socket=/var/run/spiffe/agent.sock", "--sds-socket=/var/run/spiffe/sds.sock",
               "--health-addr=0.0.0.0:9099", "--svid-ttl=1h", "--log-level=DEBUG",
               "--retry-max=30s"),
        absent=("--kubelet-insecure",),
        namespace="security",
        extra={"account": "spiffe-agent", "socket_dir": "/var/run/spiffe", "uid": 20000,
               "audience": "meshca", "server_ca_configmap": "istio-ca-root-cert",
               "subresource": "nodes/pods", "image": "registry.example.com/meshca:0.2.0",
               "kubelet_ca_host_file": "/etc/kubernetes/pki/ca.crt", "health_port": 9099,
               "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mesh",
                                "effect": "NoSchedule"}]},
    ),
    AgentSet(
        # No published ConfigMaps (the bundle comes from the operator's own), the cluster CA
        # verifies kubelets, an IPv6 kubelet URL, no network policy, the account listed already.
        "agent-own-configmaps-ipv6",
        {"publishConfigMaps": {"enabled": False},
         "networkPolicy": {"enabled": False},
         "tokens": {"trustedNodeAccounts": ["meshca-system/meshca-agent", "istio-system/ztunnel"]},
         "agent": {"enabled": True, "serverCaConfigMap": "mesh-roots",
                   "kubelet": {"verify": "ca", "caConfigMap": "kube-root-ca.crt",
                               "url": "https://[$(HOST_IP)]:10250/pods"}}},
        flags=("--kubelet-url=https://[$(HOST_IP)]:10250/pods",
               "--kubelet-ca=/etc/meshca/kubelet-ca/ca.crt"),
        absent=("--kubelet-insecure",),
        extra={"account": "meshca-agent", "socket_dir": "/run/meshca", "uid": 10002,
               "audience": "istio-ca", "server_ca_configmap": "mesh-roots",
               "subresource": "nodes/proxy", "image": "meshca:0.1.0",
               "kubelet_ca_configmap": "kube-root-ca.crt", "health_port": 8089,
               "tolerations": [{"operator": "Exists"}]},
    ),
]

AGENT_ON = {"enabled": True}

BAD_VALUES += [
    ({"agent": {"enabled": True, "kubelet": {"verify": "maybe"}}}, "verify"),
    ({"agent": {"enable": True}}, "enable"),
    ({"agent": {"enabled": "yes"}}, "enabled"),
    ({"agent": {**AGENT_ON, "socketDir": "run/meshca"}}, "socketDir"),
    ({"agent": {**AGENT_ON, "socketDir": "/run/meshca/"}}, "socketDir"),
    ({"agent": {**AGENT_ON, "kubelet": {"verify": "ca", "caFile": "ca.crt"}}}, "caFile"),
    ({"agent": {**AGENT_ON, "kubelet": {"verify": "ca", "subresource": "exec"}}}, "subresource"),
    ({"agent": {**AGENT_ON, "attestor": "unix"}}, "attestor"),
    ({"agent": {**AGENT_ON, "svidTtl": "one hour"}}, "svidTtl"),
    ({"agent": {**AGENT_ON, "runAsUser": 0}}, "runAsUser"),
    ({"agent": {**AGENT_ON, "extraArgs": ["-v"]}}, "extraArgs"),
]

REFUSED += [
    ({"agent": {**AGENT_ON, "kubelet": {"verify": "ca"}}},
     "agent.kubelet.verify ca needs agent.kubelet.caFile"),
    ({"agent": {**AGENT_ON, "kubelet": {"verify": "ca", "caFile": "/etc/ca.crt",
                                        "caConfigMap": "kube-root-ca.crt"}}},
     "agent.kubelet.caFile or agent.kubelet.caConfigMap, not both"),
    ({"agent": {**AGENT_ON, "kubelet": {"verify": "insecure", "caFile": "/etc/ca.crt"}}},
     "only read with agent.kubelet.verify ca"),
    ({"agent": AGENT_ON, "publishConfigMaps": {"enabled": False}},
     "name a ConfigMap of this namespace holding root-cert.pem in agent.serverCaConfigMap"),
]
