"""A request grpc cannot decode (e.g. a Struct nested past protobuf's depth limit of 100) is the
caller's mistake: INVALID_ARGUMENT, one log line. Without this guard grpc itself answers UNKNOWN
and logs the DecodeError's traceback, since deserializing happens before any servicer runs.

The guard wraps each unary-request handler's deserializer so that a DecodeError becomes a marker
the wrapped behaviour answers; streaming requests are left as they are (no meshca server takes
one)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

log = logging.getLogger(__name__)
MESSAGE = "the request is not a valid protobuf message of this method's type"


class _Undecodable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _guarded_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def guarded(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as exc:
            return _Undecodable(str(exc))
    return guarded


def _refuse(method: str, request: _Undecodable) -> str:
    log.info("%s refused: INVALID_ARGUMENT: %s (%s)", method, MESSAGE, request.reason)
    return MESSAGE


def _guard_async(handler: Any, method: str) -> Any:
    streaming = handler.unary_stream is not None
    behaviour = handler.unary_stream if streaming else handler.unary_unary
    if inspect.isasyncgenfunction(behaviour):
        async def generate(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refuse(method, request))
            async for item in behaviour(request, context):
                yield item
        wrapped: Callable[..., Any] = generate
    else:
        async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refuse(method, request))
            result = behaviour(request, context)
            return await result if inspect.isawaitable(result) else result
        wrapped = answer
    make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
    return make(wrapped, request_deserializer=_guarded_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer)


class AsyncDecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """For grpc.aio servers."""

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        return _guard_async(handler, handler_call_details.method)


class DecodeGuard(grpc.ServerInterceptor):  # type: ignore[misc]
    """For grpc's thread-pool servers."""

    def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
            handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None \
                or handler.unary_unary is None:
            return handler
        behaviour, method = handler.unary_unary, handler_call_details.method

        def answer(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refuse(method, request))
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=_guarded_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer)
