"""Files a pod's containers share: hostname, hosts, resolv.conf, /dev/shm."""

import os
from dataclasses import dataclass

from cri.errors import InvalidArgument
from cri.host import HOST

SHM_SIZE = 64 * 1024 * 1024
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"


@dataclass(frozen=True)
class DnsConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def resolv_conf(dns: DnsConfig | None) -> str:
    """The pod's resolv.conf; the host's when the pod gives no DNS config."""
    if dns is None or not (dns.servers or dns.searches or dns.options):
        try:
            with open(HOST_RESOLV_CONF) as f:
                return f.read()
        except FileNotFoundError:
            return ""
    for word in (*dns.servers, *dns.searches, *dns.options):
        if not word or any(c.isspace() for c in word):
            raise InvalidArgument(f"dns_config: {word!r} is empty or contains white space")
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {s}" for s in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def hosts_file(hostname: str, ips: list[str], host_network: bool) -> str:
    """/etc/hosts: the node's for host-network pods, else localhost plus the pod's own name."""
    if host_network:
        try:
            with open(HOST_HOSTS) as f:
                return f.read()
        except FileNotFoundError:
            pass
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    lines += [f"{ip}\t{hostname}" for ip in ips]
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def write_pod_files(directory: str, hostname: str, ips: list[str], dns: DnsConfig | None, host_network: bool) -> None:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    write(os.path.join(directory, "hostname"), (hostname if not host_network else HOST.node_name()) + "\n")
    write(os.path.join(directory, "hosts"), hosts_file(hostname, ips, host_network))
    write(os.path.join(directory, "resolv.conf"), resolv_conf(dns))


def mount_shm(path: str, size: int = SHM_SIZE) -> None:
    os.makedirs(path, mode=0o1777, exist_ok=True)
    HOST.mount("shm", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={size}")


def unmount(path: str) -> None:
    """Unmount ``path`` if it is a mount point (lazily: a container may still hold it)."""
    HOST.detach_mount(path)
