"""The agent's Prometheus metrics, in one registry served at the agent's `/metrics`.

One object, passed to the parts that count, so each part's tests can read what it counted
without a global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from meshca.core.jwt_svid import REASONS
from meshca.transport.process_metrics import register_process_metrics

ATTESTATION_OUTCOMES = ("ok", "no_identity", "refused", "unavailable")
SERVED_APIS = ("workload_x509_svid", "workload_x509_bundles", "workload_jwt_svid",
               "workload_jwt_bundles", "sds")
RENEWAL_OUTCOMES = ("ok", "unavailable", "refused")
JWT_VALIDATION_OUTCOMES = ("ok", *REASONS)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        register_process_metrics(r)
        self.attestations = Counter(
            "meshca_agent_attestations", "workload attestations by attestor and outcome",
            ["attestor", "outcome"], registry=r)
        self.svids_served = Counter(
            "meshca_agent_svids_served", "SVID (or bundle) responses sent to workloads, by API",
            ["api"], registry=r)
        self.renewals = Counter(
            "meshca_agent_svid_renewals", "SVID signings asked of the server, by outcome",
            ["outcome"], registry=r)
        self.server_errors = Counter(
            "meshca_agent_server_errors", "failed calls to the meshca server, by call and gRPC "
            "status or error kind", ["call", "code"], registry=r)
        self.jwt_mints = Counter(
            "meshca_agent_jwt_svid_mints", "JWT-SVIDs asked of the server, by outcome",
            ["outcome"], registry=r)
        self.jwt_validations = Counter(
            "meshca_agent_jwt_validations", "ValidateJWTSVID calls by outcome: ok, or why the "
            "token was refused", ["outcome"], registry=r)
        self.sds_rejections = Counter(
            "meshca_agent_sds_rejections", "SDS responses Envoy rejected (NACK)", registry=r)
        self.bundle_updates = Counter(
            "meshca_agent_bundle_updates", "trust bundle changes seen", registry=r)
        self.svids_cached = Gauge(
            "meshca_agent_svids_cached", "identities with an SVID in the cache", registry=r)
        self.soonest_expiry = Gauge(
            "meshca_agent_svid_soonest_expiry_seconds",
            "seconds until the soonest cached SVID expires (+Inf with none cached)", registry=r)
        self.soonest_expiry.set(float("inf"))
        self.streams = Gauge(
            "meshca_agent_open_streams", "Workload API and SDS streams open now, by API",
            ["api"], registry=r)
        for outcome in ATTESTATION_OUTCOMES:
            for attestor in ("kubernetes", "unix"):
                self.attestations.labels(attestor, outcome)
        for api in SERVED_APIS:
            self.svids_served.labels(api)
            self.streams.labels(api)
        for outcome in RENEWAL_OUTCOMES:
            self.renewals.labels(outcome)
            self.jwt_mints.labels(outcome)
        for outcome in JWT_VALIDATION_OUTCOMES:
            self.jwt_validations.labels(outcome)
