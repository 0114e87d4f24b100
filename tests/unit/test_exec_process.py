"""The exec process read from config.json: parsed once per version of the file, a fresh copy each time."""

import json
import os
from pathlib import Path

from cri.runtime import exec_process
from cri.runtime.exec_process import container_process, write_process


def write_spec(bundle: Path, args: list[str], mtime_ns: int) -> None:
    path = bundle / "config.json"
    path.write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": args, "env": ["A=1"], "cwd": "/"}}))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_parsed_once_and_copied(tmp_path: Path) -> None:
    write_spec(tmp_path, ["sleep", "1"], 10**18)
    exec_process._process_json.cache_clear()
    first = container_process(str(tmp_path))
    first["args"] = ["mutated"]
    first["env"].append("B=2")
    again = container_process(str(tmp_path))
    assert again == {"args": ["sleep", "1"], "env": ["A=1"], "cwd": "/"}  # the caller's changes stay its own
    assert exec_process._process_json.cache_info().hits == 1


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    write_spec(tmp_path, ["sleep", "1"], 10**18)
    assert container_process(str(tmp_path))["args"] == ["sleep", "1"]
    write_spec(tmp_path, ["sleep", "22"], 10**18 + 1)
    assert container_process(str(tmp_path))["args"] == ["sleep", "22"]


def test_write_process(tmp_path: Path) -> None:
    write_process(str(tmp_path / "p.json"), {"args": ["true"], "terminal": False})
    assert json.loads((tmp_path / "p.json").read_text()) == {"args": ["true"], "terminal": False}
    fd = os.open(tmp_path / "q.json", os.O_WRONLY | os.O_CREAT, 0o600)
    write_process(fd, {"args": ["false"]})  # the fd mkstemp gave, written and closed
    assert json.loads((tmp_path / "q.json").read_text()) == {"args": ["false"]}
    assert not os.path.exists(f"/proc/self/fd/{fd}") or os.readlink(f"/proc/self/fd/{fd}") != str(tmp_path / "q.json")
