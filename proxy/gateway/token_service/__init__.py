"""The token service's HTTP endpoints: ``POST /oauth/token`` and the management API.

The token service's domain (keys, the ring, records, refresh chains, grants,
accounts, emergency clients, service accounts, the directory) lives in
:mod:`proxy.issuer`, below the config; only its HTTP face lives here, beside
the gateway that serves it.
"""
