"""gRPC: Istio's certificate API, health and reflection."""
