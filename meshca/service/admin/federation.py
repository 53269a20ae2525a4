"""Federation relationships through the admin API, and the ones `--federate-with` configures.

Relationships from flags are written at start-up and marked `from_flags`; the API shows them
but refuses to change or delete them (409): the next start would put them back, so an API
change would only seem to work. A flag entry that disappeared from the flags is deleted at
start-up. Every change is audited in the transaction that makes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshca.core.clock import Clock
from meshca.core.federation import Relationship, problems
from meshca.errors import Conflict, InvalidRequest, NotFound
from meshca.service.admin.audit import audit_entry
from meshca.service.federation_ports import FederationRecord, FederationStore

FLAGS_ACTOR = "meshca:--federate-with"


class InvalidRelationship(InvalidRequest):
    """`errors`: (field, message) for every problem."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("invalid federation relationship: " + "; ".join(
            f"{name} {message}" for name, message in errors))
        self.errors = errors


class FederationAdmin:
    def __init__(self, store: FederationStore, own_trust_domain: str, clock: Clock,
                 changed: Callable[[], None] = lambda: None) -> None:
        """`changed`: after every change this process made (wake the fetcher, reload views)."""
        self._store = store
        self._own = own_trust_domain
        self._clock = clock
        self._changed = changed

    def list(self) -> list[FederationRecord]:
        return self._store.all()

    def get(self, trust_domain: str) -> FederationRecord:
        return self._store.get(trust_domain)

    def put(self, relationship: Relationship, actor: str, *, create_only: bool = False,
            ) -> tuple[FederationRecord, bool]:
        """Create or replace (the stored record, and whether it was created)."""
        found = problems(relationship, self._own)
        if found:
            raise InvalidRelationship(found)
        self._refuse_flag_entry(relationship.trust_domain, create_only=create_only)
        created = self._store.put(relationship, audit_entry(
            self._clock, actor, "federation.put", relationship.trust_domain,
            detail=f"{relationship.profile} {relationship.url}"), create_only=create_only)
        self._changed()
        return self._store.get(relationship.trust_domain), created

    def delete(self, trust_domain: str, actor: str) -> None:
        self._refuse_flag_entry(trust_domain, create_only=False)
        self._store.delete(trust_domain, audit_entry(self._clock, actor, "federation.delete",
                                                     trust_domain))
        self._changed()

    def sync_flags(self, relationships: Sequence[Relationship]) -> None:
        """At start-up: the relationships of `--federate-with`, written where they differ from
        the stored ones; flag entries no longer configured are deleted."""
        for relationship in relationships:
            found = problems(relationship, self._own)
            if found:
                raise InvalidRelationship(found)
        stored = {r.relationship.trust_domain: r.relationship for r in self._store.all()}
        wanted = {r.trust_domain: r for r in relationships}
        for td, relationship in wanted.items():
            if stored.get(td) != relationship:
                self._store.put(relationship, audit_entry(
                    self._clock, FLAGS_ACTOR, "federation.put", td,
                    detail=f"{relationship.profile} {relationship.url}"))
        for td, relationship in stored.items():
            if relationship.from_flags and td not in wanted:
                self._store.delete(td, audit_entry(self._clock, FLAGS_ACTOR,
                                                   "federation.delete", td))

    def _refuse_flag_entry(self, trust_domain: str, *, create_only: bool) -> None:
        try:
            current = self._store.get(trust_domain)
        except NotFound:
            return
        if current.relationship.from_flags:
            raise Conflict(f"federation with {trust_domain} is configured by --federate-with; "
                           "change the flag instead")
        if create_only:
            raise Conflict(f"federation with {trust_domain} exists already; PUT replaces it")
