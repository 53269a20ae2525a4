"""`meshca agent`: the node agent that serves the SPIFFE Workload API to local workloads
(attestation, the Workload API servicer, its Unix-socket front)."""
