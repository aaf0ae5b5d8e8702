"""In headless Chromium against the app served by gunicorn on loopback: log in, create and
download a config, and check the downloaded file."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from chromium import CHROMEDRIVER, CHROMIUM, start_chromium
from controller_helpers import PASSWORD, settings_mapping

from vpnfleet.controller import cli

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver"
)
# Bounds on waiting for things that happen by themselves; none of them is asserted on.
STARTUP_LIMIT_SECONDS = 60
DOWNLOAD_LIMIT_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(check, limit: float, what: str):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def served_controller(tmp_path, pki_dir, node_lab):
    port = _free_port()
    mapping = settings_mapping(pki_dir, f"sqlite:///{tmp_path / 'controller.sqlite'}", node_lab.daemon_port)
    mapping["base_url"] = f"http://127.0.0.1:{port}"
    settings_file = tmp_path / "controller.yml"
    settings_file.write_text(yaml.safe_dump(mapping))
    # The role's steps: migrate, then create the user from the inventory.
    assert cli.main(["--settings", str(settings_file), "migrate"]) == 0
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    with password_file.open() as stdin:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vpnfleet.controller.cli",
                "--settings",
                str(settings_file),
                "user",
                "alice",
                "--password-stdin",
            ],
            stdin=stdin,
            check=True,
            capture_output=True,
        )
    with serve(tmp_path, settings_file, port) as url:
        yield url


@contextlib.contextmanager
def serve(tmp_path: Path, settings_file: Path, port: int):
    """The controller under gunicorn on 127.0.0.1:port, as the role runs it; its URL."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "vpnfleet.controller.wsgi:app",
        ],
        env={**os.environ, "VPNFLEET_CONTROLLER_SETTINGS": str(settings_file)},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gunicorn.log").open("w"),
    )
    try:
        _wait_for(
            lambda: server.poll() is not None or _accepts_connections(port),
            STARTUP_LIMIT_SECONDS,
            "gunicorn to listen",
        )
        assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    driver = start_chromium(tmp_path)
    yield driver
    driver.quit()


def test_log_in_create_and_download_a_config(served_controller, browser, pki_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(served_controller + "/")
    assert "/login" in browser.current_url
    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    # The click returns before the next page has loaded; wait for it (bounded) before going on.
    WebDriverWait(browser, STARTUP_LIMIT_SECONDS).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "My VPN")
    )

    Select(browser.find_element(By.NAME, "profile_id")).select_by_value("office")
    browser.find_element(By.NAME, "display_name").send_keys("phone")
    browser.find_element(By.ID, "create-config").click()

    def finished_download() -> Path | None:
        files = [path for path in browser.downloads.iterdir() if path.suffix == ".ovpn"]
        return files[0] if files else None

    ovpn = _wait_for(finished_download, DOWNLOAD_LIMIT_SECONDS, "the .ovpn download")
    assert ovpn.name == "office-phone.ovpn"
    text = ovpn.read_text()
    assert (pki_dir / "ca" / "ca.crt").read_text().strip() in text
    assert (pki_dir / "tls-crypt-office.key").read_text().strip() in text
    assert "<cert>" in text and "<key>" in text and "client" in text.splitlines()
    remotes = [line for line in text.splitlines() if line.startswith("remote ")]
    # node-x1 only (node-y1 does not answer): one UDP, then one TCP entry point.
    assert len(remotes) == 2 and remotes[-1].endswith(" tcp") and remotes[0].endswith(" udp")

    browser.get(served_controller + "/")
    assert "phone" in browser.find_element(By.ID, "configs").text

    # Under the portal's Content-Security-Policy: its style sheet applies, nothing was refused.
    with urllib.request.urlopen(served_controller + "/login") as response:  # noqa: S310 - http to loopback
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy
    assert "system-ui" in browser.execute_script("return getComputedStyle(document.body).fontFamily")
    violations = [
        e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]
    ]
    assert not violations, violations
