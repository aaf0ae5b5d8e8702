"""Ansible glue shared by the vpnfleet modules; only modules import it (the services do not).

Public interface
----------------
    require_cryptography(module)           fail with missing_required_lib unless it is usable
    fail_on(module, *errors)               context manager: a domain error becomes fail_json
    read_pem(path, loader)                 what ``loader`` makes of the file, or None (missing, garbage)
    FileState / ensure_file(module, path, content, mode, secret)
    remove_path(module, path)
"""

import contextlib
import os

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.module_utils.compat.version import LooseVersion

from . import pki


def require_cryptography(module):
    """The single place that turns a missing or too old cryptography into a clear failure."""
    requirement = "cryptography >= %s" % pki.MINIMUM_CRYPTOGRAPHY_VERSION
    if not pki.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib(requirement), exception=pki.CRYPTOGRAPHY_IMPORT_ERROR)
    if LooseVersion(pki.CRYPTOGRAPHY_VERSION) < LooseVersion(pki.MINIMUM_CRYPTOGRAPHY_VERSION):
        module.fail_json(
            msg="%s; found %s" % (missing_required_lib(requirement), pki.CRYPTOGRAPHY_VERSION),
        )


@contextlib.contextmanager
def fail_on(module, *errors):
    try:
        yield
    except errors as exc:
        module.fail_json(msg=to_native(exc))


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_pem(path, loader):
    """The object ``loader`` (a pki.load_* function) reads from ``path``; None when the file is
    missing or holds something else, so the module makes it anew."""
    pem = read_bytes(path)
    if pem is None:
        return None
    try:
        return loader(pem)
    except pki.PkiError:
        return None


def ensure_file(module, path, content, mode=0o644, secret=False):
    """Write ``content`` to ``path`` when it differs (or its mode does); honours check mode.

    Returns (changed, diff); a secret's diff says only that it changes, never what it holds.
    """
    content = to_bytes(content)
    current = read_bytes(path)
    content_differs = current != content
    mode_differs = current is not None and (os.stat(path).st_mode & 0o7777) != mode
    if not (content_differs or mode_differs):
        return False, None
    if secret:
        diff = {"before": "(secret)\n" if current is not None else "", "after": "(secret, changed)\n"}
    else:
        before = current.decode("utf-8", "replace") if current is not None else ""
        diff = {"before": before, "after": content.decode("utf-8", "replace")}
    diff.update(before_header=path, after_header=path)
    if not module.check_mode:
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755)
        if content_differs:
            pki.write_file_atomic(path, content, mode)
        else:
            os.chmod(path, mode)
    return True, diff


def remove_path(module, path):
    """Remove a file; returns True when there was one to remove."""
    if not os.path.lexists(path):
        return False
    if not module.check_mode:
        os.unlink(path)
    return True
