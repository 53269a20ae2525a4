"""A validated policy → matchers built once, in the two shapes a request can need.

Each rule is compiled for HTTP and for TCP. Over TCP the HTTP-only fields (hosts, methods,
paths, requestPrincipals, `request.*` keys) are unavailable: an ALLOW rule using one is dropped
whole (it can never match, so it can never widen access), while DENY, AUDIT and CUSTOM rules
drop only that field (so they match more, never less). Istio builds its TCP filters the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshca.authz.conditions import ValueKind, claim_path, header_name, key_spec
from meshca.authz.decision import Decision
from meshca.authz.matchers import IpMatcher, StringMatcher, ip_matcher, string_matcher
from meshca.authz.model import (
    HTTP_ONLY_FIELDS,
    Action,
    AuthorizationPolicy,
    Condition,
    MeshConfig,
    Rule,
)
from meshca.authz.request import AuthzRequest
from meshca.authz.rulegen import Expressions, First, all_of, any_of, first_match_function

Test = Callable[[AuthzRequest], bool]
LOCAL_TRUST_DOMAIN = "cluster.local"  # in a policy, Istio reads it as "this mesh's trust domain"


@dataclass(frozen=True, slots=True)
class FieldTest:
    path: str  # where the user wrote it: `rules[0].from[0].source.principals`
    test: Test


@dataclass(frozen=True, slots=True)
class CompiledRule:
    lists: tuple[tuple[tuple[FieldTest, ...], ...], ...]  # from, to: OR of items, AND of fields
    conditions: tuple[FieldTest, ...]  # when: AND

    def mismatch(self, request: AuthzRequest) -> str | None:
        """None when the rule matches, else the path of the first field that did not."""
        for items in self.lists:
            first: str | None = None
            for fields in items:
                failed = _first_failure(fields, request)
                if failed is None:
                    break
                first = first or failed
            else:
                return first
        return _first_failure(self.conditions, request)


def _first_failure(fields: tuple[FieldTest, ...], request: AuthzRequest) -> str | None:
    for field_test in fields:
        if not field_test.test(request):
            return field_test.path
    return None


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy: AuthorizationPolicy
    ordinal: int  # order of evaluation and of explanations
    http_rules: tuple[CompiledRule, ...]
    tcp_rules: tuple[CompiledRule | None, ...]  # None: an ALLOW rule dropped over TCP
    # Deciding: the rules fused into one generated function per protocol (rulegen), and the
    # Decision a matching rule makes, built once (ALLOW and DENY policies; None otherwise).
    http_first: First = field(default=lambda r: None, compare=False, repr=False)
    tcp_first: First = field(default=lambda r: None, compare=False, repr=False)
    decisions: tuple[Decision | None, ...] = field(default=(), compare=False, repr=False)

    @property
    def key(self) -> str:
        return self.policy.key

    @property
    def action(self) -> Action:
        return self.policy.action

    def first_match(self, request: AuthzRequest) -> int | None:
        """The index of the first rule that matches, or None (the generated function)."""
        return (self.http_first if request.protocol == "HTTP" else self.tcp_first)(request)

    def first_match_slowly(self, request: AuthzRequest) -> int | None:
        """The same answer, field by field as explanations walk them (tests compare the two)."""
        rules = self.http_rules if request.is_http else self.tcp_rules
        for index, rule in enumerate(rules):
            if rule is not None and rule.mismatch(request) is None:
                return index
        return None

    def mismatches(self, request: AuthzRequest) -> list[str | None]:
        """Per rule: None if it matches, else the first field that did not."""
        if request.is_http:
            return [rule.mismatch(request) for rule in self.http_rules]
        return [f"rules[{i}]: uses HTTP-only fields, so it never matches TCP in an ALLOW policy"
                if rule is None else rule.mismatch(request) for i, rule in enumerate(self.tcp_rules)]


def compile_policy(policy: AuthorizationPolicy, mesh: MeshConfig, ordinal: int = 0) -> CompiledPolicy:
    http: list[CompiledRule] = []
    tcp: list[CompiledRule | None] = []
    gen = Expressions()  # one set of constants for both functions
    http_fast: list[tuple[int, str]] = []
    tcp_fast: list[tuple[int, str]] = []
    for index, rule in enumerate(policy.rules):
        compiled, expression = _rule(rule, f"rules[{index}]", policy, mesh, False, gen)
        http.append(compiled)
        http_fast.append((index, expression))
        uses_http = _uses_http_only(rule)
        if uses_http and policy.action is Action.ALLOW:
            tcp.append(None)
        elif uses_http:
            compiled, expression = _rule(rule, f"rules[{index}]", policy, mesh, True, gen)
            tcp.append(compiled)
            tcp_fast.append((index, expression))
        else:
            tcp.append(compiled)
            tcp_fast.append((index, expression))
    return CompiledPolicy(policy, ordinal, tuple(http), tuple(tcp),
                          first_match_function(http_fast, gen),
                          first_match_function(tcp_fast, gen), _decisions(policy))


def _decisions(policy: AuthorizationPolicy) -> tuple[Decision | None, ...]:
    """What a match of each rule decides, when the policy's action decides on its own."""
    key, count = policy.key, len(policy.rules)
    if policy.action is Action.DENY:
        return tuple(Decision("DENY", f"denied by DENY policy {key} rule {i}", key, i, "DENY")
                     for i in range(count))
    if policy.action is Action.ALLOW:
        return tuple(Decision("ALLOW", f"allowed by ALLOW policy {key} rule {i}", key, i, "ALLOW")
                     for i in range(count))
    return (None,) * count


def _uses_http_only(rule: Rule) -> bool:
    matches = (*(rule.sources or ()), *(rule.operations or ()))
    return any(name in HTTP_ONLY_FIELDS for m in matches for name in m.fields) or any(
        key_spec(c.key).http_only for c in rule.conditions)


def _rule(rule: Rule, path: str, policy: AuthorizationPolicy, mesh: MeshConfig, tcp: bool,
          gen: Expressions) -> tuple[CompiledRule, str]:
    """The rule's field tests (explanations) and one boolean expression over `r` (deciding),
    with the same answer as `CompiledRule.mismatch(r) is None`."""
    lists = []
    list_expressions: list[str] = []
    for name, item, matches in (("from", "source", rule.sources), ("to", "operation", rule.operations)):
        if matches is None:
            continue
        items = []
        item_expressions = []
        for i, match in enumerate(matches):
            fields = []
            field_expressions = []
            for field_name, values in match.fields.items():
                if tcp and field_name in HTTP_ONLY_FIELDS:
                    continue
                test = _field(field_name, values, policy, mesh)
                expression = _fast_field(gen, field_name, values, policy, mesh, test)
                if field_name in NAMESPACE_FIELDS and policy.action is not Action.DENY:
                    test, expression = _local_only(test, expression, mesh, gen)
                fields.append(FieldTest(f"{path}.{name}[{i}].{item}.{field_name}", test))
                field_expressions.append(expression)
            items.append(tuple(fields))
            item_expressions.append(all_of(field_expressions))
        lists.append(tuple(items))
        list_expressions.append(any_of(item_expressions))
    conditions = []
    condition_expressions = []
    for i, c in enumerate(rule.conditions):
        if tcp and key_spec(c.key).http_only:
            continue
        test = _condition(c, policy, mesh)
        expression = _fast_condition(gen, c, policy, mesh, test)
        if c.key in NAMESPACE_KEYS and policy.action is not Action.DENY:
            test, expression = _local_only(test, expression, mesh, gen)
        conditions.append(FieldTest(f"{path}.when[{i}]", test))
        condition_expressions.append(expression)
    compiled = CompiledRule(tuple(lists), tuple(conditions))
    # `mismatch` on a list with no items stops there and matches; validation forbids empty lists,
    # but the expression keeps that answer rather than assume it.
    for position, items_ in enumerate(lists):
        if not items_:
            return compiled, all_of(list_expressions[:position])
    return compiled, all_of(list_expressions + condition_expressions)


# A principal's namespace and service account mean a namespace of this mesh only when the
# principal is of this mesh's trust domain (or an alias): with federation, b.test/ns/web/sa/x
# is not a workload of namespace `web` here. An ALLOW (or AUDIT) policy matches a foreign peer
# only where it names the peer's trust domain in `principals`; a DENY policy still matches by
# namespace whatever the trust domain, so federation never opens a deny. (CUSTOM policies may
# not name namespaces or service accounts at all.)
NAMESPACE_FIELDS = frozenset({"namespaces", "notNamespaces", "serviceAccounts",
                              "notServiceAccounts"})
NAMESPACE_KEYS = frozenset({"source.namespace", "source.serviceAccount"})


def _local_only(test: Test, expression: str, mesh: MeshConfig, gen: Expressions,
                ) -> tuple[Test, str]:
    domains = frozenset((mesh.trust_domain, *mesh.trust_domain_aliases))

    def local(r: AuthzRequest) -> bool:
        return (r.source_principal or "").partition("/")[0] in domains

    known = gen.const(domains)
    return ((lambda r: local(r) and test(r)),
            f"((r.source_principal or '').partition('/')[0] in {known} and {expression})")


def _fast_field(gen: Expressions, name: str, values: tuple[str, ...], policy: AuthorizationPolicy,
                mesh: MeshConfig, test: Test) -> str:
    """`test` (what `_field` built) as an inline expression where the field is a common one."""
    negative = name.startswith("not") and name[3:4].isupper()
    base = name[3].lower() + name[4:] if negative else name
    expression = _fast_positive(gen, base, values, policy, mesh)
    if expression is None:
        return gen.call(test)
    return f"(not {expression})" if negative else expression


def _fast_positive(gen: Expressions, base: str, values: tuple[str, ...],
                   policy: AuthorizationPolicy, mesh: MeshConfig) -> str | None:
    if base == "principals":
        return gen.string("r.source_principal", string_matcher(expand_trust_domains(values, mesh)))
    if base == "namespaces":
        return gen.string("r.source_namespace", string_matcher(values))
    if base == "serviceAccounts":
        accounts = gen.const(service_accounts(values, policy.namespace))
        return f"((r.source_namespace, r.source_service_account) in {accounts})"
    if base == "ports":
        return f"(r.destination_port in {gen.const(frozenset(int(v) for v in values))})"
    if base == "methods":
        return f"((_h := r.http) is not None and {gen.string('_h.method', string_matcher(values))})"
    if base == "paths":
        paths = string_matcher(values, path_templates=True)
        return f"((_h := r.http) is not None and {gen.string('_h.path', paths)})"
    if base == "hosts":
        hosts = string_matcher(values, ignore_case=True)
        return f"((_h := r.http) is not None and {gen.string('_h.host', hosts)})"
    return None


def _fast_condition(gen: Expressions, condition: Condition, policy: AuthorizationPolicy,
                    mesh: MeshConfig, test: Test) -> str:
    """`test` (what `_condition` built) inline, for header, namespace, principal and port keys."""
    positive = _fast_condition_values(gen, condition.key, condition.values, mesh) \
        if condition.values else "True"
    negative = _fast_condition_values(gen, condition.key, condition.not_values, mesh) \
        if condition.not_values else "False"
    if positive is None or negative is None:
        return gen.call(test)
    if negative == "False":
        return positive
    if positive == "True":
        return f"(not {negative})"
    return f"({positive} and not {negative})"


def _fast_condition_values(gen: Expressions, key: str, values: tuple[str, ...], mesh: MeshConfig,
                           ) -> str | None:
    kind = key_spec(key).kind
    if kind is ValueKind.PORT:
        return f"(r.destination_port in {gen.const(frozenset(int(v) for v in values))})"
    if kind is not ValueKind.STRING:
        return None
    if key == "source.principal":
        return gen.string("r.source_principal", string_matcher(expand_trust_domains(values, mesh)))
    if key == "source.namespace":
        return gen.string("r.source_namespace", string_matcher(values))
    if (header := header_name(key)) is not None:
        value = f"_h.headers.get({gen.const(header)})"
        return f"((_h := r.http) is not None and {gen.string(value, string_matcher(values))})"
    return None


def _negate(test: Test) -> Test:
    return lambda request: not test(request)


def _field(name: str, values: tuple[str, ...], policy: AuthorizationPolicy, mesh: MeshConfig) -> Test:
    negative = name.startswith("not") and name[3:4].isupper()
    base = name[3].lower() + name[4:] if negative else name
    test = _positive(base, values, policy, mesh)
    return _negate(test) if negative else test


def _positive(base: str, values: tuple[str, ...], policy: AuthorizationPolicy, mesh: MeshConfig,
              ) -> Test:
    if base == "principals":
        principals = string_matcher(expand_trust_domains(values, mesh))
        return lambda r: principals(r.source_principal)
    if base == "requestPrincipals":
        jwt = string_matcher(values)
        return lambda r: r.auth is not None and jwt(r.auth.principal)
    if base == "namespaces":
        namespaces = string_matcher(values)
        return lambda r: namespaces(r.source_namespace)
    if base == "serviceAccounts":
        accounts = service_accounts(values, policy.namespace)
        return lambda r: (r.source_namespace, r.source_service_account) in accounts
    if base == "ipBlocks":
        direct = ip_matcher(values)
        return lambda r: direct(r.source_ip)
    if base == "remoteIpBlocks":
        remote = ip_matcher(values)
        return lambda r: remote(r.original_ip)
    if base == "hosts":
        hosts = string_matcher(values, ignore_case=True)
        return lambda r: r.http is not None and hosts(r.http.host)
    if base == "ports":
        ports = frozenset(int(v) for v in values)
        return lambda r: r.destination_port in ports
    if base == "methods":
        methods = string_matcher(values)
        return lambda r: r.http is not None and methods(r.http.method)
    if base == "paths":
        paths = string_matcher(values, path_templates=True)
        return lambda r: r.http is not None and paths(r.http.path)
    raise AssertionError(f"validation let through an unknown field {base}")


def expand_trust_domains(principals: tuple[str, ...], mesh: MeshConfig) -> list[str]:
    """`td/ns/x/sa/y` with td the mesh's trust domain, an alias or `cluster.local` stands for
    every one of them; a principal starting with `*` or naming a foreign domain stays as it is."""
    domains = (mesh.trust_domain, *mesh.trust_domain_aliases)
    expanded: list[str] = []
    for principal in principals:
        domain, slash, rest = principal.partition("/")
        if principal.startswith("*") or not slash or (domain not in domains
                                                       and domain != LOCAL_TRUST_DOMAIN):
            expanded.append(principal)
        else:
            expanded.extend(f"{d}/{rest}" for d in domains)
    return expanded


def service_accounts(values: tuple[str, ...], namespace: str) -> frozenset[tuple[str | None, str | None]]:
    """`sa` means a service account in the policy's own namespace."""
    pairs = set()
    for value in values:
        ns, _, account = value.rpartition("/")
        pairs.add((ns or namespace, account))
    return frozenset(pairs)


def _condition(condition: Condition, policy: AuthorizationPolicy, mesh: MeshConfig) -> Test:
    positive = _condition_values(condition.key, condition.values, policy, mesh) \
        if condition.values else None
    negative = _condition_values(condition.key, condition.not_values, policy, mesh) \
        if condition.not_values else None
    if positive and negative:
        return lambda r: positive(r) and not negative(r)
    if positive:
        return positive
    assert negative is not None
    return _negate(negative)


def _condition_values(key: str, values: tuple[str, ...], policy: AuthorizationPolicy,
                      mesh: MeshConfig) -> Test:
    kind = key_spec(key).kind
    if kind is ValueKind.IP:
        return _ip_condition(key, ip_matcher(values))
    if kind is ValueKind.PORT:
        ports = frozenset(int(v) for v in values)
        return lambda r: r.destination_port in ports
    if kind is ValueKind.SERVICE_ACCOUNT:
        accounts = service_accounts(values, policy.namespace)
        return lambda r: (r.source_namespace, r.source_service_account) in accounts
    if key == "source.principal":
        principals = string_matcher(expand_trust_domains(values, mesh))
        return lambda r: principals(r.source_principal)
    return _string_condition(key, string_matcher(values))


def _ip_condition(key: str, matcher: IpMatcher) -> Test:
    if key == "source.ip":
        return lambda r: matcher(r.source_ip)
    if key == "remote.ip":
        return lambda r: matcher(r.original_ip)
    return lambda r: matcher(r.destination_ip)


def _string_condition(key: str, matcher: StringMatcher) -> Test:
    if (header := header_name(key)) is not None:
        return lambda r: r.http is not None and matcher(r.http.headers.get(header))
    if (path := claim_path(key)) is not None:
        return lambda r: r.auth is not None and _claim_matches(r.auth.claims, path, matcher)
    if key == "source.namespace":
        return lambda r: matcher(r.source_namespace)
    if key == "connection.sni":
        return lambda r: matcher(r.sni)
    if key == "request.auth.principal":
        return lambda r: r.auth is not None and matcher(r.auth.principal)
    if key == "request.auth.presenter":
        return lambda r: r.auth is not None and matcher(r.auth.presenter)
    if key == "request.auth.audiences":
        return lambda r: r.auth is not None and matcher.any_of(r.auth.audiences)
    raise AssertionError(f"validation let through an unknown key {key}")


def _claim_matches(claims: Mapping[str, Any], path: tuple[str, ...], matcher: StringMatcher) -> bool:
    """A nested claim (`[a][b]`); a string, or a list of which any string may match."""
    value: Any = claims
    for step in path:
        if not isinstance(value, Mapping):
            return False
        value = value.get(step)
    if isinstance(value, str):
        return matcher(value)
    if isinstance(value, list):
        return matcher.any_of(v for v in value if isinstance(v, str))
    return False
