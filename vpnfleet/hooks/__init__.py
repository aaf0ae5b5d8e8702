"""The OpenVPN client-connect/-disconnect hooks of a node: they report to the controller's node API.

A /bin/sh shim (``vpnfleet-hook install-shim``) is what OpenVPN runs. It uses OpenVPN 2.6's
deferred client-connect: it writes "2" to ``$client_connect_deferred_file``, starts the Python
worker (``python -m vpnfleet.hooks run --deferred``) in the background and returns, so the OpenVPN
process goes on serving its other clients while the controller decides. See docs/hooks.md.
"""
