"""The identity helpers of meshca/core: workload parts of a SPIFFE ID, a certificate's SPIFFE ID,
serials as text, the Bearer reader and the "is this certificate still good" rule."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from meshca.core.bearer import bearer_token
from meshca.core.certificates import (
    Standing,
    format_serial,
    parse_serial,
    spiffe_id_of,
    standing,
    valid_at,
)
from meshca.core.spiffe import SpiffeId
from meshca.errors import AuthenticationError
from tests.unit.pki import ec_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)


# ---- SpiffeId.workload_parts ---------------------------------------------------------------

@pytest.mark.parametrize(("uri", "parts"), [
    ("spiffe://cluster.local/ns/default/sa/web", ("default", "web")),
    ("spiffe://td/ns/a.b/sa/c-d", ("a.b", "c-d")),
    ("spiffe://td", None),
    ("spiffe://td/ns/default", None),
    ("spiffe://td/ns/default/sa", None),
    ("spiffe://td/ns/default/sa/web/extra", None),
    ("spiffe://td/sa/web/ns/default", None),
    ("spiffe://td/x/default/sa/web", None),
    ("spiffe://td/ns/default/x/web", None),
])
def test_workload_parts(uri: str, parts: tuple[str, str] | None) -> None:
    assert SpiffeId.parse(uri).workload_parts() == parts


def test_workload_parts_invert_for_service_account() -> None:
    assert SpiffeId.for_service_account("td", "ns1", "sa1").workload_parts() == ("ns1", "sa1")


# ---- a certificate's SPIFFE ID -------------------------------------------------------------

def _certificate(names: Sequence[x509.GeneralName] | None, *, serial: int = 0xABC) -> x509.Certificate:
    key = ec_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
               .public_key(key.public_key()).serial_number(serial)
               .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(hours=1)))
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return builder.sign(key, hashes.SHA256())


def test_the_one_uri_san_is_the_spiffe_id() -> None:
    uri = "spiffe://cluster.local/ns/a/sa/b"
    cert = _certificate([x509.UniformResourceIdentifier(uri), x509.DNSName("b.a.svc")])
    assert spiffe_id_of(cert) == SpiffeId.parse(uri)


@pytest.mark.parametrize("names", [
    None,
    [x509.DNSName("only.dns")],
    [x509.UniformResourceIdentifier("spiffe://td/a"), x509.UniformResourceIdentifier("spiffe://td/b")],
    [x509.UniformResourceIdentifier("https://td/a")],
    [x509.UniformResourceIdentifier("spiffe://TD/a")],
])
def test_no_single_valid_spiffe_id_is_none(names: Sequence[x509.GeneralName] | None) -> None:
    assert spiffe_id_of(_certificate(names)) is None


# ---- serials ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("serial", "text"), [(0xABC, "abc"), (1, "1"), (2**159 - 1, "7" + "f" * 39)])
def test_serials_round_trip(serial: int, text: str) -> None:
    assert format_serial(serial) == text
    assert parse_serial(text) == serial
    assert parse_serial(text.upper()) == serial


@pytest.mark.parametrize("text", ["", "0x1f", "-1", "+1", " 1f", "1_f", "xyz", "\uff11"])
def test_bad_serials(text: str) -> None:
    with pytest.raises(ValueError, match="not a certificate serial"):
        parse_serial(text)


# ---- Bearer ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["Bearer abc", "bearer abc", "BEARER abc", "Bearer  abc "])
def test_the_scheme_is_case_insensitive_by_default(value: str) -> None:
    assert bearer_token([value]) == "abc"


@pytest.mark.parametrize(("value", "token"), [("Bearer abc", "abc"), ("Bearer \tabc\n", "abc")])
def test_the_exact_scheme_reads_the_token(value: str, token: str) -> None:
    assert bearer_token([value], exact_scheme=True) == token


@pytest.mark.parametrize(("values", "exact", "reason", "message"), [
    ([], False, "missing", "no authorization metadata; expected 'Bearer <token>'"),
    (["Bearer a", "Bearer a"], False, "malformed", "more than one authorization value"),
    (["bearer abc"], True, "malformed", "must start with 'Bearer '"),
    (["Basic dXNlcjpwYXNz"], False, "malformed", "must start with 'Bearer '"),
    (["Bearer"], False, "malformed", "must start with 'Bearer '"),
    (["abc"], False, "malformed", "must start with 'Bearer '"),
    ([" Bearer abc"], False, "malformed", "must start with 'Bearer '"),
    (["Bearer   "], False, "missing", "empty bearer token"),
    (["bearer \t"], False, "missing", "empty bearer token"),
])
def test_bearer_refusals(values: list[str], exact: bool, reason: str, message: str) -> None:
    with pytest.raises(AuthenticationError, match=re.escape(message)) as refused:
        bearer_token(values, exact_scheme=exact)
    assert refused.value.reason == reason


def test_refusals_name_where_the_value_came_from() -> None:
    with pytest.raises(AuthenticationError, match=r"^Authorization must start with 'Bearer '$"):
        bearer_token(["Token abc"], where="Authorization")


# ---- still good ------------------------------------------------------------------------------

BEFORE, AFTER = NOW - timedelta(hours=1), NOW + timedelta(hours=1)


@pytest.mark.parametrize(("now", "revoked", "tainted", "expected"), [
    (NOW, False, False, Standing.GOOD),
    (BEFORE, False, False, Standing.GOOD),  # notBefore and notAfter are both inside (RFC 5280)
    (AFTER, False, False, Standing.GOOD),
    (BEFORE - timedelta(microseconds=1), False, False, Standing.NOT_YET_VALID),
    (AFTER + timedelta(microseconds=1), False, False, Standing.EXPIRED),
    (NOW, True, False, Standing.REVOKED),
    (NOW, False, True, Standing.ISSUER_TAINTED),
    (AFTER + timedelta(days=1), True, True, Standing.REVOKED),  # revocation outranks the rest
    (AFTER + timedelta(days=1), False, True, Standing.ISSUER_TAINTED),
])
def test_standing(now: datetime, revoked: bool, tainted: bool, expected: Standing) -> None:
    assert standing(not_before=BEFORE, not_after=AFTER, now=now, revoked=revoked,
                    issuer_tainted=tainted) is expected


def test_valid_at_reads_the_certificate_validity() -> None:
    cert = _certificate(None)
    assert valid_at(cert, NOW)
    assert not valid_at(cert, NOW + timedelta(hours=2))
    assert not valid_at(cert, NOW - timedelta(hours=2))
