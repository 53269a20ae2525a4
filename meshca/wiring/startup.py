"""Once per start, before any worker: data dir, schema, CA, bundle file, serving cert."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

from meshca.config import Settings, split_host_port
from meshca.core.authority import SigningAuthority
from meshca.core.clock import Clock
from meshca.errors import ConfigurationError
from meshca.infra.db.ca_journal import SqlCaJournal
from meshca.infra.db.engine import database_url_for, migrate, open_engine
from meshca.infra.db.lease import SqlLeases
from meshca.infra.dev_issuer import DevIssuer
from meshca.infra.lease_holder import this_process
from meshca.service.ca_setup import bring_up
from meshca.wiring.authn import uses_development_issuer
from meshca.wiring.ca_runtime import ca_source, lifecycle_for
from meshca.wiring.keystore import KeyBackend
from meshca.wiring.serving import ServingCertKeeper

log = logging.getLogger("meshca")

# Why each file a setting names is read, and what to do when it cannot be: the start-up
# message names the flag and the fix (one line, exit 2) instead of failing later, deep down.
_FILE_FIXES = {
    "--vault-token-file": "write the Vault token there (e.g. Vault Agent's sink) or point "
                          "--vault-token-file at the file that holds it",
    "--vault-secret-id-file": "write the AppRole secret ID there or point --vault-secret-id-file "
                              "at it",
    "--vault-kube-token-file": "mount the projected service-account token there or point "
                               "--vault-kube-token-file at it",
    "--vault-ca-cert": "point --vault-ca-cert at the PEM file of the CA that signed Vault's "
                       "certificate",
    "--federation-cert": "point --federation-cert at the federation endpoint's certificate chain",
    "--federation-key": "point --federation-key at the federation endpoint's private key",
}


def files_to_read(settings: Settings) -> dict[str, Path]:
    """Each file the settings name that must be readable before anything starts."""
    named: dict[str, Path | None] = {
        "--federation-cert": settings.federation_cert, "--federation-key": settings.federation_key}
    if settings.keystore != "file":
        named["--vault-ca-cert"] = settings.vault_ca_cert
        if settings.vault_auth == "token":
            named["--vault-token-file"] = settings.vault_token_file
        elif settings.vault_auth == "approle":
            named["--vault-secret-id-file"] = settings.vault_secret_id_file
        elif settings.vault_auth == "kubernetes":
            named["--vault-kube-token-file"] = settings.vault_kube_token_file
    return {flag: path for flag, path in named.items() if path is not None}


def check_files(settings: Settings) -> None:
    """ConfigurationError naming the flag, the file, why and the fix, for the first file the
    process could not read."""
    for flag, path in files_to_read(settings).items():
        try:
            with path.open("rb") as handle:
                empty = not handle.read(1)
        except OSError as exc:
            raise ConfigurationError(f"{flag} {path}: cannot read it ({exc.strerror}); "
                                     f"{_FILE_FIXES[flag]}") from None
        if empty:
            raise ConfigurationError(f"{flag} {path}: the file is empty; {_FILE_FIXES[flag]}")


def prepare_data_dir(data_dir: Path) -> None:
    # Everything meshca creates is private unless it says otherwise (the bundle is 0644).
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)


def database_url(settings: Settings) -> str:
    return settings.database_url or database_url_for(settings.data_dir)


def _warn_if_development_issuer(settings: Settings) -> None:
    if uses_development_issuer(settings):
        log.warning(
            "\n%s\nDEVELOPMENT TOKEN ISSUER IN USE: no --token-issuer was given, so meshca trusts\n"
            "tokens signed by the key in %s. Anyone who can read that file can\n"
            "mint any identity. Configure --token-issuer and --token-jwks for production.\n%s",
            "!" * 78, settings.data_dir / "dev-token-issuer.key", "!" * 78,
        )


def write_bundle(settings: Settings, authority: SigningAuthority) -> None:
    """`<data-dir>/root-cert.pem` (0644): the roots peers must trust, replaced atomically."""
    path = settings.bundle_path
    if path.is_file() and path.read_text() == authority.bundle.pem:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(authority.bundle.pem)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def serving_names(settings: Settings) -> list[str]:
    """Every name clients may dial: the configured DNS names and both listening hosts."""
    hosts = [split_host_port(addr)[0] for addr in (settings.grpc_addr, settings.admin_addr)]
    return list(dict.fromkeys(
        [*settings.server_dns_names, *(h for h in hosts if not _is_wildcard(h))]))


def prepare(settings: Settings, clock: Clock, serving: ServingCertKeeper,
            backend: KeyBackend) -> SigningAuthority:
    """Once per start, before any worker: schema, CA, bundle file, serving certificate."""
    prepare_data_dir(settings.data_dir)
    engine = open_engine(database_url(settings))
    try:
        migrate(engine)
        resealed = backend.files.seal_plaintext_keys()
        if resealed:
            log.warning("sealed %d plaintext CA key file(s) under the key-encryption key",
                        len(resealed))
        if settings.ca_dir is None:
            journal = SqlCaJournal(engine)
            authority = bring_up(lifecycle_for(settings, engine, clock, backend), journal,
                                 SqlLeases(engine), backend, clock, identity=this_process())
        else:
            authority = ca_source(settings, engine, clock, backend,
                                  publishes=True).load().authority
    finally:
        engine.dispose()
    write_bundle(settings, authority)
    if uses_development_issuer(settings):
        # Before the workers start, so that they share one.
        DevIssuer.load_or_create(settings.data_dir, backend.kek)
    _warn_if_development_issuer(settings)
    serving.ensure(authority)
    return authority




def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
