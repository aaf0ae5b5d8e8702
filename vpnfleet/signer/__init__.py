"""The signer: the only process that reads the CA's private key (docs/security.md).

It answers on a unix socket that only the controller's group may connect to, one JSON request per
connection, and does three things: hand out the CA certificate, certify a public key as a VPN
user's client certificate (a lifetime no longer than a bound), and sign the CRL. Everything else,
and every malformed request, is refused with a reason; no request returns the key.
"""
