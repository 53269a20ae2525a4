"""`meshca serve` flags, and the Settings they make."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshca.cli.common import data_dir_arg, env
from meshca.cli.durations import parse_duration
from meshca.config import DEFAULT_DNS_NAMES, Settings
from meshca.core.keys import KeyType
from meshca.core.kube_names import check_service_account_ref
from meshca.core.rate_limit import RateLimit
from meshca.core.roles import Role
from meshca.core.rotation import DEFAULT_POLICY
from meshca.core.spiffe import SpiffeId


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _namespaced_name(text: str) -> str:
    if text.count("/") != 1 or not all(text.split("/")):
        raise argparse.ArgumentTypeError(f"{text!r} must be NAMESPACE/SERVICE_ACCOUNT")
    try:
        check_service_account_ref(*text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: {exc}") from None
    return text


def _cluster(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} must be NAME=KUBECONFIG")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"kubeconfig {path} does not exist")
    return name, path


def _role_mapping(kind: str) -> Callable[[str], tuple[str, Role]]:
    """`NAME=ROLE`; NAME is `ns/sa` or a SPIFFE ID, checked here so typos fail at start-up."""

    def parse(text: str) -> tuple[str, Role]:
        name, sep, role_text = text.rpartition("=")
        try:
            role = Role.parse(role_text)
            if not sep or not name:
                raise ValueError(f"{text!r} must be NAME=ROLE")
            if kind == "spiffe":
                name = str(SpiffeId.parse(name))
            elif name.count("/") != 1 or not all(name.split("/")):
                raise ValueError(f"{name!r} must be NAMESPACE/SERVICE_ACCOUNT")
            else:
                check_service_account_ref(*name.split("/"))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return name, role

    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction between 0 and 1, e.g. 0.5")
    return value


def _fraction_env(name: str, default: float) -> float:
    text = env(name)
    return _fraction(text) if text else default


def _duration_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str,
                   default: str, text: str) -> None:
    name = flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(flag, type=parse_duration,
                        default=parse_duration(env(name, default) or default),
                        help=f"{text} (default {default})")


def _add_ca_flags(serve: argparse.ArgumentParser) -> None:
    """Lifetimes, rotation thresholds and distribution of the CA meshca owns."""
    _duration_flag(serve, "--root-ttl", "365d", "lifetime of each root generation")
    _duration_flag(serve, "--intermediate-ttl", "7d", "lifetime of each intermediate generation")
    serve.add_argument("--rotation-prepare-at", type=_fraction,
                       default=_fraction_env("ROTATION_PREPARE_AT", DEFAULT_POLICY.prepare_at),
                       help="fraction of a generation's life at which its successor is prepared "
                            "(default 0.5)")
    serve.add_argument("--rotation-activate-at", type=_fraction,
                       default=_fraction_env("ROTATION_ACTIVATE_AT", DEFAULT_POLICY.activate_at),
                       help="fraction of a generation's life at which its successor takes over "
                            "(default 5/6)")
    _duration_flag(serve, "--bundle-publish-lead", "1d",
                   "how long a new root is in the trust bundle before it signs")
    _duration_flag(serve, "--rotation-skew", "1h",
                   "clock skew allowed for: a retired root stays this long after its last leaf")
    _duration_flag(serve, "--bundle-refresh-hint", "5m",
                   "spiffe_refresh_hint: how often bundle consumers should re-read the bundle")
    _duration_flag(serve, "--ca-reload-interval", "5s",
                   "how often every process checks the CA journal for a new generation or bundle")
    serve.add_argument("--ca-dir", type=Path, default=_path(env("CA_DIR")),
                       help="plugged-in CA in Istio's cacerts layout (ca-cert.pem, ca-key.pem, "
                            "root-cert.pem, cert-chain.pem); meshca then rotates nothing itself")
    serve.add_argument("--publish-configmaps", metavar="SELECTOR", default=env("PUBLISH_CONFIGMAPS"),
                       help="keep the istio-ca-root-cert ConfigMap in every namespace this label "
                            "selector picks (\"\" for all namespaces)")
    serve.add_argument("--key-dir", type=Path, default=_path(env("KEY_DIR")),
                       help="where CA keys are stored (sealed) with --keystore file; replicas "
                            "sharing one database must share it too (default: the data dir)")
    serve.add_argument("--kek-file", type=Path, default=_path(env("KEK_FILE")),
                       help="key-encryption key for every private key meshca stores (created 0600 "
                            "on first start; $MESHCA_KEK wins; default <data-dir>.kek beside the "
                            "data dir, never inside it)")
    _duration_flag(serve, "--publish-interval", "60s",
                   "how often the ConfigMaps are checked even when the bundle did not change")


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _add_authz_flags(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--authz-root-namespace", default=env("AUTHZ_ROOT_NAMESPACE", "istio-system"),
                       help="Istio's root namespace: its policies apply mesh-wide (default istio-system)")
    serve.add_argument("--policy-dir", type=Path, default=_path(env("POLICY_DIR")),
                       help="directory of AuthorizationPolicy YAML/JSON files, reloaded on change")
    serve.add_argument("--watch-kube-policies", action="store_true",
                       default=(env("WATCH_KUBE_POLICIES") or "").lower() in ("1", "true", "yes"),
                       help="list and watch AuthorizationPolicy objects in the cluster")
    serve.add_argument("--ext-authz-addr", default=env("EXT_AUTHZ_ADDR", "127.0.0.1:9191"),
                       help="Envoy ext_authz gRPC (envoy.service.auth.v3.Authorization/Check) on "
                            "HOST:PORT (TLS with --ext-authz-tls); \"off\" for none (default "
                            "127.0.0.1:9191)")


def _add_ext_authz_flags(serve: argparse.ArgumentParser) -> None:
    """How ext_authz fails closed, what its denials say, and who may call it."""
    _duration_flag(serve, "--ext-authz-refresh", "2s",
                   "how often each worker re-reads blocked identities and revoked certificates "
                   "for ext_authz, in the background")
    _duration_flag(serve, "--ext-authz-max-staleness", "30s",
                   "ext_authz denies every check (reason identity-state-stale) while its last good "
                   "read of blocked identities and revoked certificates is older than this")
    serve.add_argument("--ext-authz-verbose", action="store_true",
                       default=(env("EXT_AUTHZ_VERBOSE") or "").lower() in ("1", "true", "yes"),
                       help="deny bodies and the x-meshca-authz header name the deciding policy, "
                            "rule and reason (default off: only the decision and a reason code)")
    serve.add_argument("--ext-authz-tls", action="store_true",
                       default=(env("EXT_AUTHZ_TLS") or "").lower() in ("1", "true", "yes"),
                       help="serve ext_authz over TLS with meshca's serving certificate and "
                            "require a client certificate issued under meshca's trust bundle "
                            "(default off: plaintext)")


def _add_keystore_flags(serve: argparse.ArgumentParser) -> None:
    """Vault settings (docs/vault.md). The Vault token itself is never a flag: a file or
    $VAULT_TOKEN, so it stays out of process listings."""
    group = serve.add_argument_group("key storage")
    group.add_argument("--keystore", choices=("file", "vault-transit", "vault-kv"),
                       default=env("KEYSTORE", "file"),
                       help="where CA keys live: sealed files (default), Vault Transit (the root "
                            "key never leaves Vault) or Vault KV v2")
    group.add_argument("--vault-addr", default=env("VAULT_ADDR"), help="https://vault:8200")
    group.add_argument("--vault-ca-cert", type=Path, default=_path(env("VAULT_CA_CERT")),
                       help="CA bundle to verify Vault's TLS certificate")
    group.add_argument("--vault-namespace", default=env("VAULT_NAMESPACE"))
    group.add_argument("--vault-auth", choices=("token", "kubernetes", "approle"),
                       default=env("VAULT_AUTH", "token"))
    group.add_argument("--vault-auth-mount", default=env("VAULT_AUTH_MOUNT"),
                       help="auth method mount (default: the method's name)")
    group.add_argument("--vault-role", default=env("VAULT_ROLE"), help="Kubernetes auth role")
    group.add_argument("--vault-token-file", type=Path, default=_path(env("VAULT_TOKEN_FILE")),
                       help="token auth: file holding the token (default $VAULT_TOKEN)")
    group.add_argument("--vault-kube-token-file", type=Path,
                       default=Path(env("VAULT_KUBE_TOKEN_FILE")
                                    or "/var/run/secrets/kubernetes.io/serviceaccount/token"),
                       help="Kubernetes auth: the pod's projected service-account token")
    group.add_argument("--vault-role-id", default=env("VAULT_ROLE_ID"), help="AppRole role_id")
    group.add_argument("--vault-secret-id-file", type=Path, default=_path(env("VAULT_SECRET_ID_FILE")),
                       help="AppRole: file holding the secret_id")
    group.add_argument("--vault-transit-mount", default=env("VAULT_TRANSIT_MOUNT", "transit"))
    group.add_argument("--vault-transit-intermediate", action="store_true",
                       default=(env("VAULT_TRANSIT_INTERMEDIATE") or "").lower() in ("1", "true"),
                       help="also keep intermediate keys in Transit (every issuance then calls Vault)")
    group.add_argument("--vault-kv-mount", default=env("VAULT_KV_MOUNT", "secret"))
    group.add_argument("--vault-kv-prefix", default=env("VAULT_KV_PREFIX", "meshca/ca-keys"))


def _add_limit_flags(serve: argparse.ArgumentParser) -> None:
    """Listener limits (README "Limits"), per listener and per worker process."""
    group = serve.add_argument_group("limits")
    _duration_flag(group, "--tls-handshake-timeout", "10s",
                   "a connection that has not finished its TLS handshake by then is closed")
    _duration_flag(group, "--connection-idle-timeout", "120s",
                   "a connection that moved no byte in either direction for this long is closed")
    for flag, default, text in (
        ("--max-connections", 1024, "open connections per listener (gRPC, admin) and process; "
                                    "more are closed at once"),
        ("--max-connections-per-source", 128, "open connections from one client address per "
                                              "listener and process"),
        ("--max-streams-per-connection", 100, "concurrent gRPC calls on one connection"),
        ("--max-request-bytes", 1024 * 1024, "largest admin API request body (413 above it)"),
        ("--max-header-bytes", 64 * 1024, "largest gRPC metadata and admin API request head"),
        ("--admin-auth-failures", 10, "failed admin authentications from one address before "
                                      "it must wait (429 with Retry-After)"),
    ):
        name = flag.removeprefix("--").replace("-", "_").upper()
        group.add_argument(flag, type=_positive_int, default=_positive_int(env(name) or str(default)),
                           help=f"{text} (default {default})")
    _duration_flag(group, "--admin-auth-backoff", "30s",
                   "first wait after too many failed admin authentications; doubles while "
                   "failures go on, at most 15m")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _rate_limit(text: str) -> RateLimit | None:
    """`RATE/s[:BURST]` (or /m, /h), or `off`; the burst defaults to two seconds' worth."""
    if text.strip().lower() == "off":
        return None
    rate_text, _, burst_text = text.strip().partition(":")
    number, _, unit = rate_text.partition("/")
    try:
        rate = float(number) / _PER[unit or "s"]
        burst = int(burst_text) if burst_text else max(1, round(2 * rate))
        return RateLimit(rate, burst)
    except (ValueError, KeyError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate limit like 20/s:200 (RATE/s, /m or /h, then :BURST), "
            "or off") from None


def _add_rate_and_retention_flags(serve: argparse.ArgumentParser) -> None:
    """Issuance rate limits, refusal summaries, retention, renewal age (README "Limits")."""
    group = serve.add_argument_group("issuance rate limits, audit and retention")
    for flag, default, text in (
        ("--issuance-rate-per-identity", "20/s:200",
         "CreateCertificate requests per SPIFFE ID, per worker process, as RATE/s:BURST or off; "
         "over it: RESOURCE_EXHAUSTED with retry-after"),
        ("--issuance-rate-per-source", "200/s:1000",
         "CreateCertificate requests per client IP address, per worker process, checked before "
         "any token; RATE/s:BURST or off"),
    ):
        name = flag.removeprefix("--").replace("-", "_").upper()
        group.add_argument(flag, type=_rate_limit, default=_rate_limit(env(name) or default),
                           metavar="RATE/s:BURST", help=f"{text} (default {default})")
    _duration_flag(group, "--audit-refusal-interval", "60s",
                   "refused callers are written to the audit log as one row per source, action "
                   "and reason per this interval")
    _duration_flag(group, "--audit-retention", "90d", "audit rows older than this are deleted")
    _duration_flag(group, "--certificate-retention", "7d",
                   "certificate rows are deleted this long after they expire (revoked ones too, "
                   "never before they expire); at least --rotation-skew")
    _duration_flag(group, "--retention-interval", "1h",
                   "how often one replica deletes what retention allows, in batches")
    _duration_flag(group, "--max-renewal-age", "7d",
                   "renewal with a client certificate is refused once the identity's last "
                   "service-account token check is older than this")


def add_serve_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the CA")
    _add_limit_flags(serve)
    _add_ca_flags(serve)
    _add_authz_flags(serve)
    _add_keystore_flags(serve)
    _add_ext_authz_flags(serve)
    _add_rate_and_retention_flags(serve)
    data_dir_arg(serve)
    serve.add_argument("--database-url", default=env("DATABASE_URL"),
                       help="SQLAlchemy URL (default: SQLite in the data dir)")
    serve.add_argument("--grpc-addr", default=env("GRPC_ADDR", "127.0.0.1:15012"))
    serve.add_argument("--metrics-addr", default=env("METRICS_ADDR", "127.0.0.1:15014"))
    serve.add_argument("--server-dns-name", action="append", dest="server_dns_names",
                       help="DNS name in the serving certificate (repeatable)")
    serve.add_argument("--trust-domain", default=env("TRUST_DOMAIN", "cluster.local"))
    serve.add_argument("--ca-key-type", type=KeyType, choices=list(KeyType),
                       default=KeyType(env("CA_KEY_TYPE") or "ec-p256"))
    serve.add_argument("--default-ttl", type=parse_duration,
                       default=parse_duration(env("DEFAULT_TTL", "24h") or "24h"))
    serve.add_argument("--max-ttl", type=parse_duration,
                       default=parse_duration(env("MAX_TTL", "28h") or "28h"),
                       help="longest lifetime a CSR may ask for (default 28h: 1/6 of the intermediate)")
    serve.add_argument("--backdate", type=parse_duration,
                       default=parse_duration(env("BACKDATE", "60s") or "60s"),
                       help="how far notBefore is set in the past, for clock skew")
    serve.add_argument("--token-issuer", default=env("TOKEN_ISSUER"),
                       help="the cluster's service-account issuer URL (iss)")
    serve.add_argument("--token-jwks", default=env("TOKEN_JWKS"),
                       help="path or URL of the issuer's JWKS")
    serve.add_argument("--token-audience", action="append", dest="token_audiences",
                       help="accepted token audience (repeatable; default istio-ca)")
    serve.add_argument("--token-validation", choices=("jwks", "tokenreview", "both"),
                       default=env("TOKEN_VALIDATION", "jwks"),
                       help="verify tokens locally, ask the API server (TokenReview), or both")
    serve.add_argument("--token-issuer-ca", default=env("TOKEN_ISSUER_CA"),
                       help="CA bundle to verify the issuer's OIDC discovery endpoint")
    serve.add_argument("--kubeconfig", default=env("KUBECONFIG"),
                       help="kubeconfig of the local cluster (default: in-cluster in a pod)")
    serve.add_argument("--token-cache-ttl", type=parse_duration,
                       default=parse_duration(env("TOKEN_CACHE_TTL") or "5m"))
    serve.add_argument("--token-cache-size", type=_positive_int,
                       default=_positive_int(env("TOKEN_CACHE_SIZE") or "100000"))
    serve.add_argument("--kube-qps", type=float, default=float(env("KUBE_QPS") or "50"),
                       help="API-server calls per second (over all workers); excess calls queue")
    serve.add_argument("--kube-burst", type=_positive_int,
                       default=_positive_int(env("KUBE_BURST") or "100"))
    serve.add_argument("--cluster-id", default=env("CLUSTER_ID", "Kubernetes"),
                       help="name of the local cluster in `clusterid` metadata")
    serve.add_argument("--cluster", action="append", type=_cluster, dest="clusters",
                       help="NAME=KUBECONFIG of another cluster whose sidecars may call (repeatable)")
    serve.add_argument("--verify-pod-binding", action="store_true",
                       default=(env("VERIFY_POD_BINDING") or "") in ("1", "true"),
                       help="accept a pod-bound token only while its pod exists")
    serve.add_argument("--trusted-node-account", action="append", dest="trusted_node_accounts",
                       type=_namespaced_name, help="NS/SA of a node agent that may impersonate "
                       "workloads on its node (repeatable)")
    serve.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"))
    serve.add_argument("--admin-addr", default=env("ADMIN_ADDR", "127.0.0.1:8443"),
                       help="admin REST API (HTTPS)")
    serve.add_argument("--admin-token-audience", action="append", dest="admin_token_audiences",
                       help="audience of service-account tokens for the admin API "
                            "(repeatable; default meshca-admin)")
    serve.add_argument("--admin-service-account", action="append", type=_role_mapping("ns/sa"),
                       dest="admin_service_accounts", help="NS/SA=ROLE (repeatable)")
    serve.add_argument("--admin-spiffe-id", action="append", type=_role_mapping("spiffe"),
                       dest="admin_spiffe_ids", help="SPIFFE_ID=ROLE for mTLS clients (repeatable)")
    serve.add_argument("--workers", type=_positive_int, default=_positive_int(env("WORKERS") or "1"),
                       help="worker processes sharing the gRPC port (default 1; use one per core)")



def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        root_ttl=args.root_ttl,
        intermediate_ttl=args.intermediate_ttl,
        rotation_prepare_at=args.rotation_prepare_at,
        rotation_activate_at=args.rotation_activate_at,
        bundle_publish_lead=args.bundle_publish_lead,
        rotation_skew=args.rotation_skew,
        bundle_refresh_hint=args.bundle_refresh_hint,
        ca_reload_interval=args.ca_reload_interval,
        ca_dir=args.ca_dir,
        publish_configmaps=args.publish_configmaps,
        publish_interval=args.publish_interval,
        kek_file=args.kek_file,
        keystore=args.keystore,
        vault_addr=args.vault_addr,
        vault_ca_cert=args.vault_ca_cert,
        vault_namespace=args.vault_namespace,
        vault_auth=args.vault_auth,
        vault_auth_mount=args.vault_auth_mount,
        vault_role=args.vault_role,
        vault_token_file=args.vault_token_file,
        vault_kube_token_file=args.vault_kube_token_file,
        vault_role_id=args.vault_role_id,
        vault_secret_id_file=args.vault_secret_id_file,
        vault_transit_mount=args.vault_transit_mount,
        vault_transit_intermediate=args.vault_transit_intermediate,
        vault_kv_mount=args.vault_kv_mount,
        vault_kv_prefix=args.vault_kv_prefix,
        authz_root_namespace=args.authz_root_namespace,
        policy_dir=args.policy_dir,
        watch_kube_policies=args.watch_kube_policies,
        ext_authz_addr=None if args.ext_authz_addr in ("", "off") else args.ext_authz_addr,
        key_dir=args.key_dir,
        data_dir=args.data_dir,
        database_url=args.database_url,
        grpc_addr=args.grpc_addr,
        metrics_addr=args.metrics_addr,
        server_dns_names=tuple(args.server_dns_names or DEFAULT_DNS_NAMES),
        trust_domain=args.trust_domain,
        ca_key_type=args.ca_key_type,
        default_ttl=args.default_ttl,
        max_ttl=args.max_ttl,
        backdate=args.backdate,
        token_issuer=args.token_issuer,
        token_jwks=args.token_jwks,
        token_audiences=tuple(args.token_audiences or ("istio-ca",)),
        log_level=args.log_level,
        workers=args.workers,
        admin_addr=args.admin_addr,
        admin_token_audiences=tuple(args.admin_token_audiences or ("meshca-admin",)),
        admin_service_accounts=tuple(args.admin_service_accounts or ()),
        admin_spiffe_ids=tuple(args.admin_spiffe_ids or ()),
        kubeconfig=args.kubeconfig,
        token_validation=args.token_validation,
        token_issuer_ca=args.token_issuer_ca,
        token_cache_ttl=args.token_cache_ttl,
        token_cache_size=args.token_cache_size,
        kube_qps=args.kube_qps,
        kube_burst=args.kube_burst,
        cluster_id=args.cluster_id,
        clusters=tuple(args.clusters or ()),
        verify_pod_binding=args.verify_pod_binding,
        trusted_node_accounts=tuple(args.trusted_node_accounts or ()),
        tls_handshake_timeout=args.tls_handshake_timeout,
        connection_idle_timeout=args.connection_idle_timeout,
        max_connections=args.max_connections,
        max_connections_per_source=args.max_connections_per_source,
        max_streams_per_connection=args.max_streams_per_connection,
        max_request_bytes=args.max_request_bytes,
        max_header_bytes=args.max_header_bytes,
        admin_auth_failures=args.admin_auth_failures,
        admin_auth_backoff=args.admin_auth_backoff,
        ext_authz_refresh=args.ext_authz_refresh,
        ext_authz_max_staleness=args.ext_authz_max_staleness,
        ext_authz_verbose=args.ext_authz_verbose,
        ext_authz_tls=args.ext_authz_tls,
        issuance_rate_per_identity=args.issuance_rate_per_identity,
        issuance_rate_per_source=args.issuance_rate_per_source,
        audit_refusal_interval=args.audit_refusal_interval,
        audit_retention=args.audit_retention,
        certificate_retention=args.certificate_retention,
        retention_interval=args.retention_interval,
        max_renewal_age=args.max_renewal_age,
    )
