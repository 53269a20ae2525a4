"""A plugged-in CA: Istio's `cacerts` directory, verified at load and reloaded on change.

The layout (docs/contracts.md §4) is four PEM files in one directory:

- `ca-cert.pem`    the signing certificate (CA:true, keyCertSign);
- `ca-key.pem`     its private key (PKCS#8 or traditional PEM, EC or RSA, unencrypted);
- `root-cert.pem`  the trust bundle: one or more roots, all of them published to peers;
- `cert-chain.pem` the signing certificate up to the root: ca-cert, intermediates, root.

All four or none. Everything a relying party would check is checked here, once, so that a
broken set is refused with one clear sentence instead of failing handshakes later. Several
roots in root-cert.pem are normal (rotation, multi-cluster): all are kept in the bundle; only
one of them has to anchor the chain; duplicates are dropped with a warning.

- `files`   reads the four files (all four or a refusal, no torn read), permission warnings;
- `pem`     parses them (no block cut short, one EC or RSA key);
- `verify`  path validation on cryptography.x509.verification plus meshca's own CA rules;
- `load`    puts those together into a `PluggedCa`, with near-expiry warnings;
- `watcher` reloads on change and keeps the old CA when the new set does not verify.

Messages name files, certificate subjects and dates, never key material, and carry no
exception chain from the parsers (`from None`).
"""

from meshca.infra.cacerts.layout import (
    CA_CERT,
    CA_FILES,
    CERT_CHAIN,
    MAX_FILE_BYTES,
    ROOT_CERT,
    PluggedCaError,
    PluggedCaMissing,
)
from meshca.infra.cacerts.load import EXPIRY_WARNING, load_plugged_ca
from meshca.infra.cacerts.watcher import PluggedCaWatcher, directory_fingerprint
from meshca.service.ca_ports import CA_KEY, PluggedCa

__all__ = [
    "CA_CERT",
    "CA_FILES",
    "CA_KEY",
    "CERT_CHAIN",
    "EXPIRY_WARNING",
    "MAX_FILE_BYTES",
    "ROOT_CERT",
    "PluggedCa",
    "PluggedCaError",
    "PluggedCaMissing",
    "PluggedCaWatcher",
    "directory_fingerprint",
    "load_plugged_ca",
]
