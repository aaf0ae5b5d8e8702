"""eduVPN's own client library (PyPI eduvpn-common, the Go library inside the official apps) as an app
uses it: add a server (discovery, OAuth with PKCE through the library's loopback redirect), pick a
profile, get a config. The library makes the WireGuard key pair itself, sends the public key and
puts the private key in the config it returns.

The library runs in a child process, one app session each: Go reads its environment once, when
the process starts (SSL_CERT_FILE names the lab's CA), and allows one registration per process.
The person at the browser is the caller's ``approve``: it gets the authorization URL the library
would open in a browser, logs in and approves in the portal, and returns the redirect URL the
portal sent the browser to; this module visits it, as the browser would, and the library's
loopback listener takes the code.

The service tests and the lab's scenarios share it (pythonpath in pyproject.toml).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

CLIENT_ID = "org.eduvpn.app.linux"
# The library's protocol numbers in its get_config answer.
PROTOCOLS = {1: "openvpn", 2: "wireguard"}
TIMEOUT_SECONDS = 120


def available() -> bool:
    try:
        import eduvpn_common.main  # noqa: F401 - only whether it loads
    except (ImportError, OSError):
        return False
    return True


@dataclass(frozen=True)
class AppConfig:
    protocol: str  # "wireguard" or "openvpn"
    text: str
    raw: dict


def get_config(
    base_url: str,
    profile_id: str,
    approve: Callable[[str], str],
    ca_file: str | None = None,
    prefer_tcp: bool = False,
) -> AppConfig:
    """One app session: the server added through OAuth, a config of the profile."""
    environment = dict(os.environ)
    if ca_file:
        environment["SSL_CERT_FILE"] = ca_file
    command = [sys.executable, __file__, base_url, profile_id] + (["--prefer-tcp"] if prefer_tcp else [])
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    killer = threading.Timer(TIMEOUT_SECONDS, child.kill)
    killer.start()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            kind, _, value = line.rstrip("\n").partition(" ")
            if kind == "oauth":
                # The browser follows the portal's redirect to the library's loopback listener.
                with urllib.request.urlopen(approve(value), timeout=30) as answer:  # noqa: S310 - the app's own listener
                    answer.read()
            elif kind == "config":
                raw = json.loads(value)
                child.wait()
                return AppConfig(
                    PROTOCOLS.get(raw.get("protocol"), str(raw.get("protocol"))), raw["config"], raw
                )
        child.wait()
        raise AssertionError(f"eduvpn-common gave no config (exit {child.returncode}): {child.stderr.read()}")
    finally:
        killer.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()


def _main() -> int:
    """The child: the library, its callbacks on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("base_url")
    parser.add_argument("profile_id")
    parser.add_argument("--prefer-tcp", action="store_true")
    arguments = parser.parse_args()
    from eduvpn_common.event import class_state_transition
    from eduvpn_common.main import EduVPN, ServerType
    from eduvpn_common.state import State, StateType

    common = EduVPN(CLIENT_ID, "0.0.1", tempfile.mkdtemp(prefix="vf-eduvpn-"))

    class Transitions:
        @class_state_transition(State.OAUTH_STARTED, StateType.ENTER)
        def oauth_started(self, old_state, url):
            print("oauth", url, flush=True)

        @class_state_transition(State.ASK_PROFILE, StateType.ENTER)
        def ask_profile(self, old_state, data):
            # The user picks the profile, as in the app's profile list.
            cookie = json.loads(data)["cookie"]
            threading.Thread(
                target=common.cookie_reply, args=(cookie, arguments.profile_id), daemon=True
            ).start()

    common.register()
    common.register_class_callbacks(Transitions())
    try:
        common.add_server(ServerType.CUSTOM, arguments.base_url)
        config = common.get_config(ServerType.CUSTOM, arguments.base_url, arguments.prefer_tcp)
        print("config", json.dumps(json.loads(config)), flush=True)
    finally:
        common.deregister()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
