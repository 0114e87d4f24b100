"""Fixtures shared by several unit test modules."""

from tests.unit.pull_fixtures import images, registry

__all__ = ["images", "registry"]
