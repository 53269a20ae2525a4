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
               "--trust-domain=cluster.local", "--default-ttl=24h", "--max-ttl=7d",
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
         "publishConfigMaps": {"enabled": False},
         "persistence": {"enabled": False}},
        flags=(*BASE_FLAGS, "--keystore=vault-kv", "--vault-addr=https://vault.example.com",
               "--vault-auth=token", "--vault-token-file=/etc/meshca/vault-token/token",
               "--vault-kv-mount=kv", "--token-issuer=https://oidc.example.com",
               "--token-jwks=https://oidc.example.com/keys"),
        absent=("--vault-role", "--vault-transit-mount", "--publish-configmaps", "--vault-ca-cert",
                "--vault-namespace"),
        # Keys from a URL, nothing published, no TokenReview: no cluster-wide access at all.
        cluster_rules=frozenset(),
        extra={"pvc": False, "secret_mounts": {"/etc/meshca/vault-token": "vault-token",
                                               "/etc/meshca/kek": "meshca-kek"}},
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
]

# Values that values.schema.json must refuse, and the word its message must name.
BAD_VALUES = [
    ({"replicaCont": 2}, "replicaCont"),
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
]

# Values the schema allows but that cannot work: the chart fails with a message saying why.
REFUSED = [
    ({"replicaCount": 3}, "replicaCount 3 needs a shared PostgreSQL database"),
    ({"replicaCount": 2, "database": {"existingSecret": "db", "secretKey": "url"}},
     "cannot share one PersistentVolumeClaim"),
    ({"keystore": {"type": "vault-transit"}}, "needs keystore.vault.addr"),
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
]
