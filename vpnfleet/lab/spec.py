"""What the lab should be, read from an Ansible inventory.

The inventory is the single description of the fleet: the lab tool asks
``ansible-inventory`` for it, so group_vars and host_vars apply exactly as they do
for the playbooks, and builds the hosts and networks it names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The brief's address rule: lab networks live only in these documentation ranges.
ALLOWED_UNDERLAY = [
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
]

DEFAULT_SUITE = "bookworm"
SUITE_NAME = re.compile(r"[a-z][a-z0-9-]*")

# Interface names are limited to 15 characters by the kernel.
BRIDGE_PREFIX = "vfl-"
ROUTER_NAMESPACE = "vfl-router"
UPLINK_HOST_SIDE = "vfl-uplink"
UPLINK_ROUTER_SIDE = "uplink"
# The control machine's link into the router namespace.
UPLINK_NETWORK = ipaddress.ip_network("203.0.113.252/30")


class LabSpecError(ValueError):
    """The inventory does not describe a lab that can be built."""


@dataclass(frozen=True)
class Network:
    name: str
    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.name}"[:15]

    @property
    def router_leg(self) -> str:
        """Host side of the veth that joins the router namespace to this bridge."""
        return f"vfr-{self.name}"[:15]

    @property
    def gateway4(self) -> ipaddress.IPv4Address:
        return self.ipv4.network_address + 1

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        return self.ipv6.network_address + 1


@dataclass(frozen=True)
class ImageSpec:
    """What one base image holds: a Debian suite, the packages debootstrap installs, and those
    taken from the suite's backports (a newer OpenVPN, say) in the same build, since lab hosts
    reach no archive later."""

    suite: str
    packages: tuple[str, ...]
    backports: tuple[str, ...] = ()

    @property
    def backports_suite(self) -> str:
        return f"{self.suite}-backports"

    def key(self) -> str:
        """Changes whenever the base image would come out different."""
        content: dict = {"suite": self.suite, "packages": sorted(self.packages), "format": 2}
        # Only when there are some: the keys of the images made before backports stay valid.
        if self.backports:
            content["backports"] = sorted(self.backports)
        text = json.dumps(content)
        return f"{self.suite}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Host:
    name: str
    groups: tuple[str, ...]
    network: Network
    ipv4: ipaddress.IPv4Address
    image: ImageSpec

    @property
    def ipv6(self) -> ipaddress.IPv6Address:
        # The IPv6 address mirrors the IPv4 offset within the network, so one number names both.
        return self.network.ipv6.network_address + (int(self.ipv4) - int(self.network.ipv4.network_address))

    @property
    def role(self) -> str:
        for group in self.groups:
            if group.startswith("vpnfleet_location_"):
                return "node " + group.removeprefix("vpnfleet_location_")
        for group in self.groups:
            if group != "all":
                return group.removeprefix("vpnfleet_").removesuffix("s")
        return "host"


@dataclass(frozen=True)
class LabSpec:
    inventory: tuple[Path, ...]
    networks: tuple[Network, ...]
    hosts: tuple[Host, ...]

    def images(self, hosts: tuple[Host, ...] | None = None) -> tuple[ImageSpec, ...]:
        """The base images the hosts boot from, each once, in the order of the hosts."""
        return tuple(dict.fromkeys(host.image for host in (self.hosts if hosts is None else hosts)))

    def select(self, names: list[str] | None) -> tuple[Host, ...]:
        if not names:
            return self.hosts
        known = {host.name: host for host in self.hosts}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise LabSpecError(
                f"unknown lab host(s) {', '.join(unknown)}; the inventory has {', '.join(known)}"
            )
        return tuple(known[name] for name in names)


def load_inventory(inventories: tuple[Path, ...]) -> dict:
    """The inventory as Ansible sees it (group_vars and host_vars applied); several sources
    merge as they do for ansible-playbook, a later one's host vars over an earlier one's."""
    # Prefer the ansible-inventory of our own virtual environment, even when it is not on PATH.
    beside_python = Path(sys.executable).parent / "ansible-inventory"
    program = (
        str(beside_python)
        if beside_python.exists()
        else shutil.which("ansible-inventory") or "ansible-inventory"
    )
    try:
        result = subprocess.run(
            [program, *(arg for path in inventories for arg in ("-i", str(path))), "--list"],
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as error:
        raise LabSpecError(
            "ansible-inventory not found: run the lab from the project's virtual environment"
        ) from error
    except subprocess.CalledProcessError as error:
        raise LabSpecError(
            f"ansible-inventory could not read {', '.join(map(str, inventories))}:\n{error.stderr.strip()}"
        ) from error
    return json.loads(result.stdout)


def _group_membership(inventory: dict) -> dict[str, list[str]]:
    """host -> every group it belongs to, parents included."""
    parents: dict[str, list[str]] = {}
    for group, data in inventory.items():
        if group == "_meta" or not isinstance(data, dict):
            continue
        for child in data.get("children", []):
            parents.setdefault(child, []).append(group)

    def ancestors(group: str) -> list[str]:
        found = [group]
        for parent in parents.get(group, []):
            found.extend(ancestors(parent))
        return found

    membership: dict[str, list[str]] = {}
    for group, data in inventory.items():
        if group == "_meta" or not isinstance(data, dict):
            continue
        for host in data.get("hosts", []):
            for name in ancestors(group):
                if name not in membership.setdefault(host, []):
                    membership[host].append(name)
    return membership


def _inside(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, allowed: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> bool:
    if isinstance(net, ipaddress.IPv4Network) and isinstance(allowed, ipaddress.IPv4Network):
        return net.subnet_of(allowed)
    if isinstance(net, ipaddress.IPv6Network) and isinstance(allowed, ipaddress.IPv6Network):
        return net.subnet_of(allowed)
    return False  # an IPv4 network is never inside an IPv6 one, nor the other way round


def _network(raw: dict) -> Network:
    name = raw.get("name")
    if not name or not isinstance(name, str):
        raise LabSpecError(f"vpnfleet_lab_networks: an entry has no name: {raw!r}")
    try:
        ipv4 = ipaddress.IPv4Network(raw["ipv4"])
        ipv6 = ipaddress.IPv6Network(raw["ipv6"])
    except (KeyError, ValueError) as error:
        raise LabSpecError(
            f"vpnfleet_lab_networks[{name}]: ipv4 and ipv6 must be network CIDRs ({error})"
        ) from error
    for net in (ipv4, ipv6):
        if not any(_inside(net, allowed) for allowed in ALLOWED_UNDERLAY):
            raise LabSpecError(
                f"vpnfleet_lab_networks[{name}]: {net} is outside the lab's ranges "
                f"({', '.join(map(str, ALLOWED_UNDERLAY))})"
            )
        if net.version == 4 and net.overlaps(UPLINK_NETWORK):
            raise LabSpecError(
                f"vpnfleet_lab_networks[{name}]: {net} overlaps the lab uplink {UPLINK_NETWORK}"
            )
    return Network(name=name, ipv4=ipv4, ipv6=ipv6)


def _names(host: str, variable: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise LabSpecError(f"host {host}: {variable} must be a list of package names, not {value!r}")
    return tuple(value)


def _image(host: str, variables: dict) -> ImageSpec:
    """The host's base image; the suite and both package lists may differ per host or group
    (ansible-inventory has already let a host var win over a group's)."""
    suite = variables.get("vpnfleet_lab_suite", DEFAULT_SUITE)
    if not isinstance(suite, str) or not SUITE_NAME.fullmatch(suite):
        raise LabSpecError(
            f"host {host}: vpnfleet_lab_suite is {suite!r}; "
            "expected a Debian suite's code name (bookworm, trixie)"
        )
    packages = _names(host, "vpnfleet_lab_base_packages", variables.get("vpnfleet_lab_base_packages", []))
    if not packages:
        raise LabSpecError(f"host {host}: vpnfleet_lab_base_packages is empty (group_vars/all)")
    # What one kind of host needs besides (Prometheus on a monitoring host): its image of its own.
    extra = _names(host, "vpnfleet_lab_extra_packages", variables.get("vpnfleet_lab_extra_packages", []))
    packages = tuple(dict.fromkeys(packages + extra))
    backports = _names(
        host, "vpnfleet_lab_backports_packages", variables.get("vpnfleet_lab_backports_packages", [])
    )
    return ImageSpec(suite=suite, packages=packages, backports=backports)


def build_spec(inventory_path: Path | tuple[Path, ...], inventory: dict) -> LabSpec:
    sources = inventory_path if isinstance(inventory_path, tuple) else (inventory_path,)
    where = ", ".join(map(str, sources))
    hostvars = inventory.get("_meta", {}).get("hostvars", {})
    membership = _group_membership(inventory)
    if not hostvars:
        raise LabSpecError(f"{where}: the inventory has no hosts")
    any_vars = next(iter(hostvars.values()))
    raw_networks = any_vars.get("vpnfleet_lab_networks")
    if not raw_networks:
        raise LabSpecError(f"{where}: vpnfleet_lab_networks is not set (group_vars/all)")
    networks = tuple(_network(raw) for raw in raw_networks)
    by_name = {net.name: net for net in networks}
    if len(by_name) != len(networks):
        raise LabSpecError("vpnfleet_lab_networks: network names must be unique")
    for index, first in enumerate(networks):
        for second in networks[index + 1 :]:
            if first.ipv4.overlaps(second.ipv4) or first.ipv6.overlaps(second.ipv6):
                raise LabSpecError(f"vpnfleet_lab_networks: {first.name} and {second.name} overlap")

    hosts = []
    seen_addresses: dict[ipaddress.IPv4Address, str] = {}
    for name, variables in sorted(hostvars.items()):
        network_name = variables.get("vpnfleet_lab_network")
        if network_name not in by_name:
            raise LabSpecError(
                f"host {name}: vpnfleet_lab_network is {network_name!r}; expected one of {', '.join(by_name)}"
            )
        network = by_name[network_name]
        try:
            address = ipaddress.IPv4Address(variables.get("ansible_host"))
        except ValueError as error:
            raise LabSpecError(f"host {name}: ansible_host must be an IPv4 address ({error})") from error
        usable = address in network.ipv4 and address not in (
            network.ipv4.network_address,
            network.ipv4.broadcast_address,
            network.gateway4,
        )
        if not usable:
            raise LabSpecError(
                f"host {name}: ansible_host {address} is not a host address of {network.name} "
                f"({network.ipv4}, gateway {network.gateway4})"
            )
        if address in seen_addresses:
            raise LabSpecError(
                f"host {name}: ansible_host {address} is already used by {seen_addresses[address]}"
            )
        seen_addresses[address] = name
        groups = tuple(group for group in membership.get(name, []) if group not in ("all", "ungrouped"))
        hosts.append(
            Host(name=name, groups=groups, network=network, ipv4=address, image=_image(name, variables))
        )

    return LabSpec(inventory=sources, networks=networks, hosts=tuple(hosts))


def read_spec(inventory: Path | tuple[Path, ...]) -> LabSpec:
    sources = inventory if isinstance(inventory, tuple) else (inventory,)
    return build_spec(sources, load_inventory(sources))
