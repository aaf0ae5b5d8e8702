"""The reconcile decisions of openvpn_instances (openvpn_units.py), without Ansible or systemd."""

import os

import pytest
from vpnfleet.shared import instances, openvpn_units

V4 = "198.18.0.0/24"
V6 = "2001:db8:100::/64"
DOWN = openvpn_units.UnitState(enabled=False, active=False)
UP = openvpn_units.UnitState(enabled=True, active=True)


def unit(index, profile="internet"):
    return instances.unit_name(profile, index)


def test_a_bare_host_enables_and_starts_every_process():
    todo = openvpn_units.reconcile(
        "internet", [0, 1], set(), {0: DOWN, 1: DOWN}, {0, 1}, drop_in_changed=True
    )
    assert (todo.enable, todo.start, todo.restart, todo.remove) == (
        (unit(0), unit(1)),
        (unit(0), unit(1)),
        (),
        (),
    )
    assert todo.daemon_reload and todo.changed


def test_a_converged_host_changes_nothing():
    todo = openvpn_units.reconcile("internet", [0, 1], {0, 1}, {0: UP, 1: UP})
    assert todo == openvpn_units.Reconcile()
    assert not todo.changed


def test_only_a_process_whose_config_changed_restarts():
    todo = openvpn_units.reconcile("internet", [0, 1, 2], {0, 1, 2}, {0: UP, 1: UP, 2: UP}, changed={1})
    assert todo.restart == (unit(1),) and not (todo.enable or todo.start or todo.remove)
    assert not todo.daemon_reload


def test_a_new_drop_in_reloads_systemd_and_restarts_the_running_processes():
    stopped = openvpn_units.UnitState(enabled=True, active=False)
    todo = openvpn_units.reconcile("internet", [0, 1], {0, 1}, {0: UP, 1: stopped}, drop_in_changed=True)
    assert todo.daemon_reload
    assert todo.restart == (unit(0),) and todo.start == (unit(1),)


def test_a_process_whose_pin_changed_restarts_after_a_reload():
    todo = openvpn_units.reconcile("internet", [0, 1], {0, 1}, {0: UP, 1: UP}, pins_changed={1})
    assert todo.daemon_reload and todo.restart == (unit(1),)


@pytest.mark.parametrize(
    ("indexes", "cpus", "pinned"),
    [
        ([0, 1, 2, 3], [0, 1, 2, 3], {0: 0, 1: 1, 2: 2, 3: 3}),
        # More processes than CPUs: round the CPUs again; a cpuset's own numbers are kept.
        ([0, 1, 2], [5, 3], {0: 3, 1: 5, 2: 3}),
        ([0], [], {}),
    ],
)
def test_process_i_is_pinned_to_the_ith_usable_cpu(indexes, cpus, pinned):
    assert openvpn_units.pinned_cpus(indexes, cpus) == pinned


def test_a_pin_is_a_drop_in_of_the_process_own_unit():
    assert openvpn_units.pin_path("internet", 2, "/etc/systemd/system") == (
        "/etc/systemd/system/openvpn-server@internet-2.service.d/vpnfleet-cpu.conf"
    )
    text = openvpn_units.pin_text(3)
    assert text.startswith("[Service]\n") and "\nCPUAffinity=3\n" in text


def test_a_disabled_but_running_process_is_only_enabled():
    running = openvpn_units.UnitState(enabled=False, active=True)
    todo = openvpn_units.reconcile("internet", [0], {0}, {0: running})
    assert (todo.enable, todo.start, todo.restart) == ((unit(0),), (), ())


def test_processes_no_longer_planned_go_with_their_config_and_socket():
    todo = openvpn_units.reconcile("internet", [0, 1], {0, 1, 2, 3}, {0: UP, 1: UP}, config_dir="/srv/conf")
    assert todo.remove == (unit(2), unit(3))
    assert todo.remove_paths == (
        "/srv/conf/internet-2.conf",
        "/run/openvpn-server/internet-2.sock",
        "/etc/systemd/system/openvpn-server@internet-2.service.d/vpnfleet-cpu.conf",
        "/srv/conf/internet-3.conf",
        "/run/openvpn-server/internet-3.sock",
        "/etc/systemd/system/openvpn-server@internet-3.service.d/vpnfleet-cpu.conf",
    )
    # Only their units' own directories: /srv/conf and /run/openvpn-server hold the others' too.
    assert todo.remove_directories == (
        "/etc/systemd/system/openvpn-server@internet-2.service.d",
        "/etc/systemd/system/openvpn-server@internet-3.service.d",
    )
    assert todo.changed


def test_state_absent_removes_everything_and_without_services_only_files_move():
    absent = openvpn_units.reconcile("internet", [], {0, 1}, {})
    assert absent.remove == (unit(0), unit(1)) and not absent.daemon_reload
    unmanaged = openvpn_units.reconcile("internet", [0], {0, 5}, None, changed={0}, drop_in_changed=True)
    assert (unmanaged.enable, unmanaged.start, unmanaged.restart, unmanaged.daemon_reload) == (
        (),
        (),
        (),
        False,
    )
    assert unmanaged.remove == (unit(5),)


def test_existing_indexes_finds_configs_and_enabled_units_of_this_profile_only(tmp_path):
    config_dir, systemd_dir = tmp_path / "conf", tmp_path / "systemd"
    wants = systemd_dir / openvpn_units.WANTS_DIR
    config_dir.mkdir()
    wants.mkdir(parents=True)
    for name in ("internet-0.conf", "internet-1.conf", "internet-x-0.conf", "office-3.conf", "internet.conf"):
        (config_dir / name).write_text("")
    for name in ("openvpn-server@internet-4.service", "openvpn-server@internet-x-1.service", "ssh.service"):
        os.symlink("/dev/null", wants / name)
    assert openvpn_units.existing_indexes("internet", str(config_dir), str(systemd_dir)) == {0, 1, 4}
    assert openvpn_units.existing_indexes("internet-x", str(config_dir), str(systemd_dir)) == {0, 1}
    assert openvpn_units.existing_indexes("internet", str(tmp_path / "none"), str(tmp_path / "none")) == set()


def test_a_given_plan_is_rendered_as_it_is_not_planned_again():
    fleet_plan = instances.plan_profile("internet", V4, V6, listen=["udp/1194", "tcp/443"])
    # cores would plan 8 processes here; the plan decides.
    plan = openvpn_units.profile_plan(
        {"profile_id": "internet", "plan": fleet_plan.as_dict()}, usable_cores=8
    )
    assert plan == fleet_plan


def test_without_a_plan_the_planning_options_plan_here():
    values = {
        "profile_id": "internet",
        "ipv4_range": V4,
        "ipv6_range": V6,
        "tcp_share": None,
        "udp_port_base": 1300,
    }
    plan = openvpn_units.profile_plan(values, usable_cores=4)
    assert plan == instances.plan_profile("internet", V4, V6, cores=4, udp_port_base=1300)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"profile_id": "office", "plan": instances.plan_profile("internet", V4, cores=1).as_dict()},
            "not of",
        ),
        ({"profile_id": "internet"}, "give plan or ipv4_range"),
        ({"profile_id": "internet", "ipv4_range": "198.18.0.0/30"}, "too small"),
    ],
)
def test_a_plan_that_cannot_be_had_is_refused(values, message):
    with pytest.raises(instances.PlanError, match=message):
        openvpn_units.profile_plan(values, usable_cores=2)


def test_server_options_from_module_values():
    values = {
        "ca_path": "/c/ca.crt",
        "cert_path": "/c/s.crt",
        "key_path": "/c/s.key",
        "crl_path": "/c/crl.pem",
        "tls_crypt_path": "/c/tc.key",
        "routes": ["203.0.113.0/24"],
        "dns_servers": [],
        "user": None,
        "cpu_has_aes": None,
        "profile_id": "not an option of the config",
    }
    options = openvpn_units.server_options(values, cpu_has_aes=False)
    assert options.routes == ("203.0.113.0/24",) and options.dns_servers == ()
    assert options.user is None and options.group == "nogroup"
    assert options.cpu_has_aes is False
    assert openvpn_units.server_options(dict(values, cpu_has_aes=True), cpu_has_aes=False).cpu_has_aes is True


def test_rendered_configs_name_their_paths():
    plan = instances.plan_profile("internet", V4, cores=2)
    options = instances.ServerOptions("/c/ca.crt", "/c/s.crt", "/c/s.key", "/c/crl.pem", "/c/tc.key")
    configs = openvpn_units.rendered_configs(plan, options, "/srv/conf")
    assert [(index, path) for index, path, unused_text in configs] == [
        (0, "/srv/conf/internet-0.conf"),
        (1, "/srv/conf/internet-1.conf"),
    ]
    assert configs[1][2] == instances.render_server_config(plan, plan.processes[1], options)


def test_drop_in():
    assert openvpn_units.drop_in_path("/etc/systemd/system") == (
        "/etc/systemd/system/openvpn-server@.service.d/vpnfleet.conf"
    )
    assert openvpn_units.drop_in_text(127).endswith("LimitNPROC=127\n")
