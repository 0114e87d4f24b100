"""The spec's ``process``: args, env, cwd, user, capabilities, no_new_privs,
oom_score_adj; the AppArmor check and the seccomp profile, which depends on
the capabilities."""

import posixpath
from typing import Any, cast

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import CAPABILITIES, HOST
from cri.images.manifest import ContainerDefaults, ImageConfig
from cri.runtime import seccomp
from cri.runtime.spec.types import Capabilities, Process
from cri.runtime.users import resolve_user

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# containerd's and docker's default set (CRI-O's is smaller: no MKNOD, NET_RAW, SYS_CHROOT, AUDIT_WRITE, SETFCAP)
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


def _image(image_config: ImageConfig) -> ContainerDefaults:
    """The image's "config" object, its fields crid reads checked for type."""
    config = image_config.get("config") or {}
    if not isinstance(config, dict):
        raise InvalidArgument("image config: 'config' is not an object")
    for key in ("Entrypoint", "Cmd", "Env"):
        value = config.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidArgument(f"image config: {key} is not a list of strings")
    for key in ("User", "WorkingDir"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise InvalidArgument(f"image config: {key} is not a string")
    return cast(ContainerDefaults, config)


def _args(config: pb.ContainerConfig, image: ContainerDefaults) -> list[str]:
    """Kubernetes' command/args over the image's Entrypoint/Cmd (containerd's WithProcessArgs)."""
    command, args = list(config.command), list(config.args)
    if not command:
        if not args:
            args = list(image.get("Cmd") or [])
        entrypoint = list(image.get("Entrypoint") or [])
        if entrypoint != [""]:  # an image may reset its entrypoint with ENTRYPOINT [""]
            command = entrypoint
    argv = command + args
    if not argv:
        raise InvalidArgument(
            "no command specified: the request has no command or args and the image no entrypoint or cmd"
        )
    return argv


def _env(config: pb.ContainerConfig, image: ContainerDefaults, hostname: str) -> list[str]:
    """PATH default, TERM for a tty, HOSTNAME, then the image's env and the
    request's, each replacing an earlier value of the same name in place."""
    env: dict[str, str] = {}
    for item in [DEFAULT_PATH, *(["TERM=xterm"] if config.tty else []), f"HOSTNAME={hostname}"]:
        key, _, value = item.partition("=")
        env[key] = value
    for item in image.get("Env") or []:
        key, sep, value = item.partition("=")
        if not sep:
            env.pop(key, None)  # a bare name unsets it, as containerd reads image env
        elif key:
            env[key] = value
    for kv in config.envs:
        try:
            value = kv.value.decode()
        except UnicodeDecodeError:
            raise InvalidArgument(f"env {kv.key!r}: the value is not UTF-8") from None
        if not kv.key or "=" in kv.key or "\0" in kv.key or "\0" in value:
            raise InvalidArgument(f"invalid env name or value for {kv.key!r}")
        env[kv.key] = value
    return [f"{k}={v}" for k, v in env.items()]


def _cwd(config: pb.ContainerConfig, image: ContainerDefaults) -> str:
    cwd = config.working_dir or image.get("WorkingDir") or "/"
    # runc wants an absolute cwd; docker resolves a relative WORKDIR against /
    return posixpath.normpath(posixpath.join("/", cwd))


def _cap_name(raw: str) -> str:
    name = raw.strip().upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITIES:
        raise InvalidArgument(f"unknown capability {raw!r}")
    return name


def _capabilities(sc: pb.LinuxContainerSecurityContext) -> Capabilities:
    """Bounding/effective/permitted from the defaults plus adds minus drops;
    inheritable stays empty (containerd 1.7+, CRI-O: CVE-2022-24769) unless
    ambient capabilities are asked for. "ALL" in add is every capability the
    kernel knows, "ALL" in drop clears the defaults first, so that
    drop ALL + add X gives exactly X."""
    known = HOST.known_capabilities()
    own = HOST.own_capabilities()
    grantable = [c for c in known if c in own]
    if sc.privileged:
        return {"bounding": grantable, "effective": list(grantable), "permitted": list(grantable)}

    def wanted(names: list[str]) -> list[str]:
        out = []
        for raw in names:
            name = _cap_name(raw)
            if name not in known:
                continue  # newer than this kernel: runc skips those as well
            if name not in own:
                raise InvalidArgument(f"capability {name} cannot be granted: crid itself does not hold it")
            out.append(name)
        return out

    caps = sc.capabilities
    add = [c for c in caps.add_capabilities if c.strip().upper() != "ALL"]
    drop = [c for c in caps.drop_capabilities if c.strip().upper() != "ALL"]
    base: list[str] = [c for c in DEFAULT_CAPS if c in grantable]
    if len(add) != len(caps.add_capabilities):
        base = grantable
    if len(drop) != len(caps.drop_capabilities):
        base = []
    ambient = wanted(list(caps.add_ambient_capabilities))
    dropped = {_cap_name(c) for c in drop}
    main = [c for c in dict.fromkeys([*base, *wanted(add), *ambient]) if c not in dropped]
    out: Capabilities = {"bounding": main, "effective": list(main), "permitted": list(main)}
    ambient = [c for c in dict.fromkeys(ambient) if c not in dropped]
    if ambient:
        # the CRI contract: an ambient capability is in every set (ambient needs permitted and inheritable)
        out["inheritable"] = ambient
        out["ambient"] = list(ambient)
    return out


def _check_apparmor(sc: pb.LinuxContainerSecurityContext) -> None:
    """This host has no AppArmor: like containerd, only "unconfined" (or nothing) is acceptable."""
    if sc.HasField("apparmor"):
        if sc.apparmor.profile_type != pb.SecurityProfile.Unconfined:
            raise InvalidArgument("AppArmor is not enabled on this host")
    elif sc.apparmor_profile not in ("", "unconfined"):
        raise InvalidArgument("AppArmor is not enabled on this host")


def _oom_score_adj(config: pb.ContainerConfig, minimum: int) -> int | None:
    if not config.linux.HasField("resources"):
        return None  # containerd sets none then: the process inherits crid's (the minimum anyway)
    adj = config.linux.resources.oom_score_adj
    if not -1000 <= adj <= 1000:
        raise InvalidArgument(f"oom_score_adj {adj} is outside [-1000, 1000]")
    # lowering below crid's own value needs CAP_SYS_RESOURCE (containerd's restrict_oom_score_adj)
    return max(adj, minimum)


def build_process(
    config: pb.ContainerConfig,
    image_config: ImageConfig,
    *,
    rootfs: str,
    hostname: str,
    min_oom_score_adj: int,
    image_id: str = "",
) -> Process:
    """The spec's ``process``; ``hostname`` is the pod's ("" = the node's),
    ``rootfs`` is where the user and group names are looked up (a fresh copy of the image
    ``image_id``, if given: they are parsed once per image)."""
    sc = config.linux.security_context
    _check_apparmor(sc)
    image = _image(image_config)

    uid, gid, gids = resolve_user(rootfs, image.get("User") or "", sc, image_id)
    caps = _capabilities(sc)
    process: Process = {
        "terminal": config.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": gids},
        "args": _args(config, image),
        "env": _env(config, image, hostname or HOST.node_name()),
        "cwd": _cwd(config, image),
        "capabilities": caps,
        "noNewPrivileges": sc.no_new_privs,
    }
    adj = _oom_score_adj(config, min_oom_score_adj)
    if adj is not None:
        process["oomScoreAdj"] = adj
    return process


def seccomp_profile(sc: pb.LinuxContainerSecurityContext, capabilities: Capabilities) -> dict[str, Any] | None:
    """The spec's ``linux.seccomp``: resolved against the bounding set, since
    the default profile opens syscall groups by capability (mount with CAP_SYS_ADMIN)."""
    return seccomp.for_container(sc, capabilities["bounding"])
