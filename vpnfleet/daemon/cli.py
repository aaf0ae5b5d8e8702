"""`vpnfleet-daemon --settings FILE`: load the settings, start the HTTPS server, stop on SIGTERM."""

import argparse
import logging
import signal
import sys
import threading

from vpnfleet.settings_file import SettingsError, add_settings_argument, load_settings_file

from .server import create_server
from .settings import DEFAULT_SETTINGS_PATH, DaemonSettings

# Exit status for settings that cannot work, so systemd does not restart into them blindly.
EXIT_SETTINGS_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpnfleet-daemon",
        description="The node's VPN daemon: lists and disconnects OpenVPN clients for the controller.",
    )
    add_settings_argument(parser, DEFAULT_SETTINGS_PATH)
    args = parser.parse_args(argv)
    # systemd's journal adds the time stamps.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        # A key that does not fit or a port taken are refusals of the file too: name it for them.
        server = load_settings_file(
            args.settings, lambda data: create_server(DaemonSettings.from_mapping(data))
        )
    except SettingsError as exc:
        print(f"vpnfleet-daemon: {exc}", file=sys.stderr)
        return EXIT_SETTINGS_ERROR

    metrics_server = server.metrics
    if metrics_server is not None:
        threading.Thread(target=metrics_server.serve_forever, name="metrics", daemon=True).start()
        logging.getLogger("vpnfleet.daemon").info("metrics on [%s]:%s", *metrics_server.server_address[:2])

    def stop(signum, frame) -> None:
        # shutdown() waits for serve_forever() to return, so it must run outside of it.
        threading.Thread(target=server.shutdown, name="shutdown").start()
        if metrics_server is not None:
            threading.Thread(target=metrics_server.shutdown, name="shutdown-metrics").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    logging.getLogger("vpnfleet.daemon").info("listening on [%s]:%s", host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
