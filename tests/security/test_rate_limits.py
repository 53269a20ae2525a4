"""Issuance rate limits: per client address before authentication, per identity after.

A burst over a limit gets RESOURCE_EXHAUSTED (which Istio's agent retries with backoff) with
`retry-after` and a google.rpc.RetryInfo, while other identities are still served; the
per-source limit turns a flood away before any token is checked. The buckets themselves are
tested with a hand-moved clock, including that their memory stays bounded.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from meshca.cli.serve_args import serve_flag_type
from meshca.core.rate_limit import KeyedLimiter, RateLimit, TokenBucket
from meshca.errors import RateLimited
from meshca.service.rate_limits import IssuanceRateLimits
from meshca.transport.grpc.status import STATUS_DETAILS_KEY, status_for, trailers_for
from tests.security.limits_support import audit_rows, metric, wait_for
from tests.support import MeshcaProcess, csr_pem, start_meshca

_rate_limit = serve_flag_type("issuance_rate_per_identity")

# ---- the buckets, with a hand-moved clock ---------------------------------------------------


def test_a_bucket_refuses_without_taking_and_says_how_long_to_wait() -> None:
    bucket = TokenBucket(2.0, 3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    # Refused attempts take nothing: hammering does not push the caller's turn further out.
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert not bucket.full(0.5) and bucket.full(2.0)


def test_a_clock_that_steps_back_adds_no_tokens() -> None:
    bucket = TokenBucket(1.0, 1, now=100.0)
    assert bucket.take(100.0) == 0.0
    assert bucket.take(50.0) > 0


def test_keys_have_their_own_buckets() -> None:
    limiter = KeyedLimiter(RateLimit(1.0, 2))
    assert [limiter.check("a", 0.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]
    assert limiter.check("b", 0.0) == 0.0


def test_memory_is_bounded_when_keys_are_sprayed() -> None:
    limiter = KeyedLimiter(RateLimit(1.0, 5), max_keys=100)
    for n in range(10_000):
        limiter.check(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(limiter) == 100
    assert limiter.evicted == 10_000 - 100
    # The most recent key kept its bucket (its burst is spent by 5 more calls).
    assert [limiter.check("10.0.39.15", 0.0) for _ in range(4)] == [0.0] * 4
    assert limiter.check("10.0.39.15", 0.0) > 0


def test_refilled_buckets_are_dropped_as_new_keys_arrive() -> None:
    limiter = KeyedLimiter(RateLimit(10.0, 10), max_keys=1000)
    for n in range(500):
        limiter.check(f"old-{n}", 0.0)
    limiter.check("new", 5.0)  # every old bucket has refilled by now: they equal new ones
    assert len(limiter) == 1 and limiter.evicted == 0


def test_limits_raise_rate_limited_naming_the_limit_and_the_flag() -> None:
    now = [0.0]
    limits = IssuanceRateLimits(RateLimit(1.0, 1), RateLimit(0.5, 1), monotonic=lambda: now[0])
    limits.check_source("10.1.2.3")
    with pytest.raises(RateLimited) as source:
        limits.check_source("10.1.2.3")
    assert source.value.limit == "source" and source.value.retry_after == pytest.approx(1.0)
    assert "--issuance-rate-per-source" in str(source.value) and "10.1.2.3" in str(source.value)
    limits.check_identity("spiffe://td/ns/a/sa/b")
    with pytest.raises(RateLimited) as identity:
        limits.check_identity("spiffe://td/ns/a/sa/b")
    assert identity.value.limit == "identity" and identity.value.retry_after == pytest.approx(2.0)
    assert "--issuance-rate-per-identity" in str(identity.value)
    now[0] = 2.0
    limits.check_identity("spiffe://td/ns/a/sa/b")
    IssuanceRateLimits(None, None).check_source("anything")  # off


def test_retry_information_travels_as_retry_after_and_retry_info() -> None:
    error = RateLimited("slow down", retry_after=2.25, limit="identity")
    assert status_for(error) is grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(trailers_for(error))
    assert trailers["retry-after"] == "3"  # whole seconds, rounded up
    status = status_pb2.Status.FromString(trailers[STATUS_DETAILS_KEY])
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == "slow down"
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (2, 250_000_000)
    assert trailers_for(ValueError("x")) == ()


@pytest.mark.parametrize(("text", "expected"), [
    ("20/s:200", RateLimit(20, 200)), ("10", RateLimit(10, 20)), ("600/m", RateLimit(10, 20)),
    ("3600/h:5", RateLimit(1, 5)), ("1/m:5", RateLimit(1 / 60, 5)), ("off", None), ("OFF", None),
])
def test_rate_limit_flag_values(text: str, expected: RateLimit | None) -> None:
    assert _rate_limit(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "0/s", "-1/s", "10/d", "10/s:0", "10/s:x", "nan",
                                  "inf", "10/s:5:5"])
def test_bad_rate_limit_flag_values_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="RATE/s"):
        _rate_limit(text)


# ---- a real server -------------------------------------------------------------------------

def _exhausted(error: grpc.RpcError) -> tuple[int, float, str]:
    """retry-after, the RetryInfo delay and the message of a RESOURCE_EXHAUSTED reply."""
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers[STATUS_DETAILS_KEY])
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == error.details()
    return (int(trailers["retry-after"]),
            retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9, error.details() or "")


@pytest.fixture
def identity_limited(tmp_path: Path) -> Iterator[MeshcaProcess]:
    server = start_meshca(tmp_path / "data", "--issuance-rate-per-identity", "1/m:5",
                          "--issuance-rate-per-source", "off", "--audit-refusal-interval", "0.5s")
    yield server
    server.stop()


def test_a_burst_over_the_identity_limit_is_told_when_to_retry_while_others_are_served(
        identity_limited: MeshcaProcess) -> None:
    server = identity_limited
    token = server.token("shop", "cart")
    before = server.issued_count()

    def attempt(_: int) -> grpc.RpcError | None:
        try:
            server.create_certificate(csr_pem(), token=token)
        except grpc.RpcError as error:
            return error
        return None

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    refused = [o for o in outcomes if o is not None]
    assert len(refused) == 3  # a burst of 5, and no refill to speak of at 1/minute
    for error in refused:
        retry_after, delay, message = _exhausted(error)
        assert 1 <= retry_after <= 60 and 0 < delay <= 60 and retry_after == -(-delay // 1)
        assert "spiffe://cluster.local/ns/shop/sa/cart" in message
        assert "--issuance-rate-per-identity" in message
    assert server.issued_count() == before + 5

    # Another identity is untouched, and the refused one's tokens are not reset by a new token.
    assert len(server.create_certificate(csr_pem(), token=server.token("shop", "web"))) >= 2
    with pytest.raises(grpc.RpcError) as again:
        server.create_certificate(csr_pem(), token=server.token("shop", "cart"))
    _exhausted(again.value)
    assert server.issued_count() == before + 6

    assert metric(server, "meshca_rate_limited_total", limit="identity") == 4
    assert metric(server, "meshca_rate_limited_total", limit="source") == 0
    assert metric(server, "meshca_refused_requests_total", transport="grpc",
                  reason="rate_limited") == 4
    assert metric(server, "citadel_server_csr_sign_err_count_total",
                  error="resource_exhausted") == 4

    # In the audit log: summarised like every refusal, whatever each reply's retry time was.
    def summarised() -> list[dict[str, object]] | None:
        rows = [r for r in audit_rows(server) if r["outcome"] == "refused"]
        counts = [int(str(r["detail"]).split(" ")[0]) for r in rows]
        return rows if sum(counts) >= 4 else None

    rows = wait_for(summarised, what="the rate-limit refusals in the audit log")
    assert {(r["actor"], r["target"], str(r["detail"]).split(" (")[0].split(": ", 1)[1])
            for r in rows} == {("grpc:127.0.0.1", "spiffe://cluster.local/ns/shop/sa/cart",
                                "over the per-identity issuance rate limit")}
    assert len(rows) <= 2


def test_the_source_limit_turns_a_flood_away_before_any_token_is_checked(tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data", "--issuance-rate-per-source", "1/m:10",
                          "--issuance-rate-per-identity", "off")
    try:
        for _ in range(10):  # no credentials at all: each one is authenticated, and refused
            with pytest.raises(grpc.RpcError) as refused:
                server.create_certificate(csr_pem(), metadata=[])
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        for metadata in ([], [("authorization", f"Bearer {server.token()}")]):
            with pytest.raises(grpc.RpcError) as flooded:
                server.create_certificate(csr_pem(), metadata=metadata)
            _, _, message = _exhausted(flooded.value)
            assert "127.0.0.1" in message and "--issuance-rate-per-source" in message
        assert metric(server, "citadel_server_authentication_failure_count_total") == 10
        assert metric(server, "meshca_rate_limited_total", limit="source") == 2
        assert server.issued_count() == 0
    finally:
        server.stop()
