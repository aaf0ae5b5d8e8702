"""ProfilePlan.from_dict / ProcessPlan.from_dict (instances.py): the fleet plan made on the control
machine reaches openvpn_instances as a dict and must come back as the very plan."""

import json

import pytest
from vpnfleet.shared import instances

V4 = "198.18.0.0/24"
V6 = "2001:db8:100::/64"


@pytest.mark.parametrize(
    "planning",
    [
        dict(ipv4_range=V4, ipv6_range=V6, cores=4),
        dict(ipv4_range=V4, cores=3),  # no IPv6, slices of two sizes
        dict(ipv4_range="198.18.4.0/22", ipv6_range=V6, listen=["tcp/443", "udp/53", "udp/1194"]),
        dict(ipv4_range=V4, processes=2, listen_address="203.0.113.5", udp_port_base=1294),
    ],
)
def test_a_plan_survives_the_trip_through_json(planning):
    plan = instances.plan_profile("internet", **planning)
    # What Ansible hands the module: JSON, so tuples and addresses become lists and strings.
    data = json.loads(json.dumps(plan.as_dict()))
    again = instances.ProfilePlan.from_dict(data)
    assert again == plan
    assert again.as_dict() == plan.as_dict()


def test_only_the_primary_fields_are_read():
    data = instances.plan_profile("office", V4, V6, cores=2).as_dict()
    for derived in ("process_count", "udp", "tcp", "max_clients", "listeners"):
        del data[derived]
    for process in data["processes"]:
        for derived in ("name", "ipv4_gateway", "max_clients", "ipv6_gateway", "management_socket", "device"):
            del process[derived]
        del process["unit"], process["config_path"], process["listen_address"]
    assert instances.ProfilePlan.from_dict(data) == instances.plan_profile("office", V4, V6, cores=2)


def broken(change):
    data = instances.plan_profile("internet", V4, V6, cores=2).as_dict()
    change(data)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("internet", r"a plan is a mapping"),
        (broken(lambda d: d.pop("profile_id")), r"'profile_id' is missing"),
        (broken(lambda d: d.update(profile_id="Not An Id")), r"profile id 'Not An Id'"),
        (broken(lambda d: d.update(ipv4_range="198.18.0.1/24")), r"plan of profile internet: .*host bits"),
        (broken(lambda d: d.update(ipv6_range="198.18.0.0/24")), r"plan of profile internet"),
        (broken(lambda d: d.update(processes=[])), r"has no processes"),
        (broken(lambda d: d["processes"][0].pop("port")), r"'port' is missing"),
        (broken(lambda d: d["processes"][1].update(proto="sctp")), r"proto must be udp or tcp"),
        (
            broken(lambda d: d["processes"][1].update(port="https")),
            r"process .* of the plan of profile internet",
        ),
        (
            broken(lambda d: d["processes"][0].update(ipv4="198.18.0.0/33")),
            r"of the plan of profile internet",
        ),
        (broken(lambda d: d["processes"].reverse()), r"indexes must be 0, 1, 2"),
        (broken(lambda d: d["processes"].__setitem__(0, "udp/1194")), r"of the plan of profile internet"),
    ],
)
def test_a_malformed_plan_is_refused_with_its_reason(data, message):
    with pytest.raises(instances.PlanError, match=message):
        instances.ProfilePlan.from_dict(data)
