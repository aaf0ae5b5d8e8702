"""The controller signs through the real signer: it needs no CA key, and nothing in the CA grows
with the configs it issues."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta

import pytest
from controller_helpers import csrf_token, portal_ovpn
from cryptography import x509
from signer_process import start_signer
from vpnfleet.shared.pki import keys

from vpnfleet.controller.certificates import SignerError
from vpnfleet.controller.crl import publish_crl
from vpnfleet.controller.state import EXTENSION_KEY

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


@pytest.mark.parametrize(("bound", "signs"), [("60m", False), ("61m", True)])
def test_the_signers_crl_bound_must_hold_the_crl_lifetime_and_its_backdating(
    make_app, pki_dir, tmp_path, bound, signs
):
    # The controller asks for crl_lifetime (1 h) from a thisUpdate a minute back; the role
    # refuses a shorter bound (roles/controller/tasks/validate.yml).
    shutil.copytree(pki_dir / "ca", tmp_path / "ca", ignore=shutil.ignore_patterns(".lock"))
    signer = start_signer(tmp_path / "ca", tmp_path, max_crl_lifetime=bound)
    try:
        app = make_app(signer_socket=str(signer.socket), crl_lifetime="1h")
        controller = app.extensions[EXTENSION_KEY]
        with app.app_context():
            session = controller.sessions()
            try:
                if signs:
                    crl = x509.load_pem_x509_crl(publish_crl(controller, session).pem.encode())
                    assert crl.next_update_utc - crl.last_update_utc == timedelta(minutes=61)
                else:
                    with pytest.raises(SignerError, match="longer than the bound of 1:00:00"):
                        publish_crl(controller, session)
            finally:
                session.close()
    finally:
        signer.stop()
