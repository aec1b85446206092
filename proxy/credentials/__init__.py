"""The credential labgate presents to an appliance in place of the client's token.

settings.py (an upstream's ``credential`` section), base.py (what every
credential does, and how it fails), static.py (a bearer token or a Basic
user from a file or the environment), oauth.py (an OAuth login labgate
performs, caches and renews), open.py (settings -> credential, and whether a
client's own ``Authorization`` header may reach an upstream at all).
"""
