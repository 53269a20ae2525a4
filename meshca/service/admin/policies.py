"""Authorization policies stored through the admin API: versioned, audited, and enforced by
this process at once (other processes follow the stored version, service/policy_sync.py)."""

from __future__ import annotations

from typing import Any

from meshca.authz import FieldError, Invalid, MeshConfig, PolicyInvalid, parse_policies, parse_policy
from meshca.core.clock import Clock, SystemClock
from meshca.service.admin.audit import audit_entry
from meshca.service.admin_ports import StoredPolicies
from meshca.service.ca_ports import StoredPolicy
from meshca.service.policy_store import PolicyStore


class PolicyAdmin:
    """`store` is the set this process enforces; `stored` the policies kept in the database;
    `mesh` the mesh's defaults for evaluating a request."""

    def __init__(self, store: PolicyStore, stored: StoredPolicies, mesh: MeshConfig,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.stored = stored
        self.mesh = mesh
        self._clock = clock or SystemClock()

    def reload_stored(self) -> None:
        _, rows = self.stored.all()
        self.store.replace("api", parse_policies([r.document for r in rows]))

    def put(self, namespace: str, name: str, document: dict[str, Any], actor: str,
            ) -> tuple[StoredPolicy, bool]:
        """Create or replace (the row, and whether it was created); `Invalid` names every
        problem of the document."""
        parse_policy(document)
        row, created = self.stored.put(namespace, name, document, audit_entry(
            self._clock, actor, "authz.policy.put", f"{namespace}/{name}"))
        self.reload_stored()
        return row, created

    def apply(self, documents: list[dict[str, Any]], actor: str,
              ) -> list[tuple[StoredPolicy, bool]]:
        """Create or replace each document (which names itself in its metadata), as `kubectl
        apply -f` does: every document is checked before any is stored, so one bad document
        stores none (`Invalid` names each problem under `[i]`)."""
        problems: list[FieldError] = []
        for index, document in enumerate(documents):
            try:
                parse_policy(document)
            except Invalid as exc:
                problems += exc.prefixed(f"[{index}]").errors
        if problems:
            raise PolicyInvalid(problems)
        applied = []
        for document in documents:
            meta = document["metadata"]
            applied.append(self.stored.put(meta["namespace"], meta["name"], document, audit_entry(
                self._clock, actor, "authz.policy.put", f"{meta['namespace']}/{meta['name']}")))
        self.reload_stored()
        return applied

    def delete(self, namespace: str, name: str, actor: str) -> int:
        """The new set version; NotFound unless the policy is stored."""
        version = self.stored.delete(namespace, name, audit_entry(
            self._clock, actor, "authz.policy.delete", f"{namespace}/{name}"))
        self.reload_stored()
        return version
