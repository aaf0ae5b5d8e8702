"""The lab's networks: one bridge per network, joined by a router namespace.

The router namespace is the only way between lab networks and it has no default route,
so lab traffic can reach lab hosts and nothing else. The control machine reaches the lab
through one veth into that namespace (the "uplink") and routes only the lab hosts' addresses.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from urllib.parse import urlparse

from .spec import (
    ROUTER_NAMESPACE,
    UPLINK_HOST_SIDE,
    UPLINK_NETWORK,
    UPLINK_ROUTER_SIDE,
    LabSpec,
    LabSpecError,
    Network,
)

UPLINK_NETWORK6 = ipaddress.ip_network("2001:db8:1f00:ff::/64")
UPLINK_HOST4 = UPLINK_NETWORK.network_address + 1
UPLINK_ROUTER4 = UPLINK_NETWORK.network_address + 2
UPLINK_HOST6 = UPLINK_NETWORK6.network_address + 1
UPLINK_ROUTER6 = UPLINK_NETWORK6.network_address + 2


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(command, check=check, capture_output=True, text=True)


def addresses_of(names: list[str]) -> dict[str, str]:
    """address -> name, for the names that resolve; resolving sends nothing to the names' hosts."""
    found: dict[str, str] = {}
    for name in names:
        try:
            for address_info in socket.getaddrinfo(name, None):
                found[str(ipaddress.ip_address(address_info[4][0]))] = name
        except OSError:
            continue
    return found


def check_no_clash_with(spec: LabSpec, mirror: str) -> None:
    """A lab host must not take the address of a registry this machine installs from."""
    names = [urlparse(mirror).hostname or "", "pypi.org", "files.pythonhosted.org"]
    needed = addresses_of([name for name in names if name])
    for address in (UPLINK_HOST4, UPLINK_ROUTER4, UPLINK_HOST6, UPLINK_ROUTER6):
        if str(address) in needed:
            raise LabSpecError(
                f"the lab uplink {address} is where this machine reaches {needed[str(address)]}"
            )
    for host in spec.hosts:
        for host_address in (str(host.ipv4), str(host.ipv6)):
            if host_address in needed:
                raise LabSpecError(
                    f"host {host.name}: ansible_host {host_address} is where this machine reaches "
                    f"{needed[host_address]}; give the host another address"
                )


def link_exists(name: str, netns: str | None = None) -> bool:
    return ip("link", "show", "dev", name, netns=netns, check=False).returncode == 0


def namespace_exists(name: str) -> bool:
    return name in ip("netns", "list").stdout.split()


def _router_side(network: Network) -> str:
    return f"to-{network.name}"[:15]


class LabNetwork:
    def __init__(self, spec: LabSpec):
        self.spec = spec

    def up(self) -> list[str]:
        """Make what is missing; return what was made, for the progress output."""
        made: list[str] = []
        if not namespace_exists(ROUTER_NAMESPACE):
            ip("netns", "add", ROUTER_NAMESPACE)
            made.append(f"namespace {ROUTER_NAMESPACE}")
        ip("link", "set", "lo", "up", netns=ROUTER_NAMESPACE)
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            subprocess.run(
                ["ip", "netns", "exec", ROUTER_NAMESPACE, "sysctl", "-q", "-w", f"{key}=1"],
                check=True,
            )
        if not link_exists(UPLINK_HOST_SIDE):
            ip(
                "link",
                "add",
                UPLINK_HOST_SIDE,
                "type",
                "veth",
                "peer",
                "name",
                UPLINK_ROUTER_SIDE,
                "netns",
                ROUTER_NAMESPACE,
            )
            made.append(f"uplink {UPLINK_HOST_SIDE}")
        prefix4, prefix6 = UPLINK_NETWORK.prefixlen, UPLINK_NETWORK6.prefixlen
        ip("address", "replace", f"{UPLINK_HOST4}/{prefix4}", "dev", UPLINK_HOST_SIDE)
        ip("address", "replace", f"{UPLINK_HOST6}/{prefix6}", "nodad", "dev", UPLINK_HOST_SIDE)
        ip(
            "address",
            "replace",
            f"{UPLINK_ROUTER4}/{prefix4}",
            "dev",
            UPLINK_ROUTER_SIDE,
            netns=ROUTER_NAMESPACE,
        )
        ip(
            "address",
            "replace",
            f"{UPLINK_ROUTER6}/{prefix6}",
            "nodad",
            "dev",
            UPLINK_ROUTER_SIDE,
            netns=ROUTER_NAMESPACE,
        )
        ip("link", "set", UPLINK_HOST_SIDE, "up")
        ip("link", "set", UPLINK_ROUTER_SIDE, "up", netns=ROUTER_NAMESPACE)

        for network in self.spec.networks:
            if not link_exists(network.bridge):
                ip("link", "add", network.bridge, "type", "bridge")
                made.append(f"bridge {network.bridge}")
            ip("link", "set", network.bridge, "up")
            if not link_exists(network.router_leg):
                ip(
                    "link",
                    "add",
                    network.router_leg,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    _router_side(network),
                    "netns",
                    ROUTER_NAMESPACE,
                )
            ip("link", "set", network.router_leg, "master", network.bridge, "up")
            inside = _router_side(network)
            ip(
                "address",
                "replace",
                f"{network.gateway4}/{network.ipv4.prefixlen}",
                "dev",
                inside,
                netns=ROUTER_NAMESPACE,
            )
            ip(
                "address",
                "replace",
                f"{network.gateway6}/{network.ipv6.prefixlen}",
                "nodad",
                "dev",
                inside,
                netns=ROUTER_NAMESPACE,
            )
            ip("link", "set", inside, "up", netns=ROUTER_NAMESPACE)
        # The control machine routes only the lab hosts' own addresses into the lab, not whole
        # networks: its package registries may sit inside the same documentation ranges.
        for host in self.spec.hosts:
            ip("route", "replace", f"{host.ipv4}/32", "via", str(UPLINK_ROUTER4), "dev", UPLINK_HOST_SIDE)
            ip(
                "-6",
                "route",
                "replace",
                f"{host.ipv6}/128",
                "via",
                str(UPLINK_ROUTER6),
                "dev",
                UPLINK_HOST_SIDE,
            )
        return made

    def down(self) -> list[str]:
        removed: list[str] = []
        # The routes to lab hosts go with the uplink.
        for network in self.spec.networks:
            for name in (network.router_leg, network.bridge):
                if link_exists(name):
                    ip("link", "del", name)
                    removed.append(name)
        if link_exists(UPLINK_HOST_SIDE):
            ip("link", "del", UPLINK_HOST_SIDE)
            removed.append(UPLINK_HOST_SIDE)
        if namespace_exists(ROUTER_NAMESPACE):
            # Deleting the namespace takes the router's ends of every veth with it.
            ip("netns", "del", ROUTER_NAMESPACE)
            removed.append(f"namespace {ROUTER_NAMESPACE}")
        return removed

    def present(self) -> bool:
        return namespace_exists(ROUTER_NAMESPACE) and all(link_exists(n.bridge) for n in self.spec.networks)
