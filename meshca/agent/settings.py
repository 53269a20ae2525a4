"""Settings for `meshca agent`, built once by the CLI and passed in (no module globals).

Declared like the server's (meshca/config.py): each field once, its flag, environment variable
(`MESHCA_<FLAG>`), help, parser and help group in its metadata (meshca/core/flags.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from meshca.core.flags import duration, flag, off_or, path, positive_int, switch
from meshca.core.spiffe import SpiffeId

DEFAULT_SOCKET = "/run/meshca/agent.sock"
DEFAULT_SDS_SOCKET = "/run/meshca/sds.sock"
DEFAULT_TOKEN_FILE = "/var/run/secrets/tokens/meshca-agent"
DEFAULT_SERVER_CA = "/var/run/secrets/meshca/root-cert.pem"
# The pod's standard token: its audience is the API server's, which is what the kubelet checks
# (the token for meshca carries meshca's audience, and the kubelet would refuse it).
DEFAULT_KUBELET_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
ATTESTORS = ("kubernetes", "unix")
BUNDLE_SOURCES = ("server", "file", "url")

# Help groups, in the order `meshca agent --help` lists them.
SOCKETS = "workload sockets"
SERVER = "meshca server"
ATTESTATION = "workload attestation"
SVIDS = "SVIDs and bundles"
OPERATIONS = "operations"
GROUPS = (SOCKETS, SERVER, ATTESTATION, SVIDS, OPERATIONS)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    # Sockets workloads connect to.
    socket: Path = field(default=Path(DEFAULT_SOCKET), metadata=flag(
        "--socket", "SPIFFE Workload API socket (clients: SPIFFE_ENDPOINT_SOCKET=unix://<path>)",
        parse=path, group=SOCKETS))
    sds_socket: Path | None = field(default=Path(DEFAULT_SDS_SOCKET), metadata=flag(
        "--sds-socket", "Envoy SDS socket ('off': no SDS)",
        parse=off_or(path, blank_is_off=True), group=SOCKETS))
    # The meshca server that signs.
    server: str = field(default="meshca.meshca-system.svc:15012", metadata=flag(
        "--server", "meshca's gRPC address, HOST:PORT", group=SERVER))
    server_ca: Path = field(default=Path(DEFAULT_SERVER_CA), metadata=flag(
        "--server-ca", "PEM roots that verify the server's certificate (its trust bundle, "
        "e.g. the istio-ca-root-cert ConfigMap's root-cert.pem)", parse=path, group=SERVER))
    server_name: str | None = field(default=None, metadata=flag(
        "--server-name", "DNS name to verify in the server's certificate",
        shown="the host of --server", group=SERVER))
    token_file: Path = field(default=Path(DEFAULT_TOKEN_FILE), metadata=flag(
        "--token-file", "the agent's own projected service-account token (re-read on every "
        "use); the server must list this account in --trusted-node-account", parse=path,
        group=SERVER))
    cluster_id: str | None = field(default=None, metadata=flag(
        "--cluster-id", "`clusterid` sent to the server", shown="the server's local cluster",
        group=SERVER))
    bundle_source: str = field(default="server", metadata=flag(
        "--bundle-source", "where the trust bundles come from: server (its GetBundles: the "
        "trust domain's roots and JWT keys and the federated trust domains' bundles, followed "
        "at the spiffe_refresh_hint), file (--server-ca, re-read every 30s: roots only) or url "
        "(--bundle-url: roots and JWT keys, no federated bundles)", choices=BUNDLE_SOURCES,
        group=SERVER))
    bundle_url: str | None = field(default=None, metadata=flag(
        "--bundle-url", "the server's /v1/bundle (https://HOST:PORT/v1/bundle), followed at its "
        "spiffe_refresh_hint; implies --bundle-source url", group=SERVER))
    server_timeout: timedelta = field(default=timedelta(seconds=10), metadata=flag(
        "--server-timeout", "deadline of one call to the server", parse=duration, group=SERVER))
    retry_max: timedelta = field(default=timedelta(seconds=60), metadata=flag(
        "--retry-max", "longest wait between retries while the server fails (exponential "
        "back-off from 1s, with jitter)", parse=duration, group=SERVER))
    # Who a caller is.
    trust_domain: str = field(default="cluster.local", metadata=flag(
        "--trust-domain", "SPIFFE trust domain of the workloads", group=ATTESTATION))
    attestor: str = field(default="kubernetes", metadata=flag(
        "--attestor", "kubernetes: the caller's pod from its cgroup and the kubelet; unix: "
        "--workload entries by uid/gid", choices=ATTESTORS, group=ATTESTATION))
    workloads: tuple[str, ...] = field(default=(), metadata=flag(
        "--workload", "unix attestor entry (repeatable)", repeatable=True,
        metavar="NAME=uid:N[,gid:N]=spiffe://TD/ns/NS/sa/SA", group=ATTESTATION))
    kubelet_url: str = field(default="https://127.0.0.1:10250/pods", metadata=flag(
        "--kubelet-url", "the kubelet's pod list", group=ATTESTATION))
    kubelet_token_file: Path = field(default=Path(DEFAULT_KUBELET_TOKEN_FILE), metadata=flag(
        "--kubelet-token-file", "the agent's token for the kubelet, with the API server's "
        "audience (re-read on every use)", parse=path, group=ATTESTATION))
    kubelet_ca: Path | None = field(default=None, metadata=flag(
        "--kubelet-ca", "PEM CA that verifies the kubelet's serving certificate",
        parse=off_or(path, blank_is_off=True), shown="the system's CA certificates",
        group=ATTESTATION))
    kubelet_insecure: bool = field(default=False, metadata=switch(
        "--kubelet-insecure", "do not verify the kubelet's certificate (its default one is "
        "self-signed)", group=ATTESTATION))
    proc_root: Path = field(default=Path("/proc"), metadata=flag(
        "--proc-root", "the host's /proc (pids are the host's: run with hostPID)", parse=path,
        group=ATTESTATION))
    attestation_wait: timedelta = field(default=timedelta(seconds=10), metadata=flag(
        "--attestation-wait", "how long a new workload waits for an unreachable kubelet before "
        "UNAVAILABLE", parse=duration, group=ATTESTATION))
    # What workloads are given.
    svid_ttl: timedelta | None = field(default=None, metadata=flag(
        "--svid-ttl", "lifetime asked of the server for each SVID", parse=off_or(duration),
        shown="the server's --default-ttl", group=SVIDS))
    svid_key_type: str = field(default="ec-p256", metadata=flag(
        "--svid-key-type", "key type of workload SVIDs (made on this node, never sent)",
        choices=("ec-p256", "ec-p384", "rsa-2048"), group=SVIDS))
    jwt_svid_ttl: timedelta | None = field(default=None, metadata=flag(
        "--jwt-svid-ttl", "lifetime asked of the server for each JWT-SVID (served from the "
        "cache until half of it has passed)", parse=off_or(duration),
        shown="the server's --jwt-default-ttl", group=SVIDS))
    idle_svid_lifetime: timedelta = field(default=timedelta(minutes=10), metadata=flag(
        "--idle-svid-lifetime", "how long an identity no stream watches keeps being renewed",
        parse=duration, group=SVIDS))
    # Running the agent.
    health_addr: str | None = field(default="0.0.0.0:8089", metadata=flag(
        "--health-addr", "/healthz, /readyz and /metrics (plain HTTP) on HOST:PORT ('off': "
        "none)", parse=off_or(str, blank_is_off=True), group=OPERATIONS))
    max_connections: int = field(default=4096, metadata=flag(
        "--max-connections", "open connections on each workload socket",
        parse=positive_int, group=OPERATIONS))
    max_connections_per_uid: int = field(default=512, metadata=flag(
        "--max-connections-per-uid", "open connections on each workload socket from one uid",
        parse=positive_int, group=OPERATIONS))
    log_level: str = field(default="INFO", metadata=flag(
        "--log-level", "DEBUG, INFO, WARNING or ERROR", group=OPERATIONS))

    def __post_init__(self) -> None:
        SpiffeId.for_trust_domain(self.trust_domain)  # ValueError names what is wrong
        if self.attestor == "unix" and not self.workloads:
            raise ValueError("--attestor unix needs at least one --workload entry")
        if self.attestor == "kubernetes" and self.workloads:
            raise ValueError("--workload entries are for --attestor unix")
        if self.kubelet_insecure and self.kubelet_ca is not None:
            raise ValueError("--kubelet-ca and --kubelet-insecure contradict each other")
        if self.sds_socket is not None and self.sds_socket == self.socket:
            raise ValueError("--sds-socket must differ from --socket")
        host, colon, port = self.server.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"--server {self.server!r} is not HOST:PORT")
        if self.svid_ttl is not None and self.svid_ttl < timedelta(seconds=10):
            raise ValueError("--svid-ttl must be at least 10s")
        if self.jwt_svid_ttl is not None and self.jwt_svid_ttl < timedelta(seconds=10):
            raise ValueError("--jwt-svid-ttl must be at least 10s")
        if self.bundle_url and self.bundle_source == "file":
            raise ValueError("--bundle-url and --bundle-source file contradict each other")
        if self.bundle_source == "url" and not self.bundle_url:
            raise ValueError("--bundle-source url needs --bundle-url")

    @property
    def effective_bundle_source(self) -> str:
        return "url" if self.bundle_url else self.bundle_source

    @property
    def verified_server_name(self) -> str:
        return self.server_name or self.server.rpartition(":")[0].strip("[]")
