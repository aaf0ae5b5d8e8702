"""What ``openvpn_instances`` changes on a node, decided in plain Python (the standard library only).

The module gathers the facts (files on disk, the state of the units), asks this file what to do,
and does it; check mode and a real run ask the same questions and get the same answers.

Public interface
----------------
    PLANNING_OPTIONS                       the module options that plan a profile on the node
    profile_plan(values, usable_cores) -> instances.ProfilePlan   from a plan dict or the planning options
    server_options(values, cpu_has_aes) -> instances.ServerOptions
    rendered_configs(plan, options, config_dir) -> [(index, path, text)]
    drop_in_path(systemd_dir), drop_in_text(limit_nproc)
    pinned_cpus(indexes, usable_cpus) -> {index: cpu}
    pin_path(profile_id, index, systemd_dir), pin_text(cpu)
    existing_indexes(profile_id, config_dir, systemd_dir) -> set of process indexes on the host
    UnitState(enabled, active)
    reconcile(profile_id, planned, existing, states, changed, drop_in_changed, config_dir) -> Reconcile
"""

import dataclasses
import os

from . import instances

DROP_IN = "openvpn-server@.service.d/vpnfleet.conf"
PIN_DROP_IN = "vpnfleet-cpu.conf"
DEFAULT_SYSTEMD_DIR = "/etc/systemd/system"
DEFAULT_LIMIT_NPROC = 127
WANTS_DIR = "multi-user.target.wants"

PLANNING_OPTIONS = (
    "ipv4_range",
    "ipv6_range",
    "cores",
    "processes",
    "listen",
    "tcp_share",
    "udp_port_base",
    "tcp_port_base",
    "ports_in_use",
    "listen_address",
)
_LIST_OPTIONS = ("routes", "dns_servers", "dns_search_domains", "extra_directives")
_SERVER_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(instances.ServerOptions))


def profile_plan(values, usable_cores=None):
    """The plan of ``values["profile_id"]``: the given ``plan`` (the fleet plan made on the control
    machine) as it is, or one planned here from the planning options for standalone use."""
    profile_id = values["profile_id"]
    if values.get("plan"):
        plan = instances.ProfilePlan.from_dict(values["plan"])
        if plan.profile_id != profile_id:
            raise instances.PlanError(
                "plan is the plan of profile %s, not of profile_id %s" % (plan.profile_id, profile_id)
            )
        return plan
    if not values.get("ipv4_range"):
        raise instances.PlanError("profile %s: give plan or ipv4_range" % profile_id)
    # Unset options take plan_profile's defaults, the same the module documents.
    planning = {name: values[name] for name in PLANNING_OPTIONS if values.get(name) is not None}
    planning.setdefault("cores", usable_cores)
    return instances.plan_profile(profile_id, **planning)


def server_options(values, cpu_has_aes=True):
    """The options of every config of the profile; ``cpu_has_aes`` counts where ``values`` leaves
    it unset (None)."""
    chosen = {name: values[name] for name in _SERVER_OPTION_NAMES if name in values}
    if chosen.get("cpu_has_aes") is None:
        chosen["cpu_has_aes"] = cpu_has_aes
    for name in _LIST_OPTIONS:
        if name in chosen:
            chosen[name] = tuple(chosen[name])
    return instances.ServerOptions(**chosen)


def rendered_configs(plan, options, config_dir=instances.CONFIG_DIR):
    """Every process's config with its path; rendering fails (PlanError) before anything is written."""
    return [
        (
            process.index,
            instances.config_path(plan.profile_id, process.index, config_dir),
            instances.render_server_config(plan, process, options),
        )
        for process in plan.processes
    ]


def drop_in_path(systemd_dir=DEFAULT_SYSTEMD_DIR):
    return os.path.join(systemd_dir, DROP_IN)


def drop_in_text(limit_nproc=DEFAULT_LIMIT_NPROC):
    return (
        "[Service]\n# vpnfleet: hooks fork; Debian's LimitNPROC=10 is too low.\nLimitNPROC=%d\n" % limit_nproc
    )


def pinned_cpus(indexes, usable_cpus):
    """Process i on the i-th CPU this host may use, round the CPUs again when there are more
    processes: a UDP process is one thread that spends its core on per-packet work; one that stays
    on its core keeps its caches and never queues behind a neighbour moved onto it."""
    cpus = sorted(usable_cpus)
    return {index: cpus[index % len(cpus)] for index in indexes} if cpus else {}


def pin_path(profile_id, index, systemd_dir=DEFAULT_SYSTEMD_DIR):
    """The drop-in of this one process's unit (the template's drop-in is every process's)."""
    return os.path.join(systemd_dir, instances.unit_name(profile_id, index) + ".service.d", PIN_DROP_IN)


def pin_text(cpu):
    return "[Service]\n# vpnfleet: this process's own core (cpu_affinity).\nCPUAffinity=%d\n" % cpu


def existing_indexes(profile_id, config_dir=instances.CONFIG_DIR, systemd_dir=DEFAULT_SYSTEMD_DIR):
    """Processes of this profile that exist now: a config, or a unit enabled for multi-user."""
    names = []
    for directory in (config_dir, os.path.join(systemd_dir, WANTS_DIR)):
        if os.path.isdir(directory):
            names += os.listdir(directory)
    indexes = (instances.process_index_of(profile_id, name) for name in names)
    return {index for index in indexes if index is not None}


@dataclasses.dataclass(frozen=True)
class UnitState:
    enabled: bool
    active: bool


@dataclasses.dataclass(frozen=True)
class Reconcile:
    """What to do with the units, in this order: daemon-reload, enable, start, restart, remove."""

    daemon_reload: bool = False
    enable: tuple = ()
    start: tuple = ()
    restart: tuple = ()
    remove: tuple = ()
    # The configs, management sockets and pins of the removed processes. OpenVPN runs as nobody
    # by then and cannot remove its own socket; the daemon would list a dead process for it.
    remove_paths: tuple = ()
    # Their units' own drop-in directories, once empty (never the config or socket directory,
    # which the other processes share).
    remove_directories: tuple = ()

    @property
    def changed(self):
        return bool(self.enable or self.start or self.restart or self.remove)


def reconcile(
    profile_id,
    planned,
    existing,
    states=None,
    changed=(),
    drop_in_changed=False,
    config_dir=instances.CONFIG_DIR,
    pins_changed=(),
    systemd_dir=DEFAULT_SYSTEMD_DIR,
):
    """The unit changes that bring the host to the plan.

    ``planned``: the indexes of the plan (empty for state=absent); ``existing``: those found on the
    host; ``states``: index -> UnitState of the planned units, or None when the module does not
    manage services; ``changed``: indexes whose config was (or in check mode would be) rewritten.
    ``pins_changed``: indexes whose own drop-in (its CPU) was written or removed.
    A running process restarts only when its config, its own drop-in or the template's changed.
    """
    enable, start, restart = [], [], []
    if states is not None:
        for index in planned:
            unit = instances.unit_name(profile_id, index)
            state = states[index]
            if not state.enabled:
                enable.append(unit)
            if not state.active:
                start.append(unit)
            elif index in changed or index in pins_changed or drop_in_changed:
                restart.append(unit)
    surplus = sorted(set(existing) - set(planned))
    return Reconcile(
        daemon_reload=bool((drop_in_changed or pins_changed) and states is not None),
        enable=tuple(enable),
        start=tuple(start),
        restart=tuple(restart),
        remove=tuple(instances.unit_name(profile_id, index) for index in surplus),
        remove_paths=tuple(
            path
            for index in surplus
            for path in (
                instances.config_path(profile_id, index, config_dir),
                instances.management_socket(profile_id, index),
                pin_path(profile_id, index, systemd_dir),
            )
        ),
        remove_directories=tuple(
            os.path.dirname(pin_path(profile_id, index, systemd_dir)) for index in surplus
        ),
    )
