#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: openvpn_instances
short_description: Plan and run the OpenVPN server processes of one profile on a node
version_added: 0.1.0
description:
  - Takes the profile's processes from O(plan) (the fleet plan made on the control machine), or plans
    them here from O(ipv4_range) and the other planning options (standalone use).
  - Writes one config per process to O(config_dir), enables and starts
    its unit C(openvpn-server@<profile>-<i>), restarts only the processes whose config changed, and
    stops, disables and removes the processes (units and configs) that are no longer in the plan.
  - "Planning here. Count: O(listen) if given, else O(processes), else O(cores) (default: the cores
    this host may use)."
  - "Protocols: floor(n * O(tcp_share)) processes use TCP, but at least one once there are two, so
    networks that block UDP are served. UDP processes come first. Ports count up per protocol from
    O(udp_port_base) and O(tcp_port_base). A port that O(ports_in_use) gives to another profile is refused."
  - "IPv4 slices: eduVPN v3 allows only 1, 2, 4 ... 64 equal slices; this module allows any count. The range
    is halved again and again, always splitting the last of the largest blocks, until there is one block
    per process. With a power of two that is eduVPN's equal split; otherwise the first (UDP) processes get
    blocks twice the size of the last ones and no address of the range is left unused. The smallest slice
    is a /29. C(max-clients) is 2^(32-p) - 4: network, broadcast, the server's own address and the last
    host, which OpenVPN keeps out of its pool."
  - "IPv6: each process gets the next /112 of O(ipv6_range)."
  - "Config: OpenVPN 2.6, C(tls-version-min 1.3) (O(tls_version_min=1.2) for old clients), data ciphers
    AES-256-GCM and CHACHA20-POLY1305 (ChaCha first without AES-NI), tls-crypt, no compression,
    C(verify-client-cert require) with C(remote-cert-tls client), CRL check, management on the unix socket
    C(/run/openvpn-server/<profile>-<i>.sock), C(topology subnet), routes or redirect-gateway, DNS,
    C(explicit-exit-notify) and C(fast-io) on UDP, C(keepalive 2 8). Key material stays in the files the
    config names, so the diff of a config shows no secret."
  - A drop-in for C(openvpn-server@.service) raises C(LimitNPROC) (Debian ships 10, too few for hooks).
  - An impossible plan (range too small, port taken, bad CIDR) or a malformed O(plan) fails before
    anything changes.
  - Needs only the standard library on the node; no C(cryptography).
author: vpnfleet developers (@vpnfleet)
extends_documentation_fragment:
  - vpnfleet.server.attributes
options:
  profile_id:
    description: Profile id; names the configs, units, sockets and tun devices.
    type: str
    required: true
  state:
    description: V(absent) stops and removes every process of the profile.
    type: str
    choices: [present, absent]
    default: present
  plan:
    description:
      - The profile's plan on this node as the planner returns it (C(ProfilePlan.as_dict()), the
        same as RV(plan)), rendered as it is, without planning again.
      - Its C(profile_id) must be O(profile_id). Only C(ipv4_range), C(ipv6_range) and per process
        C(index), C(proto), C(port), C(ipv4), C(ipv6) and C(listen_address) are read; the other keys
        follow from them.
      - Mutually exclusive with the planning options O(ipv4_range), O(ipv6_range), O(cores),
        O(processes), O(listen), O(tcp_share), O(udp_port_base), O(tcp_port_base), O(ports_in_use)
        and O(listen_address). With O(state=present) either O(plan) or O(ipv4_range) is required.
    type: dict
  ipv4_range:
    description: The profile's IPv4 client range on this node (CIDR), to plan here.
    type: str
  ipv6_range:
    description: The profile's IPv6 client range on this node (CIDR, /112 or larger).
    type: str
  cores:
    description: Cores to plan for; default the cores this host may use.
    type: int
  processes:
    description: Explicit process count; overrides O(cores).
    type: int
  listen:
    description: Explicit listeners as C(proto/port), e.g. C(udp/1194); overrides the count and the mix.
    type: list
    elements: str
  tcp_share:
    description: Share of TCP processes (0 = UDP only, 1 = TCP only); 0.25 when not given.
    type: float
  udp_port_base:
    description: Port of the first UDP process; 1194 when not given.
    type: int
  tcp_port_base:
    description: Port of the first TCP process; 1194 when not given.
    type: int
  ports_in_use:
    description: Other profiles' listeners on this node, profile id to a list of C(proto/port).
    type: dict
  listen_address:
    description: Address to bind; default all IPv4 and IPv6 addresses.
    type: str
  ca_path:
    description: CA certificate file.
    type: path
  cert_path:
    description: The server certificate (purpose V(vpn_server)).
    type: path
  key_path:
    description: The server's private key.
    type: path
  crl_path:
    description: The CRL file; OpenVPN re-reads it at every connect.
    type: path
  tls_crypt_path:
    description: The profile's tls-crypt key.
    type: path
  full_tunnel:
    description: Send all traffic through the VPN (redirect-gateway); else push O(routes).
    type: bool
    default: true
  routes:
    description: Split tunnel prefixes (CIDR) pushed when O(full_tunnel=false).
    type: list
    elements: str
    default: []
  dns_servers:
    description: DNS servers pushed to clients.
    type: list
    elements: str
    default: []
  dns_search_domains:
    description: DNS search domains pushed to clients.
    type: list
    elements: str
    default: []
  block_lan:
    description: Clients may not reach their local network (redirect-gateway block-local).
    type: bool
    default: false
  client_to_client:
    description: Let clients of the profile reach each other.
    type: bool
    default: false
  tls_version_min:
    description: Lowest TLS version for the control channel.
    type: str
    choices: ['1.2', '1.3']
    default: '1.3'
  cpu_has_aes:
    description: Whether the CPU has AES-NI (orders the data ciphers); default read from C(/proc/cpuinfo).
    type: bool
  user:
    description: User OpenVPN drops to after start-up.
    type: str
    default: nobody
  group:
    description: Group OpenVPN drops to after start-up.
    type: str
    default: nogroup
  client_connect:
    description: Client-connect hook (adds C(script-security 2)).
    type: path
  client_disconnect:
    description: Client-disconnect hook.
    type: path
  extra_directives:
    description: More config lines, appended as given.
    type: list
    elements: str
    default: []
  config_dir:
    description: Where the configs go; Debian's C(openvpn-server@.service) reads C(%i.conf) there.
    type: path
    default: /etc/openvpn/server
  systemd_dir:
    description: Where the drop-in for C(openvpn-server@.service) goes.
    type: path
    default: /etc/systemd/system
  limit_nproc:
    description: C(LimitNPROC) in the drop-in.
    type: int
    default: 127
  cpu_affinity:
    description:
      - Pin process I(i) to the I(i)-th CPU this host may use (again from the first when there
        are more processes than CPUs), by a drop-in of its own unit with C(CPUAffinity=).
      - A UDP process is one thread that spends its core on per-packet work; kept on one core it
        never queues behind a neighbour moved onto it. The data-plane bench saw no steady gain on
        a 2-core machine (C(docs/bench.md)), so it is off by default. V(false) removes the pins.
      - Changing it restarts the processes whose pin changed.
    type: bool
    default: false
  manage_services:
    description: Enable, start, restart and stop the units; V(false) only writes files.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: The internet profile, one process per core
  vpnfleet.server.openvpn_instances:
    profile_id: internet
    ipv4_range: 198.18.0.0/24
    ipv6_range: 2001:db8:100::/64
    ca_path: /etc/openvpn/server/internet/ca.crt
    cert_path: /etc/openvpn/server/internet/server.crt
    key_path: /etc/openvpn/server/internet/server.key
    crl_path: /etc/openvpn/server/internet/crl.pem
    tls_crypt_path: /etc/openvpn/server/internet/tls-crypt.key
    dns_servers: [198.18.0.1]
  register: vpnfleet_internet

- name: A split-tunnel profile next to it, two processes on other ports
  vpnfleet.server.openvpn_instances:
    profile_id: office
    ipv4_range: 198.18.1.0/24
    ipv6_range: 2001:db8:101::/64
    processes: 2
    udp_port_base: 1294
    tcp_port_base: 1294
    ports_in_use:
      internet: "{{ vpnfleet_internet.plan.listeners }}"
    full_tunnel: false
    routes: [203.0.113.0/24, 2001:db8:ffff::/48]
    ca_path: /etc/openvpn/server/office/ca.crt
    cert_path: /etc/openvpn/server/office/server.crt
    key_path: /etc/openvpn/server/office/server.key
    crl_path: /etc/openvpn/server/office/crl.pem
    tls_crypt_path: /etc/openvpn/server/office/tls-crypt.key

- name: The internet profile as the fleet plan lays it out for this node (planned on the control machine)
  vpnfleet.server.openvpn_instances:
    profile_id: internet
    plan:
      profile_id: internet
      ipv4_range: 198.18.0.0/24
      ipv6_range: 2001:db8:100::/64
      processes:
        - {index: 0, proto: udp, port: 1194, ipv4: 198.18.0.0/25, ipv6: "2001:db8:100::/112"}
        - {index: 1, proto: tcp, port: 1194, ipv4: 198.18.0.128/25, ipv6: "2001:db8:100::1:0/112"}
    ca_path: /etc/openvpn/server/internet/ca.crt
    cert_path: /etc/openvpn/server/internet/server.crt
    key_path: /etc/openvpn/server/internet/server.key
    crl_path: /etc/openvpn/server/internet/crl.pem
    tls_crypt_path: /etc/openvpn/server/internet/tls-crypt.key
"""

RETURN = r"""
plan:
  description: The plan (the given O(plan), or the one made here); empty with O(state=absent).
  returned: always
  type: dict
  sample:
    profile_id: internet
    ipv4_range: 198.18.0.0/24
    ipv6_range: 2001:db8:100::/64
    process_count: 4
    udp: 3
    tcp: 1
    max_clients: 240
    listeners: [udp/1194, udp/1195, udp/1196, tcp/1194]
    processes:
      - index: 0
        name: internet-0
        proto: udp
        port: 1194
        ipv4: 198.18.0.0/26
        ipv4_gateway: 198.18.0.1
        max_clients: 60
        ipv6: 2001:db8:100::/112
        ipv6_gateway: 2001:db8:100::1
        management_socket: /run/openvpn-server/internet-0.sock
        device: tun-internet-0
        unit: openvpn-server@internet-0
        config_path: /etc/openvpn/server/internet-0.conf
        listen_address: null
started:
  description: Units started (or that would be).
  returned: always
  type: list
  elements: str
restarted:
  description: Units restarted because their config changed.
  returned: always
  type: list
  elements: str
removed:
  description: Units stopped, disabled and removed with their configs.
  returned: always
  type: list
  elements: str
"""

# ruff: noqa: E402 - Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports.
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible_collections.vpnfleet.server.plugins.module_utils import instances, node_facts, openvpn_units
from ansible_collections.vpnfleet.server.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.vpnfleet.server.plugins.module_utils._module_support import (
    ensure_file,
    fail_on,
    remove_empty_directory,
    remove_path,
)
from ansible_collections.vpnfleet.server.plugins.module_utils.files import read_bytes

SPEC = ArgumentSpec(
    {
        "profile_id": dict(type="str", required=True),
        "state": dict(type="str", choices=["present", "absent"], default="present"),
        "plan": dict(type="dict"),
        "ipv4_range": dict(type="str"),
        "ipv6_range": dict(type="str"),
        "cores": dict(type="int"),
        "processes": dict(type="int"),
        "listen": dict(type="list", elements="str"),
        "tcp_share": dict(type="float"),
        "udp_port_base": dict(type="int"),
        "tcp_port_base": dict(type="int"),
        "ports_in_use": dict(type="dict"),
        "listen_address": dict(type="str"),
        "ca_path": dict(type="path"),
        "cert_path": dict(type="path"),
        "key_path": dict(type="path", no_log=False),
        "crl_path": dict(type="path"),
        "tls_crypt_path": dict(type="path", no_log=False),
        "full_tunnel": dict(type="bool", default=True),
        "routes": dict(type="list", elements="str", default=[]),
        "dns_servers": dict(type="list", elements="str", default=[]),
        "dns_search_domains": dict(type="list", elements="str", default=[]),
        "block_lan": dict(type="bool", default=False),
        "client_to_client": dict(type="bool", default=False),
        "tls_version_min": dict(type="str", choices=list(instances.TLS_VERSIONS), default="1.3"),
        "cpu_has_aes": dict(type="bool"),
        "user": dict(type="str", default="nobody"),
        "group": dict(type="str", default="nogroup"),
        "client_connect": dict(type="path"),
        "client_disconnect": dict(type="path"),
        "extra_directives": dict(type="list", elements="str", default=[]),
        "config_dir": dict(type="path", default=instances.CONFIG_DIR),
        "systemd_dir": dict(type="path", default=openvpn_units.DEFAULT_SYSTEMD_DIR),
        "limit_nproc": dict(type="int", default=openvpn_units.DEFAULT_LIMIT_NPROC),
        "cpu_affinity": dict(type="bool", default=False),
        "manage_services": dict(type="bool", default=True),
    },
    mutually_exclusive=[("plan", name) for name in openvpn_units.PLANNING_OPTIONS],
    required_if=[
        ("state", "present", ("plan", "ipv4_range"), True),
        ("state", "present", ("ca_path", "cert_path", "key_path", "crl_path", "tls_crypt_path")),
    ],
)


class Systemd:
    """systemctl through run_command (never a shell); queries run in check mode too."""

    def __init__(self, module):
        self.module = module
        self.systemctl = module.get_bin_path("systemctl", required=True)

    def state(self, unit):
        return openvpn_units.UnitState(
            enabled=self._query("is-enabled", unit), active=self._query("is-active", unit)
        )

    def _query(self, verb, unit):
        rc, unused_out, unused_err = self.module.run_command([self.systemctl, verb, unit])
        return rc == 0

    def run(self, *args):
        if not self.module.check_mode:
            self.module.run_command([self.systemctl, *args], check_rc=True)


def desired(params):
    """The plan and every config, or (None, []) for state=absent; a PlanError comes before any change."""
    instances.check_profile_id(params["profile_id"])
    if params["state"] == "absent":
        return None, []
    plan = openvpn_units.profile_plan(params, usable_cores=node_facts.usable_cores())
    options = openvpn_units.server_options(params, cpu_has_aes=node_facts.cpu_has_aes() is not False)
    return plan, openvpn_units.rendered_configs(plan, options, params["config_dir"])


def ensure_pins(module, profile_id, planned):
    """Each planned process's own drop-in: its CPU, or none without cpu_affinity.
    Returns the indexes whose drop-in changed and their diffs."""
    params = module.params
    cpus = openvpn_units.pinned_cpus(planned, node_facts.usable_cpus()) if params["cpu_affinity"] else {}
    changed, diffs = set(), []
    for index in planned:
        path = openvpn_units.pin_path(profile_id, index, params["systemd_dir"])
        if index in cpus:
            pin_changed, diff = ensure_file(module, path, openvpn_units.pin_text(cpus[index]))
        else:
            before = read_bytes(path)
            pin_changed = remove_path(module, path)
            diff = {"before_header": path, "before": to_text(before), "after": ""} if pin_changed else None
            remove_empty_directory(module, os.path.dirname(path))
        if pin_changed:
            changed.add(index)
            diffs.append(diff)
    return changed, diffs


def apply(module, plan, configs):
    params = module.params
    profile_id = params["profile_id"]
    systemd = Systemd(module) if params["manage_services"] else None
    diffs, changed, drop_in_changed, pins_changed = [], set(), False, set()
    if plan is not None:
        drop_in_changed, drop_in_diff = ensure_file(
            module,
            openvpn_units.drop_in_path(params["systemd_dir"]),
            openvpn_units.drop_in_text(params["limit_nproc"]),
        )
        diffs += [drop_in_diff] if drop_in_diff else []
        for index, path, text in configs:
            config_changed, config_diff = ensure_file(module, path, text, 0o644)
            if config_changed:
                changed.add(index)
                diffs.append(config_diff)
    planned = [process.index for process in plan.processes] if plan else []
    if plan is not None:
        pins_changed, pin_diffs = ensure_pins(module, profile_id, planned)
        diffs += pin_diffs
    todo = openvpn_units.reconcile(
        profile_id,
        planned,
        openvpn_units.existing_indexes(profile_id, params["config_dir"], params["systemd_dir"]),
        {index: systemd.state(instances.unit_name(profile_id, index)) for index in planned}
        if systemd
        else None,
        changed,
        drop_in_changed,
        params["config_dir"],
        pins_changed,
        params["systemd_dir"],
    )
    if systemd:
        if todo.daemon_reload:
            systemd.run("daemon-reload")
        for verb, units in (("enable", todo.enable), ("start", todo.start), ("restart", todo.restart)):
            for unit in units:
                systemd.run(verb, unit)
        for unit in todo.remove:
            systemd.run("disable", "--now", unit)
    for path in todo.remove_paths:
        remove_path(module, path)
    for directory in todo.remove_directories:
        remove_empty_directory(module, directory)
    return dict(
        changed=bool(diffs) or todo.changed,
        plan=plan.as_dict() if plan else {},
        started=list(todo.start),
        restarted=list(todo.restart),
        removed=list(todo.remove),
        diff=diffs,
    )


def main():
    module = AnsibleModule(supports_check_mode=True, **SPEC.module_kwargs())
    with fail_on(module, instances.PlanError):
        plan, configs = desired(module.params)
    # Everything is planned and rendered: only now does anything change.
    with fail_on(module, OSError):
        result = apply(module, plan, configs)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
