"""The crid daemon: directories, locks, the gRPC server, metrics, signals.

Shutdown (SIGTERM/SIGINT) stops accepting calls, lets in-flight ones finish
within the configured grace, and exits 0. It never stops containers: they
run on under their monitors and the next daemon picks them up.
"""

import asyncio
import logging
import os
import signal
import sys

import grpc

import cri
from cri.cni import CniManager
from cri.config import Config
from cri.images.manager import Images
from cri.log import fields
from cri.runtime.cdi import Registry
from cri.runtime.containers import Containers
from cri.runtime.events import EventBus
from cri.runtime.handlers import Handlers
from cri.runtime.pods import Pods
from cri.runtime.system import System
from cri.server.image_service import ImageServicer
from cri.server.metrics import MetricsServer
from cri.server.ownership import Ownership, StartupError, make_dir
from cri.server.rpc import Gate, service_handler
from cri.server.runtime_service import RuntimeServicer
from cri.server.state_metrics import STATE
from cri.server.stream_backend import DomainBackend
from cri.server.streaming import StreamingServer
from cri.store import Store

log = logging.getLogger("cri.server.daemon")


def _watch_children_by_pidfd() -> None:
    """Subprocess exits seen through a pidfd on the event loop. Python 3.11's default watcher
    starts a thread per child to wait for it, and crid starts a process for every OCI runtime
    command, CNI plugin and ExecSync. 3.12 does this by itself."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # a kernel before 5.3
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


def wire(pods: Pods, images: Images, containers: Containers) -> None:
    """The calls a lower layer makes into containers: a pod's stop and removal take its
    containers with them, and image GC keeps the snapshots containers use."""
    pods.stop_containers = containers.stop_all
    pods.remove_containers = containers.remove_all
    images.snapshots_in_use = containers.chains_in_use


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.gate = Gate()
        self._stop = asyncio.Event()
        self._ownership = Ownership(config.root_dir, config.grpc.socket)
        self._metrics: MetricsServer | None = None
        self.events = EventBus(config.runtime.container_events_queue)  # GetContainerEvents' source

    def _grpc_server(
        self, images: Images, pods: Pods, containers: Containers, streaming: StreamingServer
    ) -> grpc.aio.Server:
        limit = self.config.grpc.max_message_mib * 1024 * 1024
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        server.add_generic_rpc_handlers(
            (
                service_handler("RuntimeService", RuntimeServicer(self.config, pods, containers, streaming), self.gate),
                service_handler("ImageService", ImageServicer(images), self.gate),
            )
        )
        return server

    async def _recover(self, images: Images, pods: Pods, containers: Containers) -> None:
        """Finish or undo what a killed daemon left half done; RPCs answer
        UNAVAILABLE until this returns."""
        await images.recover()
        await containers.handlers.probe()
        await containers.recover()
        await pods.clear_partial_network_writes()
        containers.trash.recover()  # in the background: nothing waits for old directories to go
        await pods.recover()
        await images.gc()  # blobs and snapshots of a pull cut short, which no image holds

    def request_stop(self, signame: str) -> None:
        log.info("shutting down", extra=fields(signal=signame))
        self._stop.set()

    async def run(self) -> int:
        cfg = self.config
        _watch_children_by_pidfd()
        make_dir(cfg.root_dir, 0o711)
        make_dir(cfg.state_dir, 0o711)
        self._ownership.claim()
        store = Store(cfg.root_dir)
        images = Images(cfg, store)
        cni = CniManager(cfg.cni.conf_dir, cfg.cni.bin_dirs, os.path.join(cfg.root_dir, "cni", "results"))
        handlers = Handlers(cfg)
        system = System(cdi=Registry(cfg.cdi.spec_dirs))
        pods = Pods(cfg, store, cni, handlers, self.events, system)
        containers = Containers(cfg, store, pods, images, handlers, self.events, system)
        wire(pods, images, containers)
        STATE.attach(cfg, self.gate, pods, containers)
        try:
            return await self._serve(images, pods, containers)
        finally:
            STATE.detach()
            await images.close()
            store.close()
            self._ownership.release(remove_socket=True)

    async def _serve(self, images: Images, pods: Pods, containers: Containers) -> int:
        cfg = self.config
        streaming = StreamingServer(cfg.streaming, DomainBackend(containers, pods))
        try:
            streaming_url = await streaming.start()
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot serve streaming on {cfg.streaming.address}: {exc}") from None
        try:
            return await self._serve_grpc(images, pods, containers, streaming, streaming_url)
        finally:
            # sessions in flight end cleanly: their streams close, exec'd commands are killed
            await streaming.stop()

    async def _serve_grpc(
        self, images: Images, pods: Pods, containers: Containers, streaming: StreamingServer, streaming_url: str
    ) -> int:
        cfg = self.config
        server = self._grpc_server(images, pods, containers, streaming)
        target = f"unix://{cfg.grpc.socket}"
        try:
            server.add_insecure_port(target)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {cfg.grpc.socket}: {exc}") from None
        await server.start()
        os.chmod(cfg.grpc.socket, 0o660)

        metrics_address = "disabled"
        if cfg.metrics.enabled:
            self._metrics = MetricsServer(cfg.metrics.address)
            try:
                metrics_address = self._metrics.start()
            except OSError as exc:
                await server.stop(None)
                raise StartupError(f"cannot serve metrics on {cfg.metrics.address}: {exc.strerror}") from None

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)

        await self._recover(images, pods, containers)
        self.gate.open = True
        log.info(
            "crid started",
            extra=fields(
                version=cri.__version__,
                pid=os.getpid(),
                socket=cfg.grpc.socket,
                root=cfg.root_dir,
                state=cfg.state_dir,
                handlers=",".join(cfg.runtime.handlers),
                default_handler=cfg.runtime.default_handler,
                metrics=metrics_address,
                streaming=streaming_url,
            ),
        )

        await self._stop.wait()
        self.events.close()  # event streams never end by themselves: end them before the grace period
        await streaming.stop()
        await server.stop(cfg.grpc.shutdown_grace_seconds)
        # work that outlives its RPC (shielded creates, pull cleanup) ends before the store closes
        grace = cfg.grpc.shutdown_grace_seconds
        await asyncio.gather(pods.drain(grace), containers.drain(grace), images.drain(grace))
        await containers.trash.drain(grace)  # after the drains: an undone create discards its dirs
        containers.close()
        if self._metrics is not None:
            self._metrics.stop()
        log.info("crid stopped")
        return 0
