"""The admin REST API under random requests (issue 17, item 1): any method, any path (the
documented templates with odd segments, and random ones), any query, headers (credentials
right, wrong and missing; content types; odd and oversized headers) and any body, over real
HTTPS; then schemathesis' stateful phase, which chains documented operations.

The oracle: never a 5xx; for a documented path and method, a status the OpenAPI document lists
for that operation; for a documented path with another method, 405; for any other path, 404 or
the 401 of a request without valid credentials (the API answers who-are-you before where)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import string
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote, unquote

from hypothesis import strategies as st

from tests.fuzz.campaign import Tally, run_strategy
from tests.support import MeshcaProcess, admin_token

# A flood of bad tokens from one address must not lock the fuzzer out (tests/security covers it).
SERVER_FLAGS = ("--admin-auth-failures", "1000000000")
MAX_REQUEST_BYTES = 1024 * 1024  # the server's --max-request-bytes default
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO")
SEGMENTS = ("1", "0", "-1", "ff" * 20, "x", "", "..", "%2e%2e", "%00", "%ff", "a" * 300, "g1",
            "spiffe%3A%2F%2Fcluster.local%2Fns%2Fdefault%2Fsa%2Fweb", "default", "cluster.local",
            "bootstrap-admin-not", "\u00e9", "*", "{x}", "web:block", ":revoke")
BODIES_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["kind", "name", "role", "reason", "id", "spec", "metadata", "apiVersion",
                         "request", "policies", "trust_domain", "bundle_endpoint_url", "x"])
        | st.text(max_size=10), inner, max_size=6),
    max_leaves=25)


@dataclass(frozen=True, slots=True)
class HttpInput:
    method: str
    path: str  # with its query
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    authenticated: bool  # sends the server's own valid admin token
    oversized: bool  # headers or body past the listener's limits: it may just close

    def __str__(self) -> str:
        return (f"{self.method} {self.path[:200]} auth={self.authenticated} "
                f"body({len(self.body or b'')})={(self.body or b'')[:200]!r}")


@cache
def operations(server_admin: str, token: str, bundle: str) -> dict[str, dict[str, set[int]]]:
    """Path template → method → documented statuses, from the server's own /openapi.json."""
    response = _send(server_admin, bundle, "GET", "/openapi.json",
                     (("Authorization", f"Bearer {token}"),), None)
    assert response is not None and response[0] == 200, response
    document = json.loads(response[1])
    return {path: {method.upper(): {int(code) for code in op.get("responses", {}) if code.isdigit()}
                   for method, op in ops.items()}
            for path, ops in document["paths"].items()}


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    # `[^/]*`: the router gives an empty parameter to `/v1/identities/:unblock` (then validates it).
    return re.compile("^" + "".join("[^/]*" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def _send(addr: str, bundle: str, method: str, path: str, headers: tuple[tuple[str, str], ...],
          body: bytes | None, timeout: float = 30) -> tuple[int, bytes] | None:
    """(status, body), or None when the server closed the connection without an answer."""
    host, _, port = addr.rpartition(":")
    context = ssl.create_default_context(cadata=bundle)
    raw = socket.create_connection((host, int(port)), timeout=timeout)
    connection = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=context)
    try:
        connection.sock = context.wrap_socket(raw, server_hostname="localhost")
        # Non-ASCII and spaces as a client would send them (UTF-8, percent-encoded).
        connection.putrequest(method, quote(path, safe=string.punctuation), skip_host=True,
                              skip_accept_encoding=True)
        connection.putheader("Host", "localhost")
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    except ssl.SSLCertVerificationError:
        raise  # the client's trust is stale (an earlier request rotated the CA): not a closing
    except (OSError, http.client.HTTPException):  # ssl.SSLError and ConnectionError are OSErrors
        return None
    finally:
        connection.close()
        raw.close()


def _path_for(template: str, segments: list[str]) -> str:
    values = iter(segments)
    return re.sub(r"\{[^}]+\}", lambda _: next(values, "x"), template)


@st.composite
def http_inputs(draw: st.DrawFn, templates: tuple[str, ...], token: str) -> HttpInput:
    kind = draw(st.sampled_from(["documented"] * 6 + ["random", "near"]))
    if kind == "documented":
        path = _path_for(draw(st.sampled_from(templates)),
                         draw(st.lists(st.sampled_from(SEGMENTS) | st.text(string.ascii_letters + "%:.-_",
                                                                            max_size=20), max_size=3)))
    elif kind == "near":  # a documented path with an extra or missing piece
        template = draw(st.sampled_from(templates))
        path = _path_for(template, ["x", "y", "z"]) + draw(st.sampled_from(["/", "/x", ":x", ";x", "//",
                                                                            "%2f"]))
    else:
        path = "/" + "/".join(quote(s, safe="%:") for s in draw(st.lists(st.text(max_size=12), max_size=4)))
    if draw(st.booleans()):
        query = draw(st.dictionaries(st.sampled_from(["limit", "cursor", "serial", "spiffe_id", "state",
                                                      "since", "until", "x", "format"]),
                                     st.sampled_from(["-1", "0", "1", "1000000", "", "x", "%00", "a" * 500,
                                                      "2024-01-01T00:00:00Z", "pem", "der"]), max_size=3))
        path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    auth = draw(st.sampled_from(["valid"] * 6 + ["none", "garbage", "basic", "empty", "other-scheme",
                                                 "long"]))
    headers: list[tuple[str, str]] = []
    if auth != "none":
        headers.append(("Authorization", {
            "valid": f"Bearer {token}", "garbage": "Bearer " + draw(st.text(string.printable.strip(),
                                                                            max_size=60)),
            "basic": "Basic YTpi", "empty": "", "other-scheme": f"Token {token}",
            "long": "Bearer " + "A" * 20_000}[auth]))
    body: bytes | None = None
    body_kind = draw(st.sampled_from(["none", "json", "json", "bytes", "huge", "yaml"]))
    if body_kind == "json":
        body = json.dumps(draw(BODIES_JSON)).encode()
    elif body_kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif body_kind == "huge":
        body = b'{"x": "' + b"a" * draw(st.sampled_from([70_000, 2_000_000])) + b'"}'
    elif body_kind == "yaml":
        body = b"apiVersion: x\nkind: [\n"
    if body is not None:
        headers.append(("Content-Type", draw(st.sampled_from(
            ["application/json", "application/json", "application/yaml", "text/plain", "",
             "application/json; charset=latin-1", "multipart/form-data; boundary=x"]))))
    extra = draw(st.lists(st.tuples(st.text(string.ascii_letters + "-", min_size=1, max_size=20),
                                    st.text(string.printable.strip() + " ", max_size=50)), max_size=3))
    headers += [(k, v.strip()) for k, v in extra if k.lower() not in ("host", "content-length",
                                                                        "transfer-encoding", "authorization")]
    oversized = draw(st.integers(0, 29)) == 0 or len(body or b"") > MAX_REQUEST_BYTES
    if oversized and len(body or b"") <= MAX_REQUEST_BYTES:
        headers.append(("X-Pad", "p" * draw(st.sampled_from([9000, 70_000]))))
    if draw(st.integers(0, 19)) == 0:
        headers.append(("Accept", draw(st.sampled_from(["application/x-pem-file", "application/pkix-crl",
                                                        "text/html", "*/*", "x"]))))
    return HttpInput(draw(st.sampled_from(METHODS)), path, tuple(headers), body,
                     auth == "valid", oversized)


# What any HTTP resource may answer a request that names no documented operation (a path no
# template matches, or a method the path does not have), or that the listener stops first.
NOT_AN_OPERATION = {400, 401, 404, 405, 413, 414, 431}


def judge(given: HttpInput, status: int, documented: dict[str, dict[str, set[int]]],
          regexes: dict[str, re.Pattern[str]]) -> str | None:
    if status >= 500:
        return f"{status} from {given.method} {given.path.split('?')[0][:80]}"
    path = unquote(given.path.split("?", 1)[0])
    method = given.method  # HEAD included: FastAPI answers 405 where only GET is declared
    operations = [t for t, rx in regexes.items() if rx.match(path) and method in documented[t]]
    if not operations:
        return None if status in NOT_AN_OPERATION else \
            f"undocumented {status} for {given.method} (no operation)"
    allowed = {code for t in operations for code in documented[t][method]} | {413, 431}
    if not given.authenticated or given.oversized:
        allowed |= {400, 401}
    if any("{" in t for t in operations):  # a parameter holding '/' or ':' may route elsewhere
        allowed |= {404, 405}
    if status in allowed:
        return None
    return f"undocumented {status} for {given.method} {operations[0]}"


def fuzz_admin(server: MeshcaProcess, examples: int, *, seed_value: int = 17,
               seconds: float | None = None, stateful: int = 0, tally: Tally | None = None) -> Tally:
    """`examples` random requests, then `stateful` schemathesis scenarios (of up to 8 calls)."""
    tally = tally or Tally("admin REST API (HTTPS)")
    token, trusted = admin_token(server), [server.bundle_pem.decode()]
    documented = operations(server.admin_addr, token, trusted[0])
    regexes = {t: _template_regex(t) for t in documented}
    rereads = [0]

    def send(given: HttpInput) -> tuple[int, bytes] | None:
        try:
            return _send(server.admin_addr, trusted[0], given.method, given.path, given.headers,
                         given.body)
        except ssl.SSLCertVerificationError:
            # A random request with the admin token may taint or rotate the root: like any
            # client, read the bundle the server publishes again. Still untrusted: a finding.
            rereads[0] += 1
            trusted[0] = server.bundle_pem.decode()
            try:
                return _send(server.admin_addr, trusted[0], given.method, given.path,
                             given.headers, given.body)
            except ssl.SSLCertVerificationError as exc:
                tally.record("untrusted", f"the server's certificate is not under its bundle: {exc}",
                             given)
                raise

    def each(given: HttpInput) -> None:
        try:
            answer = send(given)
        except ssl.SSLCertVerificationError:
            return
        if answer is None:  # closed: allowed only for a request past the header limit
            tally.record("closed", None if given.oversized else "closed without an answer", given)
            return
        tally.record(str(answer[0]), judge(given, answer[0], documented, regexes), given)

    run_strategy(http_inputs(tuple(sorted(documented)), token), examples, each,
                 seed_value=seed_value, seconds=seconds)
    if rereads[0]:
        tally.name += f" (trust bundle read again {rereads[0]} times after a CA change)"
    if stateful:
        run_stateful(server, stateful, tally)
    return tally.done()


def run_stateful(server: MeshcaProcess, scenarios: int, tally: Tally) -> None:
    """schemathesis' stateful phase: sequences of documented calls, the responses of one feeding
    the next; each response is judged by the same rule (never 5xx, a documented status)."""
    import schemathesis
    from hypothesis import HealthCheck, errors, settings

    token, bundle_path = admin_token(server), str(server.data_dir / "root-cert.pem")
    base = f"https://localhost:{server.admin_addr.rsplit(':', 1)[1]}"
    headers = {"Authorization": f"Bearer {token}"}
    config = schemathesis.Config.from_dict({"base-url": base, "headers": headers,
                                            "tls-verify": bundle_path, "request-timeout": 30})
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config, headers=headers,
                                           verify=bundle_path, timeout=30)

    @schema.hook
    def filter_case(context: schemathesis.HookContext, case: schemathesis.Case[Any]) -> bool:
        # Revoking the run's own token would turn every later answer into a 401.
        return not (case.operation.path == "/v1/admin-tokens/{name}:revoke"
                    and (case.path_parameters or {}).get("name") == "bootstrap-admin")

    machine = schema.as_state_machine()

    class Recording(machine):  # type: ignore[misc,valid-type]
        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            status = int(response.status_code)
            listed = {int(c) for c in case.operation.definition.raw.get("responses", {}) if c.isdigit()}
            problem = None
            if status >= 500:
                problem = f"stateful: {status} from {case.method} {case.path}"
            elif status not in listed | {401, 413, 431}:
                problem = f"stateful: undocumented {status} for {case.method} {case.path}"
            tally.record(f"stateful {status}", problem, f"{case.method} {case.formatted_path} {case.body!r}")

    # In runs of at most 20 scenarios: the state machine's choices depend on what the server
    # answered, and Hypothesis ends a run it cannot replay (FlakyStrategyDefinition). Such an end
    # says nothing of the server; every response before it was judged.
    left = scenarios
    while left > 0:
        run = min(20, left)
        left -= run
        try:
            Recording.run(settings=settings(max_examples=run, stateful_step_count=8, deadline=None,
                                            database=None, suppress_health_check=list(HealthCheck)))
        except (errors.FlakyStrategyDefinition, errors.Flaky):
            tally.record("stateful: a run ended early (its steps depend on the server's answers)")
