"""Istio's string, IP and path matching, compiled once per policy field.

Strings: `exact`, `prefix*`, `*suffix`, and `*` alone for "present and not empty"; nothing else
is a wildcard (`a*b` is the literal three characters). Paths may also use `{*}` (one segment)
and `{**}` (any rest).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class StringMatcher:
    exact: frozenset[str]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    present: bool
    templates: tuple[re.Pattern[str], ...] = ()
    ignore_case: bool = False

    def __call__(self, value: str | None) -> bool:
        if not value:  # absent or empty never matches any pattern, even `*`
            return False
        if self.ignore_case:
            value = value.lower()
        return (self.present or value in self.exact or value.startswith(self.prefixes)
                or value.endswith(self.suffixes)
                or any(t.fullmatch(value) for t in self.templates))

    def any_of(self, values: Iterable[str]) -> bool:
        return any(self(v) for v in values)


def string_matcher(patterns: Iterable[str], *, ignore_case: bool = False,
                   path_templates: bool = False) -> StringMatcher:
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    templates: list[re.Pattern[str]] = []
    present = False
    for raw in patterns:
        pattern = raw.lower() if ignore_case else raw
        if path_templates and ("{*}" in pattern or "{**}" in pattern):
            templates.append(_path_template(pattern))
        elif pattern == "*":
            present = True
        elif pattern.endswith("*"):
            prefixes.append(pattern[:-1])
        elif pattern.startswith("*"):
            suffixes.append(pattern[1:])
        else:
            exact.add(pattern)
    return StringMatcher(frozenset(exact), tuple(prefixes), tuple(suffixes), present,
                         tuple(templates), ignore_case)


def _path_template(pattern: str) -> re.Pattern[str]:
    """`/a/{*}/b/{**}` → one segment after /a/, then /b/, then anything (Envoy's uri_template)."""
    parts = []
    for segment in pattern.split("/"):
        if segment == "{*}":
            parts.append("[^/]+")
        elif segment == "{**}":
            parts.append(".*")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts))


@dataclass(frozen=True, slots=True)
class IpMatcher:
    networks: tuple[IpNetwork, ...]

    def __call__(self, address: IpAddress | None) -> bool:
        if address is None:
            return False
        return any(address.version == n.version and address in n for n in self.networks)


def ip_matcher(values: Iterable[str]) -> IpMatcher:
    return IpMatcher(tuple(ipaddress.ip_network(v, strict=False) for v in values))
