"""GET /metrics on its own port: the monitoring host's pinned certificate gets the node's figures,
nobody else does, and that certificate opens nothing on the controller's API port. Debian's own
Prometheus (a Go client, strict about certificates) scrapes it."""

import json
import shutil
import ssl
import subprocess
import urllib.request

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from daemon_lab import DAEMON_PORT, METRICS_PORT, SERVER_UNDERLAY_ADDRESS
from metrics_text import samples
from openvpn_netlab import in_namespace, stop_process, wait_for
from vpnfleet.shared.pki import keys

# Prometheus' own web port, on the client namespace's loopback.
PROMETHEUS_PORT = 19090


def connected(daemon_client, monitoring, process: str) -> float:
    response = daemon_client.request("GET", "/metrics", monitoring, port=METRICS_PORT)
    assert response.status == 200, response
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    assert found[("vpnfleet_process_up", (("process", process), ("profile", "default")))] == 1
    return found[("openvpn_server_connected_clients", (("process", process), ("profile", "default")))]


def test_a_client_connecting_moves_its_process_by_one(daemon_client, monitoring, vpn_client):
    before_udp, before_tcp = (connected(daemon_client, monitoring, p) for p in ("default-0", "default-1"))
    client = vpn_client("vfd-metrics", "tcp")
    client.wait_until_up()
    wait_for(
        lambda: connected(daemon_client, monitoring, "default-1") == before_tcp + 1,
        "the TCP process's clients metric to move by one",
    )
    assert connected(daemon_client, monitoring, "default-0") == before_udp


def test_only_the_pinned_certificate_may_scrape(daemon, daemon_client, controller, lab_pki):
    # The controller's daemon_client certificate is of the fleet's CA, which this port does not trust.
    assert daemon_client.refusal(daemon_client.tls_context(controller), port=METRICS_PORT)
    assert daemon_client.refusal(daemon_client.tls_context(None), port=METRICS_PORT)
    assert daemon_client.refusal(
        daemon_client.tls_context(controller, tls_version=ssl.TLSVersion.TLSv1_2), port=METRICS_PORT
    )


def test_the_monitoring_certificate_opens_nothing_on_the_api_port(daemon_client, monitoring):
    assert daemon_client.refusal(daemon_client.tls_context(monitoring))


def test_the_metrics_port_serves_metrics_only(daemon_client, monitoring):
    response = daemon_client.request("GET", "/i/node", monitoring, port=METRICS_PORT)
    assert response.status == 404 and "no such call" in response.payload["error"]
    response = daemon_client.request("POST", "/metrics", monitoring, form="", port=METRICS_PORT)
    assert response.status == 405


def presented_certificate(daemon_client, credentials, port: int) -> x509.Certificate:
    with daemon_client.connect(daemon_client.tls_context(credentials), port) as tls_socket:
        der = tls_socket.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_metrics_port_presents_a_certificate_with_server_auth_alone(daemon_client, monitoring):
    """Go's x509 refuses an extended key usage it cannot parse, daemon_server's 2.25 arc among them."""
    certificate = presented_certificate(daemon_client, monitoring, METRICS_PORT)
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert keys.certificate_purpose(certificate) == "server"


def test_the_api_port_still_presents_daemon_server(daemon_client, controller):
    assert keys.certificate_purpose(presented_certificate(daemon_client, controller, DAEMON_PORT)) == (
        "daemon_server"
    )


@pytest.fixture
def prometheus(namespaces, lab_pki, monitoring, workdir, daemon):
    """Debian's Prometheus in the client namespace, scraping the metrics port and, to show why it
    has a certificate of its own, the API port with daemon_server's."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing (scripts/setup installs it)"
    tls = {
        "ca_file": str(lab_pki.ca_certificate),
        "cert_file": str(monitoring.certificate),
        "key_file": str(monitoring.private_key),
        "min_version": "TLS13",
    }
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": job,
                        "scheme": "https",
                        "tls_config": tls,
                        "static_configs": [{"targets": [f"{SERVER_UNDERLAY_ADDRESS}:{port}"]}],
                    }
                    for job, port in (("metrics-port", METRICS_PORT), ("api-port", DAEMON_PORT))
                ],
            }
        )
    )
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                namespaces.client,
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield lambda path: _ask_prometheus(namespaces, process, log_path, path)
    finally:
        stop_process(process)


def _ask_prometheus(namespaces, process, log_path, path: str):
    if process.poll() is not None:
        raise AssertionError(f"prometheus exited with {process.returncode}:\n{log_path.read_text()}")
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}{path}"
    try:
        body = in_namespace(namespaces.client, lambda: urllib.request.urlopen(url, timeout=5).read())
    except OSError:
        return None  # not listening yet
    return json.loads(body)["data"]


def test_prometheus_scrapes_the_metrics_port_and_cannot_parse_daemon_server(prometheus):
    def scraped() -> dict | None:
        data = prometheus("/api/v1/targets")
        targets = {target["labels"]["job"]: target for target in (data or {}).get("activeTargets", [])}
        jobs = ("metrics-port", "api-port")
        if all(job in targets and targets[job]["health"] != "unknown" for job in jobs):
            return targets
        return None

    targets = wait_for(scraped, "Prometheus' first scrape of both ports")
    assert targets["metrics-port"]["health"] == "up", targets["metrics-port"]["lastError"]
    # What the lab's Prometheus said of daemon_server before the metrics port had its own certificate.
    assert targets["api-port"]["health"] == "down"
    assert "x509: invalid extended key usages" in targets["api-port"]["lastError"]
    found = prometheus("/api/v1/query?query=vpnfleet_process_up")
    assert {series["metric"]["process"] for series in found["result"]} == {"default-0", "default-1"}
