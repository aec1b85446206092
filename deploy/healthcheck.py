"""The container image's HEALTHCHECK: exit 0 when labgate's health endpoint answers 200.

python:3.11-slim has no curl or wget, so this uses the standard library only.
``LABGATE_HEALTH_URL`` overrides the default ``http://127.0.0.1:8080/healthz``
(set it when the config changes the port, the path or turns on TLS).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8080/healthz"


def main() -> int:
    url = os.environ.get("LABGATE_HEALTH_URL", DEFAULT_URL)
    context = None
    if url.startswith("https:"):
        # The container asks itself over loopback: its certificate names the
        # public host, not 127.0.0.1, and no token travels on this request.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        print(f"labgate is not healthy: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"labgate is not healthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
