#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: wheel_venv
short_description: A virtual environment that holds exactly the given wheels' distributions
version_added: 0.1.0
description:
  - Compares the distributions installed in the virtual environment O(path) with O(wheels) (as
    M(vpnfleet.server.wheelhouse) describes them) by name, version and a digest of their RECORD, and installs
    from O(wheel_dir), without a package index, only the wheels whose distribution is missing or differs. So a
    wheel rebuilt with new contents under the same version is installed, and an environment that holds every
    wheel already is left alone without running pip.
  - Makes the virtual environment with O(python) when it has no interpreter yet.
  - Distributions the environment holds beyond O(wheels) (pip itself, for example) stay.
  - Run it with C(check_mode=true) before the wheels are on the host, to learn from RV(outdated) which to hand
    over.
author: vpnfleet developers (@vpnfleet)
extends_documentation_fragment:
  - vpnfleet.server.attributes
options:
  path:
    description: The virtual environment.
    type: path
    required: true
  wheel_dir:
    description: The directory on the host that holds the wheels of RV(outdated).
    type: path
    required: true
  wheels:
    description: The wheels the environment must hold, RV(vpnfleet.server.wheelhouse#module:wheels).
    type: list
    elements: dict
    required: true
  python:
    description: The Python that makes the virtual environment when it is missing.
    type: str
    default: python3
seealso:
  - module: vpnfleet.server.wheelhouse
"""

EXAMPLES = r"""
- name: Learn which wheels the daemon's virtual environment lacks
  vpnfleet.server.wheel_venv:
    path: /opt/vpnfleet/daemon
    wheel_dir: /opt/vpnfleet/wheels
    wheels: "{{ daemon_wheels.wheels }}"
  check_mode: true
  register: daemon_venv

- name: Hand those wheels over
  ansible.builtin.copy:
    src: "{{ daemon_wheels.path }}/{{ item }}"
    dest: /opt/vpnfleet/wheels/
    mode: "0644"
  loop: "{{ daemon_venv.outdated }}"

- name: Install them
  vpnfleet.server.wheel_venv:
    path: /opt/vpnfleet/daemon
    wheel_dir: /opt/vpnfleet/wheels
    wheels: "{{ daemon_wheels.wheels }}"
  when: daemon_venv.outdated | length > 0
"""

RETURN = r"""
present:
  description: Whether the environment had an interpreter before the run.
  returned: always
  type: bool
outdated:
  description: File names of the wheels whose distribution was missing or differed before the run.
  returned: always
  type: list
  elements: str
installed:
  description: Name and version of every distribution in the environment before the run.
  returned: always
  type: dict
"""

# ruff: noqa: E402 - Ansible wants DOCUMENTATION, EXAMPLES and RETURN before the imports.
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vpnfleet.server.plugins.module_utils import wheels as wheel_sets

# Run by the environment's own interpreter: what it holds, with each RECORD.
_READ_INSTALLED = (
    "import importlib.metadata as m, json, sys; json.dump([{'name': d.metadata['Name'], 'version': d.version,"
    " 'record': d.read_text('RECORD') or ''} for d in m.distributions()], sys.stdout)"
)


def installed_state(module, python):
    if not os.access(python, os.X_OK):
        return False, {}
    unused_rc, out, unused_err = module.run_command([python, "-I", "-c", _READ_INSTALLED], check_rc=True)
    found = {}
    for dist in json.loads(out):
        found[wheel_sets.canonical_name(dist["name"])] = {
            "version": dist["version"],
            "digest": wheel_sets.record_digest(dist["record"], from_wheel=False),
        }
    return True, found


def listing(wheels, installed):
    lines = []
    for wheel in sorted(wheels, key=lambda item: item["name"]):
        have = installed.get(wheel["name"])
        if have is not None:
            lines.append("%s==%s (%s)\n" % (wheel["name"], have["version"], have["digest"][:12]))
    return "".join(lines)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            wheel_dir=dict(type="path", required=True),
            wheels=dict(type="list", elements="dict", required=True),
            python=dict(type="str", default="python3"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    python = os.path.join(params["path"], "bin", "python")
    present, installed = installed_state(module, python)
    outdated = wheel_sets.outdated(params["wheels"], installed)
    result = dict(
        changed=bool(outdated),
        present=present,
        outdated=[wheel["file"] for wheel in outdated],
        installed={name: state["version"] for name, state in installed.items()},
    )
    if outdated and module._diff:
        wanted = {wheel["name"]: wheel for wheel in params["wheels"]}
        result["diff"] = {
            "before_header": "%s (installed)" % params["path"],
            "after_header": "%s (wheels)" % params["path"],
            "before": listing(params["wheels"], installed),
            "after": listing(params["wheels"], wanted),
        }
    if not outdated or module.check_mode:
        module.exit_json(**result)

    if not present:
        module.run_command(
            [module.get_bin_path(params["python"], required=True), "-m", "venv", params["path"]],
            check_rc=True,
        )
    # The wheels are the whole resolved set, so pip need not resolve again; --force-reinstall
    # replaces a distribution whose contents changed under the same version.
    module.run_command(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-index",
            "--no-deps",
            "--force-reinstall",
            "--disable-pip-version-check",
        ]
        + [os.path.join(params["wheel_dir"], wheel["file"]) for wheel in outdated],
        check_rc=True,
    )
    unused_present, now = installed_state(module, python)
    still = wheel_sets.outdated(params["wheels"], now)
    if still:
        module.fail_json(
            msg="%s: after installing from %s these still differ from their wheels: %s"
            % (params["path"], params["wheel_dir"], ", ".join(wheel["file"] for wheel in still)),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
