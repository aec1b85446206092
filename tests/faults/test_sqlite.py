"""The SQLite store under faults: another process holding the write lock, and labgate killed with SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from proxy.config import load_config
from proxy.token_facts import token_fingerprint
from tests.conftest import RecordingUpstream, RunningGateway, write_config
from tests.faults.load import ask, fresh_token, session, summary
from tests.gateway.token_service import (
    ISSUER_SOURCE,
    LAB_PACK,
    admin_call,
    basic,
    issuer_section,
    token_call,
)
from tests.gateway.uses import use_written_since
from tests.labgate_process import labgate_serving

STORE_TIMEOUT = 1.0
MARGIN = 1.0  # what a loaded two-core machine may add before an answer is sent
HOSTS = "/demo/api/hosts"
HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # the write lock, as a second labgate or `labgate token` takes it
db.execute("INSERT OR REPLACE INTO records (kind, key, value) VALUES ('lock-holder', 'x', 'y')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


async def test_a_write_lock_held_by_another_process_stalls_no_read(upstream: RecordingUpstream, tmp_path: Path) -> None:
    """Reads go on; what must write fails closed within the timeout, while the lock is still held."""
    config = write_config(
        tmp_path, upstream.url, store={"type": "sqlite", "path": "labgate.db", "timeout": STORE_TIMEOUT}, decision_log="denials"
    )
    log = tmp_path / "labgate.log"
    async with labgate_serving(config, log=log) as (url, process):
        async with session() as client:
            assert (await ask(client, f"{url}{HOSTS}", fresh_token("session"))).status == 200  # the file exists now
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "labgate.db"), "6"], stdout=subprocess.PIPE
            )
            try:
                assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
                # Session tokens record their use after forwarding (a write, in the next batch); reader tokens only read.
                tokens = [(role, fresh_token(role)) for role in ("session", "reader") * 10]
                asks = [ask(client, f"{url}{HOSTS}", token, label=role) for role, token in tokens]
                revoke = asyncio.create_subprocess_exec(
                    sys.executable, "-m", "proxy.cli", "revoke", "--config", str(config), "--subject", "mallory",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )
                locked, revoked = await asyncio.gather(
                    asyncio.gather(*asks, ask(client, f"{url}/healthz", None, label="health")), finished(await revoke)
                )
                assert holder.poll() is None, "the lock was released before every answer came"
            finally:
                holder.wait(timeout=10)
                holder.stdout.close()
            after = await ask(client, f"{url}{HOSTS}", fresh_token("session"))
        assert process.poll() is None
        # The batch that met the lock waited for the next one: the uses reach the file once it is free.
        session_token = next(token for role, token in tokens if role == "session")
        written = await use_written_since(tmp_path / "labgate.db", token_fingerprint(session_token), 0.0)
        assert written is not None
    assert summary(locked) == {(200, None): 21}
    # No request waits for the lock: a use is written later, in a batch, off the request path.
    assert max(a.seconds for a in locked) < STORE_TIMEOUT, [round(a.seconds, 2) for a in locked]
    code, errors = revoked
    assert code == 1 and "revocation not written: sqlite store" in errors, errors  # fail closed, while still locked
    assert "store error in touch_many" in log.read_text()
    assert after.status == 200
    print(f"sqlite write lock: slowest answer {max(a.seconds for a in locked):.2f}s")


async def finished(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, errors = await process.communicate()
    return process.returncode or 0, errors.decode()


def issuer_config(tmp_path: Path, upstream: RecordingUpstream) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    return write_config(
        tmp_path, upstream.url, upstream={"pack": "lab", "token_source": ISSUER_SOURCE}, issuer=issuer_section(),
        store={"type": "sqlite", "path": "labgate.db"}, decision_log="denials",
    )


async def bearer_get(url: str, token: str) -> int:
    async with session() as client:
        return (await ask(client, f"{url}{HOSTS}", token)).status


async def jwks(url: str) -> list[str]:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{url}/.well-known/jwks.json") as response:
            return sorted(key["kid"] for key in (await response.json())["keys"])


@pytest.mark.slow
async def test_labgate_killed_with_sigkill_on_sqlite_restarts_with_everything_kept(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config_path = issuer_config(tmp_path, upstream)
    config = load_config(config_path)
    running = RunningGateway(config, f"http://127.0.0.1:{config.listen.port}", config.listen.port)
    password = "alice's password"
    async with labgate_serving(config_path) as (url, process):
        assert (await admin_call(running, "POST", "/subjects", body={"name": "alice", "password": password}))[0] == 201
        assert (await admin_call(running, "POST", "/subjects", body={"name": "bob", "password": password}))[0] == 201
        _, _, client = await admin_call(running, "POST", "/clients", body={"name": "backup", "subject": "alice"})
        grant = {"grant_type": "password", "username": "alice", "password": password}
        _, _, alice = await token_call(running, grant)
        _, _, bob = await token_call(running, {**grant, "username": "bob"})
        kids = await jwks(url)
        assert await bearer_get(url, bob["access_token"]) == 200
        assert (await admin_call(running, "DELETE", "/subjects/bob"))[0] == 204  # revokes bob's tokens
        # Writes in flight when the process dies: more tokens being issued (refresh records, uses).
        busy = [asyncio.create_task(token_call(running, grant)) for _ in range(5)]
        await asyncio.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        await asyncio.gather(*busy, return_exceptions=True)
    async with labgate_serving(config_path) as (url, _):
        assert await jwks(url) == kids  # the same signing key: tokens issued before still verify
        assert await bearer_get(url, alice["access_token"]) == 200
        assert await bearer_get(url, bob["access_token"]) == 401  # the revocation survived
        status, _, refreshed = await token_call(running, {"grant_type": "refresh_token", "refresh_token": alice["refresh_token"]})
        assert status == 200 and await bearer_get(url, refreshed["access_token"]) == 200  # the refresh chain survived
        status, _, _ = await token_call(running, {"grant_type": "refresh_token", "refresh_token": alice["refresh_token"]})
        assert status == 400  # used once, still: the rotation was recorded
        status, _, issued = await token_call(
            running, {"grant_type": "client_credentials"}, authorization=basic(client["client_id"], client["client_secret"])
        )
        assert status == 200 and await bearer_get(url, issued["access_token"]) == 200  # the API client survived
