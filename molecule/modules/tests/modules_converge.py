"""Helpers for the modules scenario: run the scenario's converge playbook again, as molecule
does, against molecule's own inventory (scale down, check mode, scale up)."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from lab_testinfra import INVENTORY

SCENARIO = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).resolve().parents[1]))
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def converge(processes, check=False):
    """Run converge.yml with ``modules_processes`` and return ``{host: changed count}``."""
    if not INVENTORY:
        pytest.skip("not run by molecule: MOLECULE_INVENTORY_FILE is not set")
    command = [
        "ansible-playbook",
        "-i",
        str(Path(INVENTORY).parent),
        str(SCENARIO / "converge.yml"),
        "-e",
        "modules_processes=%d" % processes,
    ]
    if check:
        command.append("--check")
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    recap = {host: counts for host, *counts in RECAP.findall(output)}
    assert set(recap) == {"controller", "node-x1"}, output[-6000:]
    assert all(unreachable == failed == "0" for _, _, unreachable, failed in recap.values()), output[-6000:]
    return {host: int(changed) for host, (_, changed, _, _) in recap.items()}, output
