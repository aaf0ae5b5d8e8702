"""wheelhouse and wheel_venv for real, through ansible-playbook against localhost: a small package
built into a cache, installed into a fresh virtual environment, left alone when nothing changed
(nothing built, nothing handed over, pip not run), reinstalled when its contents change under the
same version, and check mode reporting each of these without doing it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE_PLAYBOOK = shutil.which("ansible-playbook") or os.environ.get("VPNFLEET_ANSIBLE_PLAYBOOK")
REPO = Path(__file__).resolve().parents[4]

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK, reason="ansible-playbook is not on PATH")

# As roles/base/tasks/python_service.yml does it.
PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Wheels
      vpnfleet.server.wheelhouse:
        source: "{{ d }}/src"
        paths: [tinypkg, pyproject.toml]
        python_version: "{{ python_version }}"
        cache_dir: "{{ d }}/cache"
      register: house
    - name: Compare
      vpnfleet.server.wheel_venv: &venv
        path: "{{ d }}/venv"
        wheel_dir: "{{ d }}/wheels"
        wheels: "{{ house.wheels }}"
      check_mode: true
      changed_when: false
      register: state
    - name: Hand over
      ansible.builtin.copy:
        src: "{{ house.path }}/{{ item }}"
        dest: "{{ d }}/wheels/"
        mode: "0644"
      loop: "{{ state.outdated }}"
      register: handed
    - name: Install
      vpnfleet.server.wheel_venv: *venv
      when: state.outdated | length > 0
      register: install
    - name: Report
      ansible.builtin.copy:
        content: >-
          {{ {'cached': house.cached, 'outdated': state.outdated, 'present': state.present,
              'handed': handed.results | default([]) | length, 'install': install is changed} | to_json }}
        dest: "{{ d }}/report.json"
        mode: "0644"
      check_mode: false
"""


def write_package(src: Path, answer: str) -> None:
    (src / "tinypkg").mkdir(parents=True, exist_ok=True)
    (src / "tinypkg" / "__init__.py").write_text("ANSWER = %r\n" % answer)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinypkg"\nversion = "1.0"\n'
    )


def run(tmp_path: Path, *extra: str) -> dict:
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "report.json").unlink(missing_ok=True)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_NOCOLOR="1")
    python_version = "%d.%d" % sys.version_info[:2]
    done = subprocess.run(
        [
            ANSIBLE_PLAYBOOK,
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            "d=%s" % tmp_path,
            "-e",
            "python_version=%s" % python_version,
            "-e",
            "ansible_python_interpreter=%s" % sys.executable,
            *extra,
            str(tmp_path / "play.yml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((tmp_path / "report.json").read_text())


def installed_answer(tmp_path: Path) -> str:
    return subprocess.run(
        [str(tmp_path / "venv/bin/python"), "-I", "-c", "import tinypkg; print(tinypkg.ANSWER)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_install_skip_and_reinstall_changed_contents(tmp_path):
    write_package(tmp_path / "src", "first")
    wheel = ["tinypkg-1.0-py3-none-any.whl"]

    checked = run(tmp_path, "--check")
    assert checked == {"cached": False, "outdated": wheel, "present": False, "handed": 1, "install": True}
    assert not (tmp_path / "venv").exists() and not (tmp_path / "wheels").exists()

    assert run(tmp_path) == {
        "cached": True,
        "outdated": wheel,
        "present": False,
        "handed": 1,
        "install": True,
    }
    assert installed_answer(tmp_path) == "first"

    # Nothing changed: from the cache, nothing handed over, no install.
    unchanged = {"cached": True, "outdated": [], "present": True, "handed": 0, "install": False}
    assert run(tmp_path) == unchanged
    assert run(tmp_path, "--check") == unchanged

    # New contents, same version: a new wheel, which pip alone would not install over the old one.
    write_package(tmp_path / "src", "second")
    changed = {"cached": False, "outdated": wheel, "present": True, "handed": 1, "install": True}
    assert run(tmp_path, "--check") == changed
    assert installed_answer(tmp_path) == "first"
    assert run(tmp_path) == dict(changed, cached=True)
    assert installed_answer(tmp_path) == "second"
    assert run(tmp_path) == unchanged
