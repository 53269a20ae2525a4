"""Workload attestation: who is at the other end of a Unix socket.

Pure parsing (`cgroups`, the entry syntax in `unix`) does no I/O; the process table (`proc`) and
the kubelet (`kubelet`) sit behind the small ports in `ports`, so the attestors (`unix`,
`kubernetes`) run against fakes in tests.
"""
