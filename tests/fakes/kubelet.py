"""An in-test kubelet over HTTPS: `GET /pods` with a bearer token, answering a v1 PodList.

Like the kubelet's authenticated port: a request without the expected token is 401
`Unauthorized`, any other path 404, and the body is `{"kind": "PodList", "apiVersion": "v1",
"metadata": {}, "items": [...]}` with each pod's metadata.{name,namespace,uid},
spec.serviceAccountName and status.containerStatuses[].containerID (`<runtime>://<id>`).
`fail_with` makes it answer an HTTP status instead; `before_answer` runs a callback (e.g. a
process exits) before each answer. TLS comes from the kube API fake's certificate maker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fakes.kube_api import FakeKubeApi


class FakeKubelet:
    def __init__(self, token: str = "agent-token") -> None:  # noqa: S107
        self.token = token
        self.pods: dict[str, dict[str, Any]] = {}
        self.fail_with: int | None = None
        self.before_answer: Callable[[], None] | None = None
        self.requests = 0
        self.ca_pem, self._context = FakeKubeApi._make_tls()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add_pod(self, namespace: str, name: str, uid: str, *, service_account: str | None = "default",
                containers: tuple[str, ...] = (), runtime: str = "containerd") -> None:
        spec: dict[str, Any] = {"containers": [{"name": f"c{i}"} for i in range(len(containers))]}
        if service_account is not None:
            spec["serviceAccountName"] = service_account
        self.pods[uid] = {
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": spec,
            "status": {"phase": "Running", "containerStatuses": [
                {"name": f"c{i}", "containerID": f"{runtime}://{cid}", "ready": True}
                for i, cid in enumerate(containers)
            ]},
        }

    def remove_pod(self, uid: str) -> None:
        self.pods.pop(uid, None)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}/pods"

    def write_ca(self, path: Path) -> Path:
        path.write_text(self.ca_pem)
        return path

    def __enter__(self) -> FakeKubelet:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests += 1
                if fake.before_answer is not None:
                    fake.before_answer()
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._send(401, b"Unauthorized", "text/plain")
                elif self.path.split("?", 1)[0] != "/pods":
                    self._send(404, b"404 page not found", "text/plain")
                elif fake.fail_with is not None:
                    self._send(fake.fail_with, b"Internal Server Error", "text/plain")
                else:
                    body = {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                            "items": list(fake.pods.values())}
                    self._send(200, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = self._context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
