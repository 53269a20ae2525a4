from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class MintJWTSVIDRequest(_message.Message):
    __slots__ = ("audience", "ttl_seconds", "spiffe_id")
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    audience: _containers.RepeatedScalarFieldContainer[str]
    ttl_seconds: int
    spiffe_id: str
    def __init__(self, audience: _Optional[_Iterable[str]] = ..., ttl_seconds: _Optional[int] = ..., spiffe_id: _Optional[str] = ...) -> None: ...

class MintJWTSVIDResponse(_message.Message):
    __slots__ = ("token", "spiffe_id", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    spiffe_id: str
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class GetBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBundlesResponse(_message.Message):
    __slots__ = ("bundle", "federated_bundles")
    class FederatedBundlesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundle: bytes
    federated_bundles: _containers.ScalarMap[str, bytes]
    def __init__(self, bundle: _Optional[bytes] = ..., federated_bundles: _Optional[_Mapping[str, bytes]] = ...) -> None: ...
