"""Argument specs shared between modules (_argspec.py, pki/_options.py)."""

import pytest
from vpnfleet.shared._argspec import ArgumentSpec
from vpnfleet.shared.pki import _options, keys


def test_merge_joins_options_and_constraints_without_touching_the_pieces():
    base = ArgumentSpec(
        {"path": dict(type="path")}, mutually_exclusive=[("a", "b")], required_by={"x": ("y",)}
    )
    merged = base.merge(
        _options.KEY_TYPE, ArgumentSpec({"c": dict(type="str")}, required_if=[("c", "1", ("path",))])
    )
    kwargs = merged.module_kwargs()
    assert sorted(kwargs["argument_spec"]) == ["c", "key_type", "path"]
    assert kwargs["mutually_exclusive"] == [("a", "b")]
    assert kwargs["required_if"] == [("c", "1", ("path",))]
    assert kwargs["required_by"] == {"x": ("y",)}
    assert "required_one_of" not in kwargs  # empty constraints stay out
    assert sorted(base.argument_spec) == ["path"] and "required_if" not in base.module_kwargs()


def test_an_option_defined_twice_is_a_mistake():
    with pytest.raises(ValueError, match="key_type"):
        _options.KEY_TYPE.merge(ArgumentSpec({"key_type": dict(type="str")}))


def test_unknown_constraints_are_refused():
    with pytest.raises(TypeError, match="required_ifs"):
        ArgumentSpec({}, required_ifs=[])


def test_key_type_offers_every_key_type_and_is_no_secret():
    spec = _options.KEY_TYPE.module_kwargs()["argument_spec"]["key_type"]
    assert spec["choices"] == list(keys.KEY_TYPES) and spec["default"] == keys.DEFAULT_KEY_TYPE
    assert spec["no_log"] is False
