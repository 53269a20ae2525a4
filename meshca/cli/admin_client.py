"""A small HTTPS client for meshca's admin API (standard library only: urllib + ssl).

Every failure becomes one of three exceptions carrying a message fit for a terminal:
`AdminConfigError` (the client cannot be set up: a missing file, a bad address),
`AdminConnectionError` (no usable answer: refused, TLS, timeout, not JSON) and
`AdminApiError` (the API answered with an error, normally RFC 9457 problem details).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshca import __version__
from meshca.config import ADMIN_TOKEN_FILE, ENDPOINTS_FILE, split_host_port

BUNDLE_FILE = "root-cert.pem"
Query = Mapping[str, str | int | bool | None]
_ERROR_BODY_LIMIT = 200


class AdminClientError(Exception):
    """Base: str(exc) is the whole message to show."""


class AdminConfigError(AdminClientError):
    pass


class AdminConnectionError(AdminClientError):
    pass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class AdminApiError(AdminClientError):
    """An HTTP error answer; `problem` is true when it came as application/problem+json."""

    def __init__(self, status: int, title: str, detail: str,
                 errors: tuple[FieldError, ...] = (), problem: bool = True) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.problem = problem
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")


@dataclass(frozen=True, slots=True)
class AdminTarget:
    """Where the admin API is and how to talk to it."""

    base_url: str  # https://host:port, no trailing slash
    token: str = field(repr=False)
    ca_file: Path | None  # None: the system's trust store
    token_file: Path | None = None  # where the token came from, to say so when it is refused
    use_proxies: bool = False  # environment proxies only for an explicit --server


def normalize_server(text: str) -> str:
    """`https://HOST:PORT` (or bare `HOST:PORT`) → `https://HOST:PORT`; ValueError otherwise."""
    value = text.strip().rstrip("/")
    if "://" not in value:
        value = "https://" + value
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "https":
        raise ValueError(f"{text!r}: the admin API only speaks HTTPS (https://HOST:PORT)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has a bad port") from None
    if not parts.hostname or port is None or parts.path or parts.query or parts.fragment:
        raise ValueError(f"{text!r} must be https://HOST:PORT")
    return f"https://{parts.netloc}"


def _url_host(host: str) -> str:
    """The host as it goes in a URL; a wildcard bind address means 'this machine'."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.is_unspecified:
        # meshca's serving certificate always names localhost, never 0.0.0.0 or ::
        return "localhost"
    return f"[{host}]" if address.version == 6 else host


def _read_text(path: Path, what: str, hint: str) -> str:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AdminConfigError(f"no {what} at {path}{hint}") from None
    except OSError as exc:
        raise AdminConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return text


def read_token(path: Path, hint: str = "") -> str:
    token = _read_text(path, "admin token", hint).strip()
    if not token:
        raise AdminConfigError(f"the admin token file {path} is empty")
    if any(c.isspace() for c in token):
        raise AdminConfigError(f"the admin token file {path} must hold one token on one line")
    return token


def admin_url_from_data_dir(data_dir: Path) -> str:
    if not data_dir.is_dir():
        raise AdminConfigError(
            f"data directory {data_dir} does not exist; pass --data-dir (or env MESHCA_DATA_DIR) "
            f"or --server")
    endpoints_path = data_dir / ENDPOINTS_FILE
    text = _read_text(endpoints_path, "endpoints file", "; is `meshca serve` running with this "
                      "--data-dir? (or pass --server)")
    try:
        admin = json.loads(text)["admin"]
        host, port = split_host_port(str(admin))
    except (ValueError, KeyError, TypeError):
        raise AdminConfigError(f"{endpoints_path} has no usable \"admin\" address") from None
    return f"https://{_url_host(host)}:{port}"


def resolve_target(*, data_dir: Path, data_dir_given: bool, server: str | None,
                   token_file: Path | None, ca_file: Path | None) -> AdminTarget:
    """--server, --token-file and --ca-file each override what the data directory provides.

    Without --server: the address from endpoints.json, the data dir's token and trust bundle.
    With --server: the token from --token-file (else the data dir's); the trust bundle from
    --ca-file, else the data dir's when --data-dir was given too, else the system store.
    """
    if server is None:
        base_url = admin_url_from_data_dir(data_dir)
    else:
        try:
            base_url = normalize_server(server)
        except ValueError as exc:
            raise AdminConfigError(str(exc)) from None
    if token_file is None:
        token_file = data_dir / ADMIN_TOKEN_FILE
        token = read_token(token_file, "; meshca serve writes it on first start (or pass --token-file)")
    else:
        token = read_token(token_file)
    if ca_file is not None:
        bundle: Path | None = ca_file
    elif server is None or data_dir_given:
        bundle = data_dir / BUNDLE_FILE
    else:
        bundle = None
    if bundle is not None and not bundle.is_file():
        raise AdminConfigError(f"no trust bundle at {bundle} (pass --ca-file)")
    return AdminTarget(base_url, token, bundle, token_file, use_proxies=server is not None)


def _field_errors(raw: Any) -> tuple[FieldError, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(FieldError(str(e.get("field", "")), str(e.get("message", "")))
                 for e in raw if isinstance(e, dict))


def _error_from_response(status: int, reason: str, content_type: str, body: bytes) -> AdminApiError:
    if content_type.split(";")[0].strip().lower() in ("application/problem+json", "application/json"):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and ("title" in data or "detail" in data):
            return AdminApiError(int(data.get("status") or status), str(data.get("title") or reason),
                                 str(data.get("detail") or ""), _field_errors(data.get("errors")))
    snippet = " ".join(body.decode(errors="replace").split())[:_ERROR_BODY_LIMIT]
    return AdminApiError(status, reason or "Error", snippet, problem=False)


def _describe(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS verification failed ({reason.verify_message or reason.reason})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed ({reason.reason or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason.strerror})"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason) or type(reason).__name__
    return str(reason)


class AdminClient:
    def __init__(self, target: AdminTarget, timeout: float = 30.0) -> None:
        self._target = target
        self._timeout = timeout
        try:
            context = ssl.create_default_context(
                cafile=str(target.ca_file) if target.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise AdminConfigError(f"cannot load the trust bundle {target.ca_file}: {exc}") from None
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
        if not target.use_proxies:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def base_url(self) -> str:
        return self._target.base_url

    @property
    def token_file(self) -> Path | None:
        return self._target.token_file

    def get(self, path: str, query: Query | None = None) -> Any:
        return self._call("GET", path, query, None)

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._call("POST", path, None, body)

    def post_text(self, path: str, text: str, content_type: str, query: Query | None = None) -> Any:
        """POST a body as it is (a YAML file), not as JSON."""
        return self._call("POST", path, query, None, (text.encode(), content_type))

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path, None, None)

    def pages(self, path: str, query: Query) -> Iterator[dict[str, Any]]:
        """Each page of a cursor-paged list, following `next_cursor` to the end."""
        params = dict(query)
        seen: set[str] = set()
        while True:
            page = self.get(path, params)
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise AdminConnectionError(f"{self.base_url}{path} did not answer with a page of items")
            yield page
            cursor = page.get("next_cursor")
            if not cursor:
                return
            if cursor in seen:
                raise AdminConnectionError(f"{self.base_url}{path} returned the same cursor twice")
            seen.add(str(cursor))
            params["cursor"] = str(cursor)

    def _call(self, method: str, path: str, query: Query | None,
              body: Mapping[str, Any] | None, text: tuple[bytes, str] | None = None) -> Any:
        url = self.base_url + path
        if query:
            pairs = {k: _query_value(v) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        headers = {
            "Authorization": f"Bearer {self._target.token}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": f"meshca-cli/{__version__}",
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif text is not None:
            data, headers["Content-Type"] = text
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 - https only
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                raw: bytes = response.read()
        except urllib.error.HTTPError as exc:
            try:
                error_body = exc.read()
            except OSError:
                error_body = b""
            finally:
                exc.close()
            raise _error_from_response(exc.code, str(exc.reason), exc.headers.get("Content-Type", ""),
                                       error_body) from None
        except urllib.error.URLError as exc:
            raise AdminConnectionError(
                f"cannot reach meshca at {self.base_url}: {_describe(exc.reason)}"
                + _hint(exc.reason)) from None
        except (OSError, ValueError) as exc:  # a reset or timeout mid-response, a bad URL
            raise AdminConnectionError(
                f"cannot reach meshca at {self.base_url}: {_describe(exc)}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise AdminConnectionError(
                f"{method} {url} answered with something that is not JSON") from None


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _hint(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return "; pass --ca-file with meshca's trust bundle (root-cert.pem)"
    if isinstance(reason, ConnectionRefusedError):
        return "; is `meshca serve` running?"
    return ""
