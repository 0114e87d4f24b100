"""CNI config loading, validation, selection, reload and NetworkReady."""

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cri.cni import CniManager
from cri.cni.config import ConfigError, ConfigSource, load_file, parse_conflist
from tests.support import cni_plugins


def conflist(name: str = "net", version: str = "1.0.0", *types: str) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "plugins": [{"type": t} for t in (types or ("bridge",))]}


def write(path: Path, obj: Any) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def touch_later(path: Path) -> None:
    # make sure the mtime moves even on coarse clocks
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    conf, bins = tmp_path / "net.d", tmp_path / "bin"
    conf.mkdir()
    cni_plugins.install(bins, "bridge", "host-local", "portmap")
    return conf, bins


def manager(dirs: tuple[Path, Path], tmp_path: Path) -> CniManager:
    return CniManager(str(dirs[0]), [str(tmp_path / "nobin"), str(dirs[1])], str(tmp_path / "cache"))


def test_parse_conflist_valid() -> None:
    net = parse_conflist(
        {
            "cniVersion": "0.4.0",
            "name": "n1",
            "disableCheck": "true",
            "plugins": [
                {"type": "bridge", "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}},
            ],
        },
        "/x.conflist",
    )
    assert net.name == "n1" and net.cni_version == "0.4.0" and net.disable_check
    assert [p.type for p in net.plugins] == ["bridge", "portmap"]
    assert net.plugins[1].capabilities == frozenset({"portMappings"})
    assert net.binaries() == ["bridge", "host-local", "portmap"]


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ([], "not a JSON object"),
        ({"cniVersion": "1.0.0", "plugins": [{"type": "b"}]}, "no network 'name'"),
        ({"name": "-bad", "cniVersion": "1.0.0", "plugins": [{"type": "b"}]}, "is invalid"),
        ({"name": "n", "plugins": [{"type": "b"}]}, "no 'cniVersion'"),
        ({"name": "n", "cniVersion": "9.9.9", "plugins": [{"type": "b"}]}, "not supported"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": []}, "no 'plugins'"),
        ({"name": "n", "cniVersion": "1.0.0"}, "no 'plugins'"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": [{"bridge": "x"}]}, "plugins[0]: no plugin 'type'"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "../evil"}]}, "not a file name"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "b", "capabilities": []}]}, "capabilities"),
        ({"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "b", "ipam": {"type": ""}}]}, "ipam"),
        ({"name": "n", "cniVersion": "1.0.0", "disableCheck": "maybe", "plugins": [{"type": "b"}]}, "disableCheck"),
    ],
)
def test_parse_conflist_invalid(obj: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_conflist(obj, "/x")
    assert needle in str(e.value)


def test_single_conf_is_wrapped(tmp_path: Path) -> None:
    p = write(tmp_path / "a.conf", {"cniVersion": "0.3.1", "name": "single", "type": "bridge", "bridge": "b0"})
    net = load_file(str(p))
    assert net.name == "single" and net.cni_version == "0.3.1"
    assert net.raw["plugins"] == [{"cniVersion": "0.3.1", "name": "single", "type": "bridge", "bridge": "b0"}]


def test_conflist_in_a_conf_file_is_rejected(tmp_path: Path) -> None:
    p = write(tmp_path / "a.conf", conflist())
    with pytest.raises(ConfigError, match=r"perhaps this is a \.conflist"):
        load_file(str(p))


def test_first_valid_file_wins(tmp_path: Path) -> None:
    write(tmp_path / "00-broken.conflist", "{not json")
    write(tmp_path / "05-notype.conf", {"cniVersion": "1.0.0", "name": "x"})
    write(tmp_path / "10-b.conflist", conflist("bee"))
    write(tmp_path / "20-a.conf", {"cniVersion": "1.0.0", "name": "aye", "type": "bridge"})
    write(tmp_path / "01-ignored.txt", conflist("txt"))
    (tmp_path / "02-dir.conflist").mkdir()
    loaded = ConfigSource(str(tmp_path)).current()
    assert loaded.network is not None and loaded.network.name == "bee"


def test_json_extension_is_a_single_conf(tmp_path: Path) -> None:
    write(tmp_path / "50.json", {"cniVersion": "1.0.0", "name": "j", "type": "bridge"})
    loaded = ConfigSource(str(tmp_path)).current()
    assert loaded.network is not None and loaded.network.name == "j"


def test_no_valid_file_names_the_problems(tmp_path: Path) -> None:
    write(tmp_path / "a.conflist", "{")
    write(tmp_path / "b.conflist", {"name": "n", "plugins": [{"type": "x"}]})
    loaded = ConfigSource(str(tmp_path)).current()
    assert loaded.network is None
    assert "a.conflist: invalid JSON" in loaded.problem
    assert "b.conflist: no 'cniVersion'" in loaded.problem


def test_reload_on_change_and_cheap_when_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = ConfigSource(str(tmp_path))
    assert src.current().network is None
    f = write(tmp_path / "10.conflist", conflist("one"))
    first = src.current()
    assert first.network is not None and first.network.name == "one"
    assert src.current() is first  # unchanged: the same object, no re-parse

    write(f, conflist("two"))
    touch_later(f)
    assert (n := src.current().network) is not None and n.name == "two"

    write(tmp_path / "05.conflist", conflist("earlier"))
    assert (n := src.current().network) is not None and n.name == "earlier"

    (tmp_path / "05.conflist").unlink()
    assert (n := src.current().network) is not None and n.name == "two"

    f.unlink()
    assert src.current().network is None


def test_missing_conf_dir(tmp_path: Path) -> None:
    loaded = ConfigSource(str(tmp_path / "nope")).current()
    assert loaded.network is None and "does not exist" in loaded.problem


def test_status_ready(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    write(dirs[0] / "10.conflist", conflist("n", "1.0.0", "bridge", "portmap"))
    c = manager(dirs, tmp_path).status()
    assert c.ready and c.reason == ""


def test_status_no_config(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    c = manager(dirs, tmp_path).status()
    assert not c.ready and c.reason == "NetworkPluginNotReady"
    assert "no network config found in" in c.message and str(dirs[0]) in c.message


def test_status_invalid_config(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    write(dirs[0] / "10.conflist", {"name": "n", "cniVersion": "1.0.0", "plugins": "bridge"})
    c = manager(dirs, tmp_path).status()
    assert not c.ready and c.reason == "NetworkPluginNotReady" and "10.conflist: no 'plugins'" in c.message


def test_status_missing_binary_then_installed(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    obj = conflist("n", "1.0.0", "bridge", "flannel")
    obj["plugins"][0]["ipam"] = {"type": "dhcp"}
    write(dirs[0] / "10.conflist", obj)
    m = manager(dirs, tmp_path)
    c = m.status()
    assert not c.ready and c.reason == "NetworkPluginNotReady"
    assert "dhcp, flannel" in c.message and str(dirs[1]) in c.message and str(tmp_path / "nobin") in c.message
    cni_plugins.install(dirs[1], "flannel", "dhcp")
    assert m.status().ready  # binaries are looked up on every call, without a conf change


def test_manifest_conflist_is_valid() -> None:
    path = Path(__file__).parents[2] / "manifests" / "cni" / "10-crid-bridge.conflist"
    net = load_file(str(path))
    assert net.name == "crid" and net.cni_version == "1.0.0"
    assert net.disable_check  # portmap 1.1.1's CHECK looks for ip6tables chains an IPv4-only pod never has
    assert [p.type for p in net.plugins] == ["bridge", "portmap"]
    bridge: dict[str, object] = dict(net.plugins[0].conf)  # the bridge plugin's own keys, unread by crid
    assert bridge["bridge"] == "crid0" and bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert net.plugins[1].capabilities == frozenset({"portMappings"})
