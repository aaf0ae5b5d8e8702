"""Fixtures of the hook tests: the real controller over HTTPS, a real OpenVPN server whose
client-connect/-disconnect run the hooks' shim, and real openvpn clients with configs the
controller issued."""

from __future__ import annotations

import grp
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hooks_lab import (
    OPENVPN_PORT,
    SERVER_ADDRESS,
    VPN_IPV4_RANGE,
    VPN_IPV6_RANGE,
    ControllerFront,
    HttpsController,
    create_namespaces,
)
from openvpn_netlab import (
    Namespaces,
    OpenVpnProcess,
    VpnClients,
    replace_credentials,
    require_lab,
    stop_process,
    wait_for,
    without_tun_setup,
)
from signer_process import start_signer
from sqlalchemy import select
from vpnfleet.shared import files, instances
from vpnfleet.shared.pki import authority, keys

import vpnfleet.hooks
from vpnfleet.controller.accounts import ensure_user
from vpnfleet.controller.app import create_app
from vpnfleet.controller.configs import create_config
from vpnfleet.controller.daemons import NodeAnswer, NodeHealthCache
from vpnfleet.controller.database import migrate
from vpnfleet.controller.models import ConnectionLogEntry, User, utcnow
from vpnfleet.controller.settings import settings_from_mapping
from vpnfleet.controller.state import EXTENSION_KEY
from vpnfleet.hooks.cli import install_shim

NODE_NAME = "node-k1"
NODE_TOKEN = "token-of-node-k1-" + "c" * 24
PROFILE = "office"


@dataclass
class Lab:
    workdir: Path
    node_dir: Path
    namespaces: Namespaces
    app: object
    front: ControllerFront
    controller: HttpsController
    hooks_config: Path
    shim: Path
    hook_python: Path
    worker_socket: Path
    server: OpenVpnProcess | None = None
    crl_number: int = 1000

    def session(self):
        return self.app.extensions[EXTENSION_KEY].sessions()

    def new_config(self, username: str = "alice") -> tuple[str, str]:
        """A config made the way the portal makes it: (common name, .ovpn text)."""
        controller = self.app.extensions[EXTENSION_KEY]
        with self.app.app_context():
            session = self.session()
            try:
                user = session.scalar(select(User).where(User.username == username))
                made = create_config(
                    controller, session, user, PROFILE, "laptop", utcnow() + timedelta(days=1)
                )
                return made.config.common_name, made.text
            finally:
                session.close()

    def stranger_config(self) -> tuple[str, str]:
        """A certificate of the right CA that the controller's database does not know."""
        _, ovpn = self.new_config()
        ca = authority.CertificateAuthority.load(str(self.workdir / "ca"))
        common_name = "f" * 32
        key, certificate = ca.issue(common_name, "client", lifetime_days=1)
        return common_name, replace_credentials(
            ovpn, keys.certificate_pem(certificate).decode(), keys.private_key_pem(key).decode()
        )

    def log_rows(self, common_name: str) -> list[ConnectionLogEntry]:
        session = self.session()
        try:
            return list(
                session.scalars(
                    select(ConnectionLogEntry).where(ConnectionLogEntry.common_name == common_name)
                )
            )
        finally:
            session.close()

    def write_node_crl(self, valid_for: timedelta) -> None:
        """Put a CRL of the CA on the node whose nextUpdate lies ``valid_for`` from now (negative:
        stale), numbered above every one before it."""
        ca = authority.CertificateAuthority.load(str(self.workdir / "ca"))
        now = utcnow()
        self.crl_number += 1
        pem = ca.sign_crl([], now - timedelta(hours=2), now + valid_for, self.crl_number)
        files.write_file_atomic(self.node_dir / "crl.pem", pem)

    def write_hooks_config(self, **overrides) -> None:
        settings = {
            "controller_url": f"https://127.0.0.1:{self.controller.port}",
            "node_name": NODE_NAME,
            "token_file": str(self.node_dir / "hooks.token"),
            "ca_file": str(self.node_dir / "controller-ca.crt"),
            "timeout_seconds": 3,
            "crl_file": str(self.node_dir / "crl.pem"),
            "crl_ca_file": str(self.node_dir / "ca.crt"),
        }
        settings.update(overrides)
        self.hooks_config.write_text(yaml.safe_dump(settings))


def _node_answers_without_a_daemon(app) -> None:
    """This lab runs the node's OpenVPN and hooks but no VPN daemon; new configs need the node to
    look healthy to the controller's node choice, so its health is the answer its daemon would
    give (one process of the profile, no clients) instead of a call to a daemon that is not there."""
    daemons = app.extensions[EXTENSION_KEY].daemons
    answer = {
        "cpu_count": 1,
        "rel_load_average": [0, 0, 0],
        "maintenance_mode": False,
        "o_process_list": [{"process": f"{PROFILE}-0", "profile_id": PROFILE, "client_count": 0}],
    }
    daemons.health = NodeHealthCache(
        lambda node: NodeAnswer(node, data=answer), daemons.settings.nodes, ttl=60, timeout=5
    )


def _controller_settings(workdir: Path, database_url: str) -> dict:
    return {
        "base_url": "https://127.0.0.1",
        "secret_key": "k" * 40,
        "database_url": database_url,
        "ca_dir": str(workdir / "ca"),
        "signer_socket": str(workdir / "signer.sock"),
        "daemon_client": {
            "cert": str(workdir / "daemon_client.crt"),
            "key": str(workdir / "daemon_client.key"),
            "ca": str(workdir / "ca" / "ca.crt"),
        },
        "daemon_timeout_seconds": 1,
        "behind_proxy": False,
        "max_configs_per_user": 100,
        "profiles": [
            {
                "id": PROFILE,
                "display_name": "Office",
                "ipv4_range": VPN_IPV4_RANGE,
                "ipv6_range": VPN_IPV6_RANGE,
                "default_gateway": False,
                "routes": ["203.0.113.0/24"],
                "tls_crypt_key_file": str(workdir / "tls-crypt-office.key"),
            }
        ],
        "nodes": [
            {
                "name": NODE_NAME,
                "location": "location-k",
                "public_address": SERVER_ADDRESS,
                "daemon_address": SERVER_ADDRESS,
                "api_token_sha256": hashlib.sha256(NODE_TOKEN.encode()).hexdigest(),
                "processes": [{"profile": PROFILE, "proto": "udp", "port": OPENVPN_PORT, "max_clients": 60}],
            }
        ],
    }


def _server_config(lab: Lab, server_key: Path, server_cert: Path) -> str:
    """The config the openvpn_instances module renders for this node, with the hooks wired in."""
    plan = instances.plan_profile(
        PROFILE, VPN_IPV4_RANGE, VPN_IPV6_RANGE, listen=[f"udp/{OPENVPN_PORT}"], listen_address=SERVER_ADDRESS
    )
    options = instances.ServerOptions(
        ca_path=str(lab.node_dir / "ca.crt"),
        cert_path=str(server_cert),
        key_path=str(server_key),
        crl_path=str(lab.node_dir / "crl.pem"),
        tls_crypt_path=str(lab.workdir / "tls-crypt-office.key"),
        full_tunnel=False,
        client_connect=str(lab.shim),
        client_disconnect=str(lab.shim),
    )
    text = instances.render_server_config(plan, plan.processes[0], options)
    management = instances.management_socket(PROFILE, 0)
    return text.replace(f"management {management} unix", f"management {lab.workdir / 'office-0.sock'} unix")


def _hook_venv(workdir: Path) -> Path:
    """The hooks' own virtual environment, as the node role makes one: here on Debian's python3
    (the test runner's interpreter may sit where nobody cannot reach it) with PyYAML from Debian
    and this checkout installed as the test runner has it (vpnfleet, and plugins/module_utils as
    vpnfleet.shared). Returns its python."""
    system_python = Path("/usr/bin/python3")
    probe = subprocess.run([system_python, "-c", "import yaml"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("the hooks lab needs Debian's python3 with PyYAML (apt-get install python3-yaml)")
    venv = workdir / "hook-venv"
    subprocess.run([system_python, "-m", "venv", "--without-pip", "--system-site-packages", venv], check=True)
    [site_packages] = venv.glob("lib/python3*/site-packages")
    editable = [
        path for path in importlib.metadata.distribution("vpnfleet").files if "__editable__" in path.name
    ]
    if editable:
        # The editable install's path finder maps both packages to the checkout.
        for path in editable:
            shutil.copy(path.locate(), site_packages / path.name)
    else:
        (site_packages / "vpnfleet-checkout.pth").write_text(str(Path(vpnfleet.__file__).parents[1]) + "\n")
    return venv / "bin" / "python3"


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    require_lab("the hooks lab")
    # Directly under /tmp: unix socket paths stay short. OpenVPN runs the hooks as nobody:nogroup,
    # so the directory must be searchable and the node's files readable by that user.
    workdir = Path(tempfile.mkdtemp(prefix="vfk-"))
    os.chmod(workdir, 0o755)  # noqa: S103 - nobody must reach the node's files
    node_dir = workdir / "node"
    node_dir.mkdir(mode=0o755)
    namespaces = create_namespaces()
    # VFK_KEEP=1 keeps the files (configs, logs) for a look after a failure.
    keep = os.environ.get("VFK_KEEP") == "1"
    stack: list[Callable[[], None]] = [
        lambda: None if keep else shutil.rmtree(workdir, ignore_errors=True),
        namespaces.remove,
    ]
    try:
        ca = authority.CertificateAuthority.create(str(workdir / "ca"), common_name="vfk test CA")
        # The controller signs through the real signer, as on a controller host.
        stack.append(start_signer(workdir / "ca", workdir).stop)
        for purpose, name in (("daemon_client", "controller"),):
            key, cert = ca.issue(name, purpose, lifetime_days=2)
            files.write_file_atomic(workdir / f"{purpose}.key", keys.private_key_pem(key), 0o600)
            files.write_file_atomic(workdir / f"{purpose}.crt", keys.certificate_pem(cert))
        server_key, server_cert = ca.issue("vfk-node", "vpn_server", lifetime_days=2)
        files.write_file_atomic(workdir / "server.key", keys.private_key_pem(server_key), 0o600)
        files.write_file_atomic(workdir / "server.crt", keys.certificate_pem(server_cert))
        files.write_file_atomic(workdir / "tls-crypt-office.key", keys.make_tls_crypt_key(), 0o600)
        # The node's copies: what the node role puts on a node, readable after OpenVPN drops root.
        shutil.copy(workdir / "ca" / "ca.crt", node_dir / "ca.crt")
        shutil.copy(workdir / "ca" / "crl.pem", node_dir / "crl.pem")
        # The controller's HTTPS certificate comes from another CA (a web CA), like a real site's.
        web_ca = authority.CertificateAuthority.create(str(workdir / "web-ca"), common_name="vfk web CA")
        web_key, web_cert = web_ca.issue("controller", "server", ip_addresses=["127.0.0.1"], lifetime_days=2)
        files.write_file_atomic(workdir / "web.key", keys.private_key_pem(web_key), 0o600)
        files.write_file_atomic(workdir / "web.crt", keys.certificate_pem(web_cert))
        shutil.copy(workdir / "web-ca" / "ca.crt", node_dir / "controller-ca.crt")
        token_file = node_dir / "hooks.token"
        token_file.write_text(NODE_TOKEN + "\n")
        os.chown(token_file, 0, grp.getgrnam("nogroup").gr_gid)
        os.chmod(token_file, 0o640)

        database_url = f"sqlite:///{workdir / 'controller.sqlite'}"
        migrate(database_url)
        app = create_app(settings_from_mapping(_controller_settings(workdir, database_url)))
        stack.append(lambda: app.extensions[EXTENSION_KEY].sessions.kw["bind"].dispose())
        _node_answers_without_a_daemon(app)
        with app.app_context():
            session = app.extensions[EXTENSION_KEY].sessions()
            ensure_user(session, "alice", "correct horse battery staple", is_admin=False, groups=[])
            session.close()
        front = ControllerFront(app.wsgi_app)
        app.wsgi_app = front
        listener = namespaces.listening_socket(namespaces.server)
        controller = HttpsController(app, listener, workdir / "web.crt", workdir / "web.key").start()
        stack.append(controller.stop)

        lab = Lab(
            workdir=workdir,
            node_dir=node_dir,
            namespaces=namespaces,
            app=app,
            front=front,
            controller=controller,
            hooks_config=node_dir / "hooks.yaml",
            shim=node_dir / "vpnfleet-openvpn-hook",
            hook_python=_hook_venv(workdir),
            worker_socket=workdir / "worker.sock",
        )
        lab.write_hooks_config()
        # No worker listens unless a test starts one (the `worker` fixture): the other tests see
        # the shim's fallback, one Python run per event.
        install_shim(lab.shim, lab.hooks_config, python=str(lab.hook_python), worker_socket=lab.worker_socket)
        lab.server = OpenVpnProcess.start(
            namespaces.server,
            _server_config(lab, workdir / "server.key", workdir / "server.crt"),
            workdir / "server.conf",
        )
        stack.append(lab.server.stop)
        lab.server.wait_until_up()
        yield lab
    finally:
        for undo in reversed(stack):
            undo()


@pytest.fixture
def hooks(lab: Lab) -> Iterator[Callable[..., None]]:
    """Rewrite the hooks' settings for one test (each hook run reads them); restored afterwards."""
    yield lab.write_hooks_config
    lab.write_hooks_config()
    lab.front.fail_status = None
    lab.front.fail_body = None
    lab.front.missing_calls.clear()
    for gate in lab.front.held.values():
        gate.set()
    lab.front.held.clear()


@dataclass
class Worker:
    """`vpnfleet-hook serve` as root in the server namespace (where the controller listens on
    127.0.0.1), its socket 0660 for nogroup, the group the test's OpenVPN drops to."""

    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def worker(lab: Lab, request) -> Iterator[Worker]:
    """The worker; ``indirect`` parametrization sets its calls at once (``--concurrency``)."""
    concurrency = ["--concurrency", str(request.param)] if hasattr(request, "param") else []
    log_path = lab.workdir / f"worker-{len(list(lab.workdir.glob('worker-*.log')))}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", lab.namespaces.server, str(lab.hook_python), "-I", "-m", "vpnfleet.hooks"]
            + ["--settings", str(lab.hooks_config), "serve", "--socket", str(lab.worker_socket)]
            + ["--socket-group", "nogroup"]
            + concurrency,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    running = Worker(process, log_path)
    try:
        wait_for(lambda: "worker ready" in running.log(), "the hooks' worker to listen")
        yield running
    finally:
        running.stop()


@pytest.fixture
def vpn_client(lab: Lab) -> Iterator[Callable[..., OpenVpnProcess]]:
    """Starts real openvpn clients in the client namespace; stops whichever are still running."""
    clients = VpnClients(lab.namespaces.client, lab.workdir)

    def start(ovpn: str, *, configure_tun: bool = False) -> OpenVpnProcess:
        return clients.start(ovpn if configure_tun else without_tun_setup(ovpn))

    yield start
    clients.stop_all()
