"""Prometheus metrics: Istio's names for issuance, so existing dashboards and alerts keep
working, plus meshca's own for token authentication and Kubernetes API calls.

Each worker process counts into its own row of a shared array (one writer per row, no
locks); the process serving `/metrics` sums the rows. prometheus_client's Counter would
expose `<name>_total` where Istio's series are `citadel_server_csr_count`, so the families
are built here, Istio's as BareCounter (written by metrics_http.exposition).
"""

from __future__ import annotations

import bisect
import multiprocessing
import threading
import time
from collections.abc import Iterator, MutableSequence

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from meshca.transport.ext_authz.reasons import DECISIONS as AUTHZ_DECISIONS
from meshca.transport.ext_authz.reasons import REFRESH_OUTCOMES

ISSUANCE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
KUBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ERRORS = tuple(code.name.lower() for code in grpc.StatusCode if code is not grpc.StatusCode.OK)
REASONS = ("invalid", "missing", "malformed", "too_large", "algorithm", "signature",
           "unknown_key", "issuer", "audience", "expired", "not_yet_valid", "legacy", "subject",
           "cluster", "impersonation", "pod_binding", "api_unavailable", "tokenreview",
           "certificate", "renewal_age")
CACHE_OUTCOMES = ("hit", "miss", "negative_hit", "coalesced")
KUBE_KINDS = ("tokenreview", "pod", "pods", "discovery", "namespaces", "configmaps")
LISTENERS = ("grpc", "admin", "metrics")
CONNECTION_REFUSALS = ("max-connections", "max-connections-per-source", "idle-timeout",
                       "handshake-failed")
RATE_LIMITS = ("source", "identity")
REFUSAL_TRANSPORTS = ("grpc", "admin")
# Token reasons, then what else refuses a caller: a blocked identity, a rate limit, and at the
# admin API bad credentials or a role too low.
REFUSAL_REASONS = (*REASONS, "blocked", "rate_limited", "credentials", "role")


class _Layout:
    """Named ranges of one row."""

    def __init__(self) -> None:
        self.width = 0

    def take(self, n: int) -> int:
        start, self.width = self.width, self.width + n
        return start


_L = _Layout()
_CSR, _SUCCESS, _AUTH = _L.take(1), _L.take(1), _L.take(1)
_ERR = _L.take(len(ERRORS))
_ISSUE_BUCKETS = _L.take(len(ISSUANCE_BUCKETS) + 1)
_ISSUE_SUM = _L.take(1)
_REASON = _L.take(len(REASONS))
_CACHE = _L.take(len(CACHE_OUTCOMES))
_KUBE = _L.take(len(KUBE_KINDS) * 2)  # (ok, error) per kind
_KUBE_BUCKETS = _L.take(len(KUBE_BUCKETS) + 1)
_KUBE_SUM = _L.take(1)
_CONN = _L.take(len(LISTENERS) * len(CONNECTION_REFUSALS))
_AUTHZ = _L.take(len(AUTHZ_DECISIONS))
_AUTHZ_INDEX = {pair: i for i, pair in enumerate(AUTHZ_DECISIONS)}
_AUTHZ_REFRESH = _L.take(len(REFRESH_OUTCOMES))
# Unix time this worker's ext_authz identity snapshot was read; 0: no ext_authz here,
# -1: serving without a snapshot yet.
_AUTHZ_STATE_AT = _L.take(1)
_RATE_LIMITED = _L.take(len(RATE_LIMITS))
_REFUSED = _L.take(len(REFUSAL_TRANSPORTS) * len(REFUSAL_REASONS))
_JWT_MINTED = _L.take(1)
_JWT_ERR = _L.take(len(ERRORS))
ROW_WIDTH = _L.width


def shared_slots(workers: int) -> MutableSequence[float]:
    """Zeroed shared memory for `workers` rows; pass it to each worker process."""
    array: MutableSequence[float] = multiprocessing.get_context("spawn").RawArray(
        "d", workers * ROW_WIDTH
    )
    return array


class CaMetrics:
    """What one worker counts, into its own row. Also the AuthMetrics port."""

    def __init__(self, slots: MutableSequence[float], row: int) -> None:
        self._slots = slots
        self._base = row * ROW_WIDTH

    def csr_received(self) -> None:
        self._slots[self._base + _CSR] += 1

    def issued(self, seconds: float) -> None:
        slots, base = self._slots, self._base
        slots[base + _SUCCESS] += 1
        slots[base + _ISSUE_BUCKETS + bisect.bisect_left(ISSUANCE_BUCKETS, seconds)] += 1
        slots[base + _ISSUE_SUM] += seconds

    def authentication_failed(self, reason: str) -> None:
        self._slots[self._base + _AUTH] += 1
        index = REASONS.index(reason) if reason in REASONS else 0
        self._slots[self._base + _REASON + index] += 1

    def sign_error(self, code: grpc.StatusCode) -> None:
        self._slots[self._base + _ERR + ERRORS.index(code.name.lower())] += 1

    def token_cache(self, outcome: str) -> None:
        self._slots[self._base + _CACHE + CACHE_OUTCOMES.index(outcome)] += 1

    def kube_call(self, kind: str, seconds: float, ok: bool) -> None:
        slots, base = self._slots, self._base
        slots[base + _KUBE + KUBE_KINDS.index(kind) * 2 + (0 if ok else 1)] += 1
        slots[base + _KUBE_BUCKETS + bisect.bisect_left(KUBE_BUCKETS, seconds)] += 1
        slots[base + _KUBE_SUM] += seconds

    def connection_refused(self, listener: str, reason: str) -> None:
        """A connection refused or closed by a listener limit (tls_listener.py)."""
        index = LISTENERS.index(listener) * len(CONNECTION_REFUSALS) + CONNECTION_REFUSALS.index(reason)
        self._slots[self._base + _CONN + index] += 1

    # ext_authz (the AuthzMetrics port). Its checks run on a thread pool: unlike the counters
    # above, these slots have several writers in the process, hence the lock.
    _authz_lock = threading.Lock()

    def authz_decision(self, decision: str, reason: str) -> None:
        index = _AUTHZ_INDEX.get((decision, reason), _AUTHZ_INDEX[("DENY", "internal")])
        with self._authz_lock:
            self._slots[self._base + _AUTHZ + index] += 1

    def identity_refresh(self, outcome: str) -> None:
        with self._authz_lock:
            self._slots[self._base + _AUTHZ_REFRESH + REFRESH_OUTCOMES.index(outcome)] += 1

    def identity_state_read(self, wall_time: float | None) -> None:
        self._slots[self._base + _AUTHZ_STATE_AT] = -1.0 if wall_time is None else wall_time
    def rate_limited(self, limit: str) -> None:
        self._slots[self._base + _RATE_LIMITED + RATE_LIMITS.index(limit)] += 1

    def jwt_minted(self) -> None:
        self._slots[self._base + _JWT_MINTED] += 1

    def jwt_refused(self, code: grpc.StatusCode) -> None:
        self._slots[self._base + _JWT_ERR + ERRORS.index(code.name.lower())] += 1

    def refused(self, transport: str, reason: str) -> None:
        """Every refused request (each one, not the audit log's summaries)."""
        index = REFUSAL_REASONS.index(reason) if reason in REFUSAL_REASONS else 0
        offset = REFUSAL_TRANSPORTS.index(transport) * len(REFUSAL_REASONS) + index
        self._slots[self._base + _REFUSED + offset] += 1


class CaMetricsCollector(Collector):
    """Sums every worker's row; registered once, in the process that serves /metrics."""

    def __init__(self, slots: MutableSequence[float], workers: int,
                 registry: CollectorRegistry) -> None:
        self._slots = slots
        self._workers = workers
        self.root_expiry = 0.0
        registry.register(self)

    def _total(self, offset: int) -> float:
        return sum(self._slots[w * ROW_WIDTH + offset] for w in range(self._workers))

    def collect(self) -> Iterator[Metric]:
        for offset, name, text in (
            (_CSR, "citadel_server_csr_count", "CreateCertificate requests received."),
            (_SUCCESS, "citadel_server_success_cert_issuance_count", "Certificates issued."),
            (_AUTH, "citadel_server_authentication_failure_count",
             "Requests whose caller was not authenticated."),
        ):
            yield _counter(name, text, [({}, self._total(offset))], suffix="")
        yield _counter("citadel_server_csr_sign_err_count",
                       "Requests that ended without a certificate, by error.",
                       self._labelled(_ERR, "error", ERRORS), suffix="")
        gauge = Metric("citadel_server_root_cert_expiry_timestamp",
                       "Unix time at which the earliest root in the trust bundle expires.", "gauge")
        gauge.add_sample("citadel_server_root_cert_expiry_timestamp", {}, self.root_expiry)
        yield gauge
        yield self._histogram("meshca_issuance_duration_seconds",
                              "Time from request to a signed, recorded certificate.",
                              ISSUANCE_BUCKETS, _ISSUE_BUCKETS, _ISSUE_SUM)
        yield _counter("meshca_worker_issued_certificates", "Certificates issued, by worker process.",
                       [({"worker": str(w)}, self._slots[w * ROW_WIDTH + _SUCCESS])
                        for w in range(self._workers)])
        yield _counter("meshca_authentication_failures", "Refused callers, by reason.",
                       self._labelled(_REASON, "reason", REASONS))
        yield _counter("meshca_token_cache_requests", "Token cache look-ups, by outcome.",
                       self._labelled(_CACHE, "outcome", CACHE_OUTCOMES, keep_zero=True))
        kube = [({"kind": kind, "outcome": outcome}, self._total(_KUBE + i * 2 + j))
                for i, kind in enumerate(KUBE_KINDS) for j, outcome in enumerate(("ok", "error"))]
        yield _counter("meshca_kube_api_requests", "Calls to Kubernetes API servers.", kube)
        yield self._histogram("meshca_kube_api_request_duration_seconds",
                              "Latency of calls to Kubernetes API servers.",
                              KUBE_BUCKETS, _KUBE_BUCKETS, _KUBE_SUM)
        refused = [({"listener": listener, "reason": reason},
                    self._total(_CONN + i * len(CONNECTION_REFUSALS) + j))
                   for i, listener in enumerate(LISTENERS)
                   for j, reason in enumerate(CONNECTION_REFUSALS)]
        yield _counter("meshca_connections_refused",
                       "Connections refused or closed by a listener limit, by listener and reason.",
                       refused)
        yield _counter("meshca_rate_limited", "CreateCertificate requests refused by a rate "
                       "limit (RESOURCE_EXHAUSTED), by limit.",
                       self._labelled(_RATE_LIMITED, "limit", RATE_LIMITS, keep_zero=True))
        refusals = [({"transport": transport, "reason": reason},
                     self._total(_REFUSED + t * len(REFUSAL_REASONS) + r))
                    for t, transport in enumerate(REFUSAL_TRANSPORTS)
                    for r, reason in enumerate(REFUSAL_REASONS)]
        yield _counter("meshca_refused_requests", "Refused requests, each one counted (the audit "
                       "log summarises them), by transport and reason.",
                       [s for s in refusals if s[1]])
        yield _counter("meshca_jwt_svids_minted", "JWT-SVIDs minted (MintJWTSVID).",
                       [({}, self._total(_JWT_MINTED))])
        yield _counter("meshca_jwt_svid_errors", "MintJWTSVID requests that ended without a "
                       "token, by error.", self._labelled(_JWT_ERR, "error", ERRORS))
        yield from self._ext_authz()

    def _ext_authz(self) -> Iterator[Metric]:
        decisions = [({"decision": d, "reason": r}, self._total(_AUTHZ + i))
                     for i, (d, r) in enumerate(AUTHZ_DECISIONS)]
        yield _counter("meshca_ext_authz_decisions", "ext_authz Check answers, by decision and "
                       "reason.", [s for s in decisions if s[1]])
        yield _counter("meshca_ext_authz_identity_refreshes", "Background reads of the blocked "
                       "identities and revoked certificates, by outcome (slow: longer than "
                       "--ext-authz-refresh).", self._labelled(_AUTHZ_REFRESH, "outcome",
                                                                REFRESH_OUTCOMES))
        age = Metric("meshca_ext_authz_identity_state_age_seconds",
                     "Age of the identity snapshot each worker's ext_authz decides from (+Inf: "
                     "none yet); past --ext-authz-max-staleness every check is denied.", "gauge")
        now = time.time()
        for worker in range(self._workers):
            read_at = self._slots[worker * ROW_WIDTH + _AUTHZ_STATE_AT]
            if read_at:
                age.add_sample(age.name, {"worker": str(worker)},
                               float("inf") if read_at < 0 else max(0.0, now - read_at))
        yield age

    def _labelled(self, offset: int, label: str, values: tuple[str, ...],
                  keep_zero: bool = False) -> list[tuple[dict[str, str], float]]:
        samples = [({label: v}, self._total(offset + i)) for i, v in enumerate(values)]
        return [s for s in samples if keep_zero or s[1]]

    def _histogram(self, name: str, text: str, bounds: tuple[float, ...], first: int,
                   sum_offset: int) -> Metric:
        histogram = Metric(name, text, "histogram")
        cumulative = 0.0
        for index, bound in enumerate((*bounds, float("inf"))):
            cumulative += self._total(first + index)
            le = "+Inf" if bound == float("inf") else repr(bound)
            histogram.add_sample(f"{name}_bucket", {"le": le}, cumulative)
        histogram.add_sample(f"{name}_count", {}, cumulative)
        histogram.add_sample(f"{name}_sum", {}, self._total(sum_offset))
        return histogram


class BareCounter(Metric):
    """A counter whose samples carry the family's name, no `_total` (Istio's names)."""


def _counter(name: str, text: str, samples: list[tuple[dict[str, str], float]],
             suffix: str = "_total") -> Metric:
    metric = Metric(name, text, "counter") if suffix else BareCounter(name, text, "counter")
    for labels, value in samples:
        metric.add_sample(name + suffix, labels, value)
    return metric
