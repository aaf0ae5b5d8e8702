"""`vpnfleet-daemon --config FILE`: load the settings, start the HTTPS server, stop on SIGTERM."""

import argparse
import logging
import signal
import sys
import threading

from .server import create_server
from .settings import DEFAULT_CONFIG_PATH, ConfigError, DaemonSettings

# Exit status for a configuration that cannot work, so systemd does not restart into it blindly.
EXIT_CONFIG_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vpnfleet-daemon",
        description="The node's VPN daemon: lists and disconnects OpenVPN clients for the controller.",
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="settings file (YAML or JSON)")
    args = parser.parse_args(argv)
    # systemd's journal adds the time stamps.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        server = create_server(DaemonSettings.from_file(args.config))
    except ConfigError as exc:
        print(f"vpnfleet-daemon: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR

    def stop(signum, frame) -> None:
        # shutdown() waits for serve_forever() to return, so it must run outside of it.
        threading.Thread(target=server.shutdown, name="shutdown").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    logging.getLogger("vpnfleet.daemon").info("listening on [%s]:%s", host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
