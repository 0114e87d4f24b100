"""Pod networking through CNI plugins: what containerd gets from go-cni and libcni.

``CniManager`` runs the network's plugin chain for a pod (ADD with
``prevResult`` chaining, DEL in reverse order, CHECK), keeps a per-pod cache
of the config, arguments and result that DEL and CHECK replay (so teardown
works after the conf dir changed or crid restarted), and reports NetworkReady.
Operations on one pod are serialised; different pods run in parallel.
"""

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import Counter, Histogram

from cri import faults
from cri.cni.cache import CacheEntry, ResultCache, check_pod_id
from cri.cni.config import ConfigError, ConfigSource, NetworkConfigList, PluginConf, find_plugin, parse_conflist
from cri.cni.config import version_tuple as _version
from cri.cni.invoke import Invocation, PluginFailed, kill_orphans, run_plugin
from cri.cni.result import ResultError, convert, normalize, pod_ips
from cri.conditions import Condition
from cri.errors import CridError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from cri.keyed_locks import KeyedLocks
from cri.log import fields
from cri.metrics import REGISTRY

log = logging.getLogger(__name__)

NOT_READY = "NetworkPluginNotReady"
PROTOCOLS = ("tcp", "udp", "sctp")
IFNAME_MAX = 15

CNI_SECONDS = Histogram(
    "crid_cni_operation_duration_seconds",
    "Time a pod's CNI operation (ADD, DEL, CHECK of the whole plugin chain) took",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
CNI_FAILURES = Counter(
    "crid_cni_operation_failures", "Pod CNI operations (ADD, DEL, CHECK) that failed", ["operation"], registry=REGISTRY
)
# resolved once, and present at zero from the start (alerts compare increases)
_METRICS = {op: (CNI_SECONDS.labels(op), CNI_FAILURES.labels(op)) for op in ("ADD", "DEL", "CHECK")}


@contextlib.contextmanager
def _measured(operation: str) -> Iterator[None]:
    seconds, failures = _METRICS[operation]
    started = time.monotonic()
    try:
        yield
    except Exception:  # a cancelled call is not the network's failure
        failures.inc()
        raise
    finally:
        seconds.observe(time.monotonic() - started)


@dataclass(frozen=True)
class PortMapping:
    protocol: str  # "tcp", "udp" or "sctp"
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class PodNetwork:
    id: str  # sandbox id -> CNI_CONTAINERID
    netns: str  # path of the pod's netns -> CNI_NETNS
    name: str
    namespace: str
    uid: str
    ifname: str = "eth0"
    port_mappings: tuple[PortMapping, ...] = ()
    bandwidth: dict[str, int] | None = None  # runtimeConfig "bandwidth": ingressRate, ingressBurst, egress...
    dns: dict[str, list[str]] | None = None  # runtimeConfig "dns": servers, searches, options
    cgroup_path: str = ""  # runtimeConfig "cgroupPath"


@dataclass(frozen=True)
class NetworkResult:
    ips: list[str]  # without prefix length, IPv4 first; the first is the primary pod IP
    interfaces: list[dict[str, Any]]
    raw: dict[str, Any]  # the final result JSON (in the network's cniVersion)


def _check_arg(what: str, value: str) -> None:
    # CNI_ARGS is "K=V;K=V": plugins split on ';' and '='
    if any(c in value for c in ";=\n\0"):
        raise InvalidArgument(f"pod {what} {value!r} cannot be passed in CNI_ARGS")


def _check_pod(pod: PodNetwork) -> None:
    check_pod_id(pod.id)
    if not os.path.isabs(pod.netns):
        raise InvalidArgument(f"network namespace path {pod.netns!r} is not absolute")
    name = pod.ifname
    if not name or len(name) > IFNAME_MAX or name in (".", "..") or any(c in name for c in "/: \t\n\0"):
        raise InvalidArgument(f"invalid interface name {name!r}")
    for what, value in (("name", pod.name), ("namespace", pod.namespace), ("uid", pod.uid)):
        _check_arg(what, value)
    for p in pod.port_mappings:
        if p.protocol.lower() not in PROTOCOLS:
            raise InvalidArgument(f"port mapping protocol {p.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if not 0 < p.container_port < 65536 or not 0 <= p.host_port < 65536:
            raise InvalidArgument(f"port mapping {p.host_port}->{p.container_port} is out of range")
        if p.host_ip:
            try:
                ipaddress.ip_address(p.host_ip)
            except ValueError:
                raise InvalidArgument(f"port mapping host IP {p.host_ip!r} is not an IP address") from None


def cni_args(pod: PodNetwork) -> str:
    return ";".join(
        [
            "IgnoreUnknown=1",
            f"K8S_POD_NAMESPACE={pod.namespace}",
            f"K8S_POD_NAME={pod.name}",
            f"K8S_POD_INFRA_CONTAINER_ID={pod.id}",
            f"K8S_POD_UID={pod.uid}",
        ]
    )


def capability_args(pod: PodNetwork, pod_cidrs: tuple[str, ...] = ()) -> dict[str, Any]:
    """runtimeConfig values by capability name; each plugin gets those it declares."""
    args: dict[str, Any] = {}
    mappings = []
    for p in pod.port_mappings:
        if p.host_port <= 0:
            continue  # a container port without a host port is not a host mapping (containerd skips it too)
        m: dict[str, Any] = {"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.lower()}
        if p.host_ip:
            m["hostIP"] = p.host_ip
        mappings.append(m)
    if mappings:
        args["portMappings"] = mappings
    if pod.bandwidth:
        args["bandwidth"] = dict(pod.bandwidth)
    if pod.dns is not None:
        args["dns"] = {k: list(v) for k, v in pod.dns.items()}
    if pod_cidrs:
        # one range set per CIDR: host-local wants one address family per range set
        args["ipRanges"] = [[{"subnet": c}] for c in pod_cidrs]
    if pod.cgroup_path:
        args["cgroupPath"] = pod.cgroup_path
    return args


def plugin_stdin(
    net: NetworkConfigList, plugin: PluginConf, caps: dict[str, Any], prev: dict[str, Any] | None
) -> bytes:
    """The plugin's config as the spec wants it on stdin: the list's name and
    version, prevResult, and runtimeConfig with only the declared capabilities."""
    conf = dict(plugin.conf)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    if prev is not None:
        conf["prevResult"] = prev
    runtime = {k: caps[k] for k in sorted(plugin.capabilities) if k in caps}
    if runtime:
        conf["runtimeConfig"] = runtime
    return json.dumps(conf).encode()


def _as_version(raw: dict[str, Any], version: str) -> dict[str, Any]:
    """A result in the network's version, untouched when it already is."""
    if raw.get("cniVersion") == version:
        return raw
    return convert(normalize(raw, version), version)


def _live_netns(path: str | None) -> str:
    """``path`` when it is a network namespace, else "" (the netns is gone: libcni passes "" then)."""
    if not path:
        return ""
    try:
        # every namespace file lives on the one nsfs superblock
        return path if os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev else ""
    except OSError:
        return ""


class CniManager:
    def __init__(self, conf_dir: str, bin_dirs: list[str], cache_dir: str, plugin_timeout: float = 60.0) -> None:
        self.conf_dir = conf_dir
        self.bin_dirs = list(bin_dirs)
        self.plugin_timeout = plugin_timeout
        self._source = ConfigSource(conf_dir)
        self._cache = ResultCache(cache_dir)
        self._owner = os.path.abspath(cache_dir)  # marks our plugins (invoke.OWNER_ENV)
        self._locks = KeyedLocks()
        self._results: dict[str, NetworkResult] = {}  # cached() answers, filled from disk once per pod
        self._pod_cidrs: tuple[str, ...] = ()

    # --- readiness -------------------------------------------------------

    def _missing(self, net: NetworkConfigList) -> list[str]:
        return [b for b in net.binaries() if find_plugin(b, self.bin_dirs) is None]

    def _missing_message(self, net: NetworkConfigList, missing: list[str]) -> str:
        what = "plugin" if len(missing) == 1 else "plugins"
        return (
            f"CNI {what} {', '.join(missing)} of network {net.name} ({net.source}) "
            f"not found in {', '.join(self.bin_dirs)}"
        )

    def status(self) -> Condition:
        """NetworkReady: the conf dir is re-read when its files changed, plugin binaries are looked up every time."""
        loaded = self._source.current()
        if loaded.network is None:
            return Condition(False, NOT_READY, f"Network plugin returns error: {loaded.problem}")
        missing = self._missing(loaded.network)
        if missing:
            return Condition(
                False, NOT_READY, f"Network plugin returns error: {self._missing_message(loaded.network, missing)}"
            )
        return Condition(True)

    def update_pod_cidrs(self, cidrs: list[str]) -> None:
        """The node's pod CIDRs (UpdateRuntimeConfig), passed as the ipRanges capability."""
        for c in cidrs:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise InvalidArgument(f"pod CIDR {c!r} is not a network") from None
        self._pod_cidrs = tuple(cidrs)

    def _binaries(self, net: NetworkConfigList, why: str = "cannot run the network") -> dict[str, str]:
        found: dict[str, str] = {}
        for name in net.binaries():
            path = find_plugin(name, self.bin_dirs)
            if path is None:
                raise FailedPrecondition(f"{why}: {self._missing_message(net, self._missing(net))}")
            found[name] = path
        return found

    def _ready_network(self) -> tuple[NetworkConfigList, dict[str, str]]:
        loaded = self._source.current()
        if loaded.network is None:
            raise FailedPrecondition(f"network is not ready: {loaded.problem}")
        return loaded.network, self._binaries(loaded.network, "network is not ready")

    async def verify_plugins(self) -> None:
        """Ask every plugin of the current network (VERSION) whether it speaks the network's cniVersion."""
        net, bins = await asyncio.to_thread(self._ready_network)
        stdin = json.dumps({"cniVersion": net.cni_version}).encode()
        for name, binary in bins.items():
            out = await run_plugin(binary, name, Invocation("VERSION", owner=self._owner), stdin, self.plugin_timeout)
            supported = out.get("supportedVersions") if isinstance(out, dict) else None
            if not isinstance(supported, list):
                raise Unavailable(f"CNI plugin {name} ({binary}) gave no supportedVersions to VERSION")
            if net.cni_version not in supported:
                raise FailedPrecondition(
                    f"CNI plugin {name} ({binary}) does not support cniVersion {net.cni_version} of network "
                    f"{net.name} ({net.source}); it supports {', '.join(map(str, supported))}"
                )

    # --- plugin calls ----------------------------------------------------

    def _invocation(self, command: str, entry: CacheEntry, netns: str) -> Invocation:
        return Invocation(
            command=command,
            container_id=entry.pod_id,
            netns=netns,
            ifname=entry.ifname,
            args=entry.cni_args,
            path=":".join(self.bin_dirs),
            owner=self._owner,
        )

    async def _add(
        self, net: NetworkConfigList, bins: dict[str, str], entry: CacheEntry, partial: list[dict[str, Any]]
    ) -> dict[str, Any]:
        inv = self._invocation("ADD", entry, entry.netns)
        prev: dict[str, Any] | None = None
        for plugin in net.plugins:
            stdin = plugin_stdin(net, plugin, entry.capability_args, prev)
            out = await run_plugin(bins[plugin.type], plugin.type, inv, stdin, self.plugin_timeout)
            if out is None:
                raise PluginFailed(f"CNI plugin {plugin.type} (ADD) printed no result")
            try:
                prev = _as_version(out, net.cni_version)
            except ResultError as e:
                raise PluginFailed(f"CNI plugin {plugin.type} (ADD) returned an invalid result: {e}") from None
            partial.append(prev)
        assert prev is not None  # a network has at least one plugin
        return prev

    def _cached_network(self, entry: CacheEntry) -> NetworkConfigList:
        try:
            return parse_conflist(entry.conflist, entry.source)
        except ConfigError as e:
            raise FailedPrecondition(f"the cached network config of pod {entry.pod_id} is invalid: {e}") from None

    async def _delete(self, entry: CacheEntry, netns: str | None) -> None:
        net = self._cached_network(entry)
        bins, live = await asyncio.to_thread(lambda: (self._binaries(net), _live_netns(netns)))
        prev = None
        # a cached result on DEL came with spec 0.4.0 (libcni passes none before)
        if entry.result is not None and _version(net.cni_version) >= (0, 4, 0):
            try:
                prev = _as_version(entry.result, net.cni_version)
            except ResultError as e:
                log.warning("cached CNI result unusable, DEL without it", extra=fields(pod=entry.pod_id, error=str(e)))
        inv = self._invocation("DEL", entry, live)
        for plugin in reversed(net.plugins):
            stdin = plugin_stdin(net, plugin, entry.capability_args, prev)
            await run_plugin(bins[plugin.type], plugin.type, inv, stdin, self.plugin_timeout)

    # --- the API ---------------------------------------------------------

    async def setup(self, pod: PodNetwork) -> NetworkResult:
        """CNI ADD of the whole chain. The result is cached before this returns.

        On failure the whole chain is DELeted (the spec's advice) and the
        cache entry dropped; if that DEL fails too the entry stays, so a later
        teardown() finishes the job. An attachment the pod already has (an ADD
        cut short by a crash, or a retry) is torn down first.
        """
        _check_pod(pod)
        async with self._locks.hold(pod.id):
            with _measured("ADD"):
                return await self._setup(pod)

    async def _setup(self, pod: PodNetwork) -> NetworkResult:
        net, bins = await asyncio.to_thread(self._ready_network)
        old = await self._cache.read(pod.id)
        if old is not None:
            log.warning("pod has a CNI attachment already, deleting it before ADD", extra=fields(pod=pod.id))
            await self._delete(old, pod.netns)
            await self._cache.remove(pod.id)
        self._results.pop(pod.id, None)
        entry = CacheEntry(
            pod_id=pod.id,
            conflist=dict(net.raw),  # the cache's copy: written out, read back unchecked
            source=net.source,
            ifname=pod.ifname,
            cni_args=cni_args(pod),
            capability_args=capability_args(pod, self._pod_cidrs),
            netns=pod.netns,
            result=None,
        )
        try:
            await self._cache.write(entry)  # before any plugin runs: a crash mid-ADD still knows what to DEL
            faults.step("RunPodSandbox.cni_cache_written")
        except OSError as e:
            raise Unavailable(f"cannot write the CNI cache of pod {pod.id}: {e.strerror}") from None
        partial: list[dict[str, Any]] = []
        try:
            raw = await self._add(net, bins, entry, partial)
            faults.step("RunPodSandbox.cni_added")
            await self._cache.write(replace(entry, result=raw))
        except (CridError, OSError) as e:
            await self._undo(replace(entry, result=partial[-1] if partial else None), pod.netns)
            if isinstance(e, OSError):
                raise Unavailable(f"cannot write the CNI cache of pod {pod.id}: {e.strerror}") from None
            raise
        current = normalize(raw, net.cni_version)
        result = NetworkResult(ips=pod_ips(current, pod.ifname), interfaces=current["interfaces"], raw=raw)
        self._results[pod.id] = result
        log.info("pod network added", extra=fields(pod=pod.id, network=net.name, ips=result.ips))
        return result

    async def _undo(self, entry: CacheEntry, netns: str) -> None:
        try:
            await self._delete(entry, netns)
            await self._cache.remove(entry.pod_id)
        except (CridError, OSError) as e:
            log.error(
                "cleanup DEL after a failed ADD failed; teardown will retry",
                extra=fields(pod=entry.pod_id, error=str(e)),
            )

    async def teardown(self, pod_id: str, netns: str | None) -> None:
        """CNI DEL with the cached config and result; a no-op for a pod without cache entry.

        ``netns`` may be None or gone: plugins then get CNI_NETNS="" and still
        release what lives outside it (IP reservations). The cache entry is
        removed only after every plugin's DEL succeeded, so a failed teardown
        can be retried.
        """
        check_pod_id(pod_id)
        async with self._locks.hold(pod_id):
            entry = await self._cache.read(pod_id)
            if entry is None:
                return
            with _measured("DEL"):
                await self._delete(entry, netns)
                faults.step("StopPodSandbox.cni_deleted")
                try:
                    await self._cache.remove(pod_id)
                except OSError as e:
                    raise Unavailable(f"cannot remove the CNI cache of pod {pod_id}: {e.strerror}") from None
            self._results.pop(pod_id, None)
            log.info("pod network deleted", extra=fields(pod=pod_id, network=entry.conflist.get("name")))

    async def check(self, pod_id: str, netns: str) -> None:
        """CNI CHECK with the cached config and result. Nothing to do for
        networks before spec 0.4.0 or with disableCheck set."""
        check_pod_id(pod_id)
        async with self._locks.hold(pod_id):
            entry = await self._cache.read(pod_id)
            if entry is None:
                raise NotFound(f"pod {pod_id} has no CNI network attachment")
            if entry.result is None:
                raise FailedPrecondition(f"the CNI ADD of pod {pod_id} did not complete")
            net = self._cached_network(entry)
            if _version(net.cni_version) < (0, 4, 0) or net.disable_check:
                return
            bins = await asyncio.to_thread(self._binaries, net)
            try:
                prev = _as_version(entry.result, net.cni_version)
            except ResultError as e:
                raise FailedPrecondition(f"the cached CNI result of pod {pod_id} is invalid: {e}") from None
            inv = self._invocation("CHECK", entry, netns)
            with _measured("CHECK"):
                for plugin in net.plugins:
                    stdin = plugin_stdin(net, plugin, entry.capability_args, prev)
                    await run_plugin(bins[plugin.type], plugin.type, inv, stdin, self.plugin_timeout)

    def cached(self, pod_id: str) -> NetworkResult | None:
        """The cached ADD result of a pod (after a restart too); None when it has none or its ADD never finished."""
        if pod_id in self._results:
            return self._results[pod_id]
        try:
            entry = self._cache.read_sync(pod_id)
        except CridError as e:
            log.error("unreadable CNI cache entry", extra=fields(pod=pod_id, error=str(e)))
            return None
        if entry is None or entry.result is None:
            return None
        version = str(entry.conflist.get("cniVersion") or "1.0.0")
        try:
            current = normalize(entry.result, version)
        except ResultError as e:
            log.error("invalid cached CNI result", extra=fields(pod=pod_id, error=str(e)))
            return None
        result = NetworkResult(pod_ips(current, entry.ifname), current["interfaces"], entry.result)
        self._results[pod_id] = result
        return result

    async def clear_partial_writes(self) -> None:
        """At startup, before any plugin runs and anything writes the cache: kill the plugins a killed
        daemon left running (they would race the recovery's DEL), drop what its writes left."""
        killed = await asyncio.to_thread(kill_orphans, self._owner)
        if killed:
            log.warning("killed CNI plugins a killed crid left running", extra=fields(pids=killed))
        await asyncio.to_thread(self._cache.clear_tmp_sync)

    async def cached_pods(self) -> list[str]:
        """Ids of the pods with a cache entry (finished or not): what recovery may need to tear down."""
        return await self._cache.pod_ids()
