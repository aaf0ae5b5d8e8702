"""The real signer (vpnfleet/signer) as its own process, for the suites that need one."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

START_SECONDS = 30.0


@dataclass
class SignerProcess:
    process: subprocess.Popen
    socket: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_signer(ca_dir: Path, workdir: Path, cwd: Path | None = None, **settings) -> SignerProcess:
    """Start ``python -m vpnfleet.signer`` over the CA in ``ca_dir``, its socket in ``workdir``;
    ``cwd`` (first on sys.path) holds another revision's code."""
    socket_path = workdir / "signer.sock"
    settings_path = workdir / "signer.yml"
    settings_path.write_text(yaml.safe_dump({"ca_dir": str(ca_dir), "socket": str(socket_path), **settings}))
    log_path = workdir / "signer.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vpnfleet.signer", "--settings", str(settings_path)],
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            stdout=log,
            stderr=log,
        )
    signer = SignerProcess(process, socket_path, log_path)
    deadline = time.monotonic() + START_SECONDS
    while not socket_path.is_socket() or "listening on" not in signer.log():
        if process.poll() is not None or time.monotonic() > deadline:
            signer.stop()
            raise AssertionError(f"the signer did not start:\n{signer.log()}")
        time.sleep(0.05)
    return signer
