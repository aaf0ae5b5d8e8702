"""Debian's Chromium for the browser tests (the service tests' portal, the lab's OpenID Connect
provider): headless, through its own driver named here, so Selenium Manager fetches nothing and
sends no statistics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def start_chromium(tmp_path: Path, extra_flags: tuple[str, ...] = ()):
    """Debian's chromium through its own driver (no download, no phoning home), headless."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The driver is named, so Selenium Manager has nothing to fetch; and it sends no statistics.
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The console log shows any Content-Security-Policy violation.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=420,900",
        *extra_flags,
    ):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    return driver
