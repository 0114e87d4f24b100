"""conmon's command line, shared by crid's monitor and the benchmarks' monitor floor."""

from cri.runtime.monitor import CONMON, MonitorSpec, conmon_args


def spec(**kw: bool) -> MonitorSpec:
    return MonitorSpec("c1", "/b/c1", "", "/exits", "/persist", "/attach", **kw)


def test_conmon_runs_the_given_runtime_with_its_root() -> None:
    args = conmon_args("/usr/sbin/runc", "/run/crid/runc", spec())
    assert args[0] == CONMON
    assert args[args.index("-r") + 1] == "/usr/sbin/runc"
    assert "--root=/run/crid/runc" in args
    assert args[args.index("-b") + 1] == "/b/c1" and args[args.index("-p") + 1] == "/b/c1/pidfile"
    assert "k8s-file:/dev/null" in args  # no log path: conmon still needs one
    assert not {"-t", "-i", "--leave-stdin-open"} & set(args)


def test_tty_and_stdin_flags() -> None:
    assert "-t" in conmon_args("runc", "/r", spec(tty=True))
    held = conmon_args("runc", "/r", spec(stdin=True))
    assert "-i" in held and "--leave-stdin-open" in held
    once = conmon_args("runc", "/r", spec(stdin=True, stdin_once=True))
    assert "-i" in once and "--leave-stdin-open" not in once
