# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the PKI modules (ca, csr, certificate) share: the cryptography they need and common options.

The options match plugins/module_utils/pki/_options.py, the version _cryptography_dep.py.
"""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  key_type:
    description:
      - Type of the private key the module makes (NIST P-256, Ed25519 or RSA with 3072 bits).
      - A key of another type in its place is replaced; M(vpnfleet.server.ca) refuses to replace a CA instead.
    type: str
    choices: [ecdsa-p256, ed25519, rsa3072]
    default: ecdsa-p256
requirements:
  - cryptography >= 44.0 on the host that runs the module (older releases cannot hold the vpnfleet
    purpose OIDs, C(2.25.<128-bit integer>); Debian 12 ships 38.0.4, Debian 13 43.0.0)
"""

    SUBJECT_ALT_NAMES = r"""
options:
  dns_names:
    description:
      - DNS names for the subject alternative names.
      - When M(vpnfleet.server.certificate) signs a CSR and neither O(dns_names) nor O(ip_addresses)
        is given, it takes the CSR's names.
    type: list
    elements: str
  ip_addresses:
    description: IP addresses for the subject alternative names, like O(dns_names).
    type: list
    elements: str
"""
