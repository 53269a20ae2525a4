"""Vault's PKI engine as meshca's upstream: it signs meshca's intermediate from a CSR.

`current_root` reads the mount's default issuer (`GET <mount>/issuer/default/json`, public in
Vault); `sign_intermediate` signs with one named issuer (`<mount>/issuer/<id>/sign-intermediate`),
so an intermediate is always signed by the root meshca's journal has active, even after Vault
made another issuer its default.

`POST <mount>/root/sign-intermediate` with the CSR and a TTL, `use_csr_values=true` so the
CSR's subject and its URI SAN (the trust domain's SPIFFE ID) are kept: with that flag Vault
ignores a `uri_sans` parameter, so the CSR must carry it. Vault answers `certificate`,
`issuing_ca` and `ca_chain`. The answer is checked before meshca records anything: the
certificate carries the CSR's key and URI SANs, is a CA, and verifies under the issuing CA
Vault named.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from meshca.infra.vault.errors import VaultBadResponse
from meshca.infra.vault.session import VaultSession
from meshca.service.ca_ports import UpstreamRoot

PREFIX = "vault-pki:"


@dataclass(frozen=True, slots=True)
class SignedIntermediate:
    certificate: x509.Certificate
    issuing_ca: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # above the intermediate, as Vault lists it


class VaultPkiUpstream:
    """`service.ca_ports.UpstreamAuthority` over a Vault PKI mount."""

    prefix = PREFIX

    def __init__(self, session: VaultSession, mount: str = "pki") -> None:
        self._session = session
        self._mount = mount

    def __repr__(self) -> str:
        return f"VaultPkiUpstream(mount={self._mount!r})"

    def current_root(self) -> UpstreamRoot:
        response = self._session.call(f"PKI read default issuer on {self._mount}", lambda client:
                                      client.adapter.get(f"/v1/{self._mount}/issuer/default/json"))
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("issuer_id"), str):
            raise VaultBadResponse(f"{self._mount}/issuer/default: no issuer_id in Vault's answer")
        certificate = _certificate(data.get("certificate"), "issuer certificate")
        if certificate.issuer != certificate.subject:
            raise VaultBadResponse(f"{self._mount}'s default issuer is not a root (issued by "
                                   f"{certificate.issuer.rfc4514_string()}); meshca needs Vault's root")
        return UpstreamRoot(f"{PREFIX}{self._mount}/issuer/{data['issuer_id']}", certificate)

    def sign_intermediate_under(self, root_location: str, csr: x509.CertificateSigningRequest, *,
                                ttl: timedelta, uri_sans: list[str]) -> x509.Certificate:
        """The port's `sign_intermediate`: by the issuer `root_location` names."""
        mount, _, issuer = root_location.removeprefix(PREFIX).partition("/issuer/")
        if not root_location.startswith(PREFIX) or mount != self._mount or not issuer:
            raise ValueError(f"{root_location} is not an issuer of Vault PKI mount {self._mount}")
        signed = self.sign_intermediate(csr, ttl=ttl, uri_sans=uri_sans, issuer=issuer)
        return signed.certificate

    def sign_intermediate(self, csr: x509.CertificateSigningRequest, *, ttl: timedelta,
                          uri_sans: list[str], issuer: str | None = None) -> SignedIntermediate:
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise ValueError("the intermediate's CSR needs a common name: Vault requires one")
        if sorted(_uri_sans(csr.extensions)) != sorted(uri_sans):
            raise ValueError(f"the intermediate's CSR must carry exactly the URI SANs {uri_sans}")
        pem = csr.public_bytes(serialization.Encoding.PEM).decode()
        params = {"ttl": f"{int(ttl.total_seconds())}s", "format": "pem", "use_csr_values": True}
        if issuer is None:
            response = self._session.call(
                f"PKI sign-intermediate on {self._mount}",
                lambda client: client.secrets.pki.sign_intermediate(
                    csr=pem, common_name=str(names[0].value), extra_params=params,
                    mount_point=self._mount))
        else:
            body = {"csr": pem, "common_name": str(names[0].value), **params}
            response = self._session.call(
                f"PKI sign-intermediate by issuer {issuer} on {self._mount}",
                lambda client: client.adapter.post(
                    f"/v1/{self._mount}/issuer/{issuer}/sign-intermediate", json=body))
        return _checked(response, csr, uri_sans)


def _uri_sans(extensions: x509.Extensions) -> list[str]:
    try:
        names = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def _checked(response: Any, csr: x509.CertificateSigningRequest, uri_sans: list[str],
             ) -> SignedIntermediate:
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        raise VaultBadResponse("Vault's sign-intermediate answer has no data")
    certificate = _certificate(data.get("certificate"), "certificate")
    issuing_ca = _certificate(data.get("issuing_ca"), "issuing_ca")
    raw_chain = data.get("ca_chain") or []
    listed = [_certificate(c, "ca_chain") for c in raw_chain] if isinstance(raw_chain, list) else []
    # OpenBao lists the new certificate itself first; the chain meshca serves is what is above it.
    chain = tuple(c for c in listed if c != certificate) or (issuing_ca,)
    if certificate.public_key() != csr.public_key():
        raise VaultBadResponse("Vault signed a different key than the CSR's")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise VaultBadResponse("Vault's intermediate has no basic constraints") from None
    if not constraints.ca:
        raise VaultBadResponse("Vault's intermediate is not a CA certificate")
    if sorted(_uri_sans(certificate.extensions)) != sorted(uri_sans):
        raise VaultBadResponse(f"Vault's intermediate does not carry the URI SANs {uri_sans}")
    try:
        certificate.verify_directly_issued_by(issuing_ca)
    except Exception:  # noqa: BLE001 - any failure means the answer cannot be used
        raise VaultBadResponse("Vault's intermediate does not verify under its issuing_ca") from None
    return SignedIntermediate(certificate, issuing_ca, chain)


def _certificate(value: object, field: str) -> x509.Certificate:
    if not isinstance(value, str) or "BEGIN CERTIFICATE" not in value:
        raise VaultBadResponse(f"Vault's sign-intermediate answer has no PEM {field}")
    try:
        return x509.load_pem_x509_certificate(value.encode())
    except ValueError:
        raise VaultBadResponse(f"Vault's {field} is not a valid certificate") from None
