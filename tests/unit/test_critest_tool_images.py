"""The plan of hack/critest --images tools: which umoci steps the builder's targets become, how each
name is pushed, and the check of what the registry serves (no tools run here)."""

from pathlib import Path

import pytest

from tests.support import critest_tool_images as ti
from tests.support import oci_build as ob

BASE = ob.Layer([ob.Dir("bin"), ob.File("bin/sh", b"#!shell\n", mode=0o755)])


def with_file(name: str) -> ob.Image:
    return ob.Image([BASE, ob.Layer([ob.File(name, b"")])], ob.ImageConfig(cmd=["sh"]))


def images() -> dict[str, ob.Target]:
    stub = ob.Image([ob.Layer([ob.File("a", b"")])], architecture="arm64", variant="v8")
    shared = ob.Index([with_file("same"), stub])
    docker = ob.Image([BASE], docker=True)
    return {
        "reg.example/one:1": with_file("one"),
        "reg.example/user:1": ob.Image([BASE], ob.ImageConfig(user="1002")),
        "reg.example/tags:1": shared,
        "reg.example/tags:2": shared,
        "reg.example/docker:1": docker,
        "reg.example/docker-too:1": docker,
    }


def test_lower_layers_are_repacked_once_and_configs_are_their_own_tags() -> None:
    plan = ti.make_plan(images(), zstd=("reg.example/one:1",))
    # BASE once, then each one-file layer on top of it, and the stub's layer on the empty image
    assert len(plan.layers) == 4
    assert sum(step.base == ti.EMPTY_TAG for step in plan.layers) == 2
    assert set(plan.tars) == {step.diff_id for step in plan.layers}
    assert len(plan.configs) == 5  # one, user, same, the stub, docker (once)
    assert len({c.base for c in plan.configs}) == 4
    assert plan.steps_json() == ti.make_plan(images(), zstd=("reg.example/one:1",)).steps_json()


def test_one_target_is_one_tag_pushed_as_the_builder_made_it() -> None:
    plan = ti.make_plan(images(), zstd=("reg.example/one:1",))
    push = {p.ref: p for p in plan.pushes}
    assert push["reg.example/tags:1"].tag == push["reg.example/tags:2"].tag
    assert push["reg.example/tags:1"].index and not push["reg.example/one:1"].index
    assert push["reg.example/docker:1"].tag == push["reg.example/docker-too:1"].tag
    assert push["reg.example/docker:1"].docker and not push["reg.example/one:1"].docker
    assert push["reg.example/one:1"].zstd and not push["reg.example/user:1"].zstd
    (index,) = plan.indexes
    assert [platform for _, platform in index.entries] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    args = ti.skopeo_args(push["reg.example/tags:1"], Path("/l"), "127.0.0.1:5000")
    assert args[-2:] == [f"oci:/l:{index.tag}", "docker://127.0.0.1:5000/tags:1"]
    assert "--multi-arch" in args and "--format" not in args


def test_zstd_needs_an_oci_manifest() -> None:
    with pytest.raises(ValueError, match="zstd"):
        ti.make_plan(images(), zstd=("reg.example/docker:1",))


def test_config_args_set_what_the_builder_config_has() -> None:
    config = ob.ImageConfig(
        entrypoint=["/pause", "-P"],
        cmd=None,
        env=["PATH=/bin", "A=b c"],
        user="www-data:1004",
        working_dir="/w",
        exposed_ports=["80/tcp"],
        labels={"k": "v=w"},
        stop_signal="SIGQUIT",
    )
    args = ti.config_args(config, "amd64")
    assert args[args.index("--architecture") + 1] == "amd64"
    for want in (
        "--config.entrypoint=/pause",
        "--config.entrypoint=-P",
        "--config.env=A=b c",
        "--config.user=www-data:1004",
        "--config.workingdir=/w",
        "--config.exposedports=80/tcp",
        "--config.label=k=v=w",
        "--config.stopsignal=SIGQUIT",
    ):
        assert want in args
    assert not any(a.startswith("--config.cmd") for a in args)
    with pytest.raises(ValueError):
        ti.config_args(ob.ImageConfig(extra={"Healthcheck": {}}), "amd64")


def pushed(digest: str, image_id: str, layers: str = ob.OCI_LAYER_GZIP, docker: bool = False) -> ti.Pushed:
    kind = ob.DOCKER_MANIFEST if docker else ob.OCI_MANIFEST
    return ti.Pushed(digest, kind, image_id, kind, (layers,))


def test_check_finds_merged_and_split_images_and_wrong_formats() -> None:
    imgs = images()
    plan = ti.make_plan(imgs, zstd=("reg.example/one:1",))
    good = {
        "reg.example/one:1": pushed("m1", "i1", ob.OCI_LAYER_ZSTD),
        "reg.example/user:1": pushed("m2", "i2"),
        "reg.example/tags:1": pushed("m3", "i3"),
        "reg.example/tags:2": pushed("m3", "i3"),
        "reg.example/docker:1": pushed("m4", "i4", ob.DOCKER_LAYER_GZIP, docker=True),
        "reg.example/docker-too:1": pushed("m4", "i4", ob.DOCKER_LAYER_GZIP, docker=True),
    }
    assert ti.check(imgs, plan, good) == []
    bad = dict(good)
    bad["reg.example/tags:2"] = pushed("m5", "i3")  # one target, two manifests
    bad["reg.example/user:1"] = pushed("m2", "i1")  # two builder ids, one pushed id
    bad["reg.example/one:1"] = pushed("m1", "i1")  # gzip where zstd was asked for
    problems = ti.check(imgs, plan, bad)
    assert len(problems) == 3, problems
    assert any("must be one manifest" in p for p in problems)
    assert any("builder ids differ" in p for p in problems)
    assert any("+zstd" in p for p in problems)
