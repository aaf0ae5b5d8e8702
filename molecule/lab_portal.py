"""The portal as the scenarios' tests use it: a person's browser (cookies, CSRF tokens, the
Referer a browser sends) and the real OpenVPN client with a config the portal gave.

pytest finds this module through the `pythonpath` setting in pyproject.toml.
"""

import http.cookiejar
import ipaddress
import json
import re
import urllib.parse
import urllib.request

from lab_testinfra import VpnClient

PORTAL = "https://203.0.113.10"
NODES = {"198.51.100.10": ("node-x1", "x"), "198.51.100.74": ("node-y1", "y")}
# The lab's users (inventories/lab/group_vars/vpnfleet_controllers.yml).
ALICE = ("alice", "lab-alice-password")
ADMIN = ("admin", "lab-admin-password")


class Browser:
    """A person with a cookie jar: forms with their CSRF token, the Referer a browser sends."""

    def __init__(self, tls_context):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=tls_context), urllib.request.HTTPCookieProcessor(self.jar)
        )

    def get(self, path):
        with self.opener.open(PORTAL + path, timeout=30) as answer:
            return answer.status, answer.headers, answer.read().decode()

    def post(self, path, fields, referer_path="/"):
        request = urllib.request.Request(  # noqa: S310 - PORTAL is a fixed https URL
            PORTAL + path,
            data=urllib.parse.urlencode(fields).encode(),
            headers={"Referer": PORTAL + referer_path},
        )
        with self.opener.open(request, timeout=60) as answer:
            return answer.status, answer.headers, answer.read().decode()

    def login(self, username, password):
        _, _, page = self.get("/login")
        status, _, home = self.post(
            "/login",
            {"csrf_token": csrf(page), "username": username, "password": password, "next": ""},
            "/login",
        )
        assert status == 200 and "logout" in home.lower(), home
        return home


def csrf(page):
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert found, "no CSRF token in the page:\n" + page
    return found.group(1)


class PortalClient(VpnClient):
    """A client with a config as the portal gave it."""

    # The nodes its config may name, by address: (name, location); a scenario with other nodes
    # gives its own.
    nodes = NODES

    def node(self):
        found = re.findall(
            r"Peer Connection Initiated with \[AF_INET6?\](?:::ffff:)?([0-9.]+):", self.log_text()
        )
        assert found, self.log_text()
        return self.nodes[found[-1]]

    def interface(self):
        out = self.host.check_output(f"ip -4 -json address show dev {self.device()} scope global")
        info = json.loads(out)[0]["addr_info"][0]
        return ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
