"""What the scenarios' testinfra tests share: the lab hosts of molecule's inventory, waiting for
a condition, and the real OpenVPN client on the client host.

pytest finds this module through the `pythonpath` setting in pyproject.toml; molecule/conftest.py
gives every scenario the `client` fixture.
"""

import base64
import os
import time

import testinfra

# Molecule's inventory of the scenario's lab hosts; empty when molecule does not run the tests.
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
# Where the tests keep their files on the client host.
WORK = "/root/vfl-test"


def lab_host(name):
    """A testinfra host of the scenario's inventory, by its inventory name."""
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


def wait_for(condition, what, timeout=30.0):
    """The first true result of ``condition``, polled for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class VpnClient:
    """The real openvpn client on the client host, run in the background, stopped by its PID."""

    def __init__(self, host, name, config):
        self.host, self.name = host, name
        self.log = f"{WORK}/{name}.log"
        self.pid_file = f"{WORK}/{name}.pid"
        # One line the tests add: the control machine (the lab's uplink) stays outside the tunnel,
        # or testinfra loses the client host.
        self.config = config.rstrip("\n") + "\nroute 203.0.113.252 255.255.255.252 net_gateway\n"

    def start(self):
        path = f"{WORK}/{self.name}.ovpn"
        encoded = base64.b64encode(self.config.encode()).decode()
        self.host.check_output(f"echo {encoded} | base64 -d > {path} && chmod 600 {path}")
        self.host.check_output(f"rm -f {self.log} {self.pid_file}")
        self.host.check_output(
            f"openvpn --config {path} --daemon vfl-{self.name} --writepid {self.pid_file} --log {self.log}"
        )
        return self

    def wait_connected(self):
        wait_for(
            lambda: "Initialization Sequence Completed" in self.log_text(),
            f"the client {self.name} to connect:\n{self.log_text()}",
        )
        return self

    def log_text(self):
        return self.host.run(f"cat {self.log}").stdout

    def pid(self):
        return self.host.run(f"cat {self.pid_file}").stdout.strip()

    def running(self):
        pid = self.pid()
        return bool(pid) and self.host.run(f"kill -0 {pid}").rc == 0

    def stop(self):
        if self.running():
            self.host.run(f"kill {self.pid()}")
            wait_for(lambda: not self.running(), f"client {self.name} to stop")

    def device(self):
        for line in self.log_text().splitlines():
            if "TUN/TAP device" in line and "opened" in line:
                return line.split("TUN/TAP device")[1].split()[0]
        raise AssertionError("no tun device in the client log:\n" + self.log_text())
