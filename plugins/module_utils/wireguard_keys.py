"""A WireGuard private key, made on the node that uses it; the standard library only.

A WireGuard private key is 32 random bytes, clamped as X25519 wants them (RFC 7748, section 5),
written in base64 as `wg genkey` writes it. The public key is the interface's business: `wg`
derives it, and the node's daemon tells the controller (GET /i/node), so the private key is
read by nobody but the interface.

Public interface
----------------
    make_private_key() -> str               a new key, base64 and a newline, as `wg genkey` prints it
    is_private_key(data) -> bool            whether a key file's content is a usable key
"""

import base64
import binascii
import os

KEY_BYTES = 32


def make_private_key():
    raw = bytearray(os.urandom(KEY_BYTES))
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode() + "\n"


def is_private_key(data):
    """A file holding one base64 key of 32 bytes (a key `wg genkey` made counts as well)."""
    if data is None:
        return False
    try:
        text = data.decode("ascii").strip()
        return len(base64.b64decode(text, validate=True)) == KEY_BYTES and len(text) == 44
    except (UnicodeDecodeError, binascii.Error, ValueError):
        return False
