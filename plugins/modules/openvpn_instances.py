#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: openvpn_instances
short_description: Plan and run the OpenVPN server processes of one profile on a node
version_added: 0.1.0
description:
  - Plans the profile's processes, writes one config per process to O(config_dir), enables and starts
    its unit C(openvpn-server@<profile>-<i>), restarts only the processes whose config changed, and
    stops, disables and removes the processes (units and configs) that are no longer in the plan.
  - "Count: O(listen) if given, else O(processes), else O(cores) (default: the cores this host may use)."
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
    C(explicit-exit-notify) on UDP, C(keepalive 10 60). Key material stays in the files the config names,
    so the diff of a config shows no secret."
  - A drop-in for C(openvpn-server@.service) raises C(LimitNPROC) (Debian ships 10, too few for hooks).
  - An impossible plan (range too small, port taken, bad CIDR) fails before anything changes.
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
  ipv4_range:
    description: The profile's IPv4 client range on this node (CIDR).
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
    description: Share of TCP processes (0 = UDP only, 1 = TCP only).
    type: float
    default: 0.25
  udp_port_base:
    description: Port of the first UDP process.
    type: int
    default: 1194
  tcp_port_base:
    description: Port of the first TCP process.
    type: int
    default: 1194
  ports_in_use:
    description: Other profiles' listeners on this node, profile id to a list of C(proto/port).
    type: dict
    default: {}
  listen_address:
    description: Address to bind; default all IPv4 and IPv6 addresses.
    type: str
  ca_path:
    description: CA certificate file.
    type: path
  cert_path:
    description: The server certificate (purpose V(server)).
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
"""

RETURN = r"""
plan:
  description: The plan; empty with O(state=absent).
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
from ansible_collections.vpnfleet.server.plugins.module_utils import instances, node_facts
from ansible_collections.vpnfleet.server.plugins.module_utils._module_support import (
    ensure_file,
    fail_on,
    remove_path,
)

DROP_IN = "openvpn-server@.service.d/vpnfleet.conf"
OPTION_NAMES = [field.name for field in instances.ServerOptions.__dataclass_fields__.values()]


class Systemd:
    """systemctl through run_command (never a shell); queries run in check mode too."""

    def __init__(self, module):
        self.module = module
        self.systemctl = module.get_bin_path("systemctl", required=True)

    def query(self, verb, unit):
        rc, out, unused_err = self.module.run_command([self.systemctl, verb, unit])
        return rc == 0, out.strip()

    def run(self, *args):
        if not self.module.check_mode:
            self.module.run_command([self.systemctl, *args], check_rc=True)

    def is_enabled(self, unit):
        return self.query("is-enabled", unit)[0]

    def is_active(self, unit):
        return self.query("is-active", unit)[0]


def existing_indexes(profile_id, config_dir, systemd_dir):
    """Processes of this profile that exist now: a config, or a unit enabled for multi-user."""
    names = []
    for directory in (config_dir, os.path.join(systemd_dir, "multi-user.target.wants")):
        if os.path.isdir(directory):
            names += os.listdir(directory)
    indexes = (instances.process_index_of(profile_id, name) for name in names)
    return {index for index in indexes if index is not None}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            profile_id=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            ipv4_range=dict(type="str"),
            ipv6_range=dict(type="str"),
            cores=dict(type="int"),
            processes=dict(type="int"),
            listen=dict(type="list", elements="str"),
            tcp_share=dict(type="float", default=instances.DEFAULT_TCP_SHARE),
            udp_port_base=dict(type="int", default=instances.DEFAULT_PORT_BASE),
            tcp_port_base=dict(type="int", default=instances.DEFAULT_PORT_BASE),
            ports_in_use=dict(type="dict", default={}),
            listen_address=dict(type="str"),
            ca_path=dict(type="path"),
            cert_path=dict(type="path"),
            key_path=dict(type="path", no_log=False),
            crl_path=dict(type="path"),
            tls_crypt_path=dict(type="path", no_log=False),
            full_tunnel=dict(type="bool", default=True),
            routes=dict(type="list", elements="str", default=[]),
            dns_servers=dict(type="list", elements="str", default=[]),
            dns_search_domains=dict(type="list", elements="str", default=[]),
            block_lan=dict(type="bool", default=False),
            client_to_client=dict(type="bool", default=False),
            tls_version_min=dict(type="str", choices=list(instances.TLS_VERSIONS), default="1.3"),
            cpu_has_aes=dict(type="bool"),
            user=dict(type="str", default="nobody"),
            group=dict(type="str", default="nogroup"),
            client_connect=dict(type="path"),
            client_disconnect=dict(type="path"),
            extra_directives=dict(type="list", elements="str", default=[]),
            config_dir=dict(type="path", default=instances.CONFIG_DIR),
            systemd_dir=dict(type="path", default="/etc/systemd/system"),
            limit_nproc=dict(type="int", default=127),
            manage_services=dict(type="bool", default=True),
        ),
        required_if=[
            (
                "state",
                "present",
                ("ipv4_range", "ca_path", "cert_path", "key_path", "crl_path", "tls_crypt_path"),
            ),
        ],
        supports_check_mode=True,
    )
    params = module.params
    profile_id = params["profile_id"]
    config_dir = params["config_dir"]
    systemd = Systemd(module) if params["manage_services"] else None
    result = dict(changed=False, plan={}, started=[], restarted=[], removed=[], diff=[])

    with fail_on(module, instances.PlanError):
        instances.check_profile_id(profile_id)
        plan = None
        if params["state"] == "present":
            plan = instances.plan_profile(
                profile_id,
                params["ipv4_range"],
                params["ipv6_range"],
                cores=params["cores"] or node_facts.usable_cores(),
                processes=params["processes"],
                listen=params["listen"],
                tcp_share=params["tcp_share"],
                udp_port_base=params["udp_port_base"],
                tcp_port_base=params["tcp_port_base"],
                ports_in_use=params["ports_in_use"],
                listen_address=params["listen_address"],
            )
            option_values = {name: params[name] for name in OPTION_NAMES if name in params}
            if option_values["cpu_has_aes"] is None:
                option_values["cpu_has_aes"] = node_facts.cpu_has_aes() is not False
            for name in ("routes", "dns_servers", "dns_search_domains", "extra_directives"):
                option_values[name] = tuple(option_values[name])
            options = instances.ServerOptions(**option_values)
            configs = [
                (process, instances.render_server_config(plan, process, options))
                for process in plan.processes
            ]
    # Everything is planned and rendered: only now does anything change.

    with fail_on(module, OSError):
        if plan is not None:
            drop_in = "[Service]\n# vpnfleet: hooks fork; Debian's LimitNPROC=10 is too low.\nLimitNPROC=%d\n"
            drop_in_changed, drop_in_diff = ensure_file(
                module, os.path.join(params["systemd_dir"], DROP_IN), drop_in % params["limit_nproc"]
            )
            if drop_in_changed:
                result["diff"].append(drop_in_diff)
                if systemd:
                    systemd.run("daemon-reload")
            for process, text in configs:
                path = instances.config_path(profile_id, process.index, config_dir)
                config_changed, config_diff = ensure_file(module, path, text, 0o644)
                if config_diff:
                    result["diff"].append(config_diff)
                unit = instances.unit_name(profile_id, process.index)
                if not systemd:
                    continue
                if not systemd.is_enabled(unit):
                    systemd.run("enable", unit)
                    result["changed"] = True
                if not systemd.is_active(unit):
                    systemd.run("start", unit)
                    result["started"].append(unit)
                elif config_changed or drop_in_changed:
                    systemd.run("restart", unit)
                    result["restarted"].append(unit)
            result["plan"] = plan.as_dict()

        planned = {process.index for process in plan.processes} if plan else set()
        for index in sorted(existing_indexes(profile_id, config_dir, params["systemd_dir"]) - planned):
            unit = instances.unit_name(profile_id, index)
            if systemd:
                systemd.run("disable", "--now", unit)
            remove_path(module, instances.config_path(profile_id, index, config_dir))
            # OpenVPN runs as nobody by then and cannot remove its own socket; the daemon would
            # list a dead process for it.
            remove_path(module, instances.management_socket(profile_id, index))
            result["removed"].append(unit)

    result["changed"] = bool(result["changed"] or result["diff"] or result["started"] or result["removed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
