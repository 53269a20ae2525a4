"""The Kubernetes API through the official `kubernetes` client (the only package importing it)."""
