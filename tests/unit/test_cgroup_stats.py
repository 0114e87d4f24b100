"""The readers of cgroup files, block I/O and the writable layer's filesystem, on
temporary trees standing for /sys/fs/cgroup, /sys and /proc/self/mountinfo."""

import os
from pathlib import Path

from cri.runtime import cgroup_stats
from cri.runtime.cgroup_stats import CgroupStats, DeviceIo, Pressure, PsiLine
from cri.runtime.pod_stats import fs_usage

PSI = "some avg10=1.50 avg60=0.20 avg300=0.05 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1200000\n"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


# --- cgroup files -----------------------------------------------------------------------------


def test_v1_hybrid_cgroup(tmp_path: Path) -> None:
    g = "kubepods/pod1"
    write(tmp_path, {
        f"memory/{g}/memory.usage_in_bytes": "104857600\n",
        f"memory/{g}/memory.max_usage_in_bytes": "209715200\n",
        f"memory/{g}/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
        f"memory/{g}/memory.failcnt": "3\n",
        f"memory/{g}/memory.kmem.usage_in_bytes": "4096\n",
        f"memory/{g}/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        f"memory/{g}/memory.stat": "cache 1\nrss 2\ntotal_cache 30000000\ntotal_rss 50000000\n"
                                   "total_mapped_file 1000\ntotal_inactive_file 20000000\ntotal_pgfault 77\n"
                                   "total_pgmajfault 5\ntotal_swap 0\n",
        f"cpuacct/{g}/cpuacct.usage": "5000000000\n",
        f"cpuacct/{g}/cpuacct.usage_user": "3000000000\n",
        f"cpuacct/{g}/cpuacct.usage_sys": "2000000000\n",
        f"cpu/{g}/cpu.stat": "nr_periods 10\nnr_throttled 4\nthrottled_time 1500000000\n",
        f"pids/{g}/pids.current": "7\n",
        f"pids/{g}/pids.max": "max\n",
        f"unified/{g}/cpu.pressure": PSI,
        f"unified/{g}/memory.pressure": PSI,
    })  # fmt: skip
    s = cgroup_stats.read(f"/{g}", str(tmp_path))
    assert (s.cpu_ns, s.cpu_user_ns, s.cpu_system_ns) == (5 * 10**9, 3 * 10**9, 2 * 10**9)
    assert (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_ns) == (10, 4, 1_500_000_000)
    assert (s.memory_usage, s.memory_max_usage, s.rss, s.cache) == (104857600, 209715200, 50_000_000, 30_000_000)
    assert s.working_set == 104857600 - 20_000_000 and s.memory_limit is None and s.available is None
    assert (s.failcnt, s.kernel, s.oom_kills, s.page_faults, s.major_page_faults) == (3, 4096, 2, 77, 5)
    assert (s.pids, s.pids_max) == (7, None)
    assert s.cpu_psi == Pressure(PsiLine(2_500_000, 1.5, 0.2, 0.05), PsiLine(1_200_000, 0.0, 0.0, 0.0))
    assert s.memory_psi is not None and s.io_psi is None  # no io.pressure here: not reported


def test_v2_cgroup(tmp_path: Path) -> None:
    g = "kubepods/pod2"
    write(tmp_path, {
        "cgroup.controllers": "cpu memory pids\n",
        f"{g}/memory.current": "1000\n",
        f"{g}/memory.max": "4000\n",
        f"{g}/memory.stat": "anon 600\nfile 300\nfile_mapped 10\ninactive_file 200\nkernel 50\npgfault 9\n"
                            "pgmajfault 1\n",
        f"{g}/memory.events": "low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\n",
        f"{g}/cpu.stat": "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\nnr_periods 3\nnr_throttled 1\n"
                         "throttled_usec 40\n",
        f"{g}/pids.current": "2\n",
        f"{g}/pids.max": "100\n",
        f"{g}/io.pressure": PSI,
        f"{g}/cpu.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\n",  # older kernels: no "full"
    })  # fmt: skip
    s = cgroup_stats.read(g, str(tmp_path))
    assert (s.cpu_ns, s.cpu_user_ns, s.cfs_throttled_ns) == (2_000_000, 1_500_000, 40_000)
    assert (s.memory_usage, s.working_set, s.rss, s.cache, s.kernel) == (1000, 800, 600, 300, 50)
    assert (s.memory_limit, s.available, s.failcnt, s.oom_kills) == (4000, 3200, 6, 1)
    assert (s.pids, s.pids_max, s.memory_max_usage) == (2, 100, None)
    assert s.cpu_psi is not None and s.cpu_psi.full is None and s.io_psi is not None


def test_missing_cgroup_reads_as_unknown(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    s = cgroup_stats.read("/gone", str(tmp_path))
    assert s.cpu_ns is None and s.memory_usage is None and s.working_set is None and s.cpu_psi is None


def test_parsers_tolerate_junk() -> None:
    assert cgroup_stats.parse_pressure("some avg10=x total=1\n") is None
    assert cgroup_stats.parse_pressure(None) is None
    assert cgroup_stats.parse_int("max\n") is None and cgroup_stats.parse_int("12\n") == 12
    assert cgroup_stats.parse_flat("a 1\nb x\nc\n") == {"a": 1}
    limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n"  # noqa: E501
    assert cgroup_stats.parse_open_files_limit(limits) == 1024
    assert cgroup_stats.parse_open_files_limit("Max open files  unlimited unlimited files\n") is None


def test_total_of_containers() -> None:
    a = CgroupStats(1, cpu_ns=10, memory_usage=100, working_set=90, pids=2, memory_limit=1000)
    b = CgroupStats(2, cpu_ns=5, memory_usage=50, rss=7, pids=1, cpu_psi=Pressure(PsiLine(1, 0, 0, 0), None))
    t = cgroup_stats.total([a, b], now=3)
    assert (t.timestamp, t.cpu_ns, t.memory_usage, t.working_set, t.rss, t.pids) == (3, 15, 150, 90, 7, 3)
    assert t.memory_limit is None and t.cpu_psi is None and t.cache is None  # limits and pressure do not add up


# --- block I/O and the writable layer's filesystem ---------------------------------------------


NO_MOUNTS = "/nonexistent/mountinfo"  # not the host's: its devices would name the fake ones


def fake_sys(root: Path, devices: dict[str, str]) -> str:
    """A /sys with /sys/dev/block/MAJ:MIN/uevent for each device."""
    for dev, name in devices.items():
        write(root, {f"dev/block/{dev}/uevent": f"MAJOR={dev.split(':')[0]}\nMINOR={dev.split(':')[1]}\n"
                                                f"DEVNAME={name}\nDEVTYPE=disk\n"})  # fmt: skip
    return str(root)


def test_v1_blkio_recursive_throttle_files(tmp_path: Path) -> None:
    g = "kubepods/pod1/ctr"
    write(tmp_path / "cg", {
        "memory/.keep": "",
        f"blkio/{g}/blkio.throttle.io_service_bytes_recursive":
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 12288\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 12288\n"
            "253:3 Read 0\n253:3 Write 512\nTotal 12800\n",
        f"blkio/{g}/blkio.throttle.io_service_bytes": "8:0 Read 1\n",  # the cgroup's own: not these
        f"blkio/{g}/blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
    })  # fmt: skip
    sys = fake_sys(tmp_path / "sys", {"8:0": "sda"})
    sda, dm = cgroup_stats.read_io(f"/{g}", str(tmp_path / "cg"), sys, NO_MOUNTS) or []
    assert sda == DeviceIo(
        "/dev/sda", 8, 0, {"Read": 4096, "Write": 8192, "Sync": 12288, "Async": 0, "Discard": 0, "Total": 12288},
        {"Read": 1, "Write": 2, "Total": 3},
    )  # fmt: skip
    assert (dm.device, dm.bytes, dm.ios) == ("253:3", {"Read": 0, "Write": 512}, {})  # no uevent: MAJ:MIN


def test_v1_blkio_without_recursive_files_and_without_controller(tmp_path: Path) -> None:
    write(tmp_path, {"memory/.keep": "", "blkio/c/blkio.throttle.io_service_bytes": "8:16 Write 5\nTotal 5\n",
                     "blkio/c/blkio.throttle.io_serviced": "8:16 Write 1\n"})  # fmt: skip
    (only,) = cgroup_stats.read_io("c", str(tmp_path), fake_sys(tmp_path / "sys", {"8:16": "sdb"}), NO_MOUNTS) or []
    assert (only.device, only.bytes, only.ios) == ("/dev/sdb", {"Write": 5}, {"Write": 1})
    assert cgroup_stats.read_io("gone", str(tmp_path)) is None  # nothing to read: no samples, not zeros
    write(tmp_path, {"blkio/idle/blkio.throttle.io_service_bytes_recursive": "Total 0\n"})
    assert cgroup_stats.read_io("idle", str(tmp_path)) == []  # no I/O yet (or blk-throttle not active)


def test_v2_io_stat(tmp_path: Path) -> None:
    write(tmp_path, {
        "cgroup.controllers": "cpu io memory\n",
        "pod/c/io.stat": "259:0 rbytes=1048576 wbytes=2048 rios=16 wios=2 dbytes=0 dios=0\n"
                         "7:1 rbytes=x wbytes=1\n\n",
    })  # fmt: skip
    sys = fake_sys(tmp_path / "sys", {"259:0": "nvme0n1"})
    loop, nvme = cgroup_stats.read_io("/pod/c", str(tmp_path), sys, NO_MOUNTS) or []
    assert nvme == DeviceIo("/dev/nvme0n1", 259, 0, {"Read": 1048576, "Write": 2048}, {"Read": 16, "Write": 2})
    assert (loop.device, loop.bytes, loop.ios) == ("7:1", {"Write": 1}, {})  # a junk value is left out
    assert cgroup_stats.read_io("/pod/gone", str(tmp_path)) is None


def test_device_names(tmp_path: Path) -> None:
    sys = fake_sys(tmp_path / "sys", {"254:0": "vda"})
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "30 27 0:35 /@home /home rw,relatime shared:2 - btrfs /dev/nvme0n1p3 rw,subvol=/@home\n"
    )
    assert cgroup_stats.device_name(254, 0, sys, str(mountinfo)) == "/dev/vda"
    assert cgroup_stats.device_name(0, 35, sys, str(mountinfo)) == "/dev/nvme0n1p3"  # btrfs subvolume: its source
    assert cgroup_stats.device_name(0, 99, sys, str(mountinfo)) == "0:99"
    assert cgroup_stats.parse_uevent("MAJOR=8\njunk\nDEVNAME=sda\n") == {"MAJOR": "8", "DEVNAME": "sda"}
    assert cgroup_stats.mount_source("0:21", "broken line\n") is None


def test_fs_usage_of_the_writable_layer(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "data").mkdir(parents=True)
    (upper / "data" / "f").write_bytes(b"x" * 65536)
    st, vfs = os.stat(upper), os.statvfs(upper)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    fs = fs_usage(str(upper), fake_sys(tmp_path / "sys", {dev: "vdz"}), NO_MOUNTS)
    assert fs is not None and fs.device == "/dev/vdz"
    assert (fs.limit_bytes, fs.inodes_total) == (vfs.f_blocks * vfs.f_frsize, vfs.f_files)
    assert abs(fs.inodes_free - vfs.f_ffree) < 100  # others use the same filesystem meanwhile
    assert fs.usage_bytes >= 65536  # the file's blocks, and the directory's
    assert fs_usage(str(tmp_path / "gone")) is None
