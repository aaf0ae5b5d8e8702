#!/usr/bin/python
# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The action plugin of the same name does the work on the control machine; this file is its
# documentation.

DOCUMENTATION = r"""
module: wheelhouse
short_description: The wheels of a Python package and its pinned dependencies, cached on the control machine
version_added: 0.1.0
description:
  - Runs on the control machine only and touches no host. Builds the wheel of the package in O(source) from
    a copy of O(paths) and downloads the package's dependencies and O(requirements) as wheels for a host's
    Python (O(python_version)) and machine (O(platforms)), for M(vpnfleet.server.wheel_venv) to install there.
  - Both are kept in O(cache_dir), keyed by a SHA-256 of their inputs (the contents of O(paths); the package,
    the extras, the requirements, the Python version and the platforms). A run whose inputs did not change
    builds nothing and asks no package index. The most recently used entries are kept, older ones removed.
  - The package is built with a fixed C(SOURCE_DATE_EPOCH), so the same sources make the same wheel.
author: vpnfleet developers (@vpnfleet)
attributes:
  action:
    support: full
    description: The work is done by the action plugin on the control machine.
  check_mode:
    support: full
    description: Also in check mode the cache is filled, which changes no host; C(changed) is always false.
  diff_mode:
    support: none
    description: Nothing changes on a host, so there is nothing to diff.
  idempotent:
    support: full
    description: Never reports a change.
  platform:
    platforms: posix
    support: full
    description: The control machine; the hosts may be of another Python and machine, named by the options.
options:
  source:
    description: The package's directory (with C(pyproject.toml)).
    type: path
    required: true
  paths:
    description: >-
      What of O(source) the build needs, relative to it (files or directories); their contents key the cache.
    type: list
    elements: str
    default: [pyproject.toml]
  extras:
    description: Extras of the package whose dependencies are downloaded too.
    type: list
    elements: str
    default: []
  requirements:
    description: Further requirements (pinned, C(name==version)) downloaded with the package's dependencies.
    type: list
    elements: str
    default: []
  python_version:
    description: The host's Python, C(major.minor).
    type: str
    required: true
  platforms:
    description: >-
      Platform tags of the host's machine (for example C(manylinux_2_28_x86_64)); empty for the control
      machine's.
    type: list
    elements: str
    default: []
  cache_dir:
    description: The cache; default C(vpnfleet/wheelhouse) in C($XDG_CACHE_HOME), else in C(~/.cache).
    type: path
  pip_retries:
    description: Retries of pip per package index.
    type: int
    default: 0
seealso:
  - module: vpnfleet.server.wheel_venv
"""

EXAMPLES = r"""
- name: The VPN daemon's wheels for this host's Python and machine
  vpnfleet.server.wheelhouse:
    source: /srv/vpnfleet
    paths: [vpnfleet, plugins/module_utils, pyproject.toml]
    requirements: [PyYAML==6.0.3]
    python_version: "{{ ansible_facts.python.version.major }}.{{ ansible_facts.python.version.minor }}"
    platforms: ["manylinux_2_28_{{ ansible_facts.architecture }}"]
  register: daemon_wheels
"""

RETURN = r"""
path:
  description: The cache directory that holds the package's wheel and every dependency's, for the host.
  returned: always
  type: str
wheels:
  description: Every wheel in RV(path), for O(vpnfleet.server.wheel_venv#module:wheels).
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: The wheel's file name.
      type: str
    name:
      description: The distribution's name (PEP 503 normalised).
      type: str
    version:
      description: Its version.
      type: str
    digest:
      description: SHA-256 over the lines of its RECORD that an installation keeps.
      type: str
package:
  description: The package's own wheel, as an element of RV(wheels).
  returned: always
  type: dict
cached:
  description: Whether everything came from the cache (nothing was built or downloaded).
  returned: always
  type: bool
"""
