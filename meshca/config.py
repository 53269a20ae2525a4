"""Settings for `meshca serve`, built once by the CLI and passed in (no module globals).

Each field is declared once, here: its default, and in its metadata the flag, environment
variable (`MESHCA_<FLAG>`), help, text parser and help group (meshca/core/flags.py). The CLI
walks `dataclasses.fields(Settings)` to build the parser and the Settings from its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from meshca.core.connection_limits import ConnectionLimits
from meshca.core.cpus import usable_cores
from meshca.core.durations import describe_duration
from meshca.core.federation import ENTRY_SEPARATOR, FlagEntry, parse_flag_entry
from meshca.core.flags import (
    boolean,
    duration,
    flag,
    fraction,
    number,
    off_or,
    path,
    positive_int,
    rate_limit,
    switch,
    text,
)
from meshca.core.keys import KeyType
from meshca.core.rate_limit import RateLimit
from meshca.core.roles import Role
from meshca.core.rotation import DEFAULT_POLICY, RotationPolicy, check_lifetimes, max_leaf_ttl
from meshca.core.setting_values import cluster, service_account_ref, service_account_role, spiffe_id_role

DEFAULT_DNS_NAMES = ("localhost", "meshca.meshca-system.svc")
# Written into the data dir once meshca serves: the addresses it actually bound.
ENDPOINTS_FILE = "endpoints.json"
# The first admin token, written on first start (0600).
ADMIN_TOKEN_FILE = "admin-token"
# Issuance rate limits per worker process (README "Limits" says why these).
RATE_PER_IDENTITY = RateLimit(20.0, 200)
RATE_PER_SOURCE = RateLimit(200.0, 1000)
# `--workers auto` (the default): one worker per core this process may use. Throughput scales
# with workers (README "Benchmarks"); a user should not need to know that to get it.
AUTO_WORKERS = usable_cores()


def worker_count(text: str) -> int:
    return AUTO_WORKERS if text.strip().lower() == "auto" else positive_int(text)

# Help groups, in the order `meshca serve --help` lists them.
SERVER = "server"
CA = "certificate authority"
TOKENS = "service-account tokens"
ADMIN = "admin API"
AUTHZ = "authorization policies and ext_authz"
KEYS = "key storage"
LIMITS = "limits"
RATES = "issuance rate limits, audit and retention"
JWT = "JWT-SVIDs"
FEDERATION = "federation"
GROUPS = (SERVER, CA, TOKENS, ADMIN, AUTHZ, KEYS, LIMITS, RATES, JWT, FEDERATION)
JWT_KEY_TYPES = ("ES256", "ES384", "RS256")
_KEY_TYPES = tuple(k.value for k in KeyType)


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default=Path("meshca-data"), metadata=flag(
        "--data-dir", "directory holding the database, CA keys and trust bundle",
        parse=path, group=SERVER))
    database_url: str | None = field(default=None, metadata=flag(
        "--database-url", "SQLAlchemy URL", shown="SQLite in the data dir", group=SERVER))
    grpc_addr: str = field(default="127.0.0.1:15012", metadata=flag(
        "--grpc-addr", "Istio CA gRPC API (TLS) on HOST:PORT", group=SERVER))
    metrics_addr: str = field(default="127.0.0.1:15014", metadata=flag(
        "--metrics-addr", "Prometheus metrics and health (plain HTTP) on HOST:PORT", group=SERVER))
    server_dns_names: tuple[str, ...] = field(default=DEFAULT_DNS_NAMES, metadata=flag(
        "--server-dns-name", "DNS name in the serving certificate (repeatable)",
        repeatable=True, group=SERVER))
    trust_domain: str = field(default="cluster.local", metadata=flag(
        "--trust-domain", "SPIFFE trust domain of the workload identities", group=CA))
    ca_key_type: KeyType = field(default=KeyType.EC_P256, metadata=flag(
        "--ca-key-type", "key type of the root and intermediate CA keys meshca creates",
        parse=KeyType, choices=_KEY_TYPES, group=CA))
    ca_organization: str = field(default="meshca", metadata=flag(
        "--ca-organization", "organization (O) in the subject of the CA certificates meshca "
        "creates", group=CA))
    # Defaults (README "CA lifetimes"): a root a year, an intermediate a week, leaves at most
    # 1/6 of an intermediate so the rotation at 5/6 never cuts a leaf short.
    root_ttl: timedelta = field(default=timedelta(days=365), metadata=flag(
        "--root-ttl", "lifetime of each root generation", parse=duration, group=CA))
    intermediate_ttl: timedelta = field(default=timedelta(days=7), metadata=flag(
        "--intermediate-ttl", "lifetime of each intermediate generation", parse=duration,
        group=CA))
    root_rotation: str = field(default="replace", metadata=flag(
        "--root-rotation", "how a new root takes over: replace (peers need the new bundle, "
        "published ahead) or cross-sign (the old root also signs the new root's key, and "
        "chains verify against either root; docs/vault.md)", choices=("replace", "cross-sign"),
        group=CA))
    default_ttl: timedelta = field(default=timedelta(hours=24), metadata=flag(
        "--default-ttl", "lifetime of a leaf whose CSR asks for none", parse=duration,
        shown="24h", group=CA))
    max_ttl: timedelta = field(default=timedelta(hours=28), metadata=flag(
        "--max-ttl", "longest lifetime a CSR may ask for (the default is 1/6 of the "
        "intermediate's)", parse=duration, group=CA))
    backdate: timedelta = field(default=timedelta(minutes=1), metadata=flag(
        "--backdate", "how far notBefore is set in the past, for clock skew", parse=duration,
        shown="60s", group=CA))
    token_issuer: str | None = field(default=None, metadata=flag(
        "--token-issuer", "the cluster's service-account issuer URL (iss)",
        shown="a development issuer in the data dir", group=TOKENS))
    token_jwks: str | None = field(default=None, metadata=flag(
        "--token-jwks", "path or URL of the issuer's JWKS",
        shown="found through the issuer's OIDC discovery", group=TOKENS))
    token_audiences: tuple[str, ...] = field(default=("istio-ca",), metadata=flag(
        "--token-audience", "accepted token audience (repeatable)", repeatable=True,
        group=TOKENS))
    token_skew: timedelta = field(default=timedelta(seconds=60), metadata=flag(
        "--token-skew", "clock skew allowed for when checking a token's exp, nbf and iat",
        parse=duration, shown="60s", group=TOKENS))
    log_level: str = field(default="INFO", metadata=flag(
        "--log-level", "DEBUG, INFO, WARNING or ERROR", group=SERVER))
    log_format: str = field(default="text", metadata=flag(
        "--log-format", "text: a line per event, for people; json: an object per line, for log "
        "collectors", choices=("text", "json"), group=SERVER))
    log_issuances: bool = field(default=True, metadata=flag(
        "--log-issuances", "an INFO line per certificate issued (identity, serial, not-after, "
        "latency); off leaves only refusals and errors", parse=boolean, shown="on",
        metavar="on|off", group=SERVER))
    workers: int = field(default=AUTO_WORKERS, metadata=flag(
        "--workers", "worker processes sharing the gRPC port: a number, or auto for one per "
        "usable core", parse=worker_count, shown=f"auto, here {AUTO_WORKERS}", metavar="N|auto",
        group=SERVER))
    admin_addr: str = field(default="127.0.0.1:8443", metadata=flag(
        "--admin-addr", "admin REST API (HTTPS) on HOST:PORT", group=SERVER))
    admin_token_audiences: tuple[str, ...] = field(default=("meshca-admin",), metadata=flag(
        "--admin-token-audience", "audience of service-account tokens for the admin API "
        "(repeatable)", repeatable=True, group=ADMIN))
    admin_service_accounts: tuple[tuple[str, Role], ...] = field(default=(), metadata=flag(
        "--admin-service-account", "admin role of a service account's tokens (repeatable)",
        parse=service_account_role, repeatable=True, metavar="NS/SA=ROLE", group=ADMIN))
    admin_spiffe_ids: tuple[tuple[str, Role], ...] = field(default=(), metadata=flag(
        "--admin-spiffe-id", "admin role of mTLS clients with this SPIFFE ID (repeatable)",
        parse=spiffe_id_role, repeatable=True, metavar="SPIFFE_ID=ROLE", group=ADMIN))
    # Kubernetes token authentication at scale.
    kubeconfig: str | None = field(default=None, metadata=flag(
        "--kubeconfig", "kubeconfig of the local cluster", shown="in-cluster when in a pod",
        group=TOKENS))
    token_validation: str = field(default="jwks", metadata=flag(
        "--token-validation", "verify tokens locally (jwks), ask the API server (tokenreview), "
        "or both", choices=("jwks", "tokenreview", "both"), group=TOKENS))
    token_issuer_ca: str | None = field(default=None, metadata=flag(
        "--token-issuer-ca", "CA bundle to verify the issuer's OIDC discovery endpoint",
        shown="the system's CA certificates", group=TOKENS))
    token_cache_ttl: timedelta = field(default=timedelta(minutes=5), metadata=flag(
        "--token-cache-ttl", "how long an accepted token is remembered", parse=duration,
        group=TOKENS))
    token_cache_size: int = field(default=100_000, metadata=flag(
        "--token-cache-size", "accepted tokens remembered per worker process",
        parse=positive_int, group=TOKENS))
    token_negative_cache_ttl: timedelta = field(default=timedelta(seconds=5), metadata=flag(
        "--token-negative-cache-ttl", "how long a refused token is remembered", parse=duration,
        group=TOKENS))
    kube_qps: float = field(default=50.0, metadata=flag(
        "--kube-qps", "API-server calls per second (over all workers); excess calls queue",
        parse=number, shown="50", group=TOKENS))
    kube_burst: int = field(default=100, metadata=flag(
        "--kube-burst", "API-server calls at once before --kube-qps paces them",
        parse=positive_int, group=TOKENS))
    cluster_id: str = field(default="Kubernetes", metadata=flag(
        "--cluster-id", "name of the local cluster in `clusterid` metadata", group=TOKENS))
    clusters: tuple[tuple[str, str], ...] = field(default=(), metadata=flag(
        "--cluster", "another cluster whose sidecars may call (repeatable)", parse=cluster,
        repeatable=True, metavar="NAME=KUBECONFIG", group=TOKENS))
    verify_pod_binding: bool = field(default=False, metadata=switch(
        "--verify-pod-binding", "accept a pod-bound token only while its pod exists",
        group=TOKENS))
    trusted_node_accounts: tuple[str, ...] = field(default=(), metadata=flag(
        "--trusted-node-account", "a node agent that may impersonate workloads on its node "
        "(repeatable)", parse=service_account_ref, repeatable=True, metavar="NS/SA",
        group=TOKENS))
    # Rotation and distribution (core/rotation.py decides; these are its thresholds).
    rotation_prepare_at: float = field(default=DEFAULT_POLICY.prepare_at, metadata=flag(
        "--rotation-prepare-at", "fraction of a generation's life at which its successor is "
        "prepared", parse=fraction, group=CA))
    rotation_activate_at: float = field(default=DEFAULT_POLICY.activate_at, metadata=flag(
        "--rotation-activate-at", "fraction of a generation's life at which its successor "
        "takes over", parse=fraction, shown="5/6", group=CA))
    bundle_publish_lead: timedelta = field(default=DEFAULT_POLICY.publish_lead, metadata=flag(
        "--bundle-publish-lead", "how long a new root is in the trust bundle before it signs",
        parse=duration, group=CA))
    rotation_skew: timedelta = field(default=DEFAULT_POLICY.skew, metadata=flag(
        "--rotation-skew", "clock skew allowed for: a retired root stays this long after its "
        "last leaf", parse=duration, group=CA))
    bundle_refresh_hint: timedelta = field(default=DEFAULT_POLICY.refresh_hint, metadata=flag(
        "--bundle-refresh-hint", "spiffe_refresh_hint: how often bundle consumers should "
        "re-read the bundle", parse=duration, group=CA))
    ca_reload_interval: timedelta = field(default=timedelta(seconds=5), metadata=flag(
        "--ca-reload-interval", "how often every process checks the CA journal for a new "
        "generation or bundle", parse=duration, group=CA))
    ca_dir: Path | None = field(default=None, metadata=flag(
        "--ca-dir", "plugged-in CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, "
        "root-cert.pem, cert-chain.pem); meshca then rotates nothing itself", parse=path,
        shown="none: meshca runs its own CA", group=CA))
    publish_configmaps: str | None = field(default=None, metadata=flag(
        "--publish-configmaps", "keep the istio-ca-root-cert ConfigMap in every namespace this "
        "label selector picks (\"\" for all namespaces)", metavar="SELECTOR",
        shown="none: no ConfigMaps", group=CA))
    publish_interval: timedelta = field(default=timedelta(seconds=60), metadata=flag(
        "--publish-interval", "how often the ConfigMaps are checked even when the bundle did "
        "not change", parse=duration, shown="60s", group=CA))
    # Authorization policies (Istio AuthorizationPolicy semantics) and Envoy ext_authz.
    authz_root_namespace: str = field(default="istio-system", metadata=flag(
        "--authz-root-namespace", "Istio's root namespace: its policies apply mesh-wide",
        group=AUTHZ))
    policy_dir: Path | None = field(default=None, metadata=flag(
        "--policy-dir", "directory of AuthorizationPolicy YAML/JSON files, reloaded on change",
        parse=path, shown="none", group=AUTHZ))
    watch_kube_policies: bool = field(default=False, metadata=switch(
        "--watch-kube-policies", "list and watch AuthorizationPolicy objects in the cluster",
        group=AUTHZ))
    ext_authz_addr: str | None = field(default="127.0.0.1:9191", metadata=flag(
        "--ext-authz-addr", "Envoy ext_authz gRPC (envoy.service.auth.v3.Authorization/Check) "
        "on HOST:PORT (TLS with --ext-authz-tls); \"off\" for none", parse=off_or(text, blank_is_off=True),
        blank_is_value=True, group=AUTHZ))
    # Where CA keys live (docs/vault.md): sealed files, or HashiCorp Vault. The Vault token
    # itself is never a flag: a file or $VAULT_TOKEN, so it stays out of process listings.
    keystore: str = field(default="file", metadata=flag(
        "--keystore", "where CA keys live: sealed files, Vault Transit (the root key never "
        "leaves Vault) or Vault KV v2", choices=("file", "vault-transit", "vault-kv"),
        group=KEYS))
    vault_addr: str | None = field(default=None, metadata=flag(
        "--vault-addr", "Vault's URL, https://vault:8200", group=KEYS))
    vault_ca_cert: Path | None = field(default=None, metadata=flag(
        "--vault-ca-cert", "CA bundle to verify Vault's TLS certificate", parse=path,
        shown="the system's CA certificates", group=KEYS))
    vault_namespace: str | None = field(default=None, metadata=flag(
        "--vault-namespace", "Vault Enterprise namespace", group=KEYS))
    vault_auth: str = field(default="token", metadata=flag(
        "--vault-auth", "how meshca logs in to Vault", choices=("token", "kubernetes", "approle"),
        group=KEYS))
    vault_auth_mount: str | None = field(default=None, metadata=flag(
        "--vault-auth-mount", "auth method mount", shown="the method's name", group=KEYS))
    vault_role: str | None = field(default=None, metadata=flag(
        "--vault-role", "Kubernetes auth role", group=KEYS))
    vault_token_file: Path | None = field(default=None, metadata=flag(
        "--vault-token-file", "token auth: file holding the token", parse=path,
        shown="$VAULT_TOKEN", group=KEYS))
    vault_kube_token_file: Path = field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"), metadata=flag(
            "--vault-kube-token-file", "Kubernetes auth: the pod's projected service-account "
            "token", parse=path, group=KEYS))
    vault_role_id: str | None = field(default=None, metadata=flag(
        "--vault-role-id", "AppRole role_id", group=KEYS))
    vault_secret_id_file: Path | None = field(default=None, metadata=flag(
        "--vault-secret-id-file", "AppRole: file holding the secret_id", parse=path,
        group=KEYS))
    vault_transit_mount: str = field(default="transit", metadata=flag(
        "--vault-transit-mount", "mount of the Transit secrets engine", group=KEYS))
    vault_transit_intermediate: bool = field(default=False, metadata=switch(
        "--vault-transit-intermediate", "also keep intermediate and JWT-SVID keys in Transit "
        "(every issuance and every JWT-SVID then calls Vault)", group=KEYS))
    vault_kv_mount: str = field(default="secret", metadata=flag(
        "--vault-kv-mount", "mount of the KV v2 secrets engine", group=KEYS))
    vault_kv_prefix: str = field(default="meshca/ca-keys", metadata=flag(
        "--vault-kv-prefix", "path under the KV mount where CA keys are kept", group=KEYS))
    upstream: str = field(default="none", metadata=flag(
        "--upstream", "who signs meshca's intermediates: meshca's own root, or Vault's PKI "
        "engine (its roots are then the trust bundle; docs/vault.md)", choices=("none", "vault-pki"),
        group=KEYS))
    vault_pki_mount: str = field(default="pki", metadata=flag(
        "--vault-pki-mount", "--upstream vault-pki: mount of the PKI secrets engine whose "
        "default issuer signs meshca's intermediates", group=KEYS))
    key_dir: Path | None = field(default=None, metadata=flag(
        "--key-dir", "where CA keys are stored (sealed) with --keystore file; replicas sharing "
        "one database must share it too", parse=path, shown="the data dir", group=KEYS))
    kek_file: Path | None = field(default=None, metadata=flag(
        "--kek-file", "key-encryption key for every private key meshca stores (created 0600 on "
        "first start; $MESHCA_KEK wins)", parse=path,
        shown="<data-dir>.kek beside the data dir, never inside it", group=KEYS))
    # Listener limits (README "Limits"): per listener and per process, none of them unbounded.
    tls_handshake_timeout: timedelta = field(default=timedelta(seconds=10), metadata=flag(
        "--tls-handshake-timeout", "a connection that has not finished its TLS handshake by "
        "then is closed", parse=duration, group=LIMITS))
    connection_idle_timeout: timedelta = field(default=timedelta(seconds=120), metadata=flag(
        "--connection-idle-timeout", "a connection that moved no byte in either direction for "
        "this long is closed", parse=duration, shown="120s", group=LIMITS))
    max_connections: int = field(default=1024, metadata=flag(
        "--max-connections", "open connections per listener (gRPC, admin) and process; more "
        "are closed at once", parse=positive_int, group=LIMITS))
    max_connections_per_source: int = field(default=128, metadata=flag(
        "--max-connections-per-source", "open connections from one client address per "
        "listener and process", parse=positive_int, group=LIMITS))
    max_streams_per_connection: int = field(default=100, metadata=flag(
        "--max-streams-per-connection", "concurrent gRPC calls on one connection",
        parse=positive_int, group=LIMITS))
    max_request_bytes: int = field(default=1024 * 1024, metadata=flag(
        "--max-request-bytes", "largest admin API request body (413 above it)",
        parse=positive_int, group=LIMITS))
    max_header_bytes: int = field(default=64 * 1024, metadata=flag(
        "--max-header-bytes", "largest gRPC metadata and admin API request head",
        parse=positive_int, group=LIMITS))
    admin_auth_failures: int = field(default=10, metadata=flag(
        "--admin-auth-failures", "failed admin authentications from one address before it "
        "must wait (429 with Retry-After)", parse=positive_int, group=LIMITS))
    admin_auth_backoff: timedelta = field(default=timedelta(seconds=30), metadata=flag(
        "--admin-auth-backoff", "first wait after too many failed admin authentications; "
        "doubles while failures go on, at most 15m", parse=duration, group=LIMITS))
    # ext_authz fails closed within a bounded time (issue 12): identity state from a background
    # snapshot, denials once it is too old; terse deny bodies; optional mutual TLS.
    ext_authz_refresh: timedelta = field(default=timedelta(seconds=2), metadata=flag(
        "--ext-authz-refresh", "how often each worker re-reads blocked identities and revoked "
        "certificates for ext_authz, in the background", parse=duration, group=AUTHZ))
    ext_authz_max_staleness: timedelta = field(default=timedelta(seconds=30), metadata=flag(
        "--ext-authz-max-staleness", "ext_authz denies every check (reason "
        "identity-state-stale) while its last good read of blocked identities and revoked "
        "certificates is older than this", parse=duration, group=AUTHZ))
    ext_authz_verbose: bool = field(default=False, metadata=switch(
        "--ext-authz-verbose", "deny bodies and the x-meshca-authz header name the deciding "
        "policy, rule and reason (off: only the decision and a reason code)", group=AUTHZ))
    ext_authz_tls: bool = field(default=False, metadata=switch(
        "--ext-authz-tls", "serve ext_authz over TLS with meshca's serving certificate and "
        "require a client certificate issued under meshca's trust bundle (off: plaintext)",
        group=AUTHZ))
    # Limits (README "Limits"): issuance rate limits (per worker process; None: off), refused
    # callers summarised in the audit log, retention of audit and certificate rows, and how
    # long certificates may renew themselves before a token must be shown again.
    issuance_rate_per_identity: RateLimit | None = field(default=RATE_PER_IDENTITY, metadata=flag(
        "--issuance-rate-per-identity", "CreateCertificate requests per SPIFFE ID, per worker "
        "process, as RATE/s:BURST (or /m, /h) or off; over it: RESOURCE_EXHAUSTED with "
        "retry-after", parse=off_or(rate_limit), metavar="RATE/s:BURST", group=RATES))
    issuance_rate_per_source: RateLimit | None = field(default=RATE_PER_SOURCE, metadata=flag(
        "--issuance-rate-per-source", "CreateCertificate requests per client IP address, per "
        "worker process, checked before any token; RATE/s:BURST or off",
        parse=off_or(rate_limit), metavar="RATE/s:BURST", group=RATES))
    audit_refusal_interval: timedelta = field(default=timedelta(seconds=60), metadata=flag(
        "--audit-refusal-interval", "refused callers are written to the audit log as one row "
        "per source, action and reason per this interval", parse=duration, shown="60s",
        group=RATES))
    audit_retention: timedelta = field(default=timedelta(days=90), metadata=flag(
        "--audit-retention", "audit rows older than this are deleted", parse=duration,
        group=RATES))
    certificate_retention: timedelta = field(default=timedelta(days=7), metadata=flag(
        "--certificate-retention", "certificate rows are deleted this long after they expire "
        "(revoked ones too, never before they expire); at least --rotation-skew",
        parse=duration, group=RATES))
    retention_interval: timedelta = field(default=timedelta(hours=1), metadata=flag(
        "--retention-interval", "how often one replica deletes what retention allows, in "
        "batches", parse=duration, group=RATES))
    max_renewal_age: timedelta = field(default=timedelta(days=7), metadata=flag(
        "--max-renewal-age", "renewal with a client certificate is refused once the "
        "identity's last service-account token check is older than this", parse=duration,
        group=RATES))
    # JWT-SVIDs (issue 15): signing keys are CA generations of kind `jwt`.
    jwt_key_type: str = field(default="ES256", metadata=flag(
        "--jwt-key-type", "algorithm of the JWT-SVID signing keys meshca creates",
        choices=JWT_KEY_TYPES, group=JWT))
    jwt_default_ttl: timedelta = field(default=timedelta(minutes=5), metadata=flag(
        "--jwt-default-ttl", "lifetime of a JWT-SVID whose request asks for none",
        parse=duration, group=JWT))
    jwt_max_ttl: timedelta = field(default=timedelta(hours=1), metadata=flag(
        "--jwt-max-ttl", "longest lifetime a JWT-SVID request may ask for", parse=duration,
        group=JWT))
    # Federation (issue 15): this trust domain's bundle endpoint, and the trust domains it
    # trusts. Parsed further by the federation package.
    federation_addr: str | None = field(default=None, metadata=flag(
        "--federation-addr", "SPIFFE bundle endpoint (HTTPS, GET /) on HOST:PORT",
        parse=off_or(text, blank_is_off=True), shown="off", group=FEDERATION))
    federation_profile: str = field(default="https_spiffe", metadata=flag(
        "--federation-profile", "how the bundle endpoint authenticates: meshca's own SVID "
        "(https_spiffe) or a Web-PKI certificate (https_web, with --federation-cert/-key)",
        choices=("https_spiffe", "https_web"), group=FEDERATION))
    federation_cert: Path | None = field(default=None, metadata=flag(
        "--federation-cert", "https_web: the endpoint's certificate chain (PEM)", parse=path,
        group=FEDERATION))
    federation_key: Path | None = field(default=None, metadata=flag(
        "--federation-key", "https_web: the endpoint's private key (PEM, 0600)", parse=path,
        group=FEDERATION))
    federate_with: tuple[FlagEntry, ...] = field(default=(), metadata=flag(
        "--federate-with", "trust another trust domain's SVIDs, fetching its bundle from URL "
        "(repeatable; in the environment, separate values with ';')", parse=parse_flag_entry,
        repeatable=True, env_separator=ENTRY_SEPARATOR,
        metavar="TD=URL[,profile=https_web|https_spiffe,endpoint-spiffe-id=ID,bundle=FILE,ca=FILE]",
        group=FEDERATION))
    federation_refresh_min: timedelta = field(default=timedelta(seconds=30), metadata=flag(
        "--federation-refresh-min", "a foreign bundle is fetched no more often than this, "
        "whatever its spiffe_refresh_hint says", parse=duration, group=FEDERATION))
    federation_refresh_max: timedelta = field(default=timedelta(hours=1), metadata=flag(
        "--federation-refresh-max", "a foreign bundle is fetched at least this often; also the "
        "longest wait between retries of a failing endpoint", parse=duration, group=FEDERATION))
    federation_fetch_timeout: timedelta = field(default=timedelta(seconds=10), metadata=flag(
        "--federation-fetch-timeout", "how long one fetch of a foreign bundle may take",
        parse=duration, group=FEDERATION))
    istio_include_federated: bool = field(default=False, metadata=switch(
        "--istio-include-federated", "append federated roots to the trust bundle in "
        "CreateCertificate responses (Istio's multi-trust-domain set-up)", group=FEDERATION))

    def __post_init__(self) -> None:
        if self.jwt_default_ttl > self.jwt_max_ttl:
            raise ValueError("--jwt-default-ttl must not exceed --jwt-max-ttl")
        if self.default_ttl > self.max_ttl:
            raise ValueError("--default-ttl must not exceed --max-ttl")
        if not 0 < self.rotation_prepare_at < self.rotation_activate_at < 1:
            raise ValueError("--rotation-prepare-at must be below --rotation-activate-at, both "
                             "between 0 and 1")
        if self.ca_reload_interval <= timedelta(0) or self.publish_interval <= timedelta(0):
            raise ValueError("--ca-reload-interval and --publish-interval must be positive")
        try:
            policy = self.rotation_policy
        except ValueError as exc:
            raise ValueError(f"rotation settings (--bundle-publish-lead, --bundle-refresh-hint, "
                             f"--rotation-skew): {exc}") from None
        limit = max_leaf_ttl(self.intermediate_ttl, policy)
        if self.max_ttl > limit and self.ca_dir is None:
            raise ValueError(
                f"--max-ttl must be at most {describe_duration(limit)}: what is left of an "
                f"intermediate ({describe_duration(self.intermediate_ttl)}) when its successor "
                "takes over, so that no leaf is cut short"
            )
        if self.ca_dir is None:
            try:
                check_lifetimes(policy, root_ttl=self.root_ttl,
                                intermediate_ttl=self.intermediate_ttl, leaf_ttl=self.max_ttl)
            except ValueError as exc:
                raise ValueError(f"CA lifetimes do not fit the rotation thresholds: {exc}") from None
        if self.root_rotation == "cross-sign" and (self.upstream != "none" or self.ca_dir is not None):
            raise ValueError("--root-rotation cross-sign concerns roots meshca makes: not with "
                             "--upstream or --ca-dir")
        if self.upstream != "none" and self.ca_dir is not None:
            raise ValueError("--upstream and --ca-dir both name who signs meshca's intermediate: "
                             "give one")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.token_validation not in ("jwks", "tokenreview", "both"):
            raise ValueError("--token-validation must be jwks, tokenreview or both")
        if self.kube_qps <= 0 or self.kube_burst < 1:
            raise ValueError("--kube-qps must be positive and --kube-burst at least 1")
        if self.token_cache_size < 1:
            raise ValueError("--token-cache-size must be at least 1")
        if self.ext_authz_addr is not None:
            split_host_port(self.ext_authz_addr)  # a ValueError names the bad address
        self.connection_limits  # noqa: B018 - a ValueError names the bad limit
        if min(self.max_streams_per_connection, self.max_request_bytes, self.max_header_bytes,
               self.admin_auth_failures) < 1 or self.admin_auth_backoff <= timedelta(0):
            raise ValueError("--max-streams-per-connection, --max-request-bytes, "
                             "--max-header-bytes, --admin-auth-failures and --admin-auth-backoff "
                             "must be positive")
        names = [name for name, _ in self.clusters]
        if len(set(names)) != len(names) or self.cluster_id in names:
            raise ValueError("--cluster names must be distinct and differ from --cluster-id")
        if self.ext_authz_refresh <= timedelta(0):
            raise ValueError("--ext-authz-refresh must be positive")
        if self.ext_authz_max_staleness <= self.ext_authz_refresh:
            raise ValueError("--ext-authz-max-staleness must be longer than --ext-authz-refresh "
                             "(a few refreshes), or every check between two reads is denied")
        self._check_rates_and_retention()
        self._check_federation()

    def _check_federation(self) -> None:
        if not timedelta(0) < self.federation_refresh_min <= self.federation_refresh_max:
            raise ValueError("--federation-refresh-min must be positive and at most "
                             "--federation-refresh-max")
        if self.federation_fetch_timeout <= timedelta(0):
            raise ValueError("--federation-fetch-timeout must be positive")
        if self.federation_addr is not None:
            split_host_port(self.federation_addr)
            if self.federation_profile == "https_web" and (
                    self.federation_cert is None or self.federation_key is None):
                raise ValueError("--federation-profile https_web needs --federation-cert and "
                                 "--federation-key")
        names = [entry.trust_domain for entry in self.federate_with]
        if len(set(names)) != len(names):
            raise ValueError("--federate-with names a trust domain twice")
        if self.trust_domain in names:
            raise ValueError("--federate-with must not name this server's own trust domain")

    def _check_rates_and_retention(self) -> None:
        if min(self.audit_refusal_interval, self.audit_retention, self.retention_interval,
               self.max_renewal_age) <= timedelta(0):
            raise ValueError("--audit-refusal-interval, --audit-retention, --retention-interval "
                             "and --max-renewal-age must be positive")
        if self.certificate_retention < self.rotation_skew:
            # A retired root stays in the bundle until its last leaf's notAfter (read from
            # these rows) plus the skew: deleting the rows sooner would drop it early.
            raise ValueError(f"--certificate-retention must be at least --rotation-skew "
                             f"({describe_duration(self.rotation_skew)})")

    @property
    def rotation_policy(self) -> RotationPolicy:
        return RotationPolicy(prepare_at=self.rotation_prepare_at,
                              activate_at=self.rotation_activate_at, skew=self.rotation_skew,
                              refresh_hint=self.bundle_refresh_hint,
                              publish_lead=self.bundle_publish_lead,
                              # A process may sign with a JWT key until its next CA reload.
                              token_ttl=self.jwt_max_ttl + self.ca_reload_interval)

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            handshake_timeout=self.tls_handshake_timeout.total_seconds(),
            idle_timeout=self.connection_idle_timeout.total_seconds(),
            max_connections=self.max_connections,
            max_connections_per_source=self.max_connections_per_source)

    @property
    def kek_path(self) -> Path:
        """Outside the data dir, so that a copy of the data dir alone reveals no key."""
        if self.kek_file is not None:
            return self.kek_file
        resolved = self.data_dir.resolve()
        return resolved.parent / f"{resolved.name}.kek"

    @property
    def bundle_path(self) -> Path:
        return self.data_dir / "root-cert.pem"


def split_host_port(addr: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); ValueError on anything else."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address {addr!r} must be HOST:PORT")
    number = int(port)
    if number > 65535:
        raise ValueError(f"port {number} is out of range")
    return host.strip("[]"), number

