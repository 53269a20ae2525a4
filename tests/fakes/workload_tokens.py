"""In-memory `TokenAuthenticator` and `WorkloadTokens` (service/ports.py): scripted accounts
and refusals per token (and cluster), a scripted set of node agents and whom each may act
for, and a record of every call."""

from __future__ import annotations

from meshca.core.sa_token import ServiceAccount
from meshca.errors import AuthenticationError

Scripted = ServiceAccount | Exception


class FakeTokenAuthenticator:
    """`accounts[token]` is who the token speaks for, or the exception it is refused with;
    any other token is refused as the validators refuse junk."""

    def __init__(self, accounts: dict[str, Scripted] | None = None) -> None:
        self.accounts: dict[str, Scripted] = dict(accounts or {})
        self.calls: list[str] = []

    async def authenticate(self, token: str) -> ServiceAccount:
        self.calls.append(token)
        found = self.accounts.get(token)
        if found is None:
            raise AuthenticationError("token is not a JWT", reason="malformed")
        if isinstance(found, Exception):
            raise found
        return found


class FakeWorkloadTokens:
    """Tokens per cluster (None: the local one). A node agent (`node_agents`, "ns/name") may
    act for the identities `may_act_for[agent]` lists ("ns/name"); anyone else is refused as
    WorkloadAuthenticator refuses."""

    def __init__(self, accounts: dict[str, Scripted] | None = None, *,
                 clusters: dict[str, dict[str, Scripted]] | None = None,
                 node_agents: dict[str, set[str]] | None = None) -> None:
        self.local = FakeTokenAuthenticator(accounts)
        self.clusters = {name: FakeTokenAuthenticator(scripted)
                         for name, scripted in (clusters or {}).items()}
        self.may_act_for: dict[str, set[str]] = dict(node_agents or {})
        self.impersonations: list[tuple[str, str | None, str]] = []  # (agent, cluster, target)
        self.impersonation_error: Exception | None = None  # raised by every impersonate()

    @property
    def calls(self) -> list[str]:
        return [*self.local.calls, *(t for c in self.clusters.values() for t in c.calls)]

    async def authenticate(self, token: str, cluster_id: str | None) -> ServiceAccount:
        if not cluster_id:
            return await self.local.authenticate(token)
        cluster = self.clusters.get(cluster_id)
        if cluster is None:
            raise AuthenticationError("unknown cluster id", reason="cluster")
        return await cluster.authenticate(token)

    async def impersonate(self, caller: ServiceAccount, cluster_id: str | None,
                          namespace: str, name: str) -> ServiceAccount:
        agent, target = f"{caller.namespace}/{caller.name}", f"{namespace}/{name}"
        self.impersonations.append((agent, cluster_id, target))
        if self.impersonation_error is not None:
            raise self.impersonation_error
        allowed = self.may_act_for.get(agent)
        if allowed is None:
            raise AuthenticationError("caller may not use ImpersonatedIdentity to request "
                                      "certificates for other identities", reason="impersonation")
        if target not in allowed:
            raise AuthenticationError("no pod of that identity runs on the caller's node",
                                      reason="impersonation")
        return ServiceAccount(namespace=namespace, name=name, node_name=caller.node_name)
