"""Thin protocol edges: decode, call a service, encode, map errors in one table."""
