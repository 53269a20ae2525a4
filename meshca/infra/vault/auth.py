"""How meshca gets a Vault token: a given token, Kubernetes auth, or AppRole.

Each method's `login` returns a `TokenLease`; the session decides when to renew it
(`renew-self`) or log in again. Secrets (tokens, JWTs, secret IDs) are read from files at
each login, so a rotated projected token or agent-written token file is picked up, and are
never kept in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from meshca.infra.vault.errors import VaultBadResponse

DEFAULT_KUBE_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True, slots=True)
class TokenLease:
    token: str = field(repr=False)
    ttl: float  # seconds from obtained_at; 0: the token never expires (root, periodic-less)
    renewable: bool
    obtained_at: float  # on the session's monotonic clock

    @property
    def expires_at(self) -> float | None:
        return self.obtained_at + self.ttl if self.ttl > 0 else None

    @property
    def renew_at(self) -> float | None:
        """Two thirds into the lease: time for a slow or refused renewal before expiry."""
        return self.obtained_at + self.ttl * 2 / 3 if self.ttl > 0 else None


class VaultAuth(Protocol):
    name: str

    @property
    def can_login_again(self) -> bool:
        """Whether a fresh token can be had once this one is expired or revoked."""
        ...

    def login(self, client: Any, now: float) -> TokenLease: ...


def _secret_from_file(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise VaultBadResponse(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if not value:
        raise VaultBadResponse(f"the {what} file {path} is empty")
    return value


def lease_from_auth(response: Any, now: float) -> TokenLease:
    """The `auth` block of a login or renew-self response."""
    auth = response.get("auth") if isinstance(response, dict) else None
    if not isinstance(auth, dict) or not isinstance(auth.get("client_token"), str):
        raise VaultBadResponse("Vault's login answer has no auth.client_token")
    return TokenLease(token=auth["client_token"], ttl=float(auth.get("lease_duration") or 0),
                      renewable=bool(auth.get("renewable")), obtained_at=now)


class TokenAuth:
    """A token given directly or in a file (e.g. written by Vault Agent), checked by lookup-self."""

    name = "token"

    def __init__(self, *, token: str | None = None, token_file: Path | None = None) -> None:
        if (token is None) == (token_file is None):
            raise ValueError("token auth needs exactly one of a token or a token file")
        self._token = token
        self._token_file = token_file

    def __repr__(self) -> str:
        return f"TokenAuth(token_file={self._token_file})"

    @property
    def can_login_again(self) -> bool:
        return self._token_file is not None  # the file may have been refreshed meanwhile

    def login(self, client: Any, now: float) -> TokenLease:
        token = self._token if self._token is not None else \
            _secret_from_file(self._token_file, "Vault token")  # type: ignore[arg-type]
        client.token = token
        data = client.auth.token.lookup_self().get("data")
        if not isinstance(data, dict):
            raise VaultBadResponse("Vault's lookup-self answer has no data")
        return TokenLease(token=token, ttl=float(data.get("ttl") or 0),
                          renewable=bool(data.get("renewable")), obtained_at=now)


class KubernetesAuth:
    """`auth/<mount>/login` with a role and the pod's projected service-account token."""

    name = "kubernetes"

    def __init__(self, role: str, *, jwt_file: Path = DEFAULT_KUBE_TOKEN,
                 mount: str = "kubernetes") -> None:
        self._role = role
        self._jwt_file = jwt_file
        self._mount = mount

    def __repr__(self) -> str:
        return f"KubernetesAuth(role={self._role!r}, jwt_file={self._jwt_file}, mount={self._mount!r})"

    @property
    def can_login_again(self) -> bool:
        return True

    def login(self, client: Any, now: float) -> TokenLease:
        jwt = _secret_from_file(self._jwt_file, "service-account token")
        response = client.auth.kubernetes.login(role=self._role, jwt=jwt, use_token=False,
                                                mount_point=self._mount)
        return lease_from_auth(response, now)


class AppRoleAuth:
    """`auth/<mount>/login` with a role ID and a secret ID (from a file)."""

    name = "approle"

    def __init__(self, role_id: str, *, secret_id_file: Path | None = None,
                 secret_id: str | None = None, mount: str = "approle") -> None:
        self._role_id = role_id
        self._secret_id = secret_id
        self._secret_id_file = secret_id_file
        self._mount = mount

    def __repr__(self) -> str:
        return f"AppRoleAuth(mount={self._mount!r}, secret_id_file={self._secret_id_file})"

    @property
    def can_login_again(self) -> bool:
        return True

    def login(self, client: Any, now: float) -> TokenLease:
        secret_id = self._secret_id
        if self._secret_id_file is not None:
            secret_id = _secret_from_file(self._secret_id_file, "AppRole secret ID")
        response = client.auth.approle.login(role_id=self._role_id, secret_id=secret_id,
                                             use_token=False, mount_point=self._mount)
        return lease_from_auth(response, now)
