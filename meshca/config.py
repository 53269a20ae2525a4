"""Settings for `meshca serve`, built once by the CLI and passed in (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meshca.core.keys import KeyType
from meshca.core.rate_limit import RateLimit
from meshca.core.roles import Role
from meshca.core.rotation import DEFAULT_POLICY, RotationPolicy, check_lifetimes, max_leaf_ttl
from meshca.keystore_settings import KeystoreSettings
from meshca.transport.tls_listener import ConnectionLimits

DEFAULT_DNS_NAMES = ("localhost", "meshca.meshca-system.svc")
# Written into the data dir once meshca serves: the addresses it actually bound.
ENDPOINTS_FILE = "endpoints.json"
# The first admin token, written on first start (0600).
ADMIN_TOKEN_FILE = "admin-token"
# Issuance rate limits per worker process (README "Limits" says why these).
RATE_PER_IDENTITY = RateLimit(20, 200)
RATE_PER_SOURCE = RateLimit(200, 1000)


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("meshca-data")
    database_url: str | None = None  # None: SQLite in the data dir
    grpc_addr: str = "127.0.0.1:15012"
    metrics_addr: str = "127.0.0.1:15014"
    server_dns_names: tuple[str, ...] = DEFAULT_DNS_NAMES
    trust_domain: str = "cluster.local"
    ca_key_type: KeyType = KeyType.EC_P256
    ca_organization: str = "meshca"
    # Defaults (README "CA lifetimes"): a root a year, an intermediate a week, leaves at most
    # 1/6 of an intermediate so the rotation at 5/6 never cuts a leaf short.
    root_ttl: timedelta = timedelta(days=365)
    intermediate_ttl: timedelta = timedelta(days=7)
    default_ttl: timedelta = timedelta(hours=24)
    max_ttl: timedelta = timedelta(hours=28)
    backdate: timedelta = timedelta(minutes=1)
    token_issuer: str | None = None  # None: a development issuer in the data dir
    token_jwks: str | None = None
    token_audiences: tuple[str, ...] = ("istio-ca",)
    token_skew: timedelta = timedelta(seconds=60)
    log_level: str = "INFO"
    workers: int = 1
    admin_addr: str = "127.0.0.1:8443"
    admin_token_audiences: tuple[str, ...] = ("meshca-admin",)
    admin_service_accounts: tuple[tuple[str, Role], ...] = ()  # ("ns/sa", role)
    admin_spiffe_ids: tuple[tuple[str, Role], ...] = ()  # ("spiffe://…", role)
    # Kubernetes token authentication at scale.
    kubeconfig: str | None = None  # None: in-cluster when running in a pod
    token_validation: str = "jwks"  # jwks | tokenreview | both
    token_issuer_ca: str | None = None  # CA bundle for OIDC discovery over HTTPS
    token_cache_ttl: timedelta = timedelta(minutes=5)
    token_cache_size: int = 100_000
    token_negative_cache_ttl: timedelta = timedelta(seconds=5)
    kube_qps: float = 50.0
    kube_burst: int = 100
    cluster_id: str = "Kubernetes"  # the local cluster's name in `clusterid` metadata
    clusters: tuple[tuple[str, str], ...] = ()  # (name, kubeconfig) of remote clusters
    verify_pod_binding: bool = False
    trusted_node_accounts: tuple[str, ...] = ()  # "ns/sa"
    # Rotation and distribution (core/rotation.py decides; these are its thresholds).
    rotation_prepare_at: float = DEFAULT_POLICY.prepare_at
    rotation_activate_at: float = DEFAULT_POLICY.activate_at
    bundle_publish_lead: timedelta = DEFAULT_POLICY.publish_lead
    rotation_skew: timedelta = DEFAULT_POLICY.skew
    bundle_refresh_hint: timedelta = DEFAULT_POLICY.refresh_hint
    ca_reload_interval: timedelta = timedelta(seconds=5)
    ca_dir: Path | None = None  # a plugged-in CA (Istio cacerts layout): no rotation by meshca
    publish_configmaps: str | None = None  # namespace label selector for istio-ca-root-cert
    publish_interval: timedelta = timedelta(seconds=60)
    # Authorization policies (Istio AuthorizationPolicy semantics) and Envoy ext_authz.
    authz_root_namespace: str = "istio-system"
    policy_dir: Path | None = None
    watch_kube_policies: bool = False
    ext_authz_addr: str | None = "127.0.0.1:9191"  # None: no ext_authz server
    # Where CA keys live (docs/vault.md): sealed files, or HashiCorp Vault.
    keystore: str = "file"  # file | vault-transit | vault-kv
    vault_addr: str | None = None
    vault_ca_cert: Path | None = None
    vault_namespace: str | None = None
    vault_auth: str = "token"  # token | kubernetes | approle
    vault_auth_mount: str | None = None
    vault_role: str | None = None
    vault_token_file: Path | None = None  # None: $VAULT_TOKEN
    vault_kube_token_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    vault_role_id: str | None = None
    vault_secret_id_file: Path | None = None
    vault_transit_mount: str = "transit"
    vault_transit_intermediate: bool = False
    vault_kv_mount: str = "secret"
    vault_kv_prefix: str = "meshca/ca-keys"
    key_dir: Path | None = None  # None: the data dir; replicas with file keys share one
    kek_file: Path | None = None  # None: <data-dir>.kek beside the data dir (or $MESHCA_KEK)
    # Listener limits (README "Limits"): per listener and per process, none of them unbounded.
    tls_handshake_timeout: timedelta = timedelta(seconds=10)
    connection_idle_timeout: timedelta = timedelta(seconds=120)
    max_connections: int = 1024
    max_connections_per_source: int = 128
    max_streams_per_connection: int = 100
    max_request_bytes: int = 1024 * 1024  # admin API request bodies
    max_header_bytes: int = 64 * 1024  # gRPC metadata and admin API request heads
    admin_auth_failures: int = 10  # failed admin authentications per source before back-off
    admin_auth_backoff: timedelta = timedelta(seconds=30)  # first back-off; doubles, max 15 min
    # ext_authz fails closed within a bounded time (issue 12): identity state from a background
    # snapshot, denials once it is too old; terse deny bodies; optional mutual TLS.
    ext_authz_refresh: timedelta = timedelta(seconds=2)
    ext_authz_max_staleness: timedelta = timedelta(seconds=30)
    ext_authz_verbose: bool = False
    ext_authz_tls: bool = False
    # Limits (README "Limits"): issuance rate limits (per worker process; None: off), refused
    # callers summarised in the audit log, retention of audit and certificate rows, and how
    # long certificates may renew themselves before a token must be shown again.
    issuance_rate_per_identity: RateLimit | None = RATE_PER_IDENTITY
    issuance_rate_per_source: RateLimit | None = RATE_PER_SOURCE
    audit_refusal_interval: timedelta = timedelta(seconds=60)
    audit_retention: timedelta = timedelta(days=90)
    certificate_retention: timedelta = timedelta(days=7)
    retention_interval: timedelta = timedelta(hours=1)
    max_renewal_age: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
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
                f"--max-ttl must be at most {_describe(limit)}: what is left of an intermediate "
                f"({_describe(self.intermediate_ttl)}) when its successor takes over, so that no "
                "leaf is cut short"
            )
        if self.ca_dir is None:
            try:
                check_lifetimes(policy, root_ttl=self.root_ttl,
                                intermediate_ttl=self.intermediate_ttl, leaf_ttl=self.max_ttl)
            except ValueError as exc:
                raise ValueError(f"CA lifetimes do not fit the rotation thresholds: {exc}") from None
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

    def _check_rates_and_retention(self) -> None:
        if min(self.audit_refusal_interval, self.audit_retention, self.retention_interval,
               self.max_renewal_age) <= timedelta(0):
            raise ValueError("--audit-refusal-interval, --audit-retention, --retention-interval "
                             "and --max-renewal-age must be positive")
        if self.certificate_retention < self.rotation_skew:
            # A retired root stays in the bundle until its last leaf's notAfter (read from
            # these rows) plus the skew: deleting the rows sooner would drop it early.
            raise ValueError(f"--certificate-retention must be at least --rotation-skew "
                             f"({_describe(self.rotation_skew)})")

    @property
    def rotation_policy(self) -> RotationPolicy:
        return RotationPolicy(prepare_at=self.rotation_prepare_at,
                              activate_at=self.rotation_activate_at, skew=self.rotation_skew,
                              refresh_hint=self.bundle_refresh_hint,
                              publish_lead=self.bundle_publish_lead)

    @property
    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            handshake_timeout=self.tls_handshake_timeout.total_seconds(),
            idle_timeout=self.connection_idle_timeout.total_seconds(),
            max_connections=self.max_connections,
            max_connections_per_source=self.max_connections_per_source)

    @property
    def keystore_settings(self) -> KeystoreSettings:
        return KeystoreSettings(
            keystore=self.keystore, kek_file=self.kek_path, vault_addr=self.vault_addr,
            vault_ca_cert=self.vault_ca_cert, vault_namespace=self.vault_namespace,
            vault_auth=self.vault_auth, vault_auth_mount=self.vault_auth_mount,
            vault_role=self.vault_role, vault_token_file=self.vault_token_file,
            vault_kube_token_file=self.vault_kube_token_file, vault_role_id=self.vault_role_id,
            vault_secret_id_file=self.vault_secret_id_file,
            vault_transit_mount=self.vault_transit_mount,
            vault_transit_intermediate=self.vault_transit_intermediate,
            vault_kv_mount=self.vault_kv_mount, vault_kv_prefix=self.vault_kv_prefix)

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


def _describe(span: timedelta) -> str:
    """`1d 4h`, `28h 0m 5s`: enough to copy into a flag."""
    days, seconds = span.days, span.seconds
    parts = [f"{days}d"] if days else []
    parts += [f"{seconds // 3600}h"] if seconds // 3600 else []
    parts += [f"{seconds % 3600 // 60}m"] if seconds % 3600 // 60 else []
    parts += [f"{seconds % 60}s"] if seconds % 60 else []
    return " ".join(parts) or "0s"
