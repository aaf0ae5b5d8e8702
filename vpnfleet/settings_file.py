"""The one way the services read the settings file their role writes.

The controller, the daemon and the hooks each get one YAML (or JSON) file. They all read it the
same way: the same command-line flag (``--settings FILE``), the same error type, and messages of
the same shape, ``FILE: SETTING: REASON``, so that a person knows what to fix where.
A service's ``from_mapping`` names the setting and the reason; ``load_settings_file`` puts the
file in front.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
SettingsReaderT = TypeVar("SettingsReaderT", bound="SettingsReader")

# Marks a setting without a default: absent, it is an error.
REQUIRED: Any = ...

_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a mapping",
}


class SettingsError(ValueError):
    """A settings file that a service cannot run with; the message names the setting and the reason."""


def add_settings_argument(
    parser: argparse.ArgumentParser, default: str | os.PathLike[str], environment: str | None = None
) -> None:
    """The ``--settings FILE`` flag, the same for every service; ``environment`` may override the default."""
    shown = f"${environment} or {default}" if environment else str(default)
    if environment:
        default = os.environ.get(environment, str(default))
    parser.add_argument(
        "--settings", default=str(default), help=f"settings file, YAML or JSON (default: {shown})"
    )


def read_settings_file(path: str | os.PathLike[str]) -> object:
    """The parsed YAML (or JSON: YAML reads it too) of ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None


def load_settings_file(path: str | os.PathLike[str], build: Callable[[object], T]) -> T:
    """``build`` (a service's ``from_mapping``) applied to the file; its refusals name the file too."""
    data = read_settings_file(path)
    try:
        return build(data)
    except SettingsError as error:
        raise SettingsError(f"{path}: {error}") from None


class SettingsReader:
    """One mapping of a settings file: typed reads, and errors that name the setting's path in the file."""

    def __init__(self, data: object, path: str = ""):
        if not isinstance(data, dict):
            raise SettingsError(f"{_prefix(path)}must be a mapping of settings, got {type(data).__name__}")
        self.data: dict[Any, Any] = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str) -> SettingsError:
        return SettingsError(f"{self.where(key)}: {reason}")

    def has(self, key: str) -> bool:
        """Whether the file sets ``key`` (an empty YAML value counts as not set)."""
        return self.data.get(key) is not None

    def refuse_unknown(self, known: Iterable[str]) -> None:
        """A misspelt setting would silently fall back to its default: refuse it instead."""
        names = sorted(known)
        unknown = sorted(str(key) for key in self.data if key not in names)
        if unknown:
            raise SettingsError(
                f"{_prefix(self.path)}unknown setting(s) {', '.join(unknown)}; known: {', '.join(names)}"
            )

    def get(
        self, key: str, kind: type | tuple[type, ...], default: Any = REQUIRED, *, nonempty: bool = False
    ) -> Any:
        if not self.has(key):
            if default is REQUIRED:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # YAML's yes/no are booleans, and a bool is an int to Python: refuse it where a number is meant.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {_kind_name(kinds)}, got {value!r}")
        if nonempty and not value:
            raise self.fail(key, "must not be empty")
        return value

    def items(self: SettingsReaderT, key: str, default: Any = REQUIRED) -> list[SettingsReaderT]:
        return [
            type(self)(item, f"{self.where(key)}[{index}]")
            for index, item in enumerate(self.get(key, list, default))
        ]

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        for index, value in enumerate(values):
            if not isinstance(value, str) or not value:
                raise SettingsError(f"{self.where(key)}[{index}]: must be a non-empty string")
        return tuple(values)


def _prefix(path: str) -> str:
    # The top level has no path: the file's name, put in front by load_settings_file, says it all.
    return f"{path}: " if path else ""


def _kind_name(kinds: tuple[type, ...]) -> str:
    # An int is a fine number of seconds: "an integer or a number" would only confuse.
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(_KIND_NAMES.get(kind, kind.__name__) for kind in kinds)
