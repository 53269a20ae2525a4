"""Logs a person can read, from a real server's stderr: each CA step once and in words, one
INFO line per certificate issued (or none, with --log-issuances off), and --log-format json
with the issuance fields as keys."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from tests.cli.clitools import meshca, ok
from tests.support import MeshcaProcess, csr_pem, start_meshca

REPR = re.compile(r"\w+\(\w+=|<\w+\.\w+: ")  # `Prepare(kind=…`, `<Kind.ROOT: 'root'>`


def _issue(server: MeshcaProcess, account: str = "web") -> x509.Certificate:
    chain = server.create_certificate(csr_pem(), token=server.token("logs", account))
    return x509.load_pem_x509_certificate(chain[0].encode())


def _eventually(find: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := find()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def test_text_log_each_ca_step_once_in_words_and_one_line_per_issuance(tmp_path: Path) -> None:
    server = start_meshca(tmp_path / "data")
    try:
        leaf = _issue(server)
        serial = f"{leaf.serial_number:x}"
        line = _eventually(lambda: [x for x in server.log_text().splitlines() if serial in x])
        log = server.log_text()
        ca_lines = [x.split(": ", 1)[1] for x in log.splitlines() if " CA: " in x]
        assert ca_lines == [
            "CA: prepared root generation 1 (first start: no root was ever active)",
            "CA: activated root generation 1 (first start: no root was ever active)",
            "CA: prepared intermediate generation 2, signed by root generation 1 "
            "(first start: no intermediate was ever active)",
            "CA: activated intermediate generation 2 (first start: no intermediate was ever active)",
            "CA: prepared JWT-SVID key generation 3 (first start: no JWT-SVID key was ever active)",
            "CA: activated JWT-SVID key generation 3 (first start: no JWT-SVID key was ever active)",
        ]
        assert not REPR.search(log), REPR.search(log)
        not_after = leaf.not_valid_after_utc.isoformat().replace("+00:00", "Z")
        (only,) = line
        assert re.search(rf" INFO meshca\.issuance: issued spiffe://cluster\.local/ns/logs/sa/web "
                         rf"serial {serial}, valid until {re.escape(not_after)} \(\d+\.\d ms\)$",
                         only), only

        # An operator's step: logged once, saying who asked.
        ok(meshca("ca", "prepare", "intermediate", "--data-dir", str(server.data_dir), cwd=tmp_path))
        asked = _eventually(lambda: [x for x in server.log_text().splitlines()
                                     if "asked by an operator" in x])
        assert [x.split(": ", 1)[1] for x in asked] == [
            "CA: prepared intermediate generation 4, signed by root generation 1 (asked by an operator)"]
    finally:
        server.stop()


def test_json_log_and_issuance_lines_switched_off(tmp_path: Path) -> None:
    on = start_meshca(tmp_path / "json", "--log-format", "json", "--workers", "2")
    off = start_meshca(tmp_path / "off", "--log-issuances", "off")
    try:
        serials = {f"{_issue(on, f'a{i}').serial_number:x}" for i in range(4)}
        _eventually(lambda: on.log_text().count('"logger": "meshca.issuance"') >= 4)
        every = [json.loads(line) for line in on.log_text().splitlines() if line.strip()]
        records = [r for r in every if r["logger"] == "meshca.issuance"]
        assert all({"time", "level", "logger", "message"} <= set(r) for r in every)
        assert {r["serial"] for r in records} == serials
        for record in records:
            assert record["level"] == "INFO"
            assert record["spiffe_id"].startswith("spiffe://cluster.local/ns/logs/sa/a")
            assert record["not_after"].endswith("Z") and record["latency_ms"] > 0
        assert any(r.get("worker") == 1 for r in every)  # worker 1 logs JSON too

        _issue(off)
        with pytest.raises(grpc.RpcError):
            off.create_certificate(csr_pem(), token="not-a-token")
        _eventually(lambda: "CreateCertificate refused" in off.log_text())
        assert "meshca.issuance" not in off.log_text()
    finally:
        on.stop()
        off.stop()
