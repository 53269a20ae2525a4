"""A development token issuer, for running meshca with no Kubernetes cluster at hand.

Its key lives in the data dir (0600) and its tokens are shaped exactly like projected
service-account tokens, so the same verifier handles both. Never for production: meshca
logs a loud warning whenever it trusts this issuer.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from meshca.core import jwt
from meshca.core.jwks import key_id
from meshca.core.jwt import VerificationKey
from meshca.infra.keyfiles import KeyEncryptionKey, SealedKeyFile, existing_kek

DEV_ISSUER = "https://meshca-dev-issuer.invalid"
_KEY_FILE = "dev-token-issuer.key"


class DevIssuer:
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.kid = key_id(key.public_key())

    @classmethod
    def load_or_create(cls, data_dir: Path, kek: KeyEncryptionKey) -> DevIssuer:
        """The key is sealed under `kek` like every key meshca keeps (an old plaintext file is
        re-sealed on first read)."""
        sealed = SealedKeyFile(data_dir / _KEY_FILE, kek)
        if sealed.exists():
            key = sealed.read()
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{sealed.path} does not hold an EC key")
            return cls(key)
        key = ec.generate_private_key(ec.SECP256R1())
        sealed.write(key)
        return cls(key)

    @classmethod
    def load(cls, data_dir: Path, kek: KeyEncryptionKey | None = None,
             kek_file: Path | None = None) -> DevIssuer:
        """For tools beside a server: without `kek`, the server's own ($MESHCA_KEK, else
        `kek_file`, else `<data-dir>.kek`)."""
        path = data_dir / _KEY_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"no development issuer in {data_dir}; start `meshca serve` there first"
            )
        return cls.load_or_create(data_dir, kek or existing_kek(data_dir, kek_file))

    def public_keys(self) -> dict[str, VerificationKey]:
        return {self.kid: self._key.public_key()}

    def token(
        self,
        namespace: str,
        service_account: str,
        *,
        audiences: list[str],
        ttl_seconds: int,
        pod_name: str | None = None,
        node_name: str | None = None,
        now: float | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        k8s: dict[str, object] = {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": _uid("sa", namespace, service_account)},
        }
        if pod_name:
            k8s["pod"] = {"name": pod_name, "uid": _uid("pod", namespace, pod_name)}
        if node_name:
            k8s["node"] = {"name": node_name, "uid": _uid("node", "", node_name)}
        claims = {
            "aud": audiences,
            "exp": issued + ttl_seconds,
            "iat": issued,
            "iss": DEV_ISSUER,
            "jti": str(uuid.UUID(bytes=secrets.token_bytes(16), version=4)),
            "kubernetes.io": k8s,
            "nbf": issued,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
        }
        return jwt.sign(claims, self._key, self.kid)


def _uid(kind: str, namespace: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"meshca-dev:{kind}:{namespace}/{name}"))
