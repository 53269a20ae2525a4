"""`meshca agent` flags, and the AgentSettings they make: both read from AgentSettings' fields."""

from __future__ import annotations

import argparse
from typing import Any

from meshca.agent.settings import GROUPS, AgentSettings
from meshca.cli.common import add_flags, values_from

DESCRIPTION = """\
Run the node agent: serve each workload on this node its SPIFFE identity over the SPIFFE
Workload API (--socket) and Envoy SDS (--sds-socket), without tokens or CSRs in the workload.
The agent learns who a caller is from the kernel (the Unix socket's peer pid, uid and gid) and
its attestor; makes the workload's key here (it never leaves the node); asks the meshca server
to sign, with its own service-account token and ImpersonatedIdentity; caches one SVID per
identity, renews it at half its life, and follows the trust bundle.

Workloads find the agent with SPIFFE_ENDPOINT_SOCKET=unix://<--socket>. The server must list
the agent's service account in --trusted-node-account. Every flag can also be set by the
environment variable its help names; a flag wins over its variable."""

EPILOG = """\
examples:
  on a Kubernetes node (the Helm chart's DaemonSet does this):
    meshca agent --server meshca.meshca-system.svc:15012 --kubelet-insecure
  on a VM, by Unix user:
    meshca agent --attestor unix --server ca.example:15012 --server-ca root-cert.pem \\
      --workload web=uid:1000=spiffe://cluster.local/ns/default/sa/web"""


def add_agent_parser(commands: Any) -> None:
    agent = commands.add_parser(
        "agent", help="run the node agent (SPIFFE Workload API and Envoy SDS)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(agent, AgentSettings, GROUPS)


def agent_settings_from(args: argparse.Namespace) -> AgentSettings:
    """ValueError when the values do not fit together (AgentSettings.__post_init__ says which)."""
    return values_from(args, AgentSettings)
