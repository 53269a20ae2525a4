"""The Kubernetes name rules a service account's namespace and name obey.

The API server never lets a real object break them, so a token, an ImpersonatedIdentity or a
role mapping that does is unusable, and is refused before anything is signed: a namespace is a
DNS label (RFC 1123, at most 63 characters), a service-account name a DNS subdomain (at most
253 characters, dot-separated labels). Messages never repeat the name: it may be huge.
"""

from __future__ import annotations

import re

MAX_NAMESPACE = 63
MAX_SERVICE_ACCOUNT = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_namespace(namespace: str) -> None:
    """ValueError unless `namespace` is a valid Kubernetes namespace name."""
    if len(namespace) > MAX_NAMESPACE:
        raise ValueError(f"the namespace is longer than {MAX_NAMESPACE} characters")
    if not _LABEL.fullmatch(namespace):
        raise ValueError("the namespace is not a DNS label (lower-case letters, digits and '-', "
                         "starting and ending with a letter or digit)")


def check_service_account(name: str) -> None:
    """ValueError unless `name` is a valid Kubernetes service-account name."""
    if len(name) > MAX_SERVICE_ACCOUNT:
        raise ValueError(f"the service-account name is longer than {MAX_SERVICE_ACCOUNT} characters")
    # As Kubernetes checks it (IsDNS1123Subdomain): no length limit per label, only overall.
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError("the service-account name is not a DNS subdomain (dot-separated labels "
                         "of lower-case letters, digits and '-')")


def check_service_account_ref(namespace: str, name: str) -> None:
    check_namespace(namespace)
    check_service_account(name)
