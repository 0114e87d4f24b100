"""The fault-injection switch (cri/faults.py): its registry matches the source, and it exits hard."""

import ast
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cri import faults

CRI = Path(faults.__file__).parent


def step_calls() -> Counter[str]:
    """The names passed to ``faults.step(...)`` anywhere in cri/, counted."""
    found: Counter[str] = Counter()
    for path in CRI.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "step" and isinstance(node.func.value, ast.Name) and node.func.value.id == "faults":
                arg = node.args[0] if node.args else None
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), f"{path}:{node.lineno}"
                found[arg.value] += 1
    return found


def test_every_step_is_marked_once_and_every_mark_is_registered() -> None:
    calls = step_calls()
    assert len(set(faults.STEPS)) == len(faults.STEPS), "a step is listed twice"
    assert set(calls) - set(faults.STEPS) == set(), "marked in the source, missing from STEPS"
    assert set(faults.STEPS) - set(calls) == set(), "listed in STEPS, marked nowhere"
    assert [name for name, n in calls.items() if n > 1] == [], "one step marked in two places"


def test_names_are_operation_dot_what() -> None:
    ops = {
        "PullImage", "RunPodSandbox", "CreateContainer", "StartContainer",
        "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox",
    }  # fmt: skip
    for name in faults.STEPS:
        op, _, what = name.partition(".")
        assert op in ops and what.isidentifier(), name


def _run(code: str, target: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if target is not None:
        env[faults.ENV] = target
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)


def test_the_targeted_step_exits_at_once_and_others_pass() -> None:
    code = (
        "import atexit; from cri import faults\n"
        "atexit.register(lambda: print('cleanup ran'))\n"  # os._exit: no cleanup, as a SIGKILL
        "faults.step('RunPodSandbox.recorded'); print('passed one', flush=True)\n"
        "faults.step('RunPodSandbox.ready_recorded'); print('passed two')\n"
    )
    hit = _run(code, "RunPodSandbox.ready_recorded")
    assert hit.returncode == faults.EXIT_CODE
    assert hit.stdout.split("\n")[0] == "passed one" and "passed two" not in hit.stdout
    assert "cleanup ran" not in hit.stdout
    assert "fault injected" in hit.stderr
    for target in (None, "", "NoSuch.step"):
        clean = _run(code, target)
        assert clean.returncode == 0 and "passed two" in clean.stdout, clean
