"""Reading the one settings file each service gets from its role, with errors a person can act on."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def read_settings_file(path: str | os.PathLike, error: type[Exception], what: str) -> object:
    """The parsed YAML (or JSON) of ``path``; ``error`` names the file and the cause otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
