"""Signal names: an image's StopSignal and ContainerConfig.stop_signal -> the name runc kills with, and its number."""

import signal

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.images.manifest import ImageConfig
from cri.runtime.signals import signal_number, stop_signal


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (None, "SIGTERM"),
        ("", "SIGTERM"),
        ("SIGTERM", "SIGTERM"),
        ("TERM", "SIGTERM"),
        ("term", "SIGTERM"),
        ("15", "SIGTERM"),
        ("9", "SIGKILL"),
        ("SIGQUIT", "SIGQUIT"),
        ("SIGIOT", "SIGABRT"),
        ("SIGRTMIN", "SIGRTMIN"),
        ("SIGRTMIN+3", "SIGRTMIN+3"),
        ("RTMAX-2", "SIGRTMAX-2"),
        ("34", "SIGRTMIN"),
        ("37", "SIGRTMIN+3"),
        ("64", "SIGRTMAX"),
    ],
)
def test_stop_signal(raw: str | None, name: str) -> None:
    assert stop_signal({"config": {"StopSignal": raw}}) == name


def test_stop_signal_defaults() -> None:
    assert stop_signal({}) == "SIGTERM"
    assert stop_signal({"config": None}) == "SIGTERM"


@pytest.mark.parametrize("raw", ["SIGNOPE", "0", "65", "32", "SIGRTMIN-1", "SIGRTMAX+1", "SIGRTMIN+99"])
def test_stop_signal_invalid(raw: str) -> None:
    with pytest.raises(InvalidArgument, match="StopSignal"):
        stop_signal({"config": {"StopSignal": raw}})


def test_stop_signal_from_the_request() -> None:
    image: ImageConfig = {"config": {"StopSignal": "SIGQUIT"}}
    assert stop_signal(image, pb.SIGNAL_SIGUSR1) == "SIGUSR1"
    assert stop_signal(image, pb.SIGNAL_SIGRTMINPLUS3) == "SIGRTMIN+3"
    assert stop_signal(image, pb.SIGNAL_SIGRTMAXMINUS1) == "SIGRTMAX-1"
    assert stop_signal(image, pb.SIGNAL_RUNTIME_DEFAULT) == "SIGQUIT"
    with pytest.raises(InvalidArgument):
        stop_signal(image, 999)


def test_signal_number() -> None:
    assert signal_number("SIGTERM") == 15
    assert signal_number("SIGRTMIN+3") == signal.SIGRTMIN + 3
    assert signal_number("SIGRTMAX-1") == signal.SIGRTMAX - 1
    with pytest.raises(InvalidArgument):
        signal_number("SIGBOGUS")
