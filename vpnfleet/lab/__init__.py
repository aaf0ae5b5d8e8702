"""vpnfleet."""
