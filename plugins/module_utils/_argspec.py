"""Argument specs as objects, so that modules can share pieces of them; plain Python, modules only.

Public interface
----------------
    ArgumentSpec(argument_spec, mutually_exclusive=..., required_if=..., ...)
    spec.merge(*others) -> a new ArgumentSpec with the options and constraints of all
    spec.module_kwargs() -> keyword arguments for AnsibleModule
"""

import copy

CONSTRAINTS = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")


class ArgumentSpec:
    def __init__(self, argument_spec=None, **constraints):
        unknown = set(constraints) - set(CONSTRAINTS)
        if unknown:
            raise TypeError("unknown constraints: %s" % ", ".join(sorted(unknown)))
        self.argument_spec = copy.deepcopy(argument_spec or {})
        self.constraints = {
            name: list(constraints.get(name) or ()) for name in CONSTRAINTS if name != "required_by"
        }
        self.constraints["required_by"] = dict(constraints.get("required_by") or {})

    def merge(self, *others):
        """Options of a later spec must not replace those of an earlier one: two pieces that define
        the same option are a mistake, and saying so beats a silently changed default."""
        merged = ArgumentSpec(self.argument_spec, **self.constraints)
        for other in others:
            clash = set(merged.argument_spec) & set(other.argument_spec)
            if clash:
                raise ValueError("options defined twice: %s" % ", ".join(sorted(clash)))
            merged.argument_spec.update(copy.deepcopy(other.argument_spec))
            for name, value in other.constraints.items():
                if name == "required_by":
                    merged.constraints[name].update(value)
                else:
                    merged.constraints[name].extend(value)
        return merged

    def module_kwargs(self):
        kwargs = {"argument_spec": copy.deepcopy(self.argument_spec)}
        kwargs.update((name, value) for name, value in self.constraints.items() if value)
        return kwargs
