"""Ansible glue shared by the vpnfleet modules; only modules import it (the services do not).

It imports neither ``cryptography`` nor the PKI, so a module that does not sign anything
(``openvpn_instances``) runs with the host's own Python.

Public interface
----------------
    require_cryptography(module)           fail with missing_required_lib unless it is usable
    fail_on(module, *errors)               context manager: a domain error becomes fail_json
    ensure_file(module, path, content, mode, secret) -> (changed, diff)
    remove_path(module, path) -> bool
    remove_empty_directory(module, path)
"""

import contextlib
import os

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.text.converters import to_bytes, to_native

from .files import read_bytes, write_file_atomic


def require_cryptography(module):
    """Called first in main(), before any PKI code runs, so the user reads this, not a traceback."""
    # Imported here, not at the top: a module that never calls this (openvpn_instances) must not
    # even try to import cryptography, so a broken one on the host cannot touch it.
    from . import _cryptography_dep

    problem = _cryptography_dep.cryptography_problem()
    if problem:
        module.fail_json(
            msg="%s (%s)"
            % (
                missing_required_lib("cryptography >= %s" % _cryptography_dep.MINIMUM_CRYPTOGRAPHY_VERSION),
                problem,
            ),
            exception=_cryptography_dep.CRYPTOGRAPHY_IMPORT_ERROR,
        )


@contextlib.contextmanager
def fail_on(module, *errors):
    try:
        yield
    except errors as exc:
        module.fail_json(msg=to_native(exc))


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
            write_file_atomic(path, content, mode)
        else:
            os.chmod(path, mode)
    return True, diff


def remove_empty_directory(module, path):
    """Remove a directory that nothing is left in (a drop-in directory of a unit that went)."""
    if module.check_mode or not os.path.isdir(path) or os.listdir(path):
        return
    os.rmdir(path)


def remove_path(module, path):
    """Remove a file; returns True when there was one to remove."""
    if not os.path.lexists(path):
        return False
    if not module.check_mode:
        os.unlink(path)
    return True
