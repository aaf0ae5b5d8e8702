"""What a node offers for planning: cores, AES-NI, interfaces and their speed, and the capacity
that follows. Standard library only; the roots of /proc and /sys are parameters so tests can
hand in a prepared tree.

Public interface
----------------
    CLIENTS_PER_PROCESS, MBIT_PER_CLIENT
    usable_cpus(proc_root)                  the CPU numbers this process may run on
    usable_cores(proc_root)                 how many
    cpu_has_aes(proc_root)                  True/False, None when unknown
    interfaces_from_ip_json(text, sys_root) interfaces from ``ip -json address show``
    link_speed_mbit(name, sys_root)         None where the kernel does not know it
    capacity(cores, interfaces)             processes and clients the node can carry
    openvpn_from_version_text(text)         version and banner from ``openvpn --version``
    wireguard_in_kernel(sys_root, modules_root, release)
                                            whether the kernel has WireGuard, and how we know
    gather(ip_json, proc_root, sys_root, openvpn_version_text, modules_root)
                                            all of the above as one dict
"""

import json
import os
import re

# eduVPN's figures: 16 cores carry about 1000 clients, so about 64 clients per process (core).
CLIENTS_PER_PROCESS = 64
# ... on >= 10 Gbit/s: about 10 Mbit/s per client.
MBIT_PER_CLIENT = 10


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def usable_cpus(proc_root="/proc"):
    """The CPU numbers this process may use (cgroup/affinity limits count), else those of the
    processors listed in cpuinfo, else 0 .. os.cpu_count() - 1."""
    if proc_root == "/proc" and hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    cpuinfo = _read(os.path.join(proc_root, "cpuinfo")) or ""
    processors = sum(1 for line in cpuinfo.splitlines() if line.split(":")[0].strip() == "processor")
    return list(range(processors or os.cpu_count() or 1))


def usable_cores(proc_root="/proc"):
    """How many cores this process may run on (see usable_cpus)."""
    return len(usable_cpus(proc_root))


def cpu_has_aes(proc_root="/proc"):
    """AES-NI on x86 (flag ``aes``), the AES instructions on ARM (feature ``aes``)."""
    cpuinfo = _read(os.path.join(proc_root, "cpuinfo"))
    if cpuinfo is None:
        return None
    for line in cpuinfo.splitlines():
        key, unused_colon, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return "aes" in value.split()
    return None


def link_speed_mbit(name, sys_root="/sys"):
    """Virtual and down links make the kernel answer EINVAL or -1: then the speed is unknown."""
    text = _read(os.path.join(sys_root, "class", "net", name, "speed"))
    try:
        speed = int(text)
    except (TypeError, ValueError):
        return None
    return speed if speed > 0 else None


def interfaces_from_ip_json(text, sys_root="/sys"):
    interfaces = []
    for entry in json.loads(text or "[]"):
        addresses = [
            "%s/%s" % (info["local"], info["prefixlen"])
            for info in entry.get("addr_info", [])
            if info.get("family") in ("inet", "inet6") and "local" in info
        ]
        interfaces.append(
            {
                "name": entry["ifname"],
                "state": entry.get("operstate", "UNKNOWN"),
                "loopback": "LOOPBACK" in entry.get("flags", []),
                "mtu": entry.get("mtu"),
                "addresses": addresses,
                "speed_mbit": link_speed_mbit(entry["ifname"], sys_root),
            }
        )
    return interfaces


def capacity(cores, interfaces):
    """Processes = cores; clients = 64 per process, or fewer when the fastest known link cannot
    carry that many at 10 Mbit/s each."""
    processes = max(cores, 1)
    by_cpu = processes * CLIENTS_PER_PROCESS
    speeds = [iface["speed_mbit"] for iface in interfaces if iface["speed_mbit"] and not iface["loopback"]]
    by_network = max(speeds) // MBIT_PER_CLIENT if speeds else None
    clients = min(by_cpu, by_network) if by_network is not None else by_cpu
    return {
        "processes": processes,
        "clients": clients,
        "clients_by_cpu": by_cpu,
        "clients_by_network": by_network,
        "limited_by": "network" if by_network is not None and by_network < by_cpu else "cpu",
    }


def openvpn_from_version_text(text):
    """``OpenVPN 2.7.8 x86_64-pc-linux-gnu [SSL (OpenSSL)] ...`` -> version 2.7.8 and that line;
    None when OpenVPN is not installed or says something else."""
    for line in (text or "").splitlines():
        match = re.match(r"OpenVPN (\d+\.\d+(?:\.\d+)?)(?:[_-]\S*)? ", line)
        if match:
            return {"version": match.group(1), "banner": line.strip()}
    return None


def wireguard_in_kernel(sys_root="/sys", modules_root="/lib/modules", release=None):
    """{kernel: bool, reason}: the running kernel has WireGuard when it is loaded or built in
    (/sys/module/wireguard), or when the running release's modules list it so that
    ``ip link add ... type wireguard`` loads it. A container sees the host's /sys but usually
    not its modules: there only a loaded module counts, which is what the container can use."""
    if os.path.isdir(os.path.join(sys_root, "module", "wireguard")):
        return {"kernel": True, "reason": "%s/module/wireguard exists (loaded or built in)" % sys_root}
    release = release or os.uname().release
    for listing in ("modules.dep", "modules.builtin"):
        text = _read(os.path.join(modules_root, release, listing)) or ""
        if re.search(r"(^|/)wireguard\.ko(\.[a-z]+)?:?", text, re.MULTILINE):
            return {"kernel": True, "reason": "%s/%s/%s lists wireguard" % (modules_root, release, listing)}
    return {
        "kernel": False,
        "reason": "kernel %s: no %s/module/wireguard, and %s/%s lists no wireguard module"
        % (release, sys_root, modules_root, release),
    }


def gather(
    ip_json, proc_root="/proc", sys_root="/sys", openvpn_version_text=None, modules_root="/lib/modules"
):
    cores = usable_cores(proc_root)
    interfaces = interfaces_from_ip_json(ip_json, sys_root)
    return {
        "cores": cores,
        "aes_ni": cpu_has_aes(proc_root),
        "interfaces": interfaces,
        "capacity": capacity(cores, interfaces),
        "openvpn": openvpn_from_version_text(openvpn_version_text),
        "wireguard": wireguard_in_kernel(sys_root, modules_root),
    }
