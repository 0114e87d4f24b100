"""NetworkReady for the Status RPC."""

from cri.conditions import Condition


def network_condition() -> Condition:
    # Pod networking (the CNI client) is not built yet: the network is honestly not ready.
    return Condition(
        False,
        "NetworkPluginNotReady",
        "Network plugin returns error: crid does not implement pod networking (CNI) yet",
    )
