"""Fixtures of the daemon tests: a namespace lab with two real OpenVPN servers and the daemon."""

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from daemon_lab import (
    DAEMON_PORT,
    METRICS_PORT,
    SERVER_UNDERLAY_ADDRESS,
    DaemonClient,
    LabPki,
    ServerInstance,
    create_namespaces,
    daemon_command,
    openvpn_client_config,
    openvpn_server_config,
)
from openvpn_netlab import (
    Credentials,
    Namespaces,
    OpenVpnProcess,
    VpnClients,
    require_lab,
    stop_process,
    stop_processes,
    wait_for,
)

# One profile, "default", with one UDP and one TCP process, each on its own slice of the ranges.
SERVER_INSTANCES = (
    ServerInstance("default-0", "udp", "198.19.0.0", "255.255.255.128", "2001:db8:f0::/64"),
    ServerInstance("default-1", "tcp", "198.19.0.128", "255.255.255.128", "2001:db8:f0:1::/64"),
)
MANAGEMENT_TIMEOUT = 2.0


@dataclass
class RunningDaemon:
    process: subprocess.Popen
    log_path: Path
    socket_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Directly under /tmp: unix socket paths must stay below 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="vfd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_pki(workdir: Path) -> LabPki:
    directory = workdir / "pki"
    directory.mkdir()
    return LabPki.create(directory)


@pytest.fixture(scope="session")
def namespaces() -> Iterator[Namespaces]:
    require_lab("the daemon lab")
    lab = create_namespaces()
    yield lab
    lab.remove()


@pytest.fixture(scope="session")
def socket_dir(workdir: Path) -> Path:
    path = workdir / "sockets"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def openvpn_servers(
    namespaces: Namespaces, lab_pki: LabPki, workdir: Path, socket_dir: Path
) -> Iterator[dict[str, OpenVpnProcess]]:
    credentials = lab_pki.credentials("vfd-node", "server")
    servers: dict[str, OpenVpnProcess] = {}
    try:
        for instance in SERVER_INSTANCES:
            config = openvpn_server_config(
                instance, lab_pki, credentials, socket_dir / f"{instance.name}.sock"
            )
            servers[instance.name] = OpenVpnProcess.start(
                namespaces.server, config, workdir / f"{instance.name}.conf"
            )
        for server in servers.values():
            server.wait_until_up()
        yield servers
    finally:
        stop_processes([server.process for server in servers.values()])


@pytest.fixture(scope="session")
def monitoring(workdir: Path) -> Credentials:
    """What the monitoring host holds: a self-signed client certificate, made as the monitoring role
    makes it (openssl req -x509), which the daemon pins for /metrics."""
    certificate, key = workdir / "monitoring.crt", workdir / "monitoring.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=vfd-monitoring",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
    )
    return Credentials(certificate, key, 0)


@pytest.fixture(scope="session")
def daemon(
    namespaces: Namespaces,
    lab_pki: LabPki,
    workdir: Path,
    socket_dir: Path,
    openvpn_servers: dict[str, OpenVpnProcess],
    monitoring: Credentials,
) -> Iterator[RunningDaemon]:
    credentials = lab_pki.credentials(
        "vfd-node-daemon", "daemon_server", ip_addresses=[SERVER_UNDERLAY_ADDRESS]
    )
    # The node role's metrics certificate: the `server` purpose, which Go clients can parse.
    metrics_credentials = lab_pki.credentials(
        "vfd-node-daemon", "server", ip_addresses=[SERVER_UNDERLAY_ADDRESS]
    )
    # Revoked on the CRL the node starts with (the CA's own, copied as the node role seeds it).
    lab_pki.revoke(lab_pki.credentials("vfd-revoked-controller", "daemon_client"))
    shutil.copyfile(lab_pki.crl, workdir / "node-crl.pem")
    config_path = workdir / "daemon.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "listen_address": SERVER_UNDERLAY_ADDRESS,
                "listen_port": DAEMON_PORT,
                "tls_certificate": str(credentials.certificate),
                "tls_private_key": str(credentials.private_key),
                "tls_ca": str(lab_pki.ca_certificate),
                "tls_crl": str(workdir / "node-crl.pem"),
                "management_socket_glob": f"{socket_dir}/*.sock",
                "management_timeout": MANAGEMENT_TIMEOUT,
                "metrics_listen_port": METRICS_PORT,
                "metrics_client_certificates": str(monitoring.certificate),
                "metrics_tls_certificate": str(metrics_credentials.certificate),
                "metrics_tls_private_key": str(metrics_credentials.private_key),
                "maintenance_flag_file": str(workdir / "maintenance"),
            }
        )
    )
    log_path = workdir / "daemon.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespaces.server, *daemon_command(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningDaemon(process, log_path, socket_dir)
    try:
        wait_for(lambda: _listening(running), "the daemon to listen")
        yield running
    finally:
        stop_process(process)


def _listening(running: RunningDaemon) -> bool:
    if running.process.poll() is not None:
        raise AssertionError(f"the daemon exited with {running.process.returncode}:\n{running.log()}")
    return "listening on" in running.log()


@pytest.fixture(scope="session")
def daemon_client(daemon: RunningDaemon, namespaces: Namespaces, lab_pki: LabPki) -> DaemonClient:
    return DaemonClient(namespaces, lab_pki)


@pytest.fixture(scope="session")
def controller(lab_pki: LabPki) -> Credentials:
    """What the controller holds: a daemon_client certificate from our CA."""
    return lab_pki.credentials("vfd-controller", "daemon_client")


@pytest.fixture
def vpn_client(
    namespaces: Namespaces, lab_pki: LabPki, workdir: Path, openvpn_servers: dict[str, OpenVpnProcess]
) -> Iterator[Callable[[str, str], OpenVpnProcess]]:
    """Starts real openvpn clients in the client namespace; stops whichever are still running."""
    clients = VpnClients(namespaces.client, workdir)

    def start(common_name: str, protocol: str) -> OpenVpnProcess:
        config = openvpn_client_config(protocol, lab_pki, lab_pki.credentials(common_name, "client"))
        return clients.start(config, f"{common_name}-{protocol}")

    yield start
    clients.stop_all()
