"""Fake CNI plugins for tests: small Python scripts written into a bin dir.

Each fake logs every call (command, CNI_* and crid's mark environment, stdin config) as one
JSON line and behaves as its config's ``fake`` object says:

- ``mode``: ``ok`` (default), ``error`` (CNI JSON error with ``code``, ``msg``,
  ``details``), ``garbage`` (non-JSON stdout and a stderr line, exit 1),
  ``hang`` (starts a ``sleep`` child, writes both pids to ``pidfile``, sleeps);
- ``on``: the commands the mode applies to (default: all); others succeed;
- ``while``: a file; the mode applies only while it exists;
- ``ip``: the address an ``ok`` ADD without prevResult returns (default 10.22.0.5/24);
- ``addIp``: an address an ``ok`` ADD appends to prevResult.

A successful ADD echoes prevResult (spec: pass it through) or builds a result
in the config's cniVersion shape. VERSION answers ``FAKE_VERSIONS``.
"""

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

FAKE_VERSIONS = ["0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]

_SCRIPT = r"""#!__PYTHON__
import fcntl, ipaddress, json, os, subprocess, sys, time

VERSIONS = __VERSIONS__
cmd = os.environ.get("CNI_COMMAND", "")
data = sys.stdin.read()
if cmd == "VERSION":
    print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": VERSIONS}))
    sys.exit(0)
conf = json.loads(data)
fake = conf.get("fake", {})
env = {k: os.environ.get(k, None) for k in
       ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", "CRID_CNI_CACHE")}
if fake.get("log"):
    with open(fake["log"], "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"plugin": conf.get("type"), "command": cmd, "env": env, "stdin": conf}) + "\n")
mode = fake.get("mode", "ok")
if fake.get("on") and cmd not in fake["on"]:
    mode = "ok"
if fake.get("while") and not os.path.exists(fake["while"]):
    mode = "ok"
version = conf.get("cniVersion", "1.0.0")
if mode == "error":
    print(json.dumps({"cniVersion": version, "code": fake.get("code", 100), "msg": fake.get("msg", "fake failure"),
                      "details": fake.get("details", "")}))
    sys.exit(1)
if mode == "garbage":
    print("this is not json")
    print("fake plugin: something broke on stderr", file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    child = subprocess.Popen(["sleep", "1000"])
    with open(fake["pidfile"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(1000)
if cmd != "ADD":
    sys.exit(0)

def vfield(addr):
    return {"version": str(ipaddress.ip_interface(addr).version)} if version in ("0.3.0", "0.3.1", "0.4.0") else {}

prev = conf.get("prevResult")
if prev is not None:
    result = prev
    if fake.get("addIp"):
        ip = {**vfield(fake["addIp"]), "address": fake["addIp"]}
        if len(result.get("interfaces", [])) > 1:
            ip["interface"] = 1
        result.setdefault("ips", []).append(ip)
elif version in ("0.1.0", "0.2.0"):
    ip = fake.get("ip", "10.22.0.5/24")
    result = {"cniVersion": version, "ip4": {"ip": ip, "gateway": "10.22.0.1", "routes": [{"dst": "0.0.0.0/0"}]}}
else:
    ip = fake.get("ip", "10.22.0.5/24")
    result = {
        "cniVersion": version,
        "interfaces": [{"name": "fakebr0"}, {"name": os.environ.get("CNI_IFNAME", ""),
                                             "sandbox": os.environ.get("CNI_NETNS", "")}],
        "ips": [{**vfield(ip), "address": ip, "gateway": "10.22.0.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }
print(json.dumps(result))
"""


def install(bin_dir: Path, *names: str, versions: list[str] | None = None) -> None:
    """Write a fake plugin called ``name`` for each name into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    text = _SCRIPT.replace("__PYTHON__", sys.executable).replace("__VERSIONS__", json.dumps(versions or FAKE_VERSIONS))
    for name in names:
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def calls(log: Path) -> list[dict[str, Any]]:
    """The logged calls, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
