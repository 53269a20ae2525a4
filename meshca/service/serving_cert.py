"""meshca's own TLS serving certificate, issued by its signing CA at start-up."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshca.core.authority import SigningAuthority
from meshca.core.bundle import certificate_pem
from meshca.core.clock import Clock
from meshca.core.spiffe import SpiffeId
from meshca.core.templates import server_tls

SERVING_TTL = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class ServingCertificate:
    chain_pem: str  # leaf, then the signing CA
    key: ec.EllipticCurvePrivateKey


def issue_serving_certificate(
    authority: SigningAuthority, names: list[str], trust_domain: str, clock: Clock,
    spiffe_path: str = "/meshca",
) -> ServingCertificate:
    """DNS names become DNS SANs and IP literals IP SANs; it never outlives its issuer.
    `spiffe_path`: its SPIFFE ID's path (the federation endpoint's is `/meshca/federation`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = clock.now()
    ips = []
    dns = []
    for name in names:
        try:
            ips.append(ipaddress.ip_address(name))
        except ValueError:
            dns.append(name)
    builder = server_tls(
        public_key=key.public_key(),
        dns_names=dns,
        ip_addresses=ips,
        spiffe_id=SpiffeId(trust_domain, spiffe_path),
        issuer=authority.certificate,
        serial=x509.random_serial_number(),
        not_before=now - timedelta(minutes=1),
        not_after=min(now + SERVING_TTL, authority.not_after),
    )
    cert = authority.sign(builder)
    return ServingCertificate(certificate_pem(cert) + "".join(authority.chain_pem), key)
