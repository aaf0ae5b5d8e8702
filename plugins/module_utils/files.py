"""Reading and writing the files of the PKI and of the modules; the standard library only.

Shared by the modules (through ``_module_support``), the PKI (``pki.authority``) and the services
(``vpnfleet.shared.files``), so that a key file is written the same way everywhere.

Public interface
----------------
    read_file(path) -> bytes            OSError (naming the path) when it cannot be read
    read_bytes(path) -> bytes | None    None when the file does not exist
    write_file_atomic(path, data, mode=0o644)
"""

import contextlib
import os
import tempfile


def read_file(path):
    with open(path, "rb") as handle:
        return handle.read()


def read_bytes(path):
    """The content, or None when there is no such file (a module then makes it)."""
    try:
        return read_file(path)
    except FileNotFoundError:
        return None


def write_file_atomic(path, data, mode=0o644):
    """Write via a temporary file in the same directory so readers never see half a file,
    and so a key file never exists with wider permissions than ``mode``."""
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
