"""meshca: a workload-identity certificate authority for service meshes."""

__version__ = "0.1.0"
