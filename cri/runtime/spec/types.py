"""The OCI runtime spec (config.json) that crid writes, as TypedDicts.

Only the parts crid fills in, with the runtime-spec's key names
(config.md, config-linux.md); keys crid sets only sometimes are NotRequired.
Typed so that mypy checks every part the builders put together, not so that
a spec read back from disk is trusted: that one is crid's own output, and
``update_resources`` says so where it reads it.
"""

from typing import Any, NotRequired, TypedDict


class User(TypedDict):
    uid: int
    gid: int
    additionalGids: list[int]


class Capabilities(TypedDict):
    bounding: list[str]
    effective: list[str]
    permitted: list[str]
    inheritable: NotRequired[list[str]]
    ambient: NotRequired[list[str]]


class Process(TypedDict):
    terminal: bool
    user: User
    args: list[str]
    env: list[str]
    cwd: str
    capabilities: Capabilities
    noNewPrivileges: bool
    oomScoreAdj: NotRequired[int]


class Root(TypedDict):
    path: str
    readonly: bool


class Mount(TypedDict):
    destination: str
    type: NotRequired[str]  # crid's own mounts always have both; a CDI mount may have neither
    source: str
    options: NotRequired[list[str]]


class Namespace(TypedDict):
    type: str
    path: NotRequired[str]


class Device(TypedDict):
    """A device node in linux.devices."""

    path: str
    type: str  # "c" or "b"
    major: int
    minor: int
    fileMode: NotRequired[int]  # absent (runc's defaults: 0666, root) only for a CDI device that omits them
    uid: NotRequired[int]
    gid: NotRequired[int]


class DeviceRule(TypedDict):
    """A device cgroup rule in linux.resources.devices; no type and numbers: all devices."""

    allow: bool
    type: NotRequired[str]
    major: NotRequired[int]
    minor: NotRequired[int]
    access: NotRequired[str]


class Hook(TypedDict):
    path: str
    args: NotRequired[list[str]]
    env: NotRequired[list[str]]
    timeout: NotRequired[int]


class Hooks(TypedDict, total=False):
    """Only CDI specs add hooks (crid itself runs none)."""

    prestart: list[Hook]
    createRuntime: list[Hook]
    createContainer: list[Hook]
    startContainer: list[Hook]
    poststart: list[Hook]
    poststop: list[Hook]


class IntelRdt(TypedDict, total=False):
    closID: str
    l3CacheSchema: str
    memBwSchema: str
    schemata: list[str]
    enableMonitoring: bool


class NetDevice(TypedDict, total=False):
    name: str


class Cpu(TypedDict, total=False):
    shares: int
    quota: int
    period: int
    cpus: str
    mems: str


class Memory(TypedDict, total=False):
    limit: int
    swap: int


class HugepageLimit(TypedDict):
    pageSize: str
    limit: int


class Resources(TypedDict, total=False):
    devices: list[DeviceRule]
    cpu: Cpu
    memory: Memory
    hugepageLimits: list[HugepageLimit]
    unified: dict[str, str]


class IDMapping(TypedDict):
    containerID: int
    hostID: int
    size: int


class Linux(TypedDict):
    namespaces: list[Namespace]
    uidMappings: NotRequired[list[IDMapping]]
    gidMappings: NotRequired[list[IDMapping]]
    resources: Resources
    rootfsPropagation: NotRequired[str]
    cgroupsPath: NotRequired[str]
    devices: NotRequired[list[Device]]
    sysctl: NotRequired[dict[str, str]]
    maskedPaths: NotRequired[list[str]]
    readonlyPaths: NotRequired[list[str]]
    seccomp: NotRequired[dict[str, Any]]  # cri.runtime.seccomp resolves it from a user's JSON profile
    intelRdt: NotRequired[IntelRdt]  # this and netDevices from CDI specs only
    netDevices: NotRequired[dict[str, NetDevice]]


class Spec(TypedDict):
    ociVersion: str
    process: Process
    root: Root
    mounts: list[Mount]
    annotations: dict[str, str]
    linux: Linux
    hooks: NotRequired[Hooks]
