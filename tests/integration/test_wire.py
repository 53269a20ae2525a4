"""The wire, byte for byte: a client built from docs/contracts.md §1 alone, with no generated code."""

from __future__ import annotations

import grpc
from cryptography import x509

from meshca.gen.istio.v1.auth import ca_pb2
from tests.support import CA_METHOD, MeshcaProcess, csr_pem


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _length_delimited(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def _struct_with_string(key: str, value: str) -> bytes:
    # google.protobuf.Struct: map<string, Value> fields = 1; Value.string_value = 3.
    value_msg = _length_delimited(3, value.encode())
    entry = _length_delimited(1, key.encode()) + _length_delimited(2, value_msg)
    return _length_delimited(1, entry)


def _parse_repeated_strings(data: bytes) -> list[str]:
    """Decode IstioCertificateResponse by hand: field 1, repeated string."""
    out, i = [], 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        assert tag == (1 << 3 | 2), f"unexpected tag {tag}"
        length, i = _read_varint(data, i)
        out.append(data[i:i + length].decode())
        i += length
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def test_hand_encoded_request_on_the_istio_method_path(meshca: MeshcaProcess) -> None:
    body = (_length_delimited(1, csr_pem().encode())
            + _field(3, 0, _varint(7200))
            + _length_delimited(4, _struct_with_string("CertSigner", "")))
    call = meshca.channel().unary_unary(CA_METHOD)
    raw = call(body, metadata=[("authorization", f"Bearer {meshca.token('wire', 'raw')}")],
               timeout=30)
    chain = _parse_repeated_strings(raw)
    assert len(chain) == 3
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 7200 + 60
    assert chain[-1].count("BEGIN CERTIFICATE") == len(x509.load_pem_x509_certificates(
        chain[-1].encode()))


def test_field_two_is_reserved_and_unknown_to_the_server(meshca: MeshcaProcess) -> None:
    """A legacy client still sending field 2 (subject id) is not confused with anything."""
    descriptor = ca_pb2.IstioCertificateRequest.DESCRIPTOR
    assert {f.name: f.number for f in descriptor.fields} == {
        "csr": 1, "validity_duration": 3, "metadata": 4}
    metadata_type = descriptor.fields_by_name["metadata"].message_type
    assert metadata_type is not None and metadata_type.full_name == "google.protobuf.Struct"
    assert descriptor.fields_by_name["validity_duration"].type == descriptor.fields[0].TYPE_INT64
    body = _length_delimited(1, csr_pem().encode()) + _length_delimited(2, b"spiffe://evil/ns/x/sa/y")
    raw = meshca.channel().unary_unary(CA_METHOD)(
        body, metadata=[("authorization", f"Bearer {meshca.token('wire', 'legacy')}")], timeout=30)
    leaf = x509.load_pem_x509_certificate(_parse_repeated_strings(raw)[0].encode())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local/ns/wire/sa/legacy"]


def test_negative_validity_means_the_default(meshca: MeshcaProcess) -> None:
    body = _length_delimited(1, csr_pem().encode()) + _field(3, 0, _varint((1 << 64) - 5))  # -5
    raw = meshca.channel().unary_unary(CA_METHOD)(
        body, metadata=[("authorization", f"Bearer {meshca.token()}")], timeout=30)
    leaf = x509.load_pem_x509_certificate(_parse_repeated_strings(raw)[0].encode())
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() == 24 * 3600 + 60


def test_unknown_method_is_unimplemented(meshca: MeshcaProcess) -> None:
    call = meshca.channel().unary_unary("/istio.v1.auth.IstioCertificateService/Nope")
    try:
        call(b"", timeout=10)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    else:
        raise AssertionError("an unknown method must fail")
