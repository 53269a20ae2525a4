"""`meshca agent`: the SPIFFE Workload API node agent (issue 14)."""
