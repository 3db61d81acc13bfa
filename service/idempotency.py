"""Idempotent submission: a retry with the same `Idempotency-Key` gets the first reply.

Redis key `P:idempotency:KIND:SUBMITTER:KEY` (P is the store's prefix, KIND `jobs` or
`sweeps`, SUBMITTER `-` when authentication is off) contains JSON
`{"request_sha256": ..., "reply": ...}`, kept for `idempotency_ttl_s`. A job's reply is
known before the job is made (its id is drawn first), so the first request stores the
claim with its reply and the job's record in one atomic step (`JobStore.create`). A
sweep's first request claims the key with SET NX and a short lease, creates the sweep,
then stores its reply.

- same key, same request: the stored reply (the same id), created once even when the
  retries arrive at the same time;
- same key, another request: 422 naming the key;
- same key while the first request is still being handled: waits for its reply up to
  `WAIT_S`, then 409;
- the first request fails: the claim is dropped, so a retry creates the job anew.

Keys are scoped by submitter, so one submitter's key never returns another's job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from typing import Annotated, Any, Callable

import redis
from fastapi import Header, HTTPException

from worker.store import Claim

logger = logging.getLogger(__name__)

LEASE_S = 60  # seconds a claim lives before its reply is stored
WAIT_S = 10.0  # seconds a concurrent retry waits for the first request's reply
POLL_S = 0.05
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, as HTTP header values allow
HEADER_LOC = ["header", "Idempotency-Key"]

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=KEY_PATTERN,
    description="Any string of 1 to 255 visible ASCII characters. A retry with the same key "
    "and the same body returns the first reply (the same id) instead of submitting again; "
    "the same key with another body gets 422. Keys are remembered for `idempotency_ttl_s` "
    "(24 h by default) per submitter.")]


def request_sha256(payload: Any) -> str:
    """Return the SHA-256 of payload as canonical JSON (sorted keys), for comparing retries."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


class IdempotencyStore:
    """Remember the reply of each submission made with an Idempotency-Key."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int):
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def _key(self, kind: str, submitter: str | None, key: str) -> str:
        if not re.fullmatch(KEY_PATTERN, key):
            raise HTTPException(422, [{"field": "Idempotency-Key", "loc": HEADER_LOC, "input": key[:80],
                                       "type": "pattern",
                                       "msg": "must be 1 to 255 visible ASCII characters"}])
        return f"{self.prefix}:idempotency:{kind}:{submitter or '-'}:{key}"

    def submit(self, kind: str, submitter: str | None, key: str | None, request_hash: str,
               create: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Return (reply, created): create()'s reply, or the one stored for key.

        create makes the job or sweep and returns the JSON reply (with its `id`). Raises
        HTTP 422 when key was used with another request, 409 when the first request with
        key is still running after WAIT_S seconds.
        """
        reply, redis_key = self._claim_or_create(kind, submitter, key, request_hash, create)
        if redis_key is None:
            return reply, True
        deadline = time.monotonic() + WAIT_S
        while (reply := self._stored_reply(redis_key, key, request_hash, deadline)) is None:
            time.sleep(POLL_S)
        return reply, False

    def claim(self, kind: str, submitter: str | None, key: str, request_hash: str,
              reply: dict[str, Any]) -> Claim:
        """Return the claim of key for a submission whose reply is known before it is made
        (a job's), to be stored with the job in one step by `JobStore.create`."""
        entry = json.dumps({"request_sha256": request_hash, "reply": reply})
        return Claim(self._key(kind, submitter, key), entry, self.ttl_s)

    def release(self, claim: Claim) -> None:
        """Drop a claim whose submission failed after it was stored, so that a retry can succeed."""
        self.client.delete(claim.key)

    async def replay(self, claim: Claim, key: str, request_hash: str) -> dict[str, Any]:
        """Return the reply stored under a claim that an earlier request holds.

        The wait does not block the event loop. Raises 422 or 409 as `submit` does.
        """
        deadline = time.monotonic() + WAIT_S
        while (reply := self._stored_reply(claim.key, key, request_hash, deadline)) is None:
            await asyncio.sleep(POLL_S)
        return reply

    def _claim_or_create(self, kind: str, submitter: str | None, key: str | None, request_hash: str,
                         create: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
        """Return (create()'s reply, None) without a key or when this request claims key;
        otherwise ({}, the Redis key where an earlier request's reply is or will be)."""
        if key is None:
            return create(), None
        redis_key = self._key(kind, submitter, key)
        claim = json.dumps({"request_sha256": request_hash, "reply": None})
        if self.client.set(redis_key, claim, nx=True, ex=LEASE_S):
            return self._create_and_store(redis_key, request_hash, create), None
        return {}, redis_key

    def _create_and_store(self, redis_key: str, request_hash: str,
                          create: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run create under the claim; drop the claim when it fails, so a retry can succeed."""
        try:
            reply = create()
        except BaseException:
            self.client.delete(redis_key)
            raise
        stored = json.dumps({"request_sha256": request_hash, "reply": reply})
        self.client.set(redis_key, stored, ex=self.ttl_s)
        return reply

    def _stored_reply(self, redis_key: str, key: str, request_hash: str,
                      deadline: float) -> dict[str, Any] | None:
        """Return the first request's reply once it is stored, or None while it is being
        made; check that this retry is the same request. Raises 409 past deadline."""
        raw = self.client.get(redis_key)
        if raw is None:
            raise HTTPException(409, f"the first request with Idempotency-Key {key!r} failed "
                                     f"just now; send the request again")
        entry = json.loads(raw)
        if entry["request_sha256"] != request_hash:
            raise HTTPException(422, [{
                "field": "Idempotency-Key", "loc": HEADER_LOC, "input": key,
                "type": "idempotency_key_reused",
                "msg": "this Idempotency-Key was already used with a different request body; "
                       "use a new key for a new submission"}])
        if entry["reply"] is not None:
            logger.info("Idempotency-Key %r: replayed the reply for %s", key, entry["reply"].get("id"))
            return entry["reply"]
        if time.monotonic() > deadline:
            raise HTTPException(409, f"the first request with Idempotency-Key {key!r} is still "
                                     f"being handled; retry in a few seconds")
        return None
