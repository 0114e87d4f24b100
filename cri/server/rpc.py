"""The one wrapper around every CRI RPC, and the gRPC handlers built from it.

Each call gets a request id, a debug log line with method, duration and code,
the request metrics, the mapping from crid's domain errors to gRPC status
codes, and UNAVAILABLE while startup recovery has not finished. Servicer
methods therefore contain only the work itself.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message

from cri import errors
from cri.api.v1 import api_pb2
from cri.log import fields
from cri.server.metrics import OperationMetrics
from cri.server.validate import validate

log = logging.getLogger("cri.server.rpc")

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
]


# the longest message a client gets: error texts quote user input cut short (cri.errors.quote);
# this is the net under that, as gRPC clients refuse error metadata over 16 KiB
MESSAGE_LIMIT = 2048


def _capped(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 30] + f"… ({len(message)} chars)"


class Malformed:
    """A request body that is not the RPC's message (the deserializer's answer
    instead of an exception, which gRPC would report as UNKNOWN)."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name, self.error = type_name, error


def _decoder(cls: Any) -> Callable[[bytes], Any]:
    def decode(body: bytes) -> Any:
        try:
            return cls.FromString(body)
        except DecodeError as exc:
            return Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return decode


def status_for(exc: BaseException, method: str, error_id: str) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and message a client sees for ``exc``."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, _capped(str(exc))
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by crid yet"
    return grpc.StatusCode.INTERNAL, f"internal error in {method} (error id {error_id}); see the crid log"


class Gate:
    """Closed until startup recovery has finished; calls meanwhile get UNAVAILABLE."""

    def __init__(self) -> None:
        self.open = False

    def check(self) -> None:
        if not self.open:
            raise errors.Unavailable("crid is starting up (recovering state); retry shortly")


class _Call:
    """Bookkeeping of one RPC: id, timing, metrics, the final log line."""

    __slots__ = ("_request_id", "code", "full", "metrics", "start")

    def __init__(self, full: str, metrics: OperationMetrics) -> None:
        self.full = full
        self.metrics = metrics
        self._request_id = ""
        self.code = grpc.StatusCode.OK
        self.start = time.perf_counter()
        metrics.in_flight.inc()

    @property
    def request_id(self) -> str:
        """Made on first use: only a debug log line or an error shows it (uuid4 costs on every call)."""
        if not self._request_id:
            self._request_id = uuid.uuid4().hex[:16]
        return self._request_id

    def admit(self, gate: Gate, request: Any) -> None:
        """Refuse the call while starting up, then a malformed body or a request that breaks the field rules."""
        gate.check()
        self.check(request)

    def check(self, request: Any) -> None:
        """Refuse a malformed body or a request that breaks the field rules."""
        if isinstance(request, Malformed):
            self.metrics.malformed.inc()
            log.warning("malformed request", extra=fields(method=self.full, error=request.error[:200]))
            raise errors.InvalidArgument(f"the request is not a valid {request.type_name} message: {request.error}")
        if isinstance(request, Message):
            validate(request)

    def failed(self, exc: BaseException) -> tuple[grpc.StatusCode, str]:
        error_id = self.request_id
        self.code, message = status_for(exc, self.full, error_id)
        if self.code == grpc.StatusCode.INTERNAL:
            log.error(
                "unexpected error",
                exc_info=exc,
                extra=fields(method=self.full, error_id=error_id, error=repr(exc)),
            )
        return self.code, message

    async def abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        """End the call with the status ``exc`` maps to (``context.abort`` raises)."""
        code, message = self.failed(exc)
        await context.abort(code, message)

    def finish(self) -> None:
        elapsed = time.perf_counter() - self.start
        self.metrics.finished(self.code, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "rpc",
                extra=fields(
                    method=self.full, request_id=self.request_id, code=self.code.name, seconds=round(elapsed, 6)
                ),
            )


# a reply is a message, or its wire bytes when the servicer keeps them serialized (list calls)
Reply = Message | bytes
UnaryFn = Callable[[Any, Any], Awaitable[Reply]]
StreamFn = Callable[[Any, Any], AsyncIterator[Reply]]


def _serialize(reply: Reply) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


def _wrap_unary(service: str, method: str, fn: UnaryFn, gate: Gate) -> UnaryFn:
    full, metrics = f"{service}.{method}", OperationMetrics(method)

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Reply:
        call = _Call(full, metrics)
        try:
            call.admit(gate, request)
            return await fn(request, context)
        except asyncio.CancelledError:
            call.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            await call.abort(context, exc)
            raise AssertionError("unreachable: abort raises") from None
        finally:
            call.finish()

    return handler


def _wrap_stream(service: str, method: str, fn: StreamFn, gate: Gate) -> StreamFn:
    full, metrics = f"{service}.{method}", OperationMetrics(method)

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Reply]:
        call = _Call(full, metrics)
        try:
            call.admit(gate, request)
            async for item in fn(request, context):
                yield item
        except asyncio.CancelledError:
            call.code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            await call.abort(context, exc)
        finally:
            call.finish()

    return handler


def _unimplemented(streaming: bool) -> Any:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Reply:
        raise NotImplementedError

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Reply]:
        raise NotImplementedError
        yield  # an async generator, as the stream wrapper iterates it

    return stream if streaming else unary


def service_handler(service_name: str, servicer: object, gate: Gate) -> grpc.GenericRpcHandler:
    """gRPC handlers for every method of ``service_name`` (as declared in the
    proto), each calling the servicer's method of the same name through the
    wrapper. A method the servicer lacks answers UNIMPLEMENTED. (The generated
    api_pb2_grpc module, 1.4 MiB of the daemon's heap, is the client's only.)"""
    descriptor = api_pb2.DESCRIPTOR.services_by_name[service_name]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in descriptor.methods:
        request_cls = message_factory.GetMessageClass(m.input_type)
        fn = getattr(servicer, m.name, None) or _unimplemented(m.server_streaming)
        if m.server_streaming:
            handlers[m.name] = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(service_name, m.name, fn, gate),
                request_deserializer=_decoder(request_cls),
                response_serializer=_serialize,
            )
        else:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(service_name, m.name, fn, gate),
                request_deserializer=_decoder(request_cls),
                response_serializer=_serialize,
            )
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)
