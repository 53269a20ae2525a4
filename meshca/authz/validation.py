"""Value checks shared by policy parsing: IPs, ports, service accounts, paths, names."""

from __future__ import annotations

import ipaddress
import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_TEMPLATES = ("{*}", "{**}")


def check_namespace(value: str) -> str | None:
    """A reason when `value` is not a Kubernetes namespace name, else None."""
    if not _DNS_LABEL.fullmatch(value):
        return "must be a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
    return None


def check_name(value: str) -> str | None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        return "must be a DNS-1123 subdomain (lower-case letters, digits, '-', '.', at most 253)"
    return None


def check_label(key: str, value: str) -> str | None:
    if "*" in key or "*" in value:
        return "wildcard is not supported in selector"
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix))) \
            or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"invalid label key {key!r}"
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        return f"invalid label value {value!r}"
    return None


def check_ip(value: str) -> str | None:
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return f"bad {'CIDR range' if '/' in value else 'IP address'} ({value})"
    return None


def check_port(value: str) -> str | None:
    if not value.isdigit() or not value.isascii() or int(value) > 65535:
        return f"bad port ({value}): a whole number from 0 to 65535"
    return None


def check_service_account(value: str) -> str | None:
    if "*" in value:
        return "wildcard not allowed"
    if value.count("/") > 1 or len(value) > 320:
        return "expected 'serviceAccount' or 'namespace/serviceAccount'"
    namespace, slash, account = value.rpartition("/")
    if (slash and not namespace) or not account:
        return "expected 'serviceAccount' or 'namespace/serviceAccount', found an empty part"
    return None


def check_path_template(value: str) -> str | None:
    """`{*}` (one segment) and `{**}` (the rest) are the only braces a path may hold."""
    seen_rest = False
    for segment in value.strip("/").split("/"):
        if segment in _TEMPLATES:
            if seen_rest:
                return "{**} must be the last operator in a path template"
            seen_rest = segment == "{**}"
        elif "{" in segment or "}" in segment:
            return "'{' or '}' outside a supported path template ({*} or {**})"
    return None
