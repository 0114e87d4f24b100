"""Pod networking through CNI plugins (what containerd gets from go-cni and libcni)."""

from cri.cni.manager import CniManager, NetworkResult, PodNetwork, PortMapping

__all__ = ["CniManager", "NetworkResult", "PodNetwork", "PortMapping"]
