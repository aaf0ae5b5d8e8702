"""GET /metrics on its own port: the monitoring host's pinned certificate gets the node's figures,
nobody else does, and that certificate opens nothing on the controller's API port."""

import ssl

from daemon_lab import METRICS_PORT
from openvpn_netlab import wait_for
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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
