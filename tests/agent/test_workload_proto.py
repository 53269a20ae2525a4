"""api/spiffe/workload/workload.proto matches the SPIFFE Workload API on the wire: the same
package (none), messages, field numbers, types and labels, and RPCs, as the descriptors the
PyPI `spiffe` client was generated from. meshca's module is read in a child process (the two
cannot be loaded into one protobuf pool)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from spiffe._proto import workload_pb2 as theirs

REPO = Path(__file__).resolve().parents[2]
_PRINT_OURS = ("import base64; from meshca.gen.spiffe.workload import workload_pb2 as m; "
               "print(base64.b64encode(m.DESCRIPTOR.serialized_pb).decode())")


def _file(serialized: bytes) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    proto.ParseFromString(serialized)
    return proto


def _messages(messages: Any, prefix: str = "") -> dict[str, set[tuple[Any, ...]]]:
    found: dict[str, set[tuple[Any, ...]]] = {}
    for message in messages:
        name = prefix + message.name
        found[name] = {(f.name, f.number, f.type, f.label, f.type_name) for f in message.field}
        found.update(_messages(message.nested_type, name + "."))
    return found


def _services(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, set[tuple[Any, ...]]]:
    return {s.name: {(m.name, m.input_type, m.output_type, m.client_streaming,
                      m.server_streaming) for m in s.method} for s in proto.service}


def test_workload_proto_matches_the_spiffe_clients_descriptors() -> None:
    out = subprocess.run([sys.executable, "-c", _PRINT_OURS], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    ours = _file(base64.b64decode(out))
    reference = _file(theirs.DESCRIPTOR.serialized_pb)
    assert ours.package == reference.package == ""
    assert ours.syntax == reference.syntax == "proto3"
    assert list(ours.dependency) == list(reference.dependency)
    assert _messages(ours.message_type) == _messages(reference.message_type)
    assert _services(ours) == _services(reference)
    assert "hint" in {f.name for m in ours.message_type if m.name == "X509SVID" for f in m.field}
