"""The node's VPN daemon: eduVPN's vpn-daemon API v3 over mutual TLS, on the OpenVPN management sockets."""
