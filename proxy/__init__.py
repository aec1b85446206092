"""labgate: a policy-enforcing reverse proxy for bearer-token appliance APIs."""

__version__ = "0.1.0"
