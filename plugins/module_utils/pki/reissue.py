"""Does a certificate need a new one? The decision of the ``certificate`` module, as plain Python.

It compares what is there with what is wanted, the same way in check mode and in a real run,
so the module's idempotence and the truth of its check mode rest on these two functions.

Public interface
----------------
    WantedCertificate                   what the certificate should hold, and the key it certifies
    wanted_certificate(purpose, csr=None, common_name=None, dns_names=None, ip_addresses=None,
                       key=None, renew_before_days=30) -> WantedCertificate
    reissue_reasons(cert, ca, wanted, now=None) -> list of reasons; empty when the certificate stays
"""

import dataclasses
import datetime

from .keys import PkiError, certificate_facts, csr_facts, normalised_ips, not_after, same_public_key, utcnow


@dataclasses.dataclass(frozen=True)
class WantedCertificate:
    common_name: str
    purpose: str
    dns_names: tuple = ()
    ip_addresses: tuple = ()
    # The key to certify (a CSR's, or one kept on the CA host); None: a new key is to be made.
    public_key: object = None
    renew_before_days: int = 30


def wanted_certificate(
    purpose, csr=None, common_name=None, dns_names=None, ip_addresses=None, key=None, renew_before_days=30
):
    """The CSR proposes the common name and the alternative names, the arguments override it;
    without a CSR ``key`` (a private key kept on the CA host, or None) is the one to certify."""
    asked = csr_facts(csr) if csr is not None else {"common_name": None, "dns_names": [], "ip_addresses": []}
    common_name = common_name or asked["common_name"]
    if not common_name:
        raise PkiError("common_name is required when no CSR gives one")
    if dns_names is None and ip_addresses is None:
        dns_names, ip_addresses = asked["dns_names"], asked["ip_addresses"]
    if csr is not None:
        public_key = csr.public_key()
    else:
        public_key = key.public_key() if key is not None else None
    return WantedCertificate(
        common_name,
        purpose,
        tuple(dns_names or ()),
        tuple(ip_addresses or ()),
        public_key,
        renew_before_days,
    )


def reissue_reasons(cert, ca, wanted, now=None):
    """Why ``cert`` (None when there is none) does not do what ``wanted`` asks of ``ca``."""
    if cert is None:
        return ["no certificate yet"]
    reasons = []
    if not ca.issued_by_me(cert):
        reasons.append("not issued by this CA")
    elif ca.is_revoked(cert.serial_number):
        reasons.append("revoked")
    facts = certificate_facts(cert)
    if facts["common_name"] != wanted.common_name:
        reasons.append("common name is %r, wanted %r" % (facts["common_name"], wanted.common_name))
    if facts["purpose"] != wanted.purpose:
        reasons.append("purpose is %s, wanted %s" % (facts["purpose"], wanted.purpose))
    if facts["dns_names"] != sorted(wanted.dns_names):
        reasons.append("DNS names differ")
    if facts["ip_addresses"] != normalised_ips(wanted.ip_addresses):
        reasons.append("IP addresses differ")
    if wanted.public_key is None or not same_public_key(cert.public_key(), wanted.public_key):
        reasons.append("the key is not the requested one")
    remaining = not_after(cert) - (now or utcnow())
    if remaining < datetime.timedelta(days=wanted.renew_before_days):
        reasons.append("less than %d days of validity left" % wanted.renew_before_days)
    return reasons
