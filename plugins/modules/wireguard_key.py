#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: wireguard_key
short_description: The private key of a WireGuard interface, made on the host that uses it
version_added: 0.1.0
description:
  - Makes a WireGuard private key (32 random bytes, clamped for X25519, in base64 as C(wg genkey) writes it)
    in O(path) with mode C(0600) unless a usable key is there already; a file that holds no key is replaced.
  - The key is made on the host and never returned; the interface derives its public key itself
    (C(wg show <interface> public-key)), and the vpnfleet daemon reports it to the controller.
author: vpnfleet developers (@vpnfleet)
extends_documentation_fragment:
  - vpnfleet.server.attributes
options:
  path:
    description: The key file; its directory is made (C(0755)) when missing.
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Make the key of the interface wg-internet
  vpnfleet.server.wireguard_key:
    path: /etc/vpnfleet/wireguard/wg-internet.key
  no_log: true
"""

RETURN = r"""
path:
  description: The key file.
  type: str
  returned: always
  sample: /etc/vpnfleet/wireguard/wg-internet.key
"""

# ruff: noqa: E402 - Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports.
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vpnfleet.server.plugins.module_utils._module_support import ensure_file, fail_on
from ansible_collections.vpnfleet.server.plugins.module_utils.files import read_bytes
from ansible_collections.vpnfleet.server.plugins.module_utils.wireguard_keys import (
    is_private_key,
    make_private_key,
)


def main():
    module = AnsibleModule(argument_spec={"path": dict(type="path", required=True)}, supports_check_mode=True)
    path = module.params["path"]
    with fail_on(module, OSError):
        current = read_bytes(path)
        # A usable key is kept as it is (only its mode may be corrected): a new one would cut off
        # every peer until the controller learnt it.
        key = current if is_private_key(current) else make_private_key()
        changed, diff = ensure_file(module, path, key, 0o600, secret=True)
    module.exit_json(changed=changed, diff=diff or {}, path=path)


if __name__ == "__main__":
    main()
