"""CNI results across spec versions.

Every result is normalised to the 1.0.0 shape (``interfaces``, ``ips``
without ``version``, ``routes``, ``dns``) and converted back to the
network's version when it is handed to a plugin as ``prevResult``:

- 0.1.0/0.2.0: ``ip4``/``ip6`` objects, no interfaces;
- 0.3.x/0.4.0: ``ips`` entries carry ``"version": "4"|"6"``;
- 1.0.0/1.1.0: ``ips`` without ``version``.
"""

import ipaddress
from typing import Any

from cri.cni.config import SUPPORTED_VERSIONS, version_tuple
from cri.errors import quote


class ResultError(ValueError):
    """A plugin's output is not a valid result (the message says why)."""


def _address(value: Any, where: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if not isinstance(value, str):
        raise ResultError(f"{where}: address missing")
    if "/" not in value:
        raise ResultError(f"{where}: {value!r} is not an address with prefix length")
    try:
        return ipaddress.ip_interface(value)
    except ValueError:
        raise ResultError(f"{where}: {value!r} is not an address with prefix length") from None


def _list_of_dicts(obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ResultError(f"'{key}' is not a list of objects")
    return [dict(v) for v in value]


def _legacy_ips(obj: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for key in ("ip4", "ip6"):
        block = obj.get(key)
        if block is None:
            continue
        if not isinstance(block, dict):
            raise ResultError(f"'{key}' is not an object")
        _address(block.get("ip"), key)
        ip: dict[str, Any] = {"address": block["ip"]}
        if block.get("gateway"):
            ip["gateway"] = block["gateway"]
        ips.append(ip)
        routes.extend(_list_of_dicts(block, "routes"))
    return ips, routes


def normalize(obj: Any, conf_version: str) -> dict[str, Any]:
    """A plugin's result in the 1.0.0 shape. The result's own ``cniVersion``
    wins over the config's, as libcni does for plugins that answer in another version."""
    if not isinstance(obj, dict):
        raise ResultError("not a JSON object")
    version = obj.get("cniVersion") or conf_version
    if version not in SUPPORTED_VERSIONS:
        raise ResultError(f"unsupported result cniVersion {version!r}")
    out: dict[str, Any] = {"cniVersion": "1.0.0"}
    if version_tuple(version) < (0, 3, 0):
        ips, routes = _legacy_ips(obj)
        out["interfaces"] = []
        out["ips"] = ips
        out["routes"] = routes
    else:
        interfaces = _list_of_dicts(obj, "interfaces")
        ips = _list_of_dicts(obj, "ips")
        for n, ip in enumerate(ips):
            _address(ip.get("address"), f"ips[{n}]")
            ip.pop("version", None)
            idx = ip.get("interface")
            if idx is None:
                continue
            # bool is an int in Python but not in JSON: libcni refuses "interface": true
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise ResultError(f"ips[{n}]: interface index {quote(idx)} is not an integer")
            if not 0 <= idx < len(interfaces):
                raise ResultError(f"ips[{n}]: interface index {idx!r} is out of range")
        out["interfaces"] = interfaces
        out["ips"] = ips
        out["routes"] = _list_of_dicts(obj, "routes")
    dns = obj.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            raise ResultError("'dns' is not an object")
        out["dns"] = dns
    return out


def convert(current: dict[str, Any], version: str) -> dict[str, Any]:
    """A normalised result in the JSON shape of ``version``."""
    if version_tuple(version) >= (1, 0, 0):
        return {**current, "cniVersion": version}
    if version_tuple(version) >= (0, 3, 0):
        ips = []
        for ip in current.get("ips", []):
            fam = "4" if _address(ip.get("address"), "ips").version == 4 else "6"
            ips.append({"version": fam, **ip})
        return {**current, "cniVersion": version, "ips": ips}
    out: dict[str, Any] = {"cniVersion": version}
    for ip in current.get("ips", []):
        family = _address(ip.get("address"), "ips").version
        key = f"ip{family}"
        if key in out:
            continue  # 0.2.0 has room for one address per family
        block: dict[str, Any] = {"ip": ip["address"]}
        if ip.get("gateway"):
            block["gateway"] = ip["gateway"]
        routes = [r for r in current.get("routes", []) if _route_family(r) == family]
        if routes:
            block["routes"] = routes
        out[key] = block
    if "dns" in current:
        out["dns"] = current["dns"]
    return out


def _route_family(route: dict[str, Any]) -> int:
    try:
        return ipaddress.ip_network(str(route.get("dst")), strict=False).version
    except ValueError:
        return 0


def pod_ips(current: dict[str, Any], ifname: str) -> list[str]:
    """The pod's addresses without prefix length, IPv4 first then IPv6.

    Prefer addresses on the sandbox interface ``ifname``, then on any sandbox
    interface; a result whose addresses name no interface (0.2.0, or a plugin
    that leaves ``interface`` out) gives all of them.
    """
    interfaces = current.get("interfaces", [])
    ips = current.get("ips", [])

    def on(pred: Any) -> list[dict[str, Any]]:
        return [ip for ip in ips if isinstance(ip.get("interface"), int) and pred(interfaces[ip["interface"]])]

    chosen = on(lambda i: i.get("sandbox") and i.get("name") == ifname) or on(lambda i: i.get("sandbox")) or ips
    addrs = [ipaddress.ip_interface(ip["address"]).ip for ip in chosen]
    ordered = [a for a in addrs if a.version == 4] + [a for a in addrs if a.version == 6]
    seen: list[str] = []
    for a in ordered:
        if str(a) not in seen:
            seen.append(str(a))
    return seen
