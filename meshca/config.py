"""Settings for `meshca serve`, built once by the CLI and passed in (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from meshca.core.keys import KeyType
from meshca.core.roles import Role
from meshca.core.rotation import DEFAULT_POLICY, check_lifetimes, max_leaf_ttl

DEFAULT_DNS_NAMES = ("localhost", "meshca.meshca-system.svc")
# Written into the data dir once meshca serves: the addresses it actually bound.
ENDPOINTS_FILE = "endpoints.json"
# The first admin token, written on first start (0600).
ADMIN_TOKEN_FILE = "admin-token"


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
    root_ttl: timedelta = timedelta(days=3650)
    intermediate_ttl: timedelta = timedelta(days=365)
    default_ttl: timedelta = timedelta(hours=24)
    max_ttl: timedelta = timedelta(days=7)
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

    def __post_init__(self) -> None:
        if self.default_ttl > self.max_ttl:
            raise ValueError("--default-ttl must not exceed --max-ttl")
        limit = max_leaf_ttl(self.intermediate_ttl)
        if self.max_ttl > limit:
            raise ValueError(
                f"--max-ttl must be at most {limit.days}d {limit.seconds // 3600}h: what is left of "
                f"an intermediate ({self.intermediate_ttl.days} days) when it is rotated at 5/6 of "
                "its life, so that no leaf is cut short"
            )
        check_lifetimes(DEFAULT_POLICY, root_ttl=self.root_ttl,
                        intermediate_ttl=self.intermediate_ttl, leaf_ttl=self.max_ttl)
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.token_validation not in ("jwks", "tokenreview", "both"):
            raise ValueError("--token-validation must be jwks, tokenreview or both")
        if self.kube_qps <= 0 or self.kube_burst < 1:
            raise ValueError("--kube-qps must be positive and --kube-burst at least 1")
        if self.token_cache_size < 1:
            raise ValueError("--token-cache-size must be at least 1")
        names = [name for name, _ in self.clusters]
        if len(set(names)) != len(names) or self.cluster_id in names:
            raise ValueError("--cluster names must be distinct and differ from --cluster-id")

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
