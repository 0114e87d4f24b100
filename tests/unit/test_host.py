"""cri.host against the real host."""

from cri.host import CAPABILITIES, HOST


def test_host_capability_helpers() -> None:
    known = HOST.known_capabilities()
    assert known[:3] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"]
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert len(known) == min(int(f.read()) + 1, len(CAPABILITIES))
    assert HOST.own_capabilities() <= frozenset(CAPABILITIES)
