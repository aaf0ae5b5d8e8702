#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The action plugin of the same name does the work on the control machine; this file is its
# documentation.

DOCUMENTATION = r"""
module: fleet_plan
short_description: Check the vpnfleet inventory and plan every node's OpenVPN processes
version_added: 0.1.0
description:
  - Runs on the control machine only and touches no host. Reads the inventory of the whole fleet (the hosts
    of C(vpnfleet_controllers) and C(vpnfleet_nodes)), checks it and returns the fleet's plan. Run it once
    (C(run_once)) before any role changes anything; the C(vpnfleet.server.fleet) role does.
  - Fleet-level variables, one value for every host (C(group_vars/all)); a host whose value differs is
    refused. C(vpnfleet_profiles) (the VPN profiles, see the README for their fields), C(vpnfleet_ca_host)
    (default the first controller; an inventory with nodes but no controller is refused),
    C(vpnfleet_ca_path) (default C(/var/lib/vpnfleet/ca)), C(vpnfleet_controller_venv) (default
    C(/opt/vpnfleet/controller)), C(vpnfleet_ca_python) (default the controller venv's Python, the
    control machine's when the CA host is C(localhost)), C(vpnfleet_node_token_dir) (default
    C(/etc/vpnfleet/controller/node-tokens)).
  - Per-node variables. C(vpnfleet_location) (set in the node's C(vpnfleet_location_<name>) group),
    C(vpnfleet_cores) (default the cores in the host's facts), C(vpnfleet_public_address) (default its
    address on the default route, else C(ansible_host)), C(vpnfleet_slice) (its part of every profile's
    ranges, default 0, unique among the nodes of a profile), C(vpnfleet_entry_points) (extra public
    ports per profile id).
  - Every problem is collected, each naming the host, the variable as the inventory spells it (the
    profile by its index and id, then the field) and the reason; the task fails with all of them.
  - Role variables that the fleet-level ones replaced (C(node_profiles), C(controller_profiles),
    C(node_ca_host), C(node_ca_path), C(controller_ca_path), C(node_cores), ...) are refused when set.
author: vpnfleet developers (@vpnfleet)
options: {}
attributes:
  check_mode:
    support: full
    description: The plugin only reads the inventory; check mode returns the same plan.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: The plugin never changes a host.
"""

EXAMPLES = r"""
- name: Check the inventory and plan the fleet, once
  vpnfleet.server.fleet_plan:
  run_once: true
  register: fleet_plan

- name: The processes of this node
  ansible.builtin.debug:
    msg: "{{ fleet_plan.nodes[inventory_hostname].profiles | map(attribute='plan.listeners') | list }}"
"""

RETURN = r"""
contract:
  description: The values the controller and the node roles share.
  returned: success
  type: dict
  contains:
    ca_host:
      description: The inventory host that keeps the CA.
      type: str
      returned: success
    ca_path:
      description: The CA's directory on the CA host.
      type: str
      returned: success
    ca_python:
      description: The Python on the CA host that runs the CA modules.
      type: str
      returned: success
    controller_venv:
      description: The controller's virtual environment.
      type: str
      returned: success
    node_token_dir:
      description: Where the controller keeps the nodes' API tokens (C(<node>.token)).
      type: str
      returned: success
  sample:
    ca_host: controller
    ca_path: /var/lib/vpnfleet/ca
    ca_python: /opt/vpnfleet/controller/bin/python
    controller_venv: /opt/vpnfleet/controller
    node_token_dir: /etc/vpnfleet/controller/node-tokens
profiles:
  description: Every profile with its defaults filled in.
  returned: success
  type: list
  elements: dict
nodes:
  description: >-
    Per node name its location, cores, public address, C(slice), the profiles it serves (each with
    C(plan), the processes, ports and address slices within the node's part of the ranges,
    C(ports_in_use), the other profiles' listeners, and C(entry_points), the public ports with the process
    ports nftables spreads them over) and C(absent), the ids of the profiles it does not serve.
  returned: success
  type: dict
controller:
  description: >-
    The controller's view; C(profiles) with the fields the controller reads, C(nodes) with name, location,
    public address, slices (profile, ipv4, ipv6), entry points (profile, proto, port) and processes
    (profile, name, proto, port, max_clients, ipv4, ipv6).
  returned: success
  type: dict
problems:
  description: Every problem found, one sentence each naming the host, the variable and the reason.
  returned: failure
  type: list
  elements: str
  sample:
    - "host node-x1: vpnfleet_profiles[1] (office).processes: must be a whole number, got 'four'"
"""
