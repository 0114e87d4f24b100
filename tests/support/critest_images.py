"""Look-alike images for the CRI validation suite (critest), built from Debian packages.

critest pulls canonical names (``registry.k8s.io/e2e-test-images/busybox:1.29-2``,
``gcr.io/k8s-staging-cri-tools/test-image-*``, ...) through the runtime. Offline, a
local registry holds look-alikes under the same repository paths and tags, and the
runtime's ``hosts.toml`` files send each upstream registry there. Each image does
what the specs check (docs/CRITEST-RESULTS.md lists them), nothing more:

- the default test image (``busybox:1.29-2``): Debian's *dynamic* busybox with its
  glibc libraries, every applet a hard link (masking ``/bin/ls`` must not mask
  busybox; its shell execs external applets, so a masked ``ls`` fails with
  "Permission denied"), plus ``pgrep`` and ``ipcs`` as small scripts reading /proc;
- ``nginx``/``hostnet-nginx``: busybox ``httpd`` on port 80 / 12003 run from a copy
  of busybox named ``nginx`` (``pidof nginx`` finds it) with ``argv[0]`` reading
  ``nginx: master process ...``, its pid in ``/var/run/nginx.pid``;
- ``httpd``: busybox ``httpd`` on port 80 that says "httpd" in its log;
- ``nonewprivs``: a 230-byte static setuid-root program (machine code written
  below) printing ``Effective uid: <euid>``;
- ``test-image-user-*``, ``test-image-predefined-group``: config ``User`` and
  ``/etc/passwd``/``/etc/group`` as upstream's Dockerfiles make them;
- ``test-image-*``: busybox plus one empty file, named as upstream's build does
  (``test-image-tag`` and ``test-image-tags`` are multi-arch indexes, like upstream);
- ``pause:3.9``: Debian's static catatonit as ``/pause``;
- ``public.ecr.aws/docker/library/busybox:*`` (benchmarks) and ``docker.io/library/busybox``.

Every image that must have its own id has its own config; names meant to be one
image (``test-image-tags:1..3``, the two pause names) share one manifest.
``hack/critest --images tools`` has umoci and skopeo make the same images from these
layers and configs (:mod:`tests.support.critest_tool_images`).
"""

import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.oci_build import (
    BUSYBOX,
    DEFAULT_PATH,
    Dir,
    Entry,
    File,
    Image,
    ImageConfig,
    Index,
    Layer,
    Target,
    busybox_entries,
)
from tests.support.registry_client import RegistryClient

# the registries critest's images live in; each gets a hosts.toml pointing at the local registry
UPSTREAM_REGISTRIES = ("registry.k8s.io", "gcr.io", "k8s.gcr.io", "public.ecr.aws", "docker.io")

E2E = "registry.k8s.io/e2e-test-images"
CRI_TOOLS = "gcr.io/k8s-staging-cri-tools"
DEFAULT_IMAGE = f"{E2E}/busybox:1.29-2"
NGINX_IMAGE = f"{E2E}/nginx:1.14-2"
HOSTNET_NGINX_IMAGE = f"{CRI_TOOLS}/hostnet-nginx-amd64:latest"
HTTPD_IMAGE = f"{E2E}/httpd:2.4.39-4"
NONEWPRIVS_IMAGE = f"{E2E}/nonewprivs:1.3"
PAUSE_IMAGES = ("registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9")
# test-image-digest@sha256:9700f9a2... cannot be made: its manifest would have to be upstream's bytes
DIGEST_IMAGE_NOTE = f"{CRI_TOOLS}/test-image-digest@sha256:9700f9a2... (upstream bytes needed: not built)"

CATATONIT = "/usr/bin/catatonit"  # Debian's catatonit: statically linked
DEB_ARCH = "x86_64-linux-gnu"

# /etc/passwd and /etc/group of the upstream busybox image
BUSYBOX_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh",
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false",
    "bin:x:2:2:bin:/bin:/bin/false",
    "sys:x:3:3:sys:/dev:/bin/false",
    "sync:x:4:100:sync:/bin:/bin/sync",
    "mail:x:8:8:mail:/var/spool/mail:/bin/false",
    "www-data:x:33:33:www-data:/var/www:/bin/false",
    "operator:x:37:37:Operator:/var:/bin/false",
    "nobody:x:65534:65534:nobody:/home:/bin/false",
)
BUSYBOX_GROUP = (
    "root:x:0:", "daemon:x:1:", "bin:x:2:", "sys:x:3:", "adm:x:4:", "tty:x:5:", "disk:x:6:", "lp:x:7:",
    "mail:x:8:", "kmem:x:9:", "wheel:x:10:root", "cdrom:x:11:", "dialout:x:18:", "floppy:x:19:",
    "video:x:28:", "audio:x:29:", "tape:x:32:", "www-data:x:33:", "operator:x:37:", "utmp:x:43:",
    "plugdev:x:46:", "staff:x:50:", "lock:x:54:", "netdev:x:82:", "users:x:100:", "nogroup:x:65534:",
)  # fmt: skip

PGREP = b"""#!/bin/sh
# pgrep look-alike (procps' pgrep is not in busybox 1.35): the pids of the
# processes whose name (/proc/PID/comm) matches an extended regular expression;
# exit status 1 when there is none. -x: whole name, -l: "PID NAME".
exact=0 list=0
while [ $# -gt 0 ]; do
    case "$1" in
        -x) exact=1 ;;
        -l) list=1 ;;
        -lx | -xl) exact=1 list=1 ;;
        --) shift; break ;;
        -*) echo "pgrep: unsupported option $1" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
if [ $# -ne 1 ]; then
    echo "usage: pgrep [-lx] PATTERN" >&2
    exit 2
fi
pattern=$1
[ $exact = 1 ] && pattern="^($1)\\$"
status=1
for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" = "$$" ] && continue
    read -r name 2>/dev/null <"$dir/comm" || continue
    if printf '%s\\n' "$name" | grep -Eq -- "$pattern"; then
        if [ $list = 1 ]; then echo "$pid $name"; else echo "$pid"; fi
        status=0
    fi
done
exit $status
"""

IPCS = b"""#!/bin/sh
# ipcs look-alike (util-linux' ipcs is not in busybox 1.35): the System V IPC
# objects of this IPC namespace, read from /proc/sysvipc. -q queues, -m shared
# memory, -s semaphores, -a (default) all three. Owners are shown as uids.
q=0 m=0 s=0
for arg in "$@"; do
    case "$arg" in
        -q) q=1 ;;
        -m) m=1 ;;
        -s) s=1 ;;
        -a) q=1 m=1 s=1 ;;
        *) echo "ipcs: unsupported option $arg" >&2; exit 1 ;;
    esac
done
[ "$q$m$s" = 000 ] && q=1 m=1 s=1
if [ $q = 1 ]; then
    echo
    echo "------ Message Queues --------"
    echo "key        msqid      owner      perms      used-bytes   messages"
    { read -r _; while read -r key id perms cbytes qnum lspid lrpid uid rest; do
        printf '0x%08x %-10s %-10s %-10s %-12s %s\\n' $((key & 0xffffffff)) "$id" "$uid" "$perms" "$cbytes" "$qnum"
    done; } </proc/sysvipc/msg
    echo
fi
if [ $m = 1 ]; then
    echo
    echo "------ Shared Memory Segments --------"
    echo "key        shmid      owner      perms      bytes      nattch     status"
    { read -r _; while read -r key id perms size cpid lpid nattch uid rest; do
        printf '0x%08x %-10s %-10s %-10s %-10s %-10s\\n' $((key & 0xffffffff)) "$id" "$uid" "$perms" "$size" "$nattch"
    done; } </proc/sysvipc/shm
    echo
fi
if [ $s = 1 ]; then
    echo
    echo "------ Semaphore Arrays --------"
    echo "key        semid      owner      perms      nsems"
    { read -r _; while read -r key id perms nsems uid rest; do
        printf '0x%08x %-10s %-10s %-10s %s\\n' $((key & 0xffffffff)) "$id" "$uid" "$perms" "$nsems"
    done; } </proc/sysvipc/sem
    echo
fi
"""

NGINX_ENTRYPOINT = """#!/bin/sh
# nginx look-alike for the CRI validation suite: busybox httpd serving
# /usr/share/nginx/html on port {port}, run from /usr/sbin/nginx (a copy of
# busybox, so the process is named nginx) with an argv[0] that reads
# "nginx: master process ..." (busybox picks the applet after the last "/").
# Its pid goes to /var/run/nginx.pid, as nginx's master does.
if [ "$1" = nginx ]; then
    echo $$ >/var/run/nginx.pid
    echo "nginx look-alike: serving /usr/share/nginx/html on port {port}"
    exec -a "nginx: master process nginx -g daemon off;/httpd" /usr/sbin/nginx -f -v -p {port} -h /usr/share/nginx/html
fi
exec "$@"
"""

HTTPD_FOREGROUND = b"""#!/bin/sh
# httpd look-alike for the CRI validation suite: busybox httpd on port 80.
echo "httpd look-alike: httpd -D FOREGROUND, serving /usr/local/apache2/htdocs on port 80"
exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs
"""

INDEX_HTML = b"<html><body><h1>It works!</h1></body></html>\n"


# ---------------------------------------------------------------- the setuid program of nonewprivs


def euid_printer() -> bytes:
    """A static x86-64 Linux ELF executable printing ``Effective uid: <euid>\\n``
    (one write) and exiting 0: what upstream's nonewprivs image runs, setuid root.

    Hand-assembled so that no toolchain is needed::

        mov eax, 107 ; syscall           geteuid()
        mov rbx, rsp ; sub rbx, 8        rbx: write cursor, going down
        mov r8, rbx                      r8: end of the message
        dec rbx ; mov byte [rbx], 10     "\\n"
        mov ecx, 10
      L: xor edx, edx ; div ecx          digits, last first
        add dl, '0' ; dec rbx ; mov [rbx], dl
        test eax, eax ; jnz L
        sub rbx, 15 ; mov rdi, rbx       prefix "Effective uid: " before them
        lea rsi, [rip + prefix] ; mov ecx, 15 ; rep movsb
        write(1, rbx, r8 - rbx) ; exit(0)
    """
    prefix = b"Effective uid: "
    code = bytearray()
    code += bytes.fromhex("b86b000000 0f05")
    code += bytes.fromhex("4889e3 4883eb08 4989d8")
    code += bytes.fromhex("48ffcb c6030a")
    code += bytes.fromhex("b90a000000")
    loop = bytes.fromhex("31d2 f7f1 80c230 48ffcb 8813 85c0")
    code += loop + bytes([0x75, -(len(loop) + 2) & 0xFF])
    code += bytes.fromhex("4883eb0f 4889df")
    lea_at = len(code)
    code += bytes.fromhex("488d35 00000000")
    code += bytes.fromhex("b90f000000 f3a4")
    code += bytes.fromhex("b801000000 bf01000000 4889de 4c89c2 4829da 0f05")
    code += bytes.fromhex("b83c000000 31ff 0f05")
    code[lea_at + 3 : lea_at + 7] = struct.pack("<i", len(code) - (lea_at + 7))
    code += prefix
    base, headers = 0x400000, 64 + 56
    total = headers + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little endian, SysV
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + headers, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)  # PT_LOAD, R+X, whole file
    return ehdr + phdr + bytes(code)


# ---------------------------------------------------------------- Debian's dynamic busybox


@dataclass(frozen=True)
class DynamicBusybox:
    """Debian's dynamically linked busybox (package ``busybox``) and the host's
    libraries it needs: ``libs`` maps each path in the image (as ``ldd`` names
    it) to the file to copy."""

    binary: Path
    libs: Mapping[str, Path]


def _ldd(binary: Path) -> dict[str, Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs: dict[str, Path] = {}
    for line in out.splitlines():
        words = line.split()
        if "=>" in words:  # libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
            path = words[words.index("=>") + 1]
        elif words and words[0].startswith("/"):  # /lib64/ld-linux-x86-64.so.2 (0x...)
            path = words[0]
        else:  # linux-vdso.so.1
            continue
        if path.startswith("/"):
            libs[path] = Path(os.path.realpath(path))
    if not libs:
        raise RuntimeError(f"ldd found no libraries for {binary}:\n{out}")
    return libs


def dynamic_busybox(cache_dir: Path) -> DynamicBusybox:
    """Debian's ``busybox`` .deb fetched with ``apt-get download`` into ``cache_dir``
    (once; it conflicts with busybox-static, so it is never installed) and extracted there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    binary = cache_dir / "root" / "bin" / "busybox"
    if not binary.exists():
        debs = sorted(cache_dir.glob("busybox_*.deb"))
        if not debs:
            fetched = subprocess.run(
                ["apt-get", "-o", "APT::Sandbox::User=root", "download", "busybox"],
                cwd=cache_dir,
                capture_output=True,
                text=True,
            )
            debs = sorted(cache_dir.glob("busybox_*.deb"))
            if fetched.returncode != 0 or not debs:
                raise RuntimeError(
                    "apt-get download busybox failed (run apt-get update first?):\n" + fetched.stdout + fetched.stderr
                )
        tmp = tempfile.mkdtemp(dir=cache_dir)
        try:
            subprocess.run(["dpkg-deb", "-x", str(debs[-1]), tmp], check=True)
            shutil.rmtree(cache_dir / "root", ignore_errors=True)
            os.rename(tmp, cache_dir / "root")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return DynamicBusybox(binary, _ldd(binary))


# ---------------------------------------------------------------- layers


def _dirs_of(paths: Iterable[str]) -> list[Entry]:
    """Dir entries for every parent directory of ``paths``, parents first."""
    seen: set[str] = set()
    for path in paths:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            seen.add("/".join(parts[:i]))
    return [Dir(d) for d in sorted(seen)]


def busybox_base_layer(bb: DynamicBusybox) -> Layer:
    """The rootfs of the default test image: dynamic busybox, all applets hard
    linked, its libraries, pgrep and ipcs, upstream busybox's passwd and group."""
    entries = busybox_entries(str(bb.binary), "all", BUSYBOX_PASSWD, BUSYBOX_GROUP)
    entries += [Dir("home"), Dir("usr/sbin"), Dir("var/www"), Dir("var/spool"), Dir("var/spool/mail")]
    entries += [File("bin/pgrep", PGREP, mode=0o755), File("bin/ipcs", IPCS, mode=0o755)]
    entries += _dirs_of(bb.libs)
    entries += [File(path, src.read_bytes(), mode=0o755) for path, src in sorted(bb.libs.items())]
    return Layer(entries)


def static_busybox_layer() -> Layer:
    """busybox-static with its applets: for the benchmark images that upstream builds on musl/uclibc."""
    return Layer(busybox_entries(BUSYBOX, "all", BUSYBOX_PASSWD, BUSYBOX_GROUP))


def nginx_layer(bb: DynamicBusybox, port: int) -> Layer:
    return Layer(
        [
            File("docker-entrypoint.sh", NGINX_ENTRYPOINT.format(port=port).encode(), mode=0o755),
            Dir("etc/nginx"),
            File("etc/nginx/README", f"busybox httpd plays nginx here, on port {port}\n".encode()),
            Dir("usr/sbin"),
            File("usr/sbin/nginx", bb.binary.read_bytes(), mode=0o755),
            Dir("usr/share"),
            Dir("usr/share/nginx"),
            Dir("usr/share/nginx/html"),
            File("usr/share/nginx/html/index.html", INDEX_HTML),
            File("usr/share/nginx/html/50x.html", b"<html><body><h1>error</h1></body></html>\n"),
            Dir("var/log"),
            Dir("var/log/nginx"),
            Dir("var/run"),
        ]
    )


def httpd_layer() -> Layer:
    return Layer(
        [
            Dir("usr/local"),
            Dir("usr/local/apache2"),
            Dir("usr/local/apache2/htdocs"),
            File("usr/local/apache2/htdocs/index.html", INDEX_HTML),
            Dir("usr/local/bin"),
            File("usr/local/bin/httpd-foreground", HTTPD_FOREGROUND, mode=0o755),
        ]
    )


def nonewprivs_layer() -> Layer:
    return Layer([Dir("usr/local"), Dir("usr/local/bin"), File("usr/local/bin/nnp", euid_printer(), mode=0o4755)])


def predefined_group_layer() -> Layer:
    """What ``adduser -u 1000 -D default-user; addgroup -g 50000 group-defined-in-image;
    addgroup default-user group-defined-in-image`` leaves in the image."""
    passwd = (*BUSYBOX_PASSWD, "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh")
    group = (*BUSYBOX_GROUP, "default-user:x:1000:", "group-defined-in-image:x:50000:default-user")
    return Layer(
        [
            Dir("etc"),
            File("etc/passwd", ("\n".join(passwd) + "\n").encode()),
            File("etc/group", ("\n".join(group) + "\n").encode()),
            Dir("home"),
            Dir("home/default-user", mode=0o755, uid=1000, gid=1000),
        ]
    )


def pause_layer(catatonit: str = CATATONIT) -> Layer:
    return Layer([File("pause", Path(catatonit).read_bytes(), mode=0o755), Dir("dev"), Dir("proc"), Dir("sys")])


def _arm64_stub(name: str, docker: bool) -> Image:
    """The arm64 entry of a multi-arch index: never pulled here, only listed."""
    return Image([Layer([File(name, b"")])], ImageConfig(cmd=["sh"]), architecture="arm64", variant="v8", docker=docker)


# ---------------------------------------------------------------- the set


def build_images(bb: DynamicBusybox, catatonit: str = CATATONIT) -> dict[str, Target]:
    """Every look-alike by its canonical reference (``host/repo:tag``)."""
    base = busybox_base_layer(bb)
    sh = ImageConfig(cmd=["sh"])

    def with_file(name: str) -> Image:
        return Image([base, Layer([File(name, b"")])], sh)

    def multiarch(name: str) -> Index:
        return Index([with_file(name), _arm64_stub(name, docker=False)])

    def user(spec: str) -> Image:
        return Image([base], ImageConfig(cmd=["sh"], user=spec))

    def nginx(port: int) -> Image:
        config = ImageConfig(
            entrypoint=["/docker-entrypoint.sh"], cmd=["nginx", "-g", "daemon off;"], exposed_ports=[f"{port}/tcp"]
        )
        return Image([base, nginx_layer(bb, port)], config)

    default = Image([base], sh, docker=True)
    tags = multiarch("same-image")
    pause_config = ImageConfig(entrypoint=["/pause", "-P"], cmd=None)
    pause = Index([Image([pause_layer(catatonit)], pause_config, docker=True)], docker=True)
    static = Image([static_busybox_layer()], sh)
    images: dict[str, Target] = {
        DEFAULT_IMAGE: Index([default, _arm64_stub("busybox", docker=True)], docker=True),
        NGINX_IMAGE: nginx(80),
        HOSTNET_NGINX_IMAGE: nginx(12003),
        HTTPD_IMAGE: Image(
            [base, httpd_layer()],
            ImageConfig(
                cmd=["httpd-foreground"],
                env=[DEFAULT_PATH.replace("PATH=", "PATH=/usr/local/apache2/bin:")],
                working_dir="/usr/local/apache2",
                exposed_ports=["80/tcp"],
            ),
        ),
        NONEWPRIVS_IMAGE: Image([base, nonewprivs_layer()], ImageConfig(cmd=["/usr/local/bin/nnp"])),
        f"{CRI_TOOLS}/test-image-user-uid:latest": user("1002"),
        f"{CRI_TOOLS}/test-image-user-username:latest": user("www-data"),
        f"{CRI_TOOLS}/test-image-user-uid-group:latest": user("1003:1004"),
        f"{CRI_TOOLS}/test-image-user-username-group:latest": user("www-data:1004"),
        f"{CRI_TOOLS}/test-image-predefined-group:latest": Image(
            [base, predefined_group_layer()], ImageConfig(cmd=["sh"], user="1000")
        ),
        f"{CRI_TOOLS}/test-image-latest:latest": with_file("test-image-latest"),
        f"{CRI_TOOLS}/test-image-1:latest": with_file("test-image-1"),
        f"{CRI_TOOLS}/test-image-2:latest": with_file("test-image-2"),
        f"{CRI_TOOLS}/test-image-3:latest": with_file("test-image-3"),
        f"{CRI_TOOLS}/test-image-tag:test": multiarch("test"),
        f"{CRI_TOOLS}/test-image-tag:all": multiarch("all"),
        f"{CRI_TOOLS}/test-image-tags:1": tags,
        f"{CRI_TOOLS}/test-image-tags:2": tags,
        f"{CRI_TOOLS}/test-image-tags:3": tags,
        "docker.io/library/busybox:latest": default,
    }
    for name in PAUSE_IMAGES:
        images[name] = pause
    ecr = "public.ecr.aws/docker/library/busybox"
    for tag in ("1.35.0-glibc", "1-glibc"):
        images[f"{ecr}:{tag}"] = default
    for tag in ("1", "1-uclibc", "1-musl"):
        images[f"{ecr}:{tag}"] = static
    return images


def split_reference(ref: str) -> tuple[str, str, str]:
    """``host/repo/path:tag`` -> (host, repo/path, tag); the host is always given here."""
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    if not host or not repo or not tag or "/" in tag or "@" in ref:
        raise ValueError(f"not a host/repository:tag reference: {ref!r}")
    return host, repo, tag


def push_all(client: RegistryClient, images: Mapping[str, Target]) -> dict[str, str]:
    """Push every image under its repository path and tag (the host is what
    hosts.toml maps away); returns reference -> manifest digest."""
    out: dict[str, str] = {}
    for ref, target in images.items():
        _, repo, tag = split_reference(ref)
        out[ref] = client.push(repo, tag, target)
    return out


def hosts_toml(registry_url: str) -> str:
    """A containerd hosts.toml sending an upstream registry to ``registry_url`` (same paths and tags)."""
    return f'server = "{registry_url}"\n'


def write_hosts_tomls(config_dir: Path, registry_url: str, upstreams: Sequence[str] = UPSTREAM_REGISTRIES) -> None:
    for host in upstreams:
        (config_dir / host).mkdir(parents=True, exist_ok=True)
        (config_dir / host / "hosts.toml").write_text(hosts_toml(registry_url))
