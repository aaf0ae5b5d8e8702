"""gunicorn's settings for the controller (`gunicorn -c python:vpnfleet.controller.gunicorn_config`).

With PROMETHEUS_MULTIPROC_DIR set, every worker keeps its counters in files there and a scrape
adds them up; a worker that exits leaves its counters (they still count) but its live gauges
must go, which is what prometheus_client's mark_process_dead does.
"""

import os

from prometheus_client import multiprocess


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
