"""Facts about the node itself for /i/node: cores, load and uptime."""

import os
from pathlib import Path

UPTIME_FILE = Path("/proc/uptime")


def cpu_count() -> int:
    return os.cpu_count() or 1


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load; [] where the system does not tell (as vpn-daemon does)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def relative_load_average(load: list[float], cores: int) -> list[int]:
    """Load as a percentage of the cores, so nodes of different sizes compare."""
    return [round(100 * value / cores) for value in load]


def uptime_seconds() -> int | None:
    try:
        return int(float(UPTIME_FILE.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return None
