"""Exec, Attach and PortForward end to end: a real crid, real busybox
containers under runc and conmon, and real clients (the kubernetes package's
WebSocket client for v4 and v5, crid's SPDY client as kubectl/crictl open
their streams, SPDY tunnelled in WebSocket)."""

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from cri.streaming import spdy_client
from tests.e2e.container_pod import Pod, env, log_text
from tests.e2e.harness import CridProcess
from tests.support import stream_clients as sc
from tests.support.cni_net import Network

__all__ = ["env"]  # the module fixture: one registry, one daemon with a network, busybox pulled

Env = tuple[CridProcess, str, Network]
HTTP_GET = b"GET / HTTP/1.0\r\n\r\n"


@pytest.fixture(scope="module")
def pod(env: Env) -> Iterator[tuple[Pod, str]]:
    """A pod with a long-running container that also serves HTTP on 8080."""
    d, image, _ = env
    p = Pod(d, image, "stream")
    serve = "mkdir -p /www && echo hello-from-pod > /www/index.html && httpd -p 8080 -h /www && exec sleep 3600"
    cid = p.run("main", ["sh", "-c", serve])
    wait_for(lambda: b"hello" in p.exec(cid, ["wget", "-q", "-O-", "http://127.0.0.1:8080/"]).stdout)
    yield p, cid
    p.remove()


def wait_for(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def exec_url(d: CridProcess, cid: str, cmd: list[str], **flags: bool) -> str:
    req = pb.ExecRequest(container_id=cid, cmd=cmd, stdout=True, **flags)
    return str(d.client.runtime.Exec(req).url)


def exit_code(status: bytes) -> int:
    doc = json.loads(status)
    return 0 if doc["status"] == "Success" else int(doc["details"]["causes"][0]["message"])


def run(coro: object) -> sc.Result:
    return asyncio.run(coro)  # type: ignore[arg-type]


# --- the RPCs ----------------------------------------------------------------------------------


def test_urls_and_validation(env: Env, pod: tuple[Pod, str]) -> None:
    d, _, _ = env
    p, cid = pod
    url = exec_url(d, cid[:12], ["true"])
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    bad = [
        pb.ExecRequest(container_id=cid, cmd=["true"]),  # no stream at all
        pb.ExecRequest(container_id=cid, cmd=["true"], tty=True, stdout=True, stderr=True),
        pb.ExecRequest(container_id=cid, cmd=[], stdout=True),
    ]
    for req in bad:
        with pytest.raises(grpc.RpcError) as err:
            d.client.runtime.Exec(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        d.client.runtime.Exec(pb.ExecRequest(container_id="nope", cmd=["true"], stdout=True))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        d.client.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    url = str(d.client.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=p.id, port=[8080])).url)
    assert "/portforward/" in url


# --- exec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["spdy", "v4.channel.k8s.io", "v5.channel.k8s.io"])
def test_exec_streams_and_exit_codes(env: Env, pod: tuple[Pod, str], transport: str) -> None:
    d, _, _ = env
    _, cid = pod
    for script, code in (("echo out; echo err >&2", 0), ("echo out; echo err >&2; exit 1", 1), ("kill -9 $$", 137)):
        url = exec_url(d, cid, ["sh", "-c", script], stderr=True)
        if transport == "spdy":
            got = run(sc.spdy_session(url))
            assert got.protocol == "v5.channel.k8s.io"
            assert (got.stdout, got.stderr, exit_code(got.error)) == (
                b"out\n" * (code != 137),
                b"err\n" * (code != 137),
                code,
            )
        else:
            k = sc.k8s_exec(url, transport)
            assert k.protocol == transport
            assert (k.stdout, k.stderr, k.returncode) == ("out\n" * (code != 137), "err\n" * (code != 137), code)


def test_exec_stdin_until_eof(env: Env, pod: tuple[Pod, str]) -> None:
    d, _, _ = env
    _, cid = pod
    data = os.urandom(300_000)
    got = run(sc.spdy_session(exec_url(d, cid, ["sh", "-c", "cat | md5sum"], stdin=True), stdin=data, stderr=False))
    import hashlib

    assert got.stdout.split()[0].decode() == hashlib.md5(data).hexdigest()
    k = sc.k8s_exec(exec_url(d, cid, ["cat"], stdin=True), "v5.channel.k8s.io", stdin="line one\n")
    assert k.stdout == "line one\n" and k.returncode == 0


def test_exec_tty_and_resize(env: Env, pod: tuple[Pod, str]) -> None:
    d, _, _ = env
    _, cid = pod
    url = exec_url(d, cid, ["sh", "-c", "sleep 0.5; stty size; tty"], tty=True)
    got = run(sc.spdy_session(url, stderr=False, tty=True, resize=[b'{"Width":123,"Height":45}']))
    lines = got.stdout.decode().split("\r\n")
    assert lines[0] == "45 123" and lines[1].startswith("/dev/pts/"), got.stdout
    assert exit_code(got.error) == 0


def test_exec_flood(env: Env, pod: tuple[Pod, str]) -> None:
    d, _, _ = env
    _, cid = pod
    got = run(sc.spdy_session(exec_url(d, cid, ["head", "-c", "30000000", "/dev/zero"]), stderr=False))
    assert len(got.stdout) == 30_000_000 and exit_code(got.error) == 0


def test_disconnect_kills_and_reaps_the_command(env: Env, pod: tuple[Pod, str]) -> None:
    d, _, _ = env
    p, cid = pod

    async def start_and_drop() -> None:
        conn = await spdy_client.connect(exec_url(d, cid, ["sleep", "7777"]))
        await spdy_client.exec_streams(conn.session, stderr=False)
        await asyncio.sleep(0.5)
        conn.session._transport.close()  # the client vanishes: no GOAWAY, no FIN

    def sleeping() -> bool:
        return b"sleep 7777" in p.exec(cid, ["ps", "-o", "args"]).stdout

    asyncio.run(start_and_drop())
    wait_for(lambda: not sleeping())


def test_token_is_single_use(env: Env, pod: tuple[Pod, str]) -> None:
    d, _, _ = env
    _, cid = pod
    url = exec_url(d, cid, ["true"])
    run(sc.spdy_session(url, stderr=False))
    with pytest.raises(spdy_client.UpgradeFailed) as err:
        run(sc.spdy_session(url, stderr=False))
    assert err.value.status == 404


# --- attach ------------------------------------------------------------------------------------------


def test_attach_stdin_once_and_log(env: Env) -> None:
    d, image, _ = env
    p = Pod(d, image, "attach")
    try:
        cid = p.run("reader", ["sh", "-c", "read line; echo got:$line; echo bye >&2"], stdin=True, stdin_once=True)
        url = str(d.client.runtime.Attach(pb.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)).url)
        k = sc.k8s_exec(url, "v4.channel.k8s.io", stdin="hello\n")
        assert "got:hello" in k.stdout and "bye" in k.stderr and k.returncode == 0
        assert p.wait(cid).exit_code == 0
        assert "got:hello" in log_text(p.logs / "reader.log")  # the CRI log keeps it too
    finally:
        p.remove()


def test_attach_tty_resize(env: Env) -> None:
    d, image, _ = env
    p = Pod(d, image, "attachtty")
    try:
        cid = p.run("shell", ["sh"], stdin=True, tty=True)
        url = str(d.client.runtime.Attach(pb.AttachRequest(container_id=cid, stdin=True, stdout=True, tty=True)).url)
        resize = [b'{"Width":99,"Height":33}']
        got = run(sc.spdy_session(url, stdin=b"sleep 0.3; stty size; exit 7\n", stderr=False, tty=True, resize=resize))
        assert b"33 99" in got.stdout, got.stdout
        assert p.wait(cid).exit_code == 7
    finally:
        p.remove()


def test_attach_survives_a_crid_restart(env: Env) -> None:
    """A session open at shutdown is closed cleanly (the client sees its streams
    end); the container and its stdin survive, and attach works again after."""
    d, image, _ = env
    p = Pod(d, image, "reattach")
    try:
        cid = p.run("echoer", ["sh", "-c", "while read l; do echo seen:$l; done"], stdin=True)

        async def attach(line: bytes, then: object = None) -> bytes:
            url = str(d.client.runtime.Attach(pb.AttachRequest(container_id=cid, stdin=True, stdout=True)).url)
            conn = await spdy_client.connect(url)
            try:
                streams = await spdy_client.exec_streams(conn.session, stdin=True, stderr=False)
                await streams["stdin"].write(line)
                out = b""
                while b"seen:" + line.strip() not in out:
                    out += await asyncio.wait_for(streams["stdout"].read(), 10)
                if then is not None:  # restart crid under the open session: the stream must end, cleanly
                    await asyncio.to_thread(then)  # type: ignore[arg-type]
                    out += await asyncio.wait_for(sc.read_all(streams["stdout"]), 20)
                    status = await asyncio.wait_for(sc.read_all(streams["error"]), 5)
                    assert b"shutting down" in status, status
                return out
            finally:
                await conn.close()

        assert b"seen:one" in asyncio.run(attach(b"one\n", lambda: restart(d)))
        assert p.status(cid).state == pb.CONTAINER_RUNNING
        assert b"seen:two" in asyncio.run(attach(b"two\n"))
    finally:
        p.remove()


def restart(d: CridProcess) -> None:
    d.stop()
    d.start()


# --- port-forward ------------------------------------------------------------------------------------


def test_port_forward_into_the_pod(env: Env, pod: tuple[Pod, str]) -> None:
    d, _, _ = env
    p, _ = pod

    def url(*ports: int) -> str:
        return str(d.client.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=p.id, port=ports)).url)

    async def spdy() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        conn = await spdy_client.connect(url(), protocols=[spdy_client.PORT_FORWARD_PROTOCOL])
        ok = await sc.spdy_forward(conn.session, 8080, 1, HTTP_GET)
        refused = await sc.spdy_forward(conn.session, 9, 2, b"")
        await conn.close()
        return ok, refused

    (answer, error), (_, refusal) = asyncio.run(spdy())
    assert b"hello-from-pod" in answer and error == b""
    assert b"error forwarding port 9" in refusal and b"refused" in refusal, refusal

    async def tunnel() -> tuple[bytes, bytes]:
        session = await sc.tunnel_session(url())
        try:
            return await sc.spdy_forward(session, 8080, 1, HTTP_GET)
        finally:
            await session.close()

    answer, error = asyncio.run(tunnel())
    assert b"hello-from-pod" in answer and error == b""
    data, err = sc.k8s_port_forward(url(8080), 8080, HTTP_GET)
    assert b"hello-from-pod" in data and not err


def test_port_forward_host_network(env: Env, tmp_path: Path) -> None:
    d, image, _ = env
    port = sc.closed_port()
    hostnet = pb.LinuxPodSandboxConfig(
        security_context=pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=pb.NODE))
    )
    p = Pod(d, image, "hostnet", **{"security_context": hostnet.security_context})
    try:
        serve = f"mkdir -p /www && echo on-the-host > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
        cid = p.run("web", ["sh", "-c", serve])
        wait_for(lambda: b"on-the-host" in p.exec(cid, ["wget", "-q", "-O-", f"http://127.0.0.1:{port}/"]).stdout)
        url = str(d.client.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=p.id)).url)

        async def forward() -> tuple[bytes, bytes]:
            conn = await spdy_client.connect(url, protocols=[spdy_client.PORT_FORWARD_PROTOCOL])
            try:
                return await sc.spdy_forward(conn.session, port, 1, HTTP_GET)
            finally:
                await conn.close()

        answer, error = asyncio.run(forward())
        assert b"on-the-host" in answer and error == b""
    finally:
        p.remove()
