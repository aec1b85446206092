"""One script's calls made in the same turn of the event loop, sent to Redis together.

Every rate-limited request runs the rate-limit script, so under load many
requests call it in the same turn of the event loop.  Sent one by one, each
pays a whole round trip (a free pooled connection, a write, a wait, a read);
sent together in one pipeline they share it.  Nothing else changes: each call
is still its own ``EVALSHA``, atomic on the server, with its own answer or
error (a pipeline is not a transaction: one call's error is that call's
alone); a batch's calls run in the order they were made.  A batch is bounded
by the store timeout as a single call is, and every caller still waits under
its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

_Call = tuple[list[str], list[str], "asyncio.Future[Any]"]


class ScriptBatches:
    """Runs ``script`` for every :meth:`call`, the calls of one loop turn in one round trip."""

    def __init__(self, client: aioredis.Redis, script: AsyncScript, timeout: float) -> None:
        self._client = client
        self._script = script
        self._timeout = timeout
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # referenced until done

    async def call(self, keys: list[str], args: list[str]) -> Any:
        """The script's answer for ``keys`` and ``args``; its error, or the batch's, raised here."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((keys, args, answer))
        if len(self._waiting) == 1:
            # A new task's first step runs after every task already ready in this turn:
            # by then they have made their calls too.
            task = loop.create_task(self._answer())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await answer

    async def close(self) -> None:
        """Stop the batches still out (their callers fail closed), before the connections close."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)

    async def _answer(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            async with asyncio.timeout(self._timeout):
                answers = await self._run(batch)
        except BaseException as exc:  # every caller learns why (a cancelled batch as a lost connection)
            failure = exc if isinstance(exc, Exception) else RedisConnectionError("the batch was cancelled")
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, answer), found in zip(batch, answers):
            if answer.done():  # its caller stopped waiting (its own timeout)
                continue
            if isinstance(found, Exception):
                answer.set_exception(found)
            else:
                answer.set_result(found)

    async def _run(self, batch: list[_Call]) -> list[Any]:
        """Every call's answer or error; calls Redis answered NOSCRIPT run again once the script is loaded."""
        answers = await self._pipeline(batch)
        unknown = [index for index, found in enumerate(answers) if isinstance(found, NoScriptError)]
        if unknown:  # a restarted or flushed Redis: the script did not run, nothing was written
            self._script.sha = await self._client.script_load(self._script.script)
            for index, found in zip(unknown, await self._pipeline([batch[i] for i in unknown])):
                answers[index] = found
        return answers

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        sha = self._script.sha
        if len(batch) == 1:  # alone in its turn: a plain call, without a pipeline's bookkeeping
            keys, args, _ = batch[0]
            try:
                return [await self._client.evalsha(sha, len(keys), *keys, *args)]
            except ResponseError as exc:
                return [exc]
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args, _ in batch:
                pipe.evalsha(sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))
