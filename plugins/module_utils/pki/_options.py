"""The options that several PKI modules (ca, csr, certificate) share, as ArgumentSpec pieces.

Documented once, in the doc fragment ``vpnfleet.server.pki`` (plugins/doc_fragments/pki.py);
the two must say the same.
"""

from .._argspec import ArgumentSpec
from .keys import DEFAULT_KEY_TYPE, KEY_TYPES

# no_log=False: "key" in the name makes Ansible suspect a secret; it is a choice of algorithm.
KEY_TYPE = ArgumentSpec(
    {"key_type": dict(type="str", choices=list(KEY_TYPES), default=DEFAULT_KEY_TYPE, no_log=False)}
)

# No default: the certificate module tells "not given" (take the CSR's) from "none".
SUBJECT_ALT_NAMES = ArgumentSpec(
    {
        "dns_names": dict(type="list", elements="str"),
        "ip_addresses": dict(type="list", elements="str"),
    }
)
