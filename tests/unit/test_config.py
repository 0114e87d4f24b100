"""Configuration: defaults, rendering, and the message for each kind of bad config."""

import io
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from cri import config as configmod
from cri.server.cli import main


def test_default_config_parses_back_to_defaults() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["config", "default"]) == 0
    text = out.getvalue()
    assert configmod.from_dict(tomllib.loads(text)) == configmod.Config()


def test_default_config_shows_every_key_with_a_comment() -> None:
    text = configmod.render_default()
    for key in (
        "socket",
        "root_dir",
        "state_dir",
        "level",
        "format",
        "address",
        "default_handler",
        "binary",
        "conf_dir",
        "bin_dirs",
        "registry_config_dir",
        "pull_progress_timeout_seconds",
        "max_concurrent_downloads",
    ):
        assert f"\n{key} = " in text, key
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"no comment above {line!r}"
    assert "[runtime.handlers.runc]" in text and "[runtime.handlers.crun]" in text


def test_defaults() -> None:
    c = configmod.Config()
    assert c.grpc.socket == "/run/crid/crid.sock"
    assert c.root_dir == "/var/lib/crid"
    assert c.runtime.default_handler == "runc"
    assert c.images.registry_config_dir == "/etc/crid/certs.d"
    assert c.handler_root("runc") == "/run/crid/runtime/runc"
    assert c.metrics.address.startswith("127.0.0.1:")
    assert c.cdi.spec_dirs == ["/etc/cdi", "/var/run/cdi"]  # the CDI library's, in its order
    assert configmod.from_dict({"cdi": {"spec_dirs": ["/x/", "/y"]}}).cdi.spec_dirs == ["/x", "/y"]


def _error(text: str) -> str:
    with pytest.raises(configmod.ConfigError) as err:
        configmod.from_dict(tomllib.loads(text), "/etc/x.toml")
    return str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rootdir = '/x'", "rootdir: unknown key"),
        ("[grpc]\nsockett = '/x'", "grpc.sockett: unknown key"),
        ("[nosuch]\na = 1", "nosuch: unknown key"),
        ("[runtime.handlers.runc]\nbinary = '/x'\nbinry = 1", "runtime.handlers.runc.binry: unknown key"),
        ("[log]\nlevel = 3", "log.level: Expected `str`, got `int`"),
        ("[log]\nformat = 'xml'", "log.format: must be one of 'logfmt', 'json' (got 'xml')"),
        ("[metrics]\nenabled = 'yes'", "metrics.enabled: Expected `bool`, got `str`"),
        ("[grpc]\nmax_message_mib = '16'", "grpc.max_message_mib: Expected `int`, got `str`"),
        ("[grpc]\nmax_message_mib = 1.5", "grpc.max_message_mib: Expected `int`, got `float`"),
        ("[grpc]\nmax_message_mib = 0", "grpc.max_message_mib: Expected `int` >= 1 (got 0)"),
        ("[cni]\nbin_dirs = ['/a', 2]", "cni.bin_dirs[1]: Expected `str`, got `int`"),
        ("grpc = 1", "grpc: must be a table (got 1)"),
        ("[runtime]\nhandlers = 1", "runtime.handlers: Expected `object`, got `int`"),
        ("[runtime.handlers]\nrunc = 5", "runtime.handlers.runc: must be a table (got 5)"),
        ("[metrics]\naddress = 'nowhere'", "metrics.address: must be HOST:PORT"),
        ("[metrics]\naddress = 'example.com:80'", "host must be an IP address"),
        ("[streaming]\naddress = '127.0.0.1:99999'", "streaming.address: port 99999 is out of range"),
        ("root_dir = 'relative'", "root_dir: must be an absolute path"),
        ("[images]\nmax_concurrent_downloads = 0", "images.max_concurrent_downloads"),
        ("[images]\npull_progress_timeout_seconds = -1", "images.pull_progress_timeout_seconds"),
        ("[runtime]\ndefault_handler = 'kata'", "default_handler 'kata' is not one of the handlers"),
        ("[runtime.handlers.Bad_Name]\nbinary = '/x'", "'Bad_Name' is not a DNS label"),
        ("[runtime.handlers.kata]\nroot = '/x'", "runtime.handlers.kata.binary: required key is missing"),
        ("[runtime]\ncgroup_driver = 'systemd'", "runtime.cgroup_driver"),
        ("[cni]\nbin_dirs = []", "at least one CNI bin dir"),
        ("[cdi]\nspec_dirs = ['cdi']", "cdi.spec_dirs: must be an absolute path"),
    ],
)
def test_bad_config_messages(text: str, expected: str) -> None:
    message = _error(text)
    assert message.startswith("/etc/x.toml: ")
    assert expected in message


def test_a_long_bad_value_is_cut_in_the_message() -> None:
    message = _error(f"[log]\nlevel = '{'x' * 5000}'")
    assert "(5002 characters)" in message and len(message) < 400


def test_every_problem_is_reported_at_once() -> None:
    message = _error("a = 1\n[log]\nlevel = 'loud'")
    assert "a: unknown key" in message and "log.level" in message


def test_invalid_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[grpc\n")
    with pytest.raises(configmod.ConfigError, match="not valid TOML"):
        configmod.load(str(f))


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(configmod.ConfigError, match="no such file"):
        configmod.load(str(tmp_path / "absent.toml"))


def test_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[grpc]\nsocket = '/a.sock'\n")
    c = configmod.load(str(f), {"grpc.socket": "/b.sock", "root_dir": "/r", "log.level": "debug"})
    assert (c.grpc.socket, c.root_dir, c.log.level) == ("/b.sock", "/r", "debug")
    assert c.handler_root("crun") == "/run/crid/runtime/crun"
    with pytest.raises(configmod.ConfigError, match="state_dir"):
        configmod.load(str(f), {"state_dir": "rel"})


def test_handlers_in_file_replace_the_default_set() -> None:
    c = configmod.from_dict(tomllib.loads("[runtime.handlers.runc]\nbinary = '/opt/runc'\nroot = '/r/runc'"))
    assert list(c.runtime.handlers) == ["runc"]
    assert c.handler_root("runc") == "/r/runc"


def test_config_check_cli(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(configmod.render_default())
    bad.write_text("[grpc]\nport = 1\n")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["config", "check", str(good)]) == 0
        assert main(["config", "check", str(bad)]) == 1
    assert "ok" in out.getvalue()
    assert "grpc.port: unknown key" in err.getvalue() and str(bad) in err.getvalue()
