"""The token service's management API: the router (``router``), its resources (one module each) and the API (``api``)."""
