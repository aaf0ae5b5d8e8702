#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: csr
short_description: Make a private key and a certificate signing request on the host that keeps the key
version_added: 0.1.0
description:
  - Makes a private key (mode 0600) in O(privatekey_path) unless one of O(key_type) is there, and a
    CSR for it in O(csr_path). Returns the CSR for M(vpnfleet.server.certificate) to sign on the CA
    host; the key never leaves.
  - The CSR only proposes the common name and alternative names; the CA decides the usages from the purpose.
  - The CSR is rewritten only when the key, the common name or the alternative names change.
author: vpnfleet developers (@vpnfleet)
extends_documentation_fragment:
  - vpnfleet.server.attributes
  - vpnfleet.server.pki
  - vpnfleet.server.pki.subject_alt_names
options:
  privatekey_path:
    description: The private key; made when missing, unreadable or of another type.
    type: path
    required: true
  csr_path:
    description: Where the CSR (PEM) is written.
    type: path
    required: true
  common_name:
    description: Common name to ask for.
    type: str
    required: true
seealso:
  - module: vpnfleet.server.certificate
"""

EXAMPLES = r"""
- name: Key and CSR for the node's daemon (mutual TLS with the controller)
  vpnfleet.server.csr:
    privatekey_path: /etc/vpnfleet/daemon.key
    csr_path: /etc/vpnfleet/daemon.csr
    common_name: "{{ inventory_hostname }}"
    dns_names: ["{{ inventory_hostname }}"]
    ip_addresses: ["{{ ansible_host }}"]
  register: vpnfleet_daemon_csr
"""

RETURN = r"""
csr:
  description:
    - The CSR in PEM (public), for O(vpnfleet.server.certificate#module:csr_content).
  returned: when the CSR exists after the run (in check mode, only when it is kept)
  type: str
public_key_sha256:
  description: SHA-256 of the public key (DER), to tell keys apart without showing them.
  returned: when the key exists after the run
  type: str
"""

# ruff: noqa: E402 - Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports.
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vpnfleet.server.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.vpnfleet.server.plugins.module_utils._module_support import (
    ensure_file,
    fail_on,
    require_cryptography,
)
from ansible_collections.vpnfleet.server.plugins.module_utils.files import read_bytes
from ansible_collections.vpnfleet.server.plugins.module_utils.pki import _options, keys

SPEC = ArgumentSpec(
    {
        "privatekey_path": dict(type="path", required=True, no_log=False),
        "csr_path": dict(type="path", required=True),
        "common_name": dict(type="str", required=True),
    }
).merge(_options.KEY_TYPE, _options.SUBJECT_ALT_NAMES)


def main():
    module = AnsibleModule(supports_check_mode=True, **SPEC.module_kwargs())
    require_cryptography(module)
    params = module.params
    wanted = (params["common_name"], params["dns_names"] or [], params["ip_addresses"] or [])
    diffs = []
    result = {}
    with fail_on(module, keys.PkiError, OSError):
        key = keys.key_of_type(
            keys.read_pem(params["privatekey_path"], keys.load_private_key), params["key_type"]
        )
        if key is None:
            key = keys.make_private_key(params["key_type"])
            key_pem = keys.private_key_pem(key)
        else:
            key_pem = read_bytes(params["privatekey_path"])  # kept; only its mode may be corrected
        key_changed, key_diff = ensure_file(module, params["privatekey_path"], key_pem, 0o600, secret=True)

        csr = keys.read_pem(params["csr_path"], keys.load_csr)
        csr_changed = csr is None or not keys.csr_matches(csr, key, *wanted)
        if csr_changed:
            csr = keys.make_csr(key, *wanted)
            unused_changed, csr_diff = ensure_file(module, params["csr_path"], keys.csr_pem(csr), 0o644)
            diffs.append(csr_diff)
        if not (module.check_mode and (key_changed or csr_changed)):
            # In check mode a new key or CSR is not written, so there is nothing true to return.
            result = {"csr": keys.csr_pem(csr).decode(), "public_key_sha256": keys.public_key_sha256(key)}
    if key_diff:
        diffs.insert(0, key_diff)
    module.exit_json(changed=key_changed or csr_changed, diff=diffs, **result)


if __name__ == "__main__":
    main()
