"""Istio's cacerts layout: the four file names, and the errors a plugged-in CA is refused with."""

from __future__ import annotations

from meshca.errors import ConfigurationError
from meshca.service.ca_ports import CA_KEY as CA_KEY  # the key file name lives with PluggedCa

CA_CERT = "ca-cert.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
CA_FILES: tuple[str, ...] = (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)

MAX_FILE_BYTES = 1 << 20  # a bundle of hundreds of roots is well under this


class PluggedCaError(ConfigurationError):
    """The plugged-in CA files are incomplete, unreadable or do not form a usable CA."""


class PluggedCaMissing(PluggedCaError):
    """None of the four files exist: there is no plugged-in CA (not the same as a broken one)."""
