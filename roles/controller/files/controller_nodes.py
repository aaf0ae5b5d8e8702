# Copyright: vpnfleet developers
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""The controller's view of the fleet: every node with its planned OpenVPN processes. The
controller role runs this on the control machine.

Reads JSON on stdin: profiles (the inventory's), nodes (name, location, public_address, cores).
Writes JSON: problems (one sentence each) and nodes (name, location, public_address, processes:
profile, proto, port, max_clients).

The plan comes from the node role's own layout script on the collection's planner
(plugins/module_utils/instances.py), so the controller's remote lines and capacities are the
very processes the node role starts.
"""

import json
import pathlib
import sys

# roles/controller/files -> roles/node/files (node_layout puts module_utils on the path itself).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "node" / "files"))
import node_layout  # noqa: E402


def fleet(profiles, nodes, known_locations):
    problems = []
    planned = []
    for node in nodes:
        found = node_layout.node_profile_problems(
            profiles, node["name"], node["location"], known_locations, node["cores"], "controller_profiles"
        )
        if found:
            problems.extend(found)
            continue
        normalised = [node_layout._normalised(profile) for profile in profiles]
        here = [profile for profile in normalised if node_layout._serves(profile, node["location"])]
        plans = node_layout._plan_all(here, node["cores"])
        planned.append(
            {
                "name": node["name"],
                "location": node["location"],
                "public_address": node["public_address"],
                "processes": [
                    {
                        "profile": profile_id,
                        "proto": process.proto,
                        "port": process.port,
                        "max_clients": process.max_clients,
                    }
                    for profile_id, plan in plans.items()
                    for process in plan.processes
                ],
            }
        )
    return {"problems": problems, "nodes": planned}


def main():
    request = json.load(sys.stdin)
    json.dump(fleet(request["profiles"], request["nodes"], request["known_locations"]), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
