"""The controller signs through the real signer: it needs no CA key, and nothing in the CA grows
with the configs it issues."""

from __future__ import annotations

import re
import shutil

import pytest
from controller_helpers import csrf_token, portal_ovpn
from cryptography import x509
from vpnfleet.shared.pki import keys

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_configs_come_from_the_signer_without_the_ca_key_and_leave_the_ca_as_it_was(
    make_app, pki_dir, tmp_path
):
    # The app's view of the CA has no ca.key (on a controller it cannot read it).
    app_view = tmp_path / "ca-without-key"
    shutil.copytree(pki_dir / "ca", app_view, ignore=shutil.ignore_patterns("ca.key", ".lock"))
    app = make_app(ca_dir=str(app_view))
    client = app.test_client()
    ca_dir = pki_dir / "ca"
    before = (ca_dir / "index.json").read_text(), sorted(p.name for p in (ca_dir / "issued").iterdir())

    serials = []
    for name in ("laptop", "phone"):
        _, ovpn = portal_ovpn(client, app, display_name=name)
        cert = keys.load_certificate(ovpn.split("<cert>")[1].split("</cert>")[0].strip())
        assert keys.certificate_purpose(cert) == "client"
        serials.append(cert.serial_number)
    assert (
        (ca_dir / "index.json").read_text(),
        sorted(p.name for p in (ca_dir / "issued").iterdir()),
    ) == before

    # Deleting a config re-signs the CA's CRL through the signer, from the database.
    home = client.get("/").get_data(as_text=True)
    delete = re.search(r'action="([^"]+/delete)"', home).group(1)
    client.post(delete, data={"csrf_token": csrf_token(home)})
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert len({entry.serial_number for entry in crl} & set(serials)) == 1
