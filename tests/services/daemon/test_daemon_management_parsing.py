"""The `status 3` reply of the OpenVPN management interface, parsed without a process."""

from pathlib import Path

import pytest

from vpnfleet.daemon.management import ManagementError, OpenVpnProcess, parse_client_list

# The layout OpenVPN 2.6 answers `status 3` with (tab separated).
STATUS_2_6 = [
    "TITLE\tOpenVPN 2.6.3 x86_64-pc-linux-gnu",
    "TIME\t2026-11-24 20:34:19\t1795552459",
    "HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\tVirtual IPv6 Address"
    "\tBytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\tClient ID"
    "\tPeer ID\tData Channel Cipher",
    "CLIENT_LIST\tvfd-alice\t198.51.100.130:52578\t198.19.0.2\t2001:db8:f0::1000\t2285\t2288"
    "\t2026-11-24 20:34:18\t1795552458\tUNDEF\t0\t0\tAES-256-GCM",
    "CLIENT_LIST\tvfd-bob\t[AF_INET6]2001:db8:f0:ff::2:1194\t198.19.0.3\t\t10\t20"
    "\t2026-11-24 20:35:00\t1795552500\tUNDEF\t7\t1\tCHACHA20-POLY1305",
    "HEADER\tROUTING_TABLE\tVirtual Address\tCommon Name\tReal Address\tLast Ref\tLast Ref (time_t)",
    "ROUTING_TABLE\t198.19.0.2\tvfd-alice\t198.51.100.130:52578\t2026-11-24 20:34:18\t1795552458",
    "GLOBAL_STATS\tMax bcast/mcast queue length\t1",
]


def test_clients_are_read_by_column_name():
    alice, bob = parse_client_list(STATUS_2_6)
    assert alice.common_name == "vfd-alice"
    assert alice.client_id == 0
    assert alice.real_address == "198.51.100.130:52578"
    assert (alice.virtual_ipv4, alice.virtual_ipv6) == ("198.19.0.2", "2001:db8:f0::1000")
    assert (alice.bytes_received, alice.bytes_sent) == (2285, 2288)
    assert alice.connected_since == 1795552458
    # A client without IPv6 has an empty column, not a missing one.
    assert (bob.client_id, bob.virtual_ipv6) == (7, "")


# OpenVPN 2.7 (trixie-backports) names the socket a client came in on before its address.
STATUS_2_7_ROWS = [
    "CLIENT_LIST\tvfd-alice\tudp6:198.51.100.246:42246\t198.18.0.2\t2001:db8:100::2\t2276\t2418"
    "\t2026-12-01 09:56:02\t1796118962\tUNDEF\t0\t0\tAES-256-GCM",
    "CLIENT_LIST\tvfd-bob\ttcp6-server:198.51.100.246:54940\t198.18.0.4\t2001:db8:100::4\t2336\t2519"
    "\t2026-12-01 09:56:02\t1796118962\tUNDEF\t2\t2\tAES-256-GCM",
    "CLIENT_LIST\tvfd-carol\tudp6:[2001:db8:1f00:ff0::2]:45476\t198.18.0.5\t2001:db8:100::5\t3479\t3655"
    "\t2026-12-01 09:56:02\t1796118962\tUNDEF\t3\t3\tAES-256-GCM",
]


def test_openvpn_2_7_addresses_read_as_2_6_ones():
    alice, bob, carol = parse_client_list([STATUS_2_6[2], *STATUS_2_7_ROWS])
    assert alice.real_address == "198.51.100.246:42246"
    assert bob.real_address == "198.51.100.246:54940"
    assert carol.real_address == "[2001:db8:1f00:ff0::2]:45476"


def test_the_column_order_does_not_matter():
    header = (
        "HEADER\tCLIENT_LIST\tClient ID\tCommon Name\tVirtual Address\tVirtual IPv6 Address\tReal Address"
    )
    header += "\tBytes Received\tBytes Sent\tConnected Since (time_t)"
    row = "CLIENT_LIST\t3\tvfd-carol\t198.19.0.9\t\t198.51.100.131:4000\t1\t2\t1795552000"
    (carol,) = parse_client_list([header, row])
    assert (carol.common_name, carol.client_id, carol.real_address) == ("vfd-carol", 3, "198.51.100.131:4000")


def test_no_clients_is_an_empty_list():
    assert parse_client_list([line for line in STATUS_2_6 if not line.startswith("CLIENT_LIST")]) == []


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (STATUS_2_6[3:4], "before naming its columns"),
        (["HEADER\tCLIENT_LIST\tCommon Name\tReal Address"], "lacks the column"),
        ([STATUS_2_6[2], STATUS_2_6[3].replace("\t2285\t", "\tmany\t")], "malformed client row"),
        ([STATUS_2_6[2], STATUS_2_6[3] + "\textra"], "malformed client row"),
    ],
)
def test_a_reply_that_does_not_fit_is_an_error(lines, reason):
    with pytest.raises(ManagementError, match=reason):
        parse_client_list(lines)


@pytest.mark.parametrize(
    ("socket_name", "process", "profile_id"),
    [
        ("default-0.sock", "default-0", "default"),
        ("full-tunnel-12.sock", "full-tunnel-12", "full-tunnel"),
        ("standalone.sock", "standalone", "standalone"),
    ],
)
def test_process_and_profile_come_from_the_socket_name(socket_name, process, profile_id):
    openvpn = OpenVpnProcess(Path("/run/openvpn-server") / socket_name)
    assert (openvpn.name, openvpn.profile_id) == (process, profile_id)
