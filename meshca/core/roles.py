"""Admin roles, ordered: each one may do everything the one below it may."""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    VIEWER = 1  # reads
    OPERATOR = 2  # also revokes, blocks, rotates
    ADMIN = 3  # also manages tokens and policies

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; use viewer, operator or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()
