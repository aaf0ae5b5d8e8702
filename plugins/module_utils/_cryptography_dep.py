"""Whether this Python's ``cryptography`` can run the vpnfleet PKI: the one place that decides it.

The standard library only, so every module imports it; ``_module_support.require_cryptography``
turns its answer into ``missing_required_lib``. The PKI files (``pki/*.py``) import
``cryptography`` guarded and leave the question to this file.

Why 44.0: the purpose OIDs live under ``2.25.<a 128-bit integer>``. cryptography before 44.0
cannot hold an OID arc above 64 bits: 43.0.3 fails to build ``x509.ObjectIdentifier`` for them
and to read the extended key usages of a certificate that carries them (Debian 12 ships 38.0.4,
Debian 13 43.0.0). Found by running the PKI under 38.0.4, 39.0.2, 40.0.2, 41.0.7, 42.0.0, 43.0.3
(all fail) and 44.0.0, 45.0.0, 46.0.0 (all pass). pyproject.toml and the modules' documentation
(doc fragment ``vpnfleet.server.pki``) say the same number.

Public interface
----------------
    MINIMUM_CRYPTOGRAPHY_VERSION    "44.0"
    HAS_CRYPTOGRAPHY, CRYPTOGRAPHY_VERSION (str or None), CRYPTOGRAPHY_IMPORT_ERROR (traceback or None)
    cryptography_problem(version=CRYPTOGRAPHY_VERSION) -> None, or why it cannot be used
"""

import re
import traceback

MINIMUM_CRYPTOGRAPHY_VERSION = "44.0"

try:
    import cryptography
except ImportError:
    CRYPTOGRAPHY_VERSION = None
    CRYPTOGRAPHY_LOCATION = None
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()  # type: str | None
else:
    CRYPTOGRAPHY_VERSION = cryptography.__version__
    CRYPTOGRAPHY_LOCATION = cryptography.__file__
    CRYPTOGRAPHY_IMPORT_ERROR = None

HAS_CRYPTOGRAPHY = CRYPTOGRAPHY_VERSION is not None


def _release(version):
    """The release numbers of a version string: "44.0.0" -> (44, 0, 0), "45.0.0rc1" -> (45, 0, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def cryptography_problem(version=CRYPTOGRAPHY_VERSION, location=CRYPTOGRAPHY_LOCATION):
    """None when ``version`` (None: not importable) is new enough, else what is wrong."""
    if version is None:
        return "cryptography is not installed for this Python"
    if _release(version) < _release(MINIMUM_CRYPTOGRAPHY_VERSION):
        return "found cryptography %s%s, too old: the vpnfleet purpose OIDs need %s or later" % (
            version,
            " at %s" % location if location else "",
            MINIMUM_CRYPTOGRAPHY_VERSION,
        )
    return None
