"""The image config's User as a pull records it (ImageStatus' uid / username)."""

from typing import Any, cast

import pytest

from cri.errors import FailedPrecondition
from cri.images.manifest import ImageConfig, user_of


def cfg(doc: dict[str, Any]) -> ImageConfig:
    return cast(ImageConfig, doc)


@pytest.mark.parametrize(
    ("doc", "want"),
    [
        ({}, (None, "")),
        ({"config": None}, (None, "")),
        ({"config": {"User": "1002"}}, (1002, "")),
        ({"config": {"User": "www-data:1004"}}, (None, "www-data")),
        ({"config": {"User": "1003:1004"}}, (1003, "")),
    ],
)
def test_user(doc: dict[str, Any], want: tuple[int | None, str]) -> None:
    assert user_of(cfg(doc)) == want


@pytest.mark.parametrize(
    "doc", [{"config": []}, {"config": "x"}, {"config": {"User": 1000}}, {"config": {"User": ["a"]}}]
)
def test_malformed_configs_are_refused_not_crashed_on(doc: dict[str, Any]) -> None:
    with pytest.raises(FailedPrecondition):
        user_of(cfg(doc))
