"""The service suites share one network-namespace OpenVPN lab, openvpn_netlab, in this folder.

pytest may run with --import-mode=importlib, which puts no test directory on sys.path: put this
one there, so every suite's conftest and lab module can import the shared lab.
"""

import sys
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
