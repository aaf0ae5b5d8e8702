"""The OpenVPN a node runs, as its facts report it."""

import os
import shutil
import subprocess

import pytest
from vpnfleet.shared import node_facts

# First lines of `openvpn --version` (Debian 12's, trixie-backports', a release candidate's).
DEBIAN_12 = (
    "OpenVPN 2.6.3 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [PKCS11] [MH/PKTINFO] [AEAD]"
)
BACKPORTS = "OpenVPN 2.7.8 x86_64-pc-linux-gnu [SSL (OpenSSL)] [LZO] [LZ4] [EPOLL] [PKCS11] [AEAD] [DCO]"
CANDIDATE = "OpenVPN 2.7_rc2 aarch64-unknown-linux-gnu [SSL (OpenSSL)] [EPOLL] [DCO]"


@pytest.mark.parametrize(
    ("banner", "version"), [(DEBIAN_12, "2.6.3"), (BACKPORTS, "2.7.8"), (CANDIDATE, "2.7")]
)
def test_the_version_and_banner_come_from_the_first_line(banner, version):
    text = banner + "\nlibrary versions: OpenSSL 3.5.9 29 Sep 2026, LZO 2.10\nDCO version: N/A\n"
    assert node_facts.openvpn_from_version_text(text) == {"version": version, "banner": banner}


@pytest.mark.parametrize("text", [None, "", "bash: openvpn: command not found", "OpenVPNx 2.6.3 x"])
def test_no_openvpn_is_none(text):
    assert node_facts.openvpn_from_version_text(text) is None


@pytest.mark.skipif(shutil.which("openvpn") is None, reason="needs the openvpn binary")
def test_the_real_binary_of_this_machine_is_read():
    output = subprocess.run(["openvpn", "--version"], capture_output=True, text=True, check=False).stdout
    found = node_facts.gather("[]", openvpn_version_text=output)["openvpn"]
    assert found["banner"] == output.splitlines()[0]
    assert found["version"].split(".")[0] == "2"


def test_wireguard_in_the_kernel_is_a_loaded_or_built_in_module(tmp_path):
    sys_root, modules_root = tmp_path / "sys", tmp_path / "modules"
    (sys_root / "module").mkdir(parents=True)
    (modules_root / "6.1.0-test").mkdir(parents=True)
    found = node_facts.wireguard_in_kernel(str(sys_root), str(modules_root), "6.1.0-test")
    assert found["kernel"] is False and "lists no wireguard module" in found["reason"]
    (modules_root / "6.1.0-test" / "modules.dep").write_text(
        "kernel/drivers/net/wireguard/wireguard.ko.xz: kernel/lib/crypto/libcurve25519-generic.ko.xz\n"
    )
    assert node_facts.wireguard_in_kernel(str(sys_root), str(modules_root), "6.1.0-test")["kernel"] is True
    (modules_root / "6.1.0-test" / "modules.dep").write_text("kernel/net/ipv4/udp_tunnel.ko.xz:\n")
    (sys_root / "module" / "wireguard").mkdir()
    assert node_facts.wireguard_in_kernel(str(sys_root), str(modules_root), "6.1.0-test")["kernel"] is True


def test_this_machines_kernel_is_read_as_it_is():
    found = node_facts.gather("[]")["wireguard"]
    if os.path.isdir("/sys/module/wireguard"):
        assert found["kernel"] is True
    else:
        # This machine's kernel has none (the lab's nodes run wireguard-go), unless it could load one.
        assert found["kernel"] is ("lists wireguard" in found["reason"])
