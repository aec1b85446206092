"""labgate as the issuer of its own access tokens (the ``issuer`` token source).

settings.py (the config's ``issuer`` section), keys.py (one signing key: made,
stored, loaded, published), ring.py (the key ring as the store has it, and
rotation), access_tokens.py (what a labgate access token says, and minting
one), discovery.py (the JWKS and RFC 8414 metadata documents), commands.py
(``labgate keys ...``).  The token source that verifies these tokens is
:mod:`proxy.tokens.issuer_source`.
"""
