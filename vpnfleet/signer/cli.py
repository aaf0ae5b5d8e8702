"""`vpnfleet-signer --settings FILE [serve | check-settings]`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from vpnfleet.settings_file import SettingsError, add_settings_argument

from .settings import DEFAULT_SETTINGS_PATH, SignerSettings

# Exit status for settings that cannot work, so systemd does not restart into them blindly.
EXIT_SETTINGS_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpnfleet-signer",
        description="Signs VPN users' client certificates and the CRL for the controller; holds the CA key.",
    )
    add_settings_argument(parser, DEFAULT_SETTINGS_PATH)
    parser.add_argument("command", nargs="?", choices=["serve", "check-settings"], default="serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        settings = SignerSettings.from_file(args.settings)
        if args.command == "check-settings":
            return 0
        from .server import SignerServer  # cryptography is loaded only to serve

        server = SignerServer(settings)
    except (SettingsError, OSError, ValueError) as exc:
        print(f"vpnfleet-signer: {exc}", file=sys.stderr)
        return EXIT_SETTINGS_ERROR

    def stop(signum, frame) -> None:
        threading.Thread(target=server.shutdown, name="shutdown").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("vpnfleet.signer").info("listening on %s", server.server_address)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
