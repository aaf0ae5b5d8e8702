"""Progress lines for long lab work: a live status line on a terminal, sparse lines in CI logs."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, stream=None, quiet_interval: float = 10.0):
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.interactive = self.stream.isatty()
        self.quiet_interval = quiet_interval
        self._last_status = 0.0
        self._status_shown = False

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:5.0f}s]"

    def say(self, message: str) -> None:
        if self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False
        self.stream.write(f"{self._stamp()} {message}\n")
        self.stream.flush()

    def status(self, message: str) -> None:
        """A passing state: overwritten on a terminal, printed now and then in a log."""
        now = time.monotonic()
        if self.interactive:
            self.stream.write(f"\r\033[K{self._stamp()} {message}")
            self._status_shown = True
            self.stream.flush()
        elif now - self._last_status >= self.quiet_interval:
            self._last_status = now
            self.say(message)
