"""The `kubernetes` attestor: pid → cgroup → pod UID and container ID → the kubelet's pod →
`spiffe://<td>/ns/<namespace>/sa/<service account>`.

A pid names a process only while it lives: between reading its cgroup and the kubelet's answer
it may exit and the pid be given to another process, in another pod. The start time is read
before the look-up and again after; if it changed, or the process is gone, the attestation is
refused, so nobody is given the identity of whoever held the pid first.
"""

from __future__ import annotations

import logging

from meshca.agent.attestation.cgroups import CgroupError, pod_container
from meshca.agent.attestation.ports import AttestationRefused, Caller, PodSource, ProcessTable
from meshca.core.spiffe import SpiffeId

log = logging.getLogger(__name__)


class KubernetesAttestor:
    def __init__(self, trust_domain: str, processes: ProcessTable, pods: PodSource) -> None:
        SpiffeId.for_trust_domain(trust_domain)  # fail at start on a bad trust domain
        self._trust_domain = trust_domain
        self._processes = processes
        self._pods = pods

    def attest(self, caller: Caller) -> tuple[SpiffeId, ...]:
        """The caller's identity (one), or () if it runs in no known pod's container. Raises
        AttestationRefused if the process changed underneath, DependencyError if the kubelet
        cannot answer."""
        pid = caller.pid
        started = self._processes.start_time(pid)
        if started is None:
            raise AttestationRefused(f"process {pid} exited before it could be attested")
        cgroup = self._processes.cgroup(pid)
        if cgroup is None:
            raise AttestationRefused(f"process {pid} exited during attestation")
        try:
            located = pod_container(cgroup)
        except CgroupError as exc:
            raise AttestationRefused(f"process {pid}: {exc}") from exc
        if located is None:
            log.debug("process %d runs in no pod's container", pid)
            return ()
        pod = self._pods.pod(located.pod_uid)
        if self._processes.start_time(pid) != started:
            raise AttestationRefused(f"process {pid} exited or was replaced during attestation")
        if pod is None:
            log.info("process %d: the kubelet runs no pod %s", pid, located.pod_uid)
            return ()
        if located.container_id not in pod.container_ids:
            log.info("process %d: container %.12s is not one of pod %s/%s's", pid,
                     located.container_id, pod.namespace, pod.name)
            return ()
        try:
            identity = SpiffeId.for_service_account(self._trust_domain, pod.namespace, pod.service_account)
        except ValueError as exc:
            raise AttestationRefused(f"pod {pod.namespace}/{pod.name}: no SPIFFE ID: {exc}") from exc
        return (identity,)
