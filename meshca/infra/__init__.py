"""Adapters behind the service layer's ports: database, key files, token issuer keys."""
