"""SPIFFE ID parsing, per the SPIFFE ID specification (docs/contracts.md §3)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from meshca.core.spiffe import SpiffeId

TD_255 = ("a" * 63 + ".") * 3 + "b" * 63  # exactly 255 bytes


def _uri_of_length(total: int) -> str:
    """`spiffe://example.org/aaaa...` of exactly `total` bytes."""
    head = "spiffe://example.org/"
    return head + "a" * (total - len(head))


@pytest.mark.parametrize(
    ("uri", "trust_domain", "path"),
    [
        ("spiffe://example.org", "example.org", ""),
        ("spiffe://example.org/ns/default/sa/web", "example.org", "/ns/default/sa/web"),
        ("spiffe://cluster.local/ns/istio-system/sa/istiod", "cluster.local", "/ns/istio-system/sa/istiod"),
        ("spiffe://a_b-c.9/x", "a_b-c.9", "/x"),
        ("spiffe://example.org/UPPER/MiXeD/0-9._", "example.org", "/UPPER/MiXeD/0-9._"),
        # '.' and '..' are forbidden only as whole segments.
        ("spiffe://example.org/.../..a/a../.x", "example.org", "/.../..a/a../.x"),
        ("spiffe://td/9eebccd2-12bf-40a6-b262-65fe0487d453", "td", "/9eebccd2-12bf-40a6-b262-65fe0487d453"),
        (f"spiffe://{TD_255}", TD_255, ""),
    ],
)
def test_valid_ids_parse_into_trust_domain_and_path(uri: str, trust_domain: str, path: str) -> None:
    parsed = SpiffeId.parse(uri)
    assert parsed.trust_domain == trust_domain
    assert parsed.path == path
    assert str(parsed) == uri
    assert parsed.uri == uri


def test_uri_of_exactly_2048_bytes_is_accepted() -> None:
    uri = _uri_of_length(2048)
    assert len(uri.encode()) == 2048
    assert str(SpiffeId.parse(uri)) == uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        # scheme
        ("", "must start with 'spiffe://'"),
        ("SPIFFE://example.org/x", "must start with 'spiffe://'"),
        ("Spiffe://example.org/x", "must start with 'spiffe://'"),
        ("spiffE://example.org/x", "must start with 'spiffe://'"),
        ("https://example.org/x", "must start with 'spiffe://'"),
        ("spiffe:/example.org/x", "must start with 'spiffe://'"),
        ("spiffe:example.org/x", "must start with 'spiffe://'"),
        ("example.org/x", "must start with 'spiffe://'"),
        (" spiffe://example.org/x", "must start with 'spiffe://'"),
        # trust domain
        ("spiffe://", "empty trust domain"),
        ("spiffe:///x", "empty trust domain"),
        ("spiffe://Example.org/x", "lower-case"),
        ("spiffe://EXAMPLE.ORG", "lower-case"),
        ("spiffe://exa%6Dple.org/x", "lower-case"),
        ("spiffe://exa mple.org/x", "lower-case"),
        ("spiffe://ex\u00e4mple.org/x", "lower-case"),
        ("spiffe://example.org\n/x", "lower-case"),
        ("spiffe://[::1]/x", "port"),
        ("spiffe://user@example.org/x", "user info"),
        ("spiffe://user:secret@example.org/x", "user info"),
        ("spiffe://@example.org/x", "user info"),
        ("spiffe://example.org:8443/x", "port"),
        ("spiffe://example.org:/x", "port"),
        ("spiffe://example.org:8443", "port"),
        ("spiffe://example.org?x=1", "trust domain"),
        ("spiffe://example.org#frag", "trust domain"),
        # query and fragment
        ("spiffe://example.org/x?y=1", "query or fragment"),
        ("spiffe://example.org/x?", "query or fragment"),
        ("spiffe://example.org/x#frag", "query or fragment"),
        ("spiffe://example.org/x#", "query or fragment"),
        ("spiffe://example.org/?", "query or fragment"),
        # trailing slash, empty and dot segments
        ("spiffe://example.org/", "must not end with '/'"),
        ("spiffe://example.org/a/", "must not end with '/'"),
        ("spiffe://example.org/a/b//", "must not end with '/'"),
        ("spiffe://example.org//a", "empty segment"),
        ("spiffe://example.org/a//b", "empty segment"),
        ("spiffe://example.org/.", "'.' or '..'"),
        ("spiffe://example.org/..", "'.' or '..'"),
        ("spiffe://example.org/a/./b", "'.' or '..'"),
        ("spiffe://example.org/a/../b", "'.' or '..'"),
        ("spiffe://example.org/a/..", "'.' or '..'"),
        # characters outside [a-zA-Z0-9.-_] in the path, percent-encoding included
        ("spiffe://example.org/p%41th", "segments may only hold"),
        ("spiffe://example.org/a%2Fb", "segments may only hold"),
        ("spiffe://example.org/a b", "segments may only hold"),
        ("spiffe://example.org/a+b", "segments may only hold"),
        ("spiffe://example.org/a:b", "segments may only hold"),
        ("spiffe://example.org/a@b", "segments may only hold"),
        ("spiffe://example.org/a~b", "segments may only hold"),
        ("spiffe://example.org/a*b", "segments may only hold"),
        ("spiffe://example.org/a\\b", "segments may only hold"),
        ("spiffe://example.org/a;b", "segments may only hold"),
        ("spiffe://example.org/caf\u00e9", "segments may only hold"),
        ("spiffe://example.org/a\n", "segments may only hold"),
        ("spiffe://example.org/a\tb", "segments may only hold"),
    ],
)
def test_invalid_ids_are_refused_with_the_reason(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SpiffeId.parse(uri)


def test_trust_domain_of_256_bytes_is_refused() -> None:
    td = TD_255 + "c"
    assert len(td.encode()) == 256
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        SpiffeId.parse(f"spiffe://{td}/x")


def test_uri_longer_than_2048_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than 2048 bytes"):
        SpiffeId.parse(_uri_of_length(2049))


def test_uri_length_is_counted_in_bytes_not_characters() -> None:
    uri = _uri_of_length(2047) + "\u00e9"  # 2048 characters, 2049 bytes
    assert len(uri) == 2048
    with pytest.raises(ValueError, match="longer than 2048 bytes"):
        SpiffeId.parse(uri)


@pytest.mark.parametrize("value", [b"spiffe://example.org/x", None, 42])
def test_non_string_input_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        SpiffeId.parse(value)  # type: ignore[arg-type]


def test_for_service_account_follows_istio_convention() -> None:
    sid = SpiffeId.for_service_account("cluster.local", "default", "web")
    assert sid.trust_domain == "cluster.local"
    assert sid.path == "/ns/default/sa/web"
    assert str(sid) == "spiffe://cluster.local/ns/default/sa/web"
    assert SpiffeId.parse(str(sid)) == sid


@pytest.mark.parametrize(
    ("trust_domain", "namespace", "account", "message"),
    [
        ("Cluster.local", "default", "web", "lower-case"),
        ("", "default", "web", "empty trust domain"),
        ("cluster.local:80", "default", "web", "port"),
        ("cluster.local", "", "web", "empty segment"),
        ("cluster.local", "default", "", "must not end with '/'"),
        ("cluster.local", "..", "web", "'.' or '..'"),
        ("cluster.local", "default", ".", "'.' or '..'"),
        ("cluster.local", "my ns", "web", "segments may only hold"),
        ("cluster.local", "default", "web?x", "query or fragment"),
    ],
)
def test_for_service_account_refuses_invalid_parts(
    trust_domain: str, namespace: str, account: str, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SpiffeId.for_service_account(trust_domain, namespace, account)


@pytest.mark.parametrize(
    ("namespace", "account"),
    [("a/sa/b", "c"), ("a", "b/sa/c"), ("a/b", "c"), ("a", "b/c")],
)
def test_for_service_account_refuses_a_slash_inside_a_name(namespace: str, account: str) -> None:
    # Otherwise ns "a/sa/b" + sa "c" and ns "a" + sa "b/sa/c" would share one identity.
    with pytest.raises(ValueError, match="one path segment"):
        SpiffeId.for_service_account("cluster.local", namespace, account)


def test_for_trust_domain_has_no_path() -> None:
    sid = SpiffeId.for_trust_domain("example.org")
    assert sid.path == ""
    assert str(sid) == "spiffe://example.org"
    with pytest.raises(ValueError, match="lower-case"):
        SpiffeId.for_trust_domain("Example.org")


@pytest.mark.parametrize(
    "uri",
    ["spiffe://example.org", "spiffe://example.org/a", "spiffe://td/ns/x/sa/y", _uri_of_length(2048)],
)
def test_str_round_trips_through_parse(uri: str) -> None:
    once = SpiffeId.parse(uri)
    again = SpiffeId.parse(str(once))
    assert again == once
    assert hash(again) == hash(once)
    assert str(again) == uri


def test_ids_compare_by_value_and_path_is_case_sensitive() -> None:
    assert SpiffeId.parse("spiffe://td/a") == SpiffeId("td", "/a")
    assert SpiffeId.parse("spiffe://td/a") != SpiffeId.parse("spiffe://td/A")
    assert SpiffeId.parse("spiffe://td/a") != SpiffeId.parse("spiffe://td2/a")


def test_ids_are_immutable() -> None:
    sid = SpiffeId.parse("spiffe://td/a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sid.path = "/b"  # type: ignore[misc]
