"""Answering callback steps: what the ``/v1/callbacks`` routes (and nothing else) may do.

An outside system or a person answers a waiting callback step (``pipelines/callback.py``)
with the token it was given: the token is the credential, so no API key is asked for.
Each answer is checked in this order, so that a refusal changes nothing: the token's
signature (403 ``invalid_callback_token``), the step still waiting under it (409
``callback_superseded`` / ``callback_closed``; 404 ``callback_not_found``), the answer
itself (400 ``answer_invalid`` against the step's ``schema:``, ``invalid_failure``);
then one store transaction takes it (``ops.answer_callback``), checking the step's
state again under its lock: of two answers racing, one wins and the other gets 409.

The step's options (``heartbeat_s``, ``schema``) are read from the definition its run
started with (the run row's bundle), never from the current ``freight.yaml``.
"""

from __future__ import annotations

import time
from typing import Any

from freight.errors import NotFoundError
from freight.events import CompletionHub
from freight.pipelines import callback
from freight.pipelines.callback import Answer, CallbackSpec, Claim
from freight.pipelines.runs import spec_of
from freight.prediction import Prediction
from freight.store.base import Store


class CallbackService:
    def __init__(self, store: Store, *, secret: bytes, hub: CompletionHub | None = None) -> None:
        self._store = store
        self._key = callback.key_of(secret)
        self._hub = hub

    def verify(self, token: str) -> Claim:
        """The wait a token names; 403 ``invalid_callback_token`` for a forged one."""
        return callback.verify(self._key, token)

    async def succeed(self, token: str, value: Any) -> Prediction:
        """The step succeeds with ``value`` as its output (checked against its schema)."""
        claim = callback.verify(self._key, token)
        row, spec = await self._waiting(claim)
        callback.check_answer(spec.schema, value, row.step or "")
        return await self._answer(claim, Answer.success(value))

    async def fail(self, token: str, body: Any) -> Prediction:
        """The step fails with ``callback_failed``, its message naming ``error`` and
        ``cause`` (``{"error": ..., "cause": ...}``); its ``retry:``/``catch:`` apply."""
        claim = callback.verify(self._key, token)
        error, cause = callback.failure_of(body)
        await self._waiting(claim)
        return await self._answer(claim, Answer.failure(error, cause))

    async def heartbeat(self, token: str) -> Prediction:
        """The step is still being worked on: its deadline moves to now + its
        ``heartbeat_s`` (never past ``started_at + timeout_s``)."""
        claim = callback.verify(self._key, token)
        _, spec = await self._waiting(claim)
        return await self._store.heartbeat_callback(
            claim, heartbeat_s=spec.heartbeat_s, now=time.time()
        )

    async def _waiting(self, claim: Claim) -> tuple[Prediction, CallbackSpec]:
        """The step the token names, if it still waits under it, and its options."""
        row = await self._store.get(claim.row_id)
        if row is None:
            raise NotFoundError("the callback's step no longer exists", code="callback_not_found")
        refused = callback.refusal(row, claim, time.time())
        if refused is not None:
            raise refused
        run = await self._store.get(row.run_id or "")
        if run is None:
            raise NotFoundError("the callback's run no longer exists", code="callback_not_found")
        step = spec_of(run).steps.get(row.step or "")
        return row, (step.callback if step is not None and step.callback else CallbackSpec())

    async def _answer(self, claim: Claim, answer: Answer) -> Prediction:
        row = await self._store.answer_callback(claim, answer, now=time.time())
        if self._hub is not None:  # waiters of the step (its run's are told by the store)
            self._hub.publish([row.id])
        return row


__all__ = ["CallbackService"]
