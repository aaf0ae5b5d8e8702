# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The wheels of a vpnfleet service, built and downloaded on the control machine once per set of
inputs and kept in a cache there: a run whose sources and pins did not change builds nothing and
asks no package index."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.vpnfleet.server.plugins.module_utils import wheels

ARGUMENT_SPEC = {
    "source": {"type": "path", "required": True},
    "paths": {"type": "list", "elements": "str", "default": ["pyproject.toml"]},
    "extras": {"type": "list", "elements": "str", "default": []},
    "requirements": {"type": "list", "elements": "str", "default": []},
    "python_version": {"type": "str", "required": True},
    "platforms": {"type": "list", "elements": "str", "default": []},
    "cache_dir": {"type": "path"},
    "pip_retries": {"type": "int", "default": 0},
}
# Entries of each kind kept in the cache, the most recently used first.
KEEP = 8
# The same sources make the same bytes, so an unchanged package compares equal on the host.
SOURCE_DATE_EPOCH = "315532800"
_SKIPPED = ("__pycache__", ".egg-info", ".pyc")


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vpnfleet", "wheelhouse")


def _skipped(name):
    return name.endswith(_SKIPPED)


def _files(source, paths):
    for path in sorted(paths):
        top = os.path.join(source, path)
        if os.path.isfile(top):
            yield path
        elif os.path.isdir(top):
            for directory, subdirs, names in os.walk(top):
                subdirs[:] = sorted(name for name in subdirs if not _skipped(name))
                for name in sorted(names):
                    if not _skipped(name):
                        yield os.path.relpath(os.path.join(directory, name), source)
        else:
            raise AnsibleActionFail("wheelhouse: %s: not found (source %s, paths %s)" % (top, source, paths))


def source_digest(source, paths):
    digest = hashlib.sha256()
    for relative in _files(source, paths):
        digest.update(relative.encode() + b"\0")
        with open(os.path.join(source, relative), "rb") as handle:
            digest.update(handle.read())
        digest.update(b"\0")
    return digest.hexdigest()


def _digest_of(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _locked(path):
    """One fork builds an entry; the others wait and then find it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pip(argv, pip_retries, what):
    environment = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_RETRIES=str(pip_retries))
    run = subprocess.run(
        [sys.executable, "-m", "pip", *argv], capture_output=True, text=True, env=environment, check=False
    )
    if run.returncode:
        raise AnsibleActionFail(
            "wheelhouse: pip could not %s (exit %d): %s" % (what, run.returncode, run.stderr.strip()[-2000:])
        )


def _entry(kind_dir, key, make):
    """``kind_dir/key``, made by ``make(directory)`` when missing; returns (path, made)."""
    final = os.path.join(kind_dir, key)
    with _locked(final):
        made = not os.path.isdir(final)
        if made:
            work = tempfile.mkdtemp(prefix=".%s-" % key[:12], dir=kind_dir)
            try:
                make(work)
                os.rename(os.path.join(work, "out"), final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            _prune(kind_dir)
        os.utime(final)
    return final, made


def _prune(kind_dir):
    entries = [
        os.path.join(kind_dir, name)
        for name in os.listdir(kind_dir)
        if not name.startswith(".") and os.path.isdir(os.path.join(kind_dir, name))
    ]
    entries.sort(key=os.path.getmtime, reverse=True)
    for stale in entries[KEEP:]:
        shutil.rmtree(stale, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale + ".lock")


def build_package(source, paths, cache_dir, pip_retries):
    """The package's own wheel from a copy of ``paths`` (the checkout stays untouched)."""

    def make(work):
        copy = os.path.join(work, "src")
        for relative in _files(source, paths):
            target = os.path.join(copy, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(source, relative), target)
        _pip(
            ["wheel", "--no-deps", "--wheel-dir", os.path.join(work, "out"), copy],
            pip_retries,
            "build the wheel",
        )

    key = source_digest(source, paths)
    directory, made = _entry(os.path.join(cache_dir, "packages"), key, make)
    found = [name for name in os.listdir(directory) if name.endswith(".whl")]
    if len(found) != 1:
        raise AnsibleActionFail("wheelhouse: %s holds %d wheels, not one" % (directory, len(found)))
    return os.path.join(directory, found[0]), made


def download_set(package_wheel, args, cache_dir):
    """The package's wheel and every dependency as wheels for the host's Python and machine."""
    extras = "[%s]" % ",".join(args["extras"]) if args["extras"] else ""
    inputs = {
        "package": os.path.basename(os.path.dirname(package_wheel)),
        "extras": args["extras"],
        "requirements": args["requirements"],
        "python_version": args["python_version"],
        "platforms": args["platforms"],
    }

    def make(work):
        out = os.path.join(work, "out")
        argv = ["download", "--only-binary=:all:", "--implementation", "cp"]
        argv += ["--python-version", args["python_version"], "--dest", out]
        argv += ["--platform=%s" % platform for platform in args["platforms"]]
        _pip(
            argv + [package_wheel + extras, *args["requirements"]], args["pip_retries"], "download the wheels"
        )
        described = [wheels.describe_wheel(os.path.join(out, name)) for name in sorted(os.listdir(out))]
        with open(os.path.join(out, "wheels.json"), "w") as handle:
            json.dump(described, handle, indent=1)

    directory, made = _entry(os.path.join(cache_dir, "sets"), _digest_of(inputs), make)
    with open(os.path.join(directory, "wheels.json")) as handle:
        return directory, json.load(handle), made


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    # Everything happens on the control machine.
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        unused_validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        # Absolute, so that pip never takes a directory's name for a project on an index.
        cache_dir = os.path.abspath(args["cache_dir"] or default_cache_dir())
        source = os.path.abspath(args["source"])
        package_wheel, built = build_package(source, args["paths"], cache_dir, args["pip_retries"])
        directory, described, downloaded = download_set(package_wheel, args, cache_dir)
        result.update(
            changed=False,
            path=directory,
            wheels=described,
            package=wheels.describe_wheel(package_wheel),
            cached=not (built or downloaded),
        )
        return result
