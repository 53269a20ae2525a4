"""What the authorization engine refuses, always with the field path that caused it.

`Invalid` is a ValueError (bad value where it enters) carrying every problem found, so a caller
can show them all at once: `PolicyInvalid` for an AuthorizationPolicy, `RequestInvalid` for a
request to evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshca.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str  # e.g. `spec.rules[0].from[1].source.ipBlocks[2]`
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Invalid(InvalidRequest, ValueError):
    def __init__(self, errors: list[FieldError]) -> None:
        assert errors, "an Invalid error names at least one field"
        self.errors = tuple(errors)
        super().__init__("; ".join(str(e) for e in errors))

    def prefixed(self, prefix: str) -> Invalid:
        """The same errors, each path under `prefix` (e.g. `body.policies[3]`)."""
        return type(self)([FieldError(_join(prefix, e.field), e.message) for e in self.errors])


class PolicyInvalid(Invalid):
    """An AuthorizationPolicy Istio's validation would refuse (or that meshca cannot read)."""


class RequestInvalid(Invalid):
    """A request to evaluate that does not have the documented shape."""


def _join(prefix: str, field: str) -> str:
    if not prefix or not field:
        return prefix or field
    return f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}"
