#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: node_facts
short_description: Cores, AES-NI, interfaces and the capacity of a vpnfleet node
version_added: 0.1.0
description:
  - Gathers what planning the OpenVPN processes needs and sets it as the fact C(vpnfleet_node).
  - Cores are those this host lets its processes run on (CPU affinity), else those in C(/proc/cpuinfo).
  - Interfaces come from C(ip -json address show); link speed from C(/sys/class/net/*/speed) where the kernel
    knows it (virtual links do not say).
  - The OpenVPN version comes from C(openvpn --version), so a mixed fleet (2.6 and 2.7 nodes) can tell.
  - Whether the kernel has WireGuard comes from C(/sys/module/wireguard) (loaded or built in) or the running
    release's C(modules.dep) and C(modules.builtin); the node role runs C(wireguard-go) where it has not.
  - "Capacity: one OpenVPN process per core, about 64 clients per process (eduVPN: 1000 clients per 16 cores),
    and no more clients than the fastest known link carries at 10 Mbit/s each."
author: vpnfleet developers (@vpnfleet)
extends_documentation_fragment:
  - vpnfleet.server.attributes.facts
options: {}
"""

EXAMPLES = r"""
- name: Learn the node
  vpnfleet.server.node_facts:

- name: One process per core
  ansible.builtin.debug:
    msg: "{{ vpnfleet_node.cores }} cores, room for {{ vpnfleet_node.capacity.clients }} clients"
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: dict
  contains:
    vpnfleet_node:
      description: The node's facts.
      returned: always
      type: dict
      contains:
        cores:
          description: Usable CPU cores.
          type: int
          returned: always
        aes_ni:
          description: Whether the CPU has AES instructions; null when unknown.
          type: bool
          returned: always
        interfaces:
          description: Per interface name, state, loopback, mtu, addresses (CIDR), speed_mbit (or null).
          type: list
          elements: dict
          returned: always
        capacity:
          description: processes, clients, clients_by_cpu, clients_by_network, limited_by (cpu or network).
          type: dict
          returned: always
        openvpn:
          description: The installed OpenVPN, null when there is none.
          type: dict
          returned: always
          contains:
            version:
              description: Its version, for example C(2.7.8).
              type: str
              returned: when OpenVPN is installed
            banner:
              description: The first line of C(openvpn --version) (version, platform, features).
              type: str
              returned: when OpenVPN is installed
        wireguard:
          description: Whether the running kernel has WireGuard.
          type: dict
          returned: always
          contains:
            kernel:
              description: True when the kernel has WireGuard (the node uses it); false means C(wireguard-go).
              type: bool
              returned: always
            reason:
              description: What the answer rests on, for a person.
              type: str
              returned: always
  sample:
    vpnfleet_node:
      cores: 4
      aes_ni: true
      interfaces:
        - {name: eth0, state: UP, loopback: false, mtu: 1500, addresses: [203.0.113.10/24], speed_mbit: 10000}
      capacity: {processes: 4, clients: 256, clients_by_cpu: 256, clients_by_network: 1000, limited_by: cpu}
      openvpn: {version: 2.7.8, banner: "OpenVPN 2.7.8 x86_64-pc-linux-gnu [SSL (OpenSSL)] [EPOLL] [DCO]"}
      wireguard: {kernel: true, reason: "/sys/module/wireguard exists (loaded or built in)"}
"""

# ruff: noqa: E402 - Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports.
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vpnfleet.server.plugins.module_utils import node_facts


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    ip_command = module.get_bin_path("ip", required=True)
    unused_rc, ip_json, unused_err = module.run_command(
        [ip_command, "-json", "address", "show"], check_rc=True
    )
    openvpn_command = module.get_bin_path("openvpn")
    openvpn_text = None
    if openvpn_command:
        # Older OpenVPN releases exit non-zero after printing their version: the text decides.
        unused_rc, openvpn_text, unused_err = module.run_command([openvpn_command, "--version"])
    facts = node_facts.gather(ip_json, openvpn_version_text=openvpn_text)
    module.exit_json(changed=False, ansible_facts={"vpnfleet_node": facts})


if __name__ == "__main__":
    main()
