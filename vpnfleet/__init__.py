"""vpnfleet: the server software that the vpnfleet.server collection deploys.

Subpackages: ``controller`` (portal and API), ``daemon`` (the VPN daemon on each node),
``lab`` (real test hosts on one machine) and ``shared`` (the collection's module_utils,
packaged in at build time).
"""
