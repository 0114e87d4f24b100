"""A readiness condition as the CRI Status RPC reports it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    ready: bool
    reason: str = ""
    message: str = ""
