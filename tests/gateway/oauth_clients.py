"""labgate's token service on a TLS socket, as standard OAuth clients meet it.

Authlib and requests-oauthlib are synchronous: the tests run them in a
thread (``asyncio.to_thread``) while labgate serves on this test's event loop.
labgate listens on https://127.0.0.1:<port> with a self-signed certificate
the clients trust, and that origin is the issuer's ``url``, so the metadata's
``token_endpoint`` and ``jwks_uri`` are addresses the clients really reach.
The upstream is a real loopback server that records what reached it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.certificates import lab_certificate
from tests.conftest import GatewayStarter, RecordingUpstream, RunningGateway, free_port
from tests.gateway.token_service import ADMIN, ISSUER_SOURCE, LAB_PACK, issuer_section

PASSWORD = "alice's password"
T = TypeVar("T")
S = TypeVar("S", bound=requests.Session)


@dataclass(frozen=True)
class TlsLab:
    """A running labgate on TLS (issuer and listener at ``url``) and the certificate that trusts it."""

    running: RunningGateway
    url: str
    ca_file: str

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/oauth/token"

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/.well-known/oauth-authorization-server"

    @property
    def hosts(self) -> str:
        """A route every token type of the lab pack may call, on the "demo" upstream."""
        return f"{self.url}/demo/api/hosts"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def trusting(self, session: S) -> S:
        """``session`` trusting labgate's certificate, and only this machine's loopback: no proxy, no CA bundle from the environment."""
        session.trust_env = False  # else REQUESTS_CA_BUNDLE would win over ``verify``
        session.verify = self.ca_file
        return session

    def get(self, url: str, token: str) -> requests.Response:
        """A plain bearer call, outside any OAuth library."""
        with self.trusting(requests.Session()) as session:
            return session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def admin(self, method: str, path: str, body: Any = None) -> requests.Response:
        """A management API call with the administrator's Basic credentials (synchronous: call in a thread)."""
        with self.trusting(requests.Session()) as session:
            return session.request(method, f"{self.url}/-/admin{path}", json=body, auth=ADMIN, timeout=10)

    def add_alice(self) -> None:
        assert self.admin("POST", "/subjects", {"name": "alice", "password": PASSWORD}).status_code == 201

    def add_client(self) -> tuple[str, str]:
        """A registered API client for alice: its id and its secret."""
        answer = self.admin("POST", "/clients", {"name": "backup job", "subject": "alice"})
        assert answer.status_code == 201, answer.text
        return answer.json()["client_id"], answer.json()["client_secret"]


async def start_tls_token_service(start: GatewayStarter, tmp_path: Path, upstream: RecordingUpstream) -> TlsLab:
    """labgate issuing for one upstream ("demo", pack "lab", grants password and client_credentials) over TLS."""
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    cert, key = lab_certificate(tmp_path, "labgate")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    running = await start(
        upstream.url,
        upstream={"pack": "lab", "token_source": ISSUER_SOURCE},
        issuer=issuer_section(url=url),
        listen={"address": "127.0.0.1", "port": port, "tls": {"cert": str(cert), "key": str(key)}},
    )
    assert running.url == url
    return TlsLab(running, url, str(cert))


async def in_thread(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a synchronous client call off the event loop labgate serves on; bounded by the clients' own timeouts."""
    return await asyncio.wait_for(asyncio.to_thread(call, *args, **kwargs), timeout=30)
