"""The one RPC wrapper: error mapping, error ids, the startup gate; and the log formats."""

import io
import json
import logging
from typing import Any

import grpc
import pytest

from cri import errors
from cri.log import JsonFormatter, LogfmtFormatter, fields
from cri.server.rpc import Gate, _wrap_unary, status_for


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (NotImplementedError(), grpc.StatusCode.UNIMPLEMENTED),
        (errors.Unimplemented("x"), grpc.StatusCode.UNIMPLEMENTED),
        (KeyError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_mapping(exc: BaseException, code: grpc.StatusCode) -> None:
    assert status_for(exc, "RuntimeService.X", "abc")[0] == code


async def _call(fn: Any, gate: Gate) -> FakeContext:
    ctx = FakeContext()
    handler = _wrap_unary("RuntimeService", "Version", fn, gate)
    with pytest.raises(Aborted):
        await handler(object(), ctx)
    return ctx


async def test_unexpected_exception_becomes_internal_with_an_id(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: object, context: object) -> Any:
        raise ZeroDivisionError("secret detail")

    gate = Gate()
    gate.open = True
    with caplog.at_level(logging.ERROR, logger="cri.server.rpc"):
        ctx = await _call(broken, gate)
    assert ctx.code == grpc.StatusCode.INTERNAL
    assert "secret detail" not in ctx.details
    error_id = ctx.details.split("error id ")[1].split(")")[0]
    record = next(r for r in caplog.records if r.getMessage() == "unexpected error")
    assert record.crid_fields["error_id"] == error_id  # type: ignore[attr-defined]
    assert record.exc_info is not None


async def test_closed_gate_answers_unavailable() -> None:
    async def fine(request: object, context: object) -> Any:
        raise AssertionError("must not run before recovery")

    ctx = await _call(fine, Gate())
    assert ctx.code == grpc.StatusCode.UNAVAILABLE and "starting" in ctx.details


async def test_domain_error_keeps_its_message() -> None:
    async def missing(request: object, context: object) -> Any:
        raise errors.NotFound("pod sandbox 'x' not found")

    gate = Gate()
    gate.open = True
    ctx = await _call(missing, gate)
    assert (ctx.code, ctx.details) == (grpc.StatusCode.NOT_FOUND, "pod sandbox 'x' not found")


def _record(msg: str, **kv: Any) -> logging.LogRecord:
    logger = logging.getLogger("t")
    return logger.makeRecord("t", logging.INFO, __file__, 1, msg, (), None, extra=fields(**kv))


def test_logfmt_quotes_what_needs_it() -> None:
    line = LogfmtFormatter().format(_record("crid started", socket="/run/crid/crid.sock", note='say "hi"', n=3))
    assert 'msg="crid started"' in line and "socket=/run/crid/crid.sock" in line
    assert 'note="say \\"hi\\""' in line and "n=3" in line and "level=info" in line


def test_json_lines() -> None:
    doc = json.loads(JsonFormatter().format(_record("rpc", method="RuntimeService.Version", seconds=0.001)))
    assert doc["msg"] == "rpc" and doc["method"] == "RuntimeService.Version" and doc["level"] == "info"
    assert io.StringIO(JsonFormatter().format(_record("x"))).read().count("\n") == 0


async def test_malformed_body_is_invalid_argument_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    from cri.api.v1 import api_pb2 as pb
    from cri.server.metrics import MALFORMED
    from cri.server.rpc import _decoder

    request = _decoder(pb.ContainerStatusRequest)(b"\x0a\xff\xff\xff\x0fjunk")
    called = []

    async def never(request: object, context: object) -> Any:
        called.append(request)

    gate = Gate()
    gate.open = True
    before = MALFORMED.labels("Version")._value.get()
    ctx = FakeContext()
    with caplog.at_level(logging.WARNING, logger="cri.server.rpc"), pytest.raises(Aborted):
        await _wrap_unary("RuntimeService", "Version", never, gate)(request, ctx)
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and not called
    assert "not a valid runtime.v1.ContainerStatusRequest message" in ctx.details and len(ctx.details) < 300
    assert MALFORMED.labels("Version")._value.get() == before + 1
    assert [r.levelname for r in caplog.records] == ["WARNING"] and not caplog.records[0].exc_info
    assert _decoder(pb.ContainerStatusRequest)(b"\x0a\x01x").container_id == "x"  # valid bodies decode


def test_error_texts_are_capped() -> None:
    code, message = status_for(errors.NotFound("x" * 70_000), "RuntimeService.X", "id")
    assert code == grpc.StatusCode.NOT_FOUND and len(message) <= 2048 and message.endswith("(70000 chars)")


async def test_a_method_the_servicer_lacks_answers_unimplemented(tmp_path: Any) -> None:
    """Served from the proto's descriptor, not the generated servicer base class."""
    from cri.api.v1 import api_pb2 as pb
    from cri.api.v1 import api_pb2_grpc
    from cri.server.rpc import service_handler

    class OnlyVersion:
        async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
            return pb.VersionResponse(runtime_name="only")

    gate = Gate()
    gate.open = True
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service_handler("RuntimeService", OnlyVersion(), gate),))
    socket = f"unix://{tmp_path}/rpc.sock"
    server.add_insecure_port(socket)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(socket) as channel:
            stub = api_pb2_grpc.RuntimeServiceStub(channel)
            assert (await stub.Version(pb.VersionRequest())).runtime_name == "only"
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.ListContainers(pb.ListContainersRequest())
            assert unary.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "ListContainers is not implemented" in (unary.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as stream:
                async for _ in stub.GetContainerEvents(pb.GetEventsRequest()):
                    pass
            assert stream.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(None)
