# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a set of wheels installs, compared with what a virtual environment holds; standard library only.

The wheelhouse action plugin describes each wheel on the control machine and the wheel_venv module
reads a host's virtual environment; both reduce a distribution to its name, its version and a
digest of its RECORD, so the same bytes installed under the same version compare equal, and a
wheel rebuilt with other contents under an unchanged version does not.

Public interface
----------------
    canonical_name(name)                    PEP 503 name: lower case, runs of -_. as one -
    wheel_name_version(filename)            ("argon2-cffi", "25.1.0") from the wheel's file name
    record_digest(record_text, from_wheel)  SHA-256 over the RECORD lines that a wheel and its
                                            installation share
    describe_wheel(path)                    {"file", "name", "version", "digest"} of a wheel file
    outdated(wanted, installed)             the wanted wheels that the installed set lacks
"""

import csv
import hashlib
import io
import os
import re
import zipfile

# Written by the installer, not carried by the wheel.
_INSTALLER_FILES = frozenset(("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"))
# Wheel paths that the installer puts into site-packages unchanged, without this prefix.
_LIB_DATA = re.compile(r"^[^/]+\.data/(purelib|platlib)/")


def canonical_name(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename):
    parts = os.path.basename(filename).split("-")
    if len(parts) < 5 or not filename.endswith(".whl"):
        raise ValueError("not a wheel file name: %s" % filename)
    return canonical_name(parts[0]), parts[1]


def _shared_entry(path, from_wheel):
    """The path as site-packages holds it, or None for lines only one side has."""
    if from_wheel:
        if _LIB_DATA.match(path):
            path = _LIB_DATA.sub("", path)
        elif re.match(r"^[^/]+\.data/", path):
            # Scripts and data go outside site-packages, scripts rewritten by the installer.
            return None
    elif path.startswith("../") or path.startswith("/"):
        return None
    directory, unused_slash, name = path.rpartition("/")
    if directory.endswith(".dist-info") and "/" not in directory and name in _INSTALLER_FILES:
        return None
    return path


def record_digest(record_text, from_wheel):
    lines = []
    for row in csv.reader(io.StringIO(record_text)):
        if len(row) < 2 or not row[1]:
            continue
        path = _shared_entry(row[0], from_wheel)
        if path is not None:
            lines.append("%s,%s" % (path, row[1]))
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def describe_wheel(path):
    name, version = wheel_name_version(path)
    with zipfile.ZipFile(path) as wheel:
        records = [entry for entry in wheel.namelist() if re.match(r"^[^/]+\.dist-info/RECORD$", entry)]
        if len(records) != 1:
            raise ValueError("%s: no single .dist-info/RECORD" % path)
        record = wheel.read(records[0]).decode("utf-8")
    return {
        "file": os.path.basename(path),
        "name": name,
        "version": version,
        "digest": record_digest(record, from_wheel=True),
    }


def outdated(wanted, installed):
    """``installed`` maps canonical names to {"version", "digest"}, as the host reports them."""
    found = []
    for wheel in wanted:
        have = installed.get(wheel["name"])
        if have is None or have["version"] != wheel["version"] or have["digest"] != wheel["digest"]:
            found.append(wheel)
    return found
