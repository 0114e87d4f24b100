"""Hypothesis profiles for the property tests (tests/unit/test_props_*.py).

``ci``, the default everywhere: 100 examples per test (the whole set takes
seconds), drawn from a seed derived from each test (``derandomize``), no
example database: a run tests the same inputs on every machine and a red
run is red again. ``HYPOTHESIS_PROFILE=explore`` searches with fresh random
inputs and 20 times the examples; put a failure it finds in the test as an
``@example``.
"""

import os

from hypothesis import HealthCheck, settings

# no deadline: the unpacker's examples touch the disk, their time varies with the machine
_SLOW = [HealthCheck.too_slow]
settings.register_profile(
    "ci", max_examples=100, derandomize=True, database=None, deadline=None, suppress_health_check=_SLOW
)
settings.register_profile("explore", max_examples=2000, deadline=None, suppress_health_check=_SLOW)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
