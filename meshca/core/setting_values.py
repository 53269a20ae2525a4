"""Parsers for the compound values of settings: service-account references, role mappings and
remote clusters. Each raises ValueError naming the bad part; names are checked here so that a
typo stops start-up instead of matching nobody."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from meshca.core.kube_names import check_service_account_ref
from meshca.core.roles import Role
from meshca.core.spiffe import SpiffeId


def service_account_ref(text: str) -> str:
    """`NAMESPACE/SERVICE_ACCOUNT`, both valid Kubernetes names."""
    if text.count("/") != 1 or not all(text.split("/")):
        raise ValueError(f"{text[:80]!r} must be NAMESPACE/SERVICE_ACCOUNT")
    try:
        check_service_account_ref(*text.split("/"))
    except ValueError as exc:
        raise ValueError(f"{text[:80]!r}: {exc}") from None
    return text


def role_mapping(name: Callable[[str], str]) -> Callable[[str], tuple[str, Role]]:
    """`NAME=ROLE`, NAME read by `name` (a service-account reference or a SPIFFE ID)."""

    def parse(text: str) -> tuple[str, Role]:
        subject, sep, role_text = text.rpartition("=")
        role = Role.parse(role_text)
        if not sep or not subject:
            raise ValueError(f"{text!r} must be NAME=ROLE")
        return name(subject), role

    return parse


def spiffe_id_text(text: str) -> str:
    return str(SpiffeId.parse(text))


def _account_name(text: str) -> str:
    if text.count("/") != 1 or not all(text.split("/")):
        raise ValueError(f"{text!r} must be NAMESPACE/SERVICE_ACCOUNT")
    check_service_account_ref(*text.split("/"))
    return text


service_account_role = role_mapping(_account_name)
spiffe_id_role = role_mapping(spiffe_id_text)


def cluster(text: str) -> tuple[str, str]:
    """`NAME=KUBECONFIG` of a remote cluster; the kubeconfig must exist."""
    name, sep, kubeconfig = text.partition("=")
    if not sep or not name or not kubeconfig:
        raise ValueError(f"{text!r} must be NAME=KUBECONFIG")
    if not Path(kubeconfig).is_file():
        raise ValueError(f"kubeconfig {kubeconfig} does not exist")
    return name, kubeconfig
