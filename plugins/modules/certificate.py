#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: certificate
short_description: Issue, renew and revoke certificates of the vpnfleet CA
version_added: 0.1.0
description:
  - Runs on the CA host. Issues a certificate for a common name and a purpose, keeps it while it still fits,
    renews it when less than O(renew_before_days) are left, and revokes it (the CRL is re-signed at once).
  - "Two ways to get a certificate: with O(csr_content) or O(csr_path) the module signs a CSR made
    on another host (see M(vpnfleet.server.csr)), so that host's key never leaves it: the play
    delegates this task to the CA host and copies RV(certificate) back. Without a CSR the module
    makes the key here as well and writes it to O(privatekey_path) with mode 0600 (for VPN users'
    configs made on the controller)."
  - "Purposes and their extensions. V(server): KeyUsage digitalSignature (plus keyEncipherment for
    RSA keys), ExtendedKeyUsage serverAuth. V(client): the same KeyUsage, ExtendedKeyUsage clientAuth.
    V(daemon_server): serverAuth plus the vpnfleet purpose OID
    2.25.153677918813723533877896230736416013330.1. V(daemon_client): clientAuth plus
    2.25.153677918813723533877896230736416013330.2; the node's VPN daemon refuses peers without it.
    V(vpn_server): serverAuth plus 2.25.153677918813723533877896230736416013330.3, for a node's
    OpenVPN processes; the clients' configs require it (C(remote-cert-eku)).
    Every certificate has BasicConstraints CA:FALSE and key identifiers; subject alternative names
    from O(dns_names) and O(ip_addresses)."
  - "The certificate is (re)issued when it is missing, not issued by this CA, revoked, when its
    common name, purpose or alternative names differ, when its key is not the requested one, or
    when less than O(renew_before_days) are left. RV(reasons) says which."
author: vpnfleet developers (@vpnfleet)
extends_documentation_fragment:
  - vpnfleet.server.attributes
  - vpnfleet.server.pki
  - vpnfleet.server.pki.subject_alt_names
options:
  ca_path:
    description: Directory of the CA made by M(vpnfleet.server.ca).
    type: path
    required: true
  path:
    description: Where the certificate is kept on the CA host (PEM). Its presence makes the module idempotent.
    type: path
    required: true
  state:
    description: V(present) issues or keeps the certificate; V(revoked) revokes the one in O(path).
    type: str
    choices: [present, revoked]
    default: present
  common_name:
    description:
      - Common name of the certificate. Required with O(state=present) unless a CSR gives it.
    type: str
  purpose:
    description: What the certificate is for. Required with O(state=present).
    type: str
    choices: [server, client, vpn_server, daemon_server, daemon_client]
  csr_content:
    description: A PEM CSR to sign. Mutually exclusive with O(csr_path) and O(privatekey_path).
    type: str
  csr_path:
    description: A PEM CSR file on the CA host to sign.
    type: path
  privatekey_path:
    description:
      - Without a CSR, where the key made here goes (mode 0600), of O(key_type).
      - With O(state=present), one of O(csr_content), O(csr_path) and O(privatekey_path) is required.
    type: path
  lifetime_days:
    description: Validity of a new certificate; never past the CA's.
    type: int
    default: 365
  renew_before_days:
    description: Issue a new certificate when less than this many days are left.
    type: int
    default: 30
  revocation_reason:
    description: Reason recorded in the CRL with O(state=revoked).
    type: str
    choices: [unspecified, key_compromise, affiliation_changed, superseded, cessation_of_operation]
    default: unspecified
seealso:
  - module: vpnfleet.server.ca
  - module: vpnfleet.server.csr
"""

EXAMPLES = r"""
- name: Make the node's key and CSR on the node; the key stays there
  vpnfleet.server.csr:
    privatekey_path: /etc/openvpn/server/internet/server.key
    csr_path: /etc/openvpn/server/internet/server.csr
    common_name: "{{ inventory_hostname }}"
  register: vpnfleet_node_csr

- name: Sign it on the controller
  vpnfleet.server.certificate:
    ca_path: /var/lib/vpnfleet/ca
    path: "/var/lib/vpnfleet/ca/hosts/{{ inventory_hostname }}-server.crt"
    csr_content: "{{ vpnfleet_node_csr.csr }}"
    purpose: server
  delegate_to: controller
  register: vpnfleet_node_cert

- name: Put the certificate next to the key
  ansible.builtin.copy:
    content: "{{ vpnfleet_node_cert.certificate }}"
    dest: /etc/openvpn/server/internet/server.crt
    mode: "0644"

- name: The controller's client certificate for the node daemons, key made on the controller
  vpnfleet.server.certificate:
    ca_path: /var/lib/vpnfleet/ca
    path: /etc/vpnfleet/daemon-client.crt
    privatekey_path: /etc/vpnfleet/daemon-client.key
    common_name: controller
    purpose: daemon_client

- name: Revoke a lost laptop's certificate
  vpnfleet.server.certificate:
    ca_path: /var/lib/vpnfleet/ca
    path: /var/lib/vpnfleet/users/alice-laptop.crt
    state: revoked
    revocation_reason: key_compromise
"""

RETURN = r"""
certificate:
  description: The certificate in PEM (public; copy it to the host that holds the key).
  returned: when O(state=present), except in check mode when a new one would be issued
  type: str
facts:
  description: Serial, common name, issuer, purpose, key type, validity, SHA-256 fingerprint, SANs.
  returned: when a certificate is in O(path) after the run
  type: dict
  sample:
    serial: 7B3EFA0B0AF4CF1535176DB56B1835BA9E48A3A0
    common_name: node-a
    issuer: vpnfleet CA
    purpose: daemon_server
    key_type: ecdsa-p256
    not_before: "2026-01-01T00:00:00Z"
    not_after: "2027-01-01T00:05:00Z"
    sha256: "0A:CA:DD:52:..."
    dns_names: [node-a.example.org]
    ip_addresses: [203.0.113.10]
reasons:
  description: Why a new certificate was (or in check mode would be) issued; empty when it was kept.
  returned: when O(state=present)
  type: list
  elements: str
  sample: [less than 30 days of validity left]
"""

# ruff: noqa: E402 - Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports.
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vpnfleet.server.plugins.module_utils._argspec import ArgumentSpec
from ansible_collections.vpnfleet.server.plugins.module_utils._module_support import (
    ensure_file,
    fail_on,
    require_cryptography,
)
from ansible_collections.vpnfleet.server.plugins.module_utils.files import read_file
from ansible_collections.vpnfleet.server.plugins.module_utils.pki import _options, keys, reissue
from ansible_collections.vpnfleet.server.plugins.module_utils.pki.authority import (
    REVOCATION_REASONS,
    CertificateAuthority,
)

SPEC = ArgumentSpec(
    {
        "ca_path": dict(type="path", required=True),
        "path": dict(type="path", required=True),
        "state": dict(type="str", choices=["present", "revoked"], default="present"),
        "common_name": dict(type="str"),
        "purpose": dict(type="str", choices=list(keys.PURPOSES)),
        "csr_content": dict(type="str"),
        "csr_path": dict(type="path"),
        "privatekey_path": dict(type="path", no_log=False),
        "lifetime_days": dict(type="int", default=365),
        "renew_before_days": dict(type="int", default=30),
        "revocation_reason": dict(type="str", choices=list(REVOCATION_REASONS), default="unspecified"),
    },
    mutually_exclusive=[("csr_content", "csr_path", "privatekey_path")],
    required_if=[
        ("state", "present", ("purpose",)),
        ("state", "present", ("csr_content", "csr_path", "privatekey_path"), True),
    ],
).merge(_options.KEY_TYPE, _options.SUBJECT_ALT_NAMES)


def existing_certificate(path):
    return keys.read_pem(path, keys.load_certificate)


def wanted(params):
    """What the certificate should hold, and the key it certifies (None: make one here)."""
    csr = key = None
    if params["csr_content"] or params["csr_path"]:
        csr = keys.load_csr(params["csr_content"] or read_file(params["csr_path"]))
    else:
        key = keys.key_of_type(
            keys.read_pem(params["privatekey_path"], keys.load_private_key), params["key_type"]
        )
    return reissue.wanted_certificate(
        params["purpose"],
        csr,
        params["common_name"],
        params["dns_names"],
        params["ip_addresses"],
        key,
        params["renew_before_days"],
    )


def present(module, ca):
    params = module.params
    want = wanted(params)
    cert = existing_certificate(params["path"])
    reasons = reissue.reissue_reasons(cert, ca, want)
    result = {"changed": bool(reasons), "reasons": reasons}
    before = keys.certificate_facts(cert) if cert is not None else {}
    if not reasons:
        result.update(certificate=keys.certificate_pem(cert).decode(), facts=before)
        return result
    if module.check_mode:
        result["diff"] = {"before": before, "after": {"(new certificate)": ", ".join(reasons)}}
        return result

    public_key = want.public_key
    if public_key is None:
        key = keys.make_private_key(params["key_type"])
        ensure_file(module, params["privatekey_path"], keys.private_key_pem(key), 0o600, secret=True)
        public_key = key.public_key()
    cert = ca.sign_public_key(
        public_key, want.common_name, want.purpose, want.dns_names, want.ip_addresses, params["lifetime_days"]
    )
    ensure_file(module, params["path"], keys.certificate_pem(cert), 0o644)
    after = keys.certificate_facts(cert)
    result.update(
        certificate=keys.certificate_pem(cert).decode(), facts=after, diff={"before": before, "after": after}
    )
    return result


def revoked(module, ca):
    path = module.params["path"]
    cert = existing_certificate(path)
    if cert is None:
        raise keys.PkiError("no certificate in %s to revoke" % path)
    if not ca.issued_by_me(cert):
        raise keys.PkiError("the certificate in %s was not issued by the CA in %s" % (path, ca.directory))
    facts = keys.certificate_facts(cert)
    changed = not ca.is_revoked(cert.serial_number)
    if changed and not module.check_mode:
        ca.revoke(cert.serial_number, module.params["revocation_reason"])
    diff = {
        "before": {"serial": facts["serial"], "revoked": not changed},
        "after": {"serial": facts["serial"], "revoked": True},
    }
    return {"changed": changed, "facts": facts, "diff": diff}


def main():
    module = AnsibleModule(supports_check_mode=True, **SPEC.module_kwargs())
    require_cryptography(module)
    with fail_on(module, keys.PkiError, OSError):
        ca = CertificateAuthority.load(module.params["ca_path"])
        result = (revoked if module.params["state"] == "revoked" else present)(module, ca)
        if "facts" not in result and os.path.exists(module.params["path"]):
            result["facts"] = keys.certificate_facts(existing_certificate(module.params["path"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
