"""Hot reload: the config version labgate serves, swapped whole and never half.

SIGHUP, or a change of the config file or of a pack it names (polled, see
:mod:`proxy.gateway.config_watch`), loads the config again in a thread.  A new
version that loads and starts replaces the current one for every request that
arrives after the swap; a request already in flight finishes under the version
it started with, and that version is closed (upstream pools, token sources)
once its last request is done.

A new version with any problem is refused whole, and the last good version
keeps serving: every problem is logged as ``file:line: message``, counted in
``labgate_config_reloads_total{result="failure"}`` and shown on ``/readyz``.
Settings the listening socket and the HTTP server were built with (``listen``,
and the header limits) cannot change under a running listener; a config that
changes them is refused whole too, saying that a restart applies it, so what
runs is always exactly one version of the files.

The store and its token state carry over to the new version while the
``store`` settings stay the same (an in-memory store keeps its state); a
version with other store settings opens its own store, and the old store is
closed with the last version that used it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from proxy.config import Config, load_config
from proxy.gateway.app import Gateway
from proxy.gateway.config_watch import Fingerprint, fingerprint, watched_paths
from proxy.gateway.runtime import TransportFactory, open_state_store, transport_for
from proxy.metrics import GatewayMetrics
from proxy.store.base import Store
from proxy.store.open import StoreSettings
from proxy.tokens.state import TokenStateGuard
from proxy.yamlsource import ConfigError

logger = logging.getLogger("labgate")

# What the listening socket and aiohttp's HTTP server were built with.
LISTENER_SETTINGS: tuple[tuple[str, Callable[[Config], object]], ...] = (
    ("listen.address", lambda c: c.listen.address),
    ("listen.port", lambda c: c.listen.port),
    ("listen.tls", lambda c: c.listen.tls and (str(c.listen.tls.cert_file), str(c.listen.tls.key_file))),
    ("limits.max_line_bytes", lambda c: c.limits.max_line_bytes),
    ("limits.max_header_bytes", lambda c: c.limits.max_header_bytes),
    ("limits.header_timeout", lambda c: c.limits.header_timeout),
    ("limits.max_header_block_bytes", lambda c: c.limits.max_header_block_bytes),
    ("limits.max_connections", lambda c: c.limits.max_connections),
)
# /readyz shows at most this many problems of a refused reload; the log has all of them.
SHOWN_PROBLEMS = 20


def listener_changes(running: Config, new: Config) -> list[str]:
    """What ``new`` changes that only a restart can apply, as problems of the new config."""
    return [
        f"{new.file}: {name} changed ({get(running)!r} -> {get(new)!r}): listener settings apply only when labgate restarts"
        for name, get in LISTENER_SETTINGS
        if get(running) != get(new)
    ]


@dataclass(eq=False)
class _OpenStore:
    """One opened store and its token state, shared by the versions whose settings name it."""

    settings: StoreSettings
    store: Store
    guard: TokenStateGuard
    users: int = 0


@dataclass(eq=False)
class ConfigVersion:
    """One loaded config and the gateway built from it, with its requests in flight."""

    number: int
    gateway: Gateway
    loaded_at: float
    state: _OpenStore
    in_flight: int = 0
    retired: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def answered(self) -> None:
        """One of its requests is answered: a retired version is closed after its last."""
        self.in_flight -= 1
        if self.retired and self.in_flight == 0:
            self.idle.set()


@dataclass(frozen=True)
class LastReload:
    result: str = "none"  # none (not reloaded yet), success or failure
    at: float | None = None
    problems: tuple[str, ...] = ()


class ReloadingGateway:
    """Serves every request on the current config version; reloads, swaps and retires versions."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: GatewayMetrics | None = None,
        transport_factory: TransportFactory = transport_for,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics or GatewayMetrics()
        self._transport_factory = transport_factory
        self._clock = clock
        self._current = self._version(config, 1, self._open_store(config.store))
        self._retired: set[ConfigVersion] = set()
        self._tasks: set[asyncio.Task[object]] = set()  # retirements and signalled reloads
        self._lock = asyncio.Lock()
        self._closed = False
        self._baseline: Fingerprint = ()
        self._watcher: asyncio.Task[None] | None = None
        self._last = LastReload()

    @property
    def config(self) -> Config:
        return self._current.gateway.config

    @property
    def version(self) -> int:
        return self._current.number

    @property
    def draining(self) -> int:
        """Replaced versions still finishing requests in flight."""
        return len(self._retired)

    async def start(self) -> None:
        self._baseline = await asyncio.to_thread(fingerprint, watched_paths(self.config))
        await self._current.gateway.start()
        self._watcher = asyncio.create_task(self._watch())

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The version current on arrival serves the request to its end, whatever is swapped meanwhile."""
        handler, answered = self.serving()
        try:
            return await handler(request)
        finally:
            answered()

    def serving(self) -> tuple[Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], Callable[[], None]]:
        """The current version's handler, its count taken now; the server calls ``answered`` when done.

        Synchronous, so the server's one coroutine per request (:mod:`proxy.gateway.in_flight`)
        keeps both counts without a coroutine of this layer's own.
        """
        version = self._current
        version.in_flight += 1
        return version.gateway.handle, version.answered

    def readiness(self) -> dict[str, object]:
        """The ``config`` part of ``/readyz``."""
        last = self._last
        return {
            "version": self._current.number,
            "loaded_at": _timestamp(self._current.loaded_at),
            "last_reload": last.result,
            "last_reload_at": _timestamp(last.at),
            "problems": list(last.problems[:SHOWN_PROBLEMS]),
        }

    # -- reloading ----------------------------------------------------------------

    def reload_soon(self, trigger: str) -> None:
        """For a signal handler: reload in a task of its own."""
        if not self._closed:
            self._keep(asyncio.create_task(self.reload(trigger)))

    async def reload(self, trigger: str, *, only_if_changed: bool = False) -> bool:
        """Load the config again and serve it; False when it was refused (or nothing changed)."""
        async with self._lock:
            if self._closed:
                return False
            running = self.config
            seen = await asyncio.to_thread(fingerprint, watched_paths(running))
            if only_if_changed and seen == self._baseline:
                return False
            try:
                config = await asyncio.to_thread(load_config, running.file)
            except ConfigError as exc:
                return self._refused(trigger, [str(p) for p in exc.problems], seen)
            except Exception as exc:  # a loader bug must not take the running version down
                logger.error("config reload (%s): the loader failed", trigger, exc_info=exc)
                return self._refused(trigger, [f"{running.file}: cannot load: {type(exc).__name__}"], seen)
            problems = listener_changes(running, config)
            if problems:
                return self._refused(trigger, problems, seen)
            if watched_paths(config) != watched_paths(running):
                seen = await asyncio.to_thread(fingerprint, watched_paths(config))
            try:
                version = await self._start_version(config)
            except Exception as exc:
                logger.error("config reload (%s): the new version did not start", trigger, exc_info=exc)
                problem = f"{config.file}: the new version did not start: {type(exc).__name__}: {exc}"
                return self._refused(trigger, [problem], seen)
            self._baseline = seen
            self._swap(version, trigger)
            return True

    async def _start_version(self, config: Config) -> ConfigVersion:
        running = self._current.state
        state = running if running.settings == config.store else self._open_store(config.store)
        version = self._version(config, self._current.number + 1, state)
        try:
            await version.gateway.start()
        except BaseException:
            await self._close(version)
            raise
        return version

    def _swap(self, version: ConfigVersion, trigger: str) -> None:
        old, self._current = self._current, version
        self._last = LastReload("success", version.loaded_at)
        self.metrics.config_reload("success", version.loaded_at)
        config = version.gateway.config
        logger.info(
            "config version %d loaded (%s): %d upstreams, %d packs; version %d finishes its %d requests in flight",
            version.number, trigger, len(config.upstreams), len(config.packs), old.number, old.in_flight,
        )
        if old.state is not version.state:
            logger.info("store settings changed: the new version uses a %s store", config.store.kind)
        old.retired = True
        self._retired.add(old)
        if old.in_flight == 0:
            old.idle.set()
        self._keep(asyncio.create_task(self._close_when_idle(old)))

    def _refused(self, trigger: str, problems: list[str], seen: Fingerprint) -> bool:
        """Keep serving the last good version; a watcher retries only after the files change again."""
        self._baseline = seen
        at = self._clock()
        self._last = LastReload("failure", at, tuple(problems))
        self.metrics.config_reload("failure", at)
        logger.error(
            "config reload (%s) refused with %d problem(s); still serving config version %d",
            trigger, len(problems), self._current.number,
        )
        for problem in problems:
            logger.error("%s", problem)
        return False

    async def _watch(self) -> None:
        """Poll the files the running version came from; reload when any changed."""
        while not self._closed:
            await asyncio.sleep(self.config.reload.interval)
            if not self.config.reload.watch:
                continue
            try:
                await self.reload("a watched file changed", only_if_changed=True)
            except Exception as exc:  # keep watching whatever one attempt did
                logger.error("config watch: reload attempt failed", exc_info=exc)

    # -- versions and stores --------------------------------------------------------

    def _version(self, config: Config, number: int, state: _OpenStore) -> ConfigVersion:
        state.users += 1
        gateway = Gateway(
            config,
            metrics=self.metrics,
            transport_factory=self._transport_factory,
            store=state.store,
            token_state=state.guard,
            readiness=self.readiness,
        )
        return ConfigVersion(number, gateway, self._clock(), state)

    def _open_store(self, settings: StoreSettings) -> _OpenStore:
        store = open_state_store(settings, self.metrics)
        return _OpenStore(settings, store, TokenStateGuard(store))

    async def _close_when_idle(self, version: ConfigVersion) -> None:
        await version.idle.wait()
        await self._close(version)
        self._retired.discard(version)
        logger.info("config version %d closed after its last request", version.number)

    async def _close(self, version: ConfigVersion) -> None:
        """Close the version's pools and sources, and its store when no other version uses it."""
        await version.gateway.close()
        version.state.users -= 1
        if version.state.users == 0:
            await version.state.guard.close()  # the uses waiting for their batch are written first
            await version.state.store.close()

    def _keep(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- stopping -----------------------------------------------------------------

    def stop_reloading(self) -> None:
        """No reload starts after this (at shutdown, before the drain); one under way still finishes."""
        self._closed = True

    async def close(self) -> None:
        """After the server drained: close every version still open, the current one last."""
        self.stop_reloading()
        async with self._lock:  # a reload under way finishes (or is refused) first
            pass
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for version in list(self._retired):
            version.idle.set()  # requests the drain deadline cut are gone
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close(self._current)


def _timestamp(at: float | None) -> str | None:
    if at is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
