"""Each policy's rules as one generated Python function: `first(request) -> rule index | None`.

The explaining path (`CompiledRule.mismatch`) walks field tests one call at a time so it can
name the first field that failed; deciding needs only yes or no, so the same tests are fused
into one boolean expression per rule and one `def` per policy and protocol:

    def first(r):
        if ((_v0 := r.source_principal) and (_v0 in _k0 or _v0.startswith(_k1))) and ...:
            return 0
        return None

Only names this module makes up go into the source text: every value a policy supplies (strings,
sets, header names, matchers) is a constant bound by name in the function's globals, never
spliced into code. Code objects depend only on the shape of the source, so policies with the
same structure share one compiled code object; each gets its own globals.
"""

from __future__ import annotations

import builtins
import re
import types
from collections.abc import Callable
from typing import Any

from meshca.authz.matchers import StringMatcher

First = Callable[[Any], int | None]
_CODE_CACHE_LIMIT = 4096
_code_cache: dict[str, types.CodeType] = {}


def _any_template(templates: tuple[re.Pattern[str], ...]) -> Callable[[str], bool]:
    def matches(value: str) -> bool:
        return any(t.fullmatch(value) for t in templates)
    return matches


class Expressions:
    """Source fragments for one function, with the constants they refer to."""

    def __init__(self) -> None:
        self.constants: dict[str, object] = {}
        self._variables = 0

    def const(self, value: object) -> str:
        name = f"_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def variable(self) -> str:
        self._variables += 1
        return f"_v{self._variables}"

    def call(self, test: Callable[[Any], bool]) -> str:
        """Fallback: the field's own compiled test, called as it is."""
        return f"{self.const(test)}(r)"

    def string(self, value: str, matcher: StringMatcher) -> str:
        """`StringMatcher.__call__(<value>)` inlined: absent or empty never matches."""
        if matcher.present and not matcher.ignore_case:
            return f"bool({value})"
        v = self.variable()
        bind = f"({v} := ({value} or '').lower())" if matcher.ignore_case else f"({v} := {value})"
        if matcher.present:
            return f"bool({bind})"
        parts = []
        if len(matcher.exact) == 1:
            parts.append(f"{v} == {self.const(next(iter(matcher.exact)))}")
        elif matcher.exact:
            parts.append(f"{v} in {self.const(matcher.exact)}")
        if matcher.prefixes:
            parts.append(f"{v}.startswith({self.const(matcher.prefixes)})")
        if matcher.suffixes:
            parts.append(f"{v}.endswith({self.const(matcher.suffixes)})")
        if matcher.templates:
            parts.append(f"{self.const(_any_template(matcher.templates))}({v})")
        if not parts:
            return "False"
        return f"({bind} and ({' or '.join(parts)}))"


def all_of(expressions: list[str]) -> str:
    if not expressions:
        return "True"
    return expressions[0] if len(expressions) == 1 else "(" + " and ".join(expressions) + ")"


def any_of(expressions: list[str]) -> str:
    if not expressions:
        return "False"
    return expressions[0] if len(expressions) == 1 else "(" + " or ".join(expressions) + ")"


def first_match_function(rules: list[tuple[int, str]], expressions: Expressions) -> First:
    """`rules`: (rule index, boolean expression over `r`) in order; the first true one wins."""
    lines = ["def first(r):"]
    for index, expression in rules:
        lines.append(f"    if {expression}:")
        lines.append(f"        return {int(index)}")
    lines.append("    return None")
    source = "\n".join(lines)
    code = _code_cache.get(source)
    if code is None:
        module = compile(source, "<meshca.authz.rulegen>", "exec")
        code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
        if len(_code_cache) >= _CODE_CACHE_LIMIT:
            _code_cache.clear()
        _code_cache[source] = code
    namespace: dict[str, Any] = {"__builtins__": builtins, **expressions.constants}
    function: First = types.FunctionType(code, namespace, "first")
    return function
