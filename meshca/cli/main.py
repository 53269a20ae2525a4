"""`meshca serve | request | dev token | admin …`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from meshca.cli.admin import add_admin_parser
from meshca.cli.durations import parse_duration
from meshca.config import DEFAULT_DNS_NAMES, Settings
from meshca.core.keys import KeyType
from meshca.core.roles import Role
from meshca.core.spiffe import SpiffeId
from meshca.errors import MeshcaError


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MESHCA_{name}", default)


def _data_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=Path(_env("DATA_DIR", "meshca-data") or "meshca-data"),
        help="directory holding the database, CA keys and trust bundle "
             "(env MESHCA_DATA_DIR; default ./meshca-data)",
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _namespaced_name(text: str) -> str:
    if text.count("/") != 1 or not all(text.split("/")):
        raise argparse.ArgumentTypeError(f"{text!r} must be NAMESPACE/SERVICE_ACCOUNT")
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
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return name, role

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshca", description="Workload-identity CA for meshes")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the CA")
    _data_dir_arg(serve)
    serve.add_argument("--database-url", default=_env("DATABASE_URL"),
                       help="SQLAlchemy URL (default: SQLite in the data dir)")
    serve.add_argument("--grpc-addr", default=_env("GRPC_ADDR", "127.0.0.1:15012"))
    serve.add_argument("--metrics-addr", default=_env("METRICS_ADDR", "127.0.0.1:15014"))
    serve.add_argument("--server-dns-name", action="append", dest="server_dns_names",
                       help="DNS name in the serving certificate (repeatable)")
    serve.add_argument("--trust-domain", default=_env("TRUST_DOMAIN", "cluster.local"))
    serve.add_argument("--ca-key-type", type=KeyType, choices=list(KeyType),
                       default=KeyType(_env("CA_KEY_TYPE") or "ec-p256"))
    serve.add_argument("--default-ttl", type=parse_duration,
                       default=parse_duration(_env("DEFAULT_TTL", "24h") or "24h"))
    serve.add_argument("--max-ttl", type=parse_duration,
                       default=parse_duration(_env("MAX_TTL", "7d") or "7d"))
    serve.add_argument("--backdate", type=parse_duration,
                       default=parse_duration(_env("BACKDATE", "60s") or "60s"),
                       help="how far notBefore is set in the past, for clock skew")
    serve.add_argument("--token-issuer", default=_env("TOKEN_ISSUER"),
                       help="the cluster's service-account issuer URL (iss)")
    serve.add_argument("--token-jwks", default=_env("TOKEN_JWKS"),
                       help="path or URL of the issuer's JWKS")
    serve.add_argument("--token-audience", action="append", dest="token_audiences",
                       help="accepted token audience (repeatable; default istio-ca)")
    serve.add_argument("--token-validation", choices=("jwks", "tokenreview", "both"),
                       default=_env("TOKEN_VALIDATION", "jwks"),
                       help="verify tokens locally, ask the API server (TokenReview), or both")
    serve.add_argument("--token-issuer-ca", default=_env("TOKEN_ISSUER_CA"),
                       help="CA bundle to verify the issuer's OIDC discovery endpoint")
    serve.add_argument("--kubeconfig", default=_env("KUBECONFIG"),
                       help="kubeconfig of the local cluster (default: in-cluster in a pod)")
    serve.add_argument("--token-cache-ttl", type=parse_duration,
                       default=parse_duration(_env("TOKEN_CACHE_TTL") or "5m"))
    serve.add_argument("--token-cache-size", type=_positive_int,
                       default=_positive_int(_env("TOKEN_CACHE_SIZE") or "100000"))
    serve.add_argument("--kube-qps", type=float, default=float(_env("KUBE_QPS") or "50"),
                       help="API-server calls per second (over all workers); excess calls queue")
    serve.add_argument("--kube-burst", type=_positive_int,
                       default=_positive_int(_env("KUBE_BURST") or "100"))
    serve.add_argument("--cluster-id", default=_env("CLUSTER_ID", "Kubernetes"),
                       help="name of the local cluster in `clusterid` metadata")
    serve.add_argument("--cluster", action="append", type=_cluster, dest="clusters",
                       help="NAME=KUBECONFIG of another cluster whose sidecars may call (repeatable)")
    serve.add_argument("--verify-pod-binding", action="store_true",
                       default=(_env("VERIFY_POD_BINDING") or "") in ("1", "true"),
                       help="accept a pod-bound token only while its pod exists")
    serve.add_argument("--trusted-node-account", action="append", dest="trusted_node_accounts",
                       type=_namespaced_name, help="NS/SA of a node agent that may impersonate "
                       "workloads on its node (repeatable)")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    serve.add_argument("--admin-addr", default=_env("ADMIN_ADDR", "127.0.0.1:8443"),
                       help="admin REST API (HTTPS)")
    serve.add_argument("--admin-token-audience", action="append", dest="admin_token_audiences",
                       help="audience of service-account tokens for the admin API "
                            "(repeatable; default meshca-admin)")
    serve.add_argument("--admin-service-account", action="append", type=_role_mapping("ns/sa"),
                       dest="admin_service_accounts", help="NS/SA=ROLE (repeatable)")
    serve.add_argument("--admin-spiffe-id", action="append", type=_role_mapping("spiffe"),
                       dest="admin_spiffe_ids", help="SPIFFE_ID=ROLE for mTLS clients (repeatable)")
    serve.add_argument("--workers", type=_positive_int, default=_positive_int(_env("WORKERS") or "1"),
                       help="worker processes sharing the gRPC port (default 1; use one per core)")

    request = commands.add_parser("request", help="get a workload certificate, as a sidecar would")
    _data_dir_arg(request)
    request.add_argument("--namespace", required=True)
    request.add_argument("--service-account", required=True)
    request.add_argument("--out", type=Path, required=True)
    request.add_argument("--addr", default=None,
                         help="meshca's gRPC address (default: the one the data dir's server uses)")
    request.add_argument("--token-file", type=Path,
                         help="service-account token (default: a development token)")
    request.add_argument("--ttl", type=parse_duration, help="requested lifetime")
    request.add_argument("--server-name", default="localhost",
                         help="name to verify in meshca's certificate")

    dev = commands.add_parser("dev", help="development helpers")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    token = dev_commands.add_parser("token", help="print a development service-account token")
    _data_dir_arg(token)
    token.add_argument("--namespace", required=True)
    token.add_argument("--service-account", required=True)
    token.add_argument("--audience", action="append", dest="audiences")
    token.add_argument("--ttl", type=parse_duration, default=parse_duration("1h"))
    token.add_argument("--pod-name")
    token.add_argument("--node-name")

    add_admin_parser(commands)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
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
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = settings_from(args)
        except ValueError as exc:
            print(f"meshca: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from meshca.wiring import serve

        try:
            asyncio.run(serve(settings))
        except (MeshcaError, ValueError, OSError) as exc:
            # A configuration the server cannot start with: say what, without a traceback.
            logging.getLogger("meshca").debug("start-up failed", exc_info=True)
            print(f"meshca: cannot start: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "request":
        from meshca.cli.request import run_request

        return run_request(args)
    if args.command == "admin":
        from meshca.cli.admin import run_admin

        return run_admin(args)
    if args.command == "dev":
        from meshca.infra.dev_issuer import DevIssuer

        try:
            issuer = DevIssuer.load(args.data_dir)
        except FileNotFoundError as exc:
            print(f"meshca: {exc}", file=sys.stderr)
            return 1
        print(issuer.token(args.namespace, args.service_account,
                           audiences=args.audiences or ["istio-ca"],
                           ttl_seconds=int(args.ttl.total_seconds()),
                           pod_name=args.pod_name, node_name=args.node_name))
        return 0
    return 2
