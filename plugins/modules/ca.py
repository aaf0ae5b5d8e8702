#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: ca
short_description: Make and keep the vpnfleet certificate authority in a directory
version_added: 0.1.0
description:
  - Makes a CA (key, self-signed certificate, serial and revocation database, CRL) in O(path) and keeps it.
  - An existing CA is never replaced behind your back; a CA with another key type or common name is refused.
    Remove it first with O(state=absent) if that is what you want (every certificate it issued dies with it).
  - Re-signs the CRL when less than O(crl_refresh_days) of its validity is left, because an expired CRL
    makes OpenVPN refuse every client.
  - "Layout of O(path): C(ca.key) (mode 0600), C(ca.crt), C(crl.pem), C(index.json), C(issued/<SERIAL>.pem)."
  - The CA certificate has BasicConstraints CA:TRUE pathlen:0, KeyUsage keyCertSign and cRLSign,
    and subject and authority key identifiers.
author: vpnfleet developers (@vpnfleet)
extends_documentation_fragment:
  - vpnfleet.server.attributes
  - vpnfleet.server.pki
options:
  path:
    description: Directory of the CA. Made with mode 0700.
    type: path
    required: true
  state:
    description: Whether the CA should exist.
    type: str
    choices: [present, absent]
    default: present
  common_name:
    description: Common name of the CA certificate.
    type: str
    default: vpnfleet CA
  lifetime_days:
    description: Validity of the CA certificate. Issued certificates never outlive it.
    type: int
    default: 3650
  crl_lifetime_days:
    description: Validity of each CRL the CA signs.
    type: int
    default: 365
  crl_refresh_days:
    description: Re-sign the CRL when less than this many days of it are left.
    type: int
    default: 60
seealso:
  - module: vpnfleet.server.certificate
  - module: vpnfleet.server.csr
"""

EXAMPLES = r"""
- name: Make the CA on the controller
  vpnfleet.server.ca:
    path: /var/lib/vpnfleet/ca
    common_name: Example University VPN CA
  register: vpnfleet_ca

- name: Show where the CRL is
  ansible.builtin.debug:
    msg: "{{ vpnfleet_ca.ca.crl_path }} valid until {{ vpnfleet_ca.ca.crl_next_update }}"
"""

RETURN = r"""
ca:
  description: Facts of the CA; empty when O(state=absent) or in check mode before the CA exists.
  returned: always
  type: dict
  sample:
    common_name: vpnfleet CA
    key_type: ecdsa-p256
    serial: 136A078B923DD0064DA0E0CA78718991FBF57E31
    not_before: "2026-01-01T00:00:00Z"
    not_after: "2035-12-30T00:05:00Z"
    sha256: "9D:54:45:97:..."
    cert_path: /var/lib/vpnfleet/ca/ca.crt
    crl_path: /var/lib/vpnfleet/ca/crl.pem
    crl_next_update: "2027-01-01T00:05:00Z"
    issued: 4
    revoked: 1
ca_certificate:
  description: The CA certificate in PEM, to hand to nodes and clients.
  returned: when the CA exists
  type: str
"""

# ruff: noqa: E402 - Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports.
import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vpnfleet.server.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.vpnfleet.server.plugins.module_utils._module_support import (
    fail_on,
    require_cryptography,
)
from ansible_collections.vpnfleet.server.plugins.module_utils.files import read_file
from ansible_collections.vpnfleet.server.plugins.module_utils.pki import _options, keys
from ansible_collections.vpnfleet.server.plugins.module_utils.pki.authority import CertificateAuthority

SPEC = ArgumentSpec(
    {
        "path": dict(type="path", required=True),
        "state": dict(type="str", choices=["present", "absent"], default="present"),
        "common_name": dict(type="str", default="vpnfleet CA"),
        "lifetime_days": dict(type="int", default=3650),
        "crl_lifetime_days": dict(type="int", default=365),
        "crl_refresh_days": dict(type="int", default=60),
    }
).merge(_options.KEY_TYPE)


def facts_of(path):
    return CertificateAuthority.load(path).facts() if CertificateAuthority.exists(path) else {}


def present(module):
    path = module.params["path"]
    if not CertificateAuthority.exists(path):
        if module.check_mode:
            return True, {}
        CertificateAuthority.create(
            path,
            module.params["common_name"],
            module.params["key_type"],
            module.params["lifetime_days"],
            module.params["crl_lifetime_days"],
        )
        return True, facts_of(path)

    ca = CertificateAuthority.load(path)
    facts = ca.facts()
    for option in ("common_name", "key_type"):
        if facts[option] != module.params[option]:
            raise keys.PkiError(
                "the CA in %s has %s %r, not %r; it is never replaced silently: remove it with "
                "state=absent first if every certificate it issued may die"
                % (path, option, facts[option], module.params[option])
            )
    refresh_due = ca.crl_needs_refresh(module.params["crl_refresh_days"])
    if refresh_due and not module.check_mode:
        ca.refresh_crl(module.params["crl_refresh_days"])
        facts = ca.facts()
    return refresh_due, facts


def absent(module):
    path = module.params["path"]
    exists = os.path.exists(path)
    before = facts_of(path)
    if exists and not module.check_mode:
        shutil.rmtree(path)
    return dict(changed=exists, ca={}, diff={"before": before, "after": {}})


def main():
    module = AnsibleModule(supports_check_mode=True, **SPEC.module_kwargs())
    require_cryptography(module)
    with fail_on(module, keys.PkiError, OSError):
        if module.params["state"] == "absent":
            module.exit_json(**absent(module))
        before = facts_of(module.params["path"])
        changed, facts = present(module)
        result = dict(changed=changed, ca=facts, diff={"before": before, "after": facts})
        if facts:
            result["ca_certificate"] = read_file(facts["cert_path"]).decode()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
