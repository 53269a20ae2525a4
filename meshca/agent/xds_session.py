"""One state-of-the-world xDS stream's bookkeeping: what to answer to each request, and what to
push when the resources change (no I/O; the SDS servicer drives it).

The rules (Envoy's xDS protocol, as Istio's agent applies them to SDS):
- the first request on a stream is answered with the requested resources, whatever version and
  nonce it carries (a reconnecting Envoy still names the previous stream's);
- after that, a request whose `response_nonce` is not the last one sent is stale: ignored;
- with the current nonce, a request without `error_detail` is an ACK and one with it a NACK;
  neither is answered, unless it also changes `resource_names`, which is answered for the new
  set. A NACKed version is not sent again: a push goes out only when a resource's content
  differs from what was last sent;
- every response has a fresh `version_info` and nonce, and holds at least one resource (Envoy
  rejects an SDS response without its resource); names the agent does not serve get none, and
  are logged once per stream.
"""

from __future__ import annotations

import enum
import itertools
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

log = logging.getLogger(__name__)

_versions = itertools.count(1)


class RequestKind(enum.Enum):
    INITIAL = "initial"
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"
    WRONG_TYPE = "wrong_type"


def new_version() -> str:
    """Unique in this process, and ordered by time across its restarts."""
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}/{next(_versions)}"


def discovery_response(type_url: str, resources: Mapping[str, Any]) -> Any:
    """A response carrying `resources` under a fresh version and nonce."""
    packed = []
    for message in resources.values():
        wrapped = any_pb2.Any()
        wrapped.Pack(message)
        packed.append(wrapped)
    return discovery_pb2.DiscoveryResponse(
        version_info=new_version(), nonce=uuid.uuid4().hex, type_url=type_url, resources=packed)


def _content(message: Any) -> bytes:
    return bytes(message.SerializeToString(deterministic=True))


class SotwSession:
    def __init__(self, type_url: str, peer: str = "") -> None:
        self.type_url = type_url
        self._peer = peer  # for logs only
        self._names: frozenset[str] | None = None  # what the client asked for last
        self._available: Mapping[str, Any] | None = None  # None until the first update
        self._sent: dict[str, bytes] = {}  # each resource's content as last sent
        self._nonce: str | None = None  # of the last response sent
        self.version: str | None = None  # of the last response sent
        self._unknown_logged: set[str] = set()

    def request(self, request: Any) -> tuple[RequestKind, Any | None]:
        """What the request is, and the response to send now (or None)."""
        if request.type_url and request.type_url != self.type_url:
            log.warning("xDS request from %s for %r on a %s stream ignored", self._peer,
                        request.type_url, self.type_url)
            return RequestKind.WRONG_TYPE, None
        if self._nonce is None:
            kind = RequestKind.INITIAL
        elif request.response_nonce != self._nonce:
            return RequestKind.STALE, None
        elif request.HasField("error_detail"):
            kind = RequestKind.NACK
        else:
            kind = RequestKind.ACK
        names = frozenset(request.resource_names)
        changed = names != self._names
        self._names = names
        if kind is RequestKind.INITIAL or changed:
            return kind, self._respond(only_changed=False)
        return kind, None

    def update(self, available: Mapping[str, Any]) -> Any | None:
        """The resources now; the response that pushes those requested that changed, if any."""
        self._available = available
        return self._respond(only_changed=True)

    def _respond(self, *, only_changed: bool) -> Any | None:
        if self._names is None or self._available is None:
            return None  # nothing asked yet, or nothing to give yet
        chosen: dict[str, Any] = {}
        for name in sorted(self._names):
            message = self._available.get(name)
            if message is None:
                self._log_unknown(name)
            elif not only_changed or self._sent.get(name) != _content(message):
                chosen[name] = message
        if not chosen:
            return None
        response = discovery_response(self.type_url, chosen)
        self._sent.update((name, _content(message)) for name, message in chosen.items())
        self._nonce = response.nonce
        self.version = response.version_info
        return response

    def _log_unknown(self, name: str) -> None:
        if name not in self._unknown_logged:
            self._unknown_logged.add(name)
            log.warning("%s asked for the resource %r, which is not served here; it gets none",
                        self._peer, name)
