"""How many connections a listener takes, and for how long (README "Limits")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per listener and per process."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    max_connections: int = 1024
    max_connections_per_source: int = 128

    def __post_init__(self) -> None:
        if self.handshake_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("connection timeouts must be positive")
        if self.max_connections < 1 or self.max_connections_per_source < 1:
            raise ValueError("connection limits must be at least 1")
