# Copyright: vpnfleet developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reads what the inventory says about every host of the fleet and hands it to the fleet plan
(module_utils/fleet.py), which checks and plans; nothing here decides anything."""

from __future__ import annotations

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible_collections.vpnfleet.server.plugins.module_utils import fleet

_FLEET_VARIABLES = (fleet.PROFILES_VARIABLE, *fleet.CONTRACT)
_READ = (*_FLEET_VARIABLES, *fleet.HOST_VARIABLES, *fleet.RETIRED)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    # Only the inventory is read: no host is reached.
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        self.validate_argument_spec(argument_spec={})
        task_vars = task_vars or {}
        groups = {name: list(members) for name, members in task_vars.get("groups", {}).items()}
        hostvars = task_vars["hostvars"]
        fleet_hosts = dict.fromkeys(
            groups.get(fleet.CONTROLLERS_GROUP, []) + groups.get(fleet.NODES_GROUP, [])
        )
        unreadable = []
        hosts = {}
        for name in fleet_hosts:
            host_vars = hostvars[name]
            variables = {}
            for variable in _READ:
                if variable in host_vars:
                    try:
                        variables[variable] = host_vars[variable]
                    except AnsibleError as exc:
                        unreadable.append("host %s: %s: cannot be read: %s" % (name, variable, exc))
            facts = host_vars.get("ansible_facts") or {}
            hosts[name] = fleet.HostInput(
                name=name,
                groups=tuple(host_vars.get("group_names") or ()),
                variables=variables,
                cores=facts.get("processor_nproc"),
                address=(facts.get("default_ipv4") or {}).get("address"),
                ansible_host=host_vars.get("ansible_host"),
            )
        play_variables = self._play_variables(task_vars, hostvars)
        if unreadable:
            return self._refused(result, unreadable)
        try:
            plan = fleet.plan_fleet(
                hosts,
                groups,
                play_variables=play_variables,
                # The hosts still in the run: one that did not answer is planned from what is
                # known of it (cached facts, vpnfleet_cores), or left out with a warning.
                play_hosts=task_vars.get("ansible_play_hosts", task_vars.get("ansible_play_hosts_all")),
                playbook_python=task_vars.get("ansible_playbook_python"),
            )
        except fleet.FleetRefused as exc:
            return self._refused(result, [str(refusal) for refusal in exc.refusals])
        answer = plan.as_dict()
        result["warnings"] = result.get("warnings", []) + answer.pop("warnings")
        result.update(changed=False, **answer)
        return result

    def _play_variables(self, task_vars, hostvars):
        """The fleet-level values this play sets (play vars, role vars): those the running task
        sees other than the inventory has them. A play's value holds for every host of it."""
        here = hostvars[task_vars["inventory_hostname"]]
        found = {}
        for variable in _READ:
            if variable in fleet.HOST_VARIABLES or variable not in task_vars:
                continue
            value = self._templar.template(task_vars[variable])
            if variable not in here or here[variable] != value:
                found[variable] = value
        return found

    @staticmethod
    def _refused(result, problems):
        result.update(
            failed=True,
            changed=False,
            problems=problems,
            msg="The inventory cannot be deployed; nothing was changed. %d problem%s: %s"
            % (len(problems), "" if len(problems) == 1 else "s", "; ".join(problems)),
        )
        return result
