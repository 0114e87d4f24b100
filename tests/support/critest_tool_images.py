"""critest's look-alike images made by umoci and skopeo instead of crid's builder (``hack/critest --images tools``).

The files are the builder's (:func:`critest_images.build_images`), the images are the tools':

- every builder layer's tar is extracted with GNU tar into a bundle that ``umoci unpack`` made of the
  image below it, and ``umoci repack`` writes the layer (umoci's tar: its own order, hard links to
  the first name, no entries for unchanged parent dirs), manifest and config; images sharing lower
  layers are repacked from the same lower tag, so they share those blobs, as the builder's do;
- ``umoci config`` sets the runtime config (User, Env, Entrypoint, Cmd, WorkingDir, ports, the
  architecture), checked against the builder's afterwards;
- an index (umoci makes none) is an OCI image index blob written here, with each entry's platform,
  and added to the layout's ``index.json``; ``skopeo copy --multi-arch all`` pushes it;
- the builder's Docker-format targets (the default busybox list and image, pause) are pushed with
  ``--format v2s2``: skopeo converts the manifests and the list; :data:`ZSTD_NAMES` are pushed
  with ``--dest-compress-format zstd``: skopeo recompresses their layers.

All images are tags of one OCI layout, cached as ``<cache>/layout-<key>``; the key hashes this
module, the plan (builder layers' diff ids, the umoci config arguments, the indexes) and the
versions of umoci and GNU tar. Pushing happens every run; each ``skopeo copy`` gets an empty blob
info cache, so it never mounts a blob of another repository instead of recompressing.
"""

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support import oci_build as ob
from tests.support.cache_lock import locked
from tests.support.corpus.tools import Tools, missing_tools
from tests.support.critest_images import CRI_TOOLS, HTTPD_IMAGE, split_reference
from tests.support.registry import Registry
from tests.support.registry_client import RegistryClient

TOOLS = ("umoci", "skopeo", "tar", "unshare")
ZSTD_NAMES = (HTTPD_IMAGE, f"{CRI_TOOLS}/test-image-user-uid:latest")  # one tag in their repository each
EMPTY_TAG = "empty"
PLAN_FILE = "plan.json"
CREATED = ob.CREATED
PUSH_THREADS = 4

Log = Callable[[str], None]


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class LayerStep:
    """``tag`` = ``base`` + the builder layer ``diff_id``, repacked by umoci."""

    tag: str
    base: str
    diff_id: str


@dataclass(frozen=True)
class ConfigStep:
    """``tag`` = ``base`` with ``umoci config ARGS``; ``expect`` is the builder's config object."""

    tag: str
    base: str
    args: tuple[str, ...]
    expect: dict[str, Any]
    architecture: str


@dataclass(frozen=True)
class IndexStep:
    """``tag`` = an OCI index of the images ``entries`` (tag, platform), written by hand."""

    tag: str
    entries: tuple[tuple[str, dict[str, str]], ...]


@dataclass(frozen=True)
class Push:
    """``ref`` (host/repo:tag) is pushed from the layout's ``tag``."""

    ref: str
    tag: str
    index: bool
    docker: bool  # --format v2s2
    zstd: bool  # --dest-compress-format zstd


@dataclass
class Plan:
    layers: list[LayerStep] = field(default_factory=list)
    configs: list[ConfigStep] = field(default_factory=list)
    indexes: list[IndexStep] = field(default_factory=list)
    pushes: list[Push] = field(default_factory=list)
    tars: dict[str, ob.Layer] = field(default_factory=dict)  # diff id -> builder layer

    def steps_json(self) -> str:
        steps = {
            "layers": [asdict(s) for s in self.layers],
            "configs": [asdict(s) for s in self.configs],
            "indexes": [asdict(s) for s in self.indexes],
        }
        return json.dumps(steps, sort_keys=True)


def _tag(kind: str, *parts: object) -> str:
    return f"{kind}-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def config_args(config: ob.ImageConfig, architecture: str) -> list[str]:
    """``umoci config`` arguments that give ``config`` (and the image's architecture) to an image
    whose config is still umoci's empty one."""
    if config.extra:
        raise ValueError(f"umoci config cannot set {sorted(config.extra)}")
    args = ["--created", CREATED, "--history.created", CREATED, "--history.created_by", "umoci config"]
    args += ["--os", "linux", "--architecture", architecture]
    if config.user is not None:
        args.append(f"--config.user={config.user}")
    for port in config.exposed_ports:
        args.append(f"--config.exposedports={port}")
    for env in config.env or []:
        args.append(f"--config.env={env}")
    # "=" form: a value such as "-P" must not read as a flag
    for word in config.entrypoint or []:
        args.append(f"--config.entrypoint={word}")
    for word in config.cmd or []:
        args.append(f"--config.cmd={word}")
    for volume in config.volumes:
        args.append(f"--config.volume={volume}")
    if config.working_dir is not None:
        args.append(f"--config.workingdir={config.working_dir}")
    for key, value in config.labels.items():
        args.append(f"--config.label={key}={value}")
    if config.stop_signal is not None:
        args.append(f"--config.stopsignal={config.stop_signal}")
    return args


class _Planner:
    def __init__(self) -> None:
        self.plan = Plan()
        self._seen: set[str] = set()

    def _once(self, tag: str) -> bool:
        if tag in self._seen:
            return False
        self._seen.add(tag)
        return True

    def image(self, image: ob.Image) -> str:
        if image.os != "linux" or image.annotations or image.extra_config:
            raise ValueError("umoci config cannot make this image (os, manifest annotations or extra config)")
        base = EMPTY_TAG
        for layer in image.layers:
            tag = _tag("layers", base, layer.diff_id)
            if self._once(tag):
                self.plan.layers.append(LayerStep(tag, base, layer.diff_id))
                self.plan.tars[layer.diff_id] = layer
            base = tag
        args = tuple(config_args(image.config, image.architecture))
        tag = _tag("image", base, args)
        if self._once(tag):
            self.plan.configs.append(ConfigStep(tag, base, args, image.config.to_json(), image.architecture))
        return tag

    def index(self, index: ob.Index) -> str:
        if index.annotations or index.descriptor_annotations or index.platforms:
            raise ValueError("only plain indexes are made here")
        entries = tuple((self.image(image), image.platform) for image in index.manifests)
        tag = _tag("index", entries)
        if self._once(tag):
            self.plan.indexes.append(IndexStep(tag, entries))
        return tag


def make_plan(images: Mapping[str, ob.Target], zstd: Sequence[str] = ZSTD_NAMES) -> Plan:
    """What umoci must make for ``images`` (name -> builder target), and how each name is pushed."""
    planner = _Planner()
    for ref, target in images.items():
        is_index = isinstance(target, ob.Index)
        tag = planner.index(target) if isinstance(target, ob.Index) else planner.image(target)
        if ref in zstd and target.docker:
            raise ValueError(f"{ref}: zstd layers need an OCI manifest")
        planner.plan.pushes.append(Push(ref, tag, is_index, target.docker, ref in zstd))
    return planner.plan


# ---------------------------------------------------------------- building the layout


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def tag_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    for desc in _read_json(layout / "index.json")["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(desc)
    raise KeyError(f"{layout}: no tag {tag}")


def _build(plan: Plan, tools: Tools, layout: Path, work: Path) -> None:
    tools.umoci("init", "--layout", str(layout))
    tools.umoci("new", "--image", f"{layout}:{EMPTY_TAG}")
    (work / "tars").mkdir()
    for step in plan.layers:
        bundle = work / "bundle"
        tools.umoci("unpack", "--image", f"{layout}:{step.base}", str(bundle))
        layer = plan.tars[step.diff_id]
        if any(n.rpartition("/")[2].startswith(".wh.") for n in layer.names()):
            raise ValueError(f"layer {step.diff_id} has whiteouts: GNU tar would extract them as files")
        tar = work / "tars" / f"{step.diff_id.removeprefix('sha256:')}.tar"
        tar.write_bytes(layer.tar)
        extract = ["tar", "--extract", "--file", str(tar), "--directory", str(bundle / "rootfs")]
        extract += ["--same-owner", "--same-permissions", "--numeric-owner", "--xattrs", "--xattrs-include=*"]
        tools.run(extract, varlib=False)
        history = ["--history.created", CREATED, "--history.created_by", f"GNU tar -x of builder layer {step.diff_id}"]
        tools.umoci("repack", *history, "--image", f"{layout}:{step.tag}", str(bundle))
        shutil.rmtree(bundle)
    for c in plan.configs:
        tools.umoci("config", "--image", f"{layout}:{c.base}", "--tag", c.tag, *c.args)
        manifest = _read_json(_blob(layout, tag_descriptor(layout, c.tag)["digest"]))
        config = _read_json(_blob(layout, manifest["config"]["digest"]))
        got = (config.get("config") or {}, config.get("architecture"))
        if got != (c.expect, c.architecture):
            raise RuntimeError(f"umoci config made {got}, the builder's is {(c.expect, c.architecture)}")
    # by hand, after umoci's last change of index.json
    index_json = _read_json(layout / "index.json")
    for index in plan.indexes:
        manifests = []
        for tag, platform in index.entries:
            desc = tag_descriptor(layout, tag)
            desc.pop("annotations", None)
            manifests.append({**desc, "platform": platform})
        data = ob.canonical_json({"schemaVersion": 2, "mediaType": ob.OCI_INDEX, "manifests": manifests})
        _blob(layout, ob.sha256_digest(data)).write_bytes(data)
        index_json["manifests"].append(
            {
                "mediaType": ob.OCI_INDEX,
                "digest": ob.sha256_digest(data),
                "size": len(data),
                "annotations": {"org.opencontainers.image.ref.name": index.tag},
            }
        )
    (layout / "index.json").write_bytes(ob.canonical_json(index_json))


def cache_key(plan: Plan, tools: Tools) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(plan.steps_json().encode())
    for name in ("umoci", "tar"):
        h.update(tools.version(name).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Made:
    layout: Path
    plan: Plan
    cached: bool
    seconds: float


def ensure(images: Mapping[str, ob.Target], cache: Path, log: Log = print) -> Made:
    """The layout of ``images`` made by umoci: from ``cache`` when it has one of this key, else built
    (in a work dir there, renamed when complete; older layouts are removed)."""
    missing = missing_tools(TOOLS)
    if missing:
        raise RuntimeError(f"missing: {', '.join(missing)}")
    t0 = time.monotonic()
    plan = make_plan(images)
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache):
        work = Path(tempfile.mkdtemp(prefix="work-", dir=cache))
        try:
            lines: list[str] = []

            def record(line: str) -> None:
                lines.append(line)
                log(line)

            tools = Tools(work / "tools", record)
            final = cache / f"layout-{cache_key(plan, tools)}"
            if (final / PLAN_FILE).exists():
                return Made(final, plan, True, time.monotonic() - t0)
            layout = work / "layout"
            _build(plan, tools, layout, work)
            record(f"made {len(plan.layers)} layers, {len(plan.configs)} images, {len(plan.indexes)} indexes")
            (layout / "build.log").write_text("\n".join(lines) + "\n")
            (layout / PLAN_FILE).write_text(plan.steps_json() + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.rename(layout, final)
            for old in cache.iterdir():
                if old.name.startswith(("layout-", "work-")) and old not in (final, work):
                    shutil.rmtree(old, ignore_errors=True)
            return Made(final, plan, False, time.monotonic() - t0)
        finally:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- pushing and checking


@dataclass(frozen=True)
class Pushed:
    """What the registry serves for a name: top manifest digest and type, and of its linux/amd64
    image the config digest (the image id), manifest type and layer types."""

    digest: str
    media_type: str
    image_id: str
    image_media_type: str
    layer_types: tuple[str, ...]


def skopeo_args(push: Push, layout: Path, registry_host: str) -> list[str]:
    _, repo, tag = split_reference(push.ref)
    args = ["copy", "--quiet", "--dest-tls-verify=false"]
    if push.index:
        args += ["--multi-arch", "all"]
    if push.docker:
        args += ["--format", "v2s2"]
    if push.zstd:
        args += ["--dest-compress-format", "zstd"]
    return [*args, f"oci:{layout}:{push.tag}", f"docker://{registry_host}/{repo}:{tag}"]


def resolve(client: RegistryClient, ref: str) -> Pushed:
    _, repo, tag = split_reference(ref)
    resp = client.get_manifest(repo, tag)
    top = json.loads(resp.body)
    media_type = top.get("mediaType") or resp.headers.get("content-type", "")
    doc, image_type = top, media_type
    if media_type in (ob.OCI_INDEX, ob.DOCKER_LIST):
        amd64 = [m for m in top["manifests"] if m.get("platform") == {"architecture": "amd64", "os": "linux"}]
        if len(amd64) != 1:
            raise RuntimeError(f"{ref}: {len(amd64)} linux/amd64 entries in its index")
        child = client.get_manifest(repo, amd64[0]["digest"])
        doc = json.loads(child.body)
        # umoci's manifests have no mediaType field (optional in OCI 1.0): the registry's type then
        image_type = doc.get("mediaType") or child.headers.get("content-type", "")
    layer_types = tuple(layer["mediaType"] for layer in doc["layers"])
    return Pushed(ob.sha256_digest(resp.body), media_type, doc["config"]["digest"], image_type, layer_types)


def _builder_id(target: ob.Target) -> str:
    return (target.image_for("amd64") if isinstance(target, ob.Index) else target).image_id


def check(images: Mapping[str, ob.Target], plan: Plan, pushed: Mapping[str, Pushed]) -> list[str]:
    """Why what was pushed is not what the names need: one image where the builder has one target,
    one image id exactly where the builder has one, the manifest formats and compressions asked for."""
    problems = []
    names = list(images)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if images[a] is images[b] and pushed[a].digest != pushed[b].digest:
                problems.append(f"{a} and {b} must be one manifest: {pushed[a].digest} != {pushed[b].digest}")
            same_id = _builder_id(images[a]) == _builder_id(images[b])
            if same_id != (pushed[a].image_id == pushed[b].image_id):
                problems.append(f"{a} and {b}: builder ids {'equal' if same_id else 'differ'}, pushed ones not")
    for push in plan.pushes:
        p = pushed[push.ref]
        want = ob.DOCKER_MANIFEST if push.docker else ob.OCI_MANIFEST
        if p.image_media_type != want:
            problems.append(f"{push.ref}: a {p.image_media_type}, not {want}")
        suffix = "+zstd" if push.zstd else ("tar.gzip" if push.docker else "+gzip")
        if not all(t.endswith(suffix) for t in p.layer_types):
            problems.append(f"{push.ref}: layers {p.layer_types}, not all *{suffix}")
    return problems


def push_all(
    images: Mapping[str, ob.Target], made: Made, registry: Registry, work: Path, log: Log = print
) -> dict[str, Pushed]:
    """``skopeo copy`` every name from the layout to ``registry``, then :func:`check` what it serves."""
    # one repository's pushes one after the other: concurrent ones can fail with "manifest blob unknown"
    by_repo: dict[str, list[tuple[int, Push]]] = {}
    for i, push in enumerate(made.plan.pushes):
        by_repo.setdefault(split_reference(push.ref)[1], []).append((i, push))

    def copy(pushes: list[tuple[int, Push]]) -> None:
        for i, push in pushes:
            # its own Tools: an empty /var/lib/containers (blob info cache) for each copy
            Tools(work / f"skopeo-{i:02d}", log).skopeo(*skopeo_args(push, made.layout, registry.host))

    with ThreadPoolExecutor(PUSH_THREADS) as pool:
        for future in [pool.submit(copy, pushes) for pushes in by_repo.values()]:
            future.result()
    client = registry.client()
    pushed = {push.ref: resolve(client, push.ref) for push in made.plan.pushes}
    problems = check(images, made.plan, pushed)
    if problems:
        raise RuntimeError("the images pushed by skopeo are not what critest needs:\n  " + "\n  ".join(problems))
    return pushed


def make_and_push(images: Mapping[str, ob.Target], registry: Registry, cache: Path, work: Path, log: Log) -> str:
    """:func:`ensure` then :func:`push_all`; says how long each took."""
    made = ensure(images, cache, log)
    t0 = time.monotonic()
    push_all(images, made, registry, work, log)
    how = "taken from the cache" if made.cached else "made by umoci"
    return f"{how} in {made.seconds:.1f}s ({made.layout}), pushed by skopeo in {time.monotonic() - t0:.1f}s"
