"""Idempotent submission: a retry with the same `Idempotency-Key` gets the first reply.

Redis key `P:idempotency:KIND:SUBMITTER:KEY` (P is the store's prefix, KIND `jobs` or
`sweeps`, SUBMITTER `-` when authentication is off) contains JSON
`{"request_sha256": ..., "reply": ...}`. The first request claims it with SET NX and a
short lease, creates the job or sweep, then stores its reply for `idempotency_ttl_s`.

- same key, same request: the stored reply (the same id), created once even when the
  retries arrive at the same time;
- same key, another request: 422 naming the key;
- same key while the first request is still being handled: waits for its reply up to
  `WAIT_S`, then 409;
- the first request fails: the claim is dropped, so a retry creates the job anew.

Keys are scoped by submitter, so one submitter's key never returns another's job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Annotated, Any, Callable

import redis
from fastapi import Header, HTTPException

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
        if key is None:
            return create(), True
        redis_key = self._key(kind, submitter, key)
        claim = json.dumps({"request_sha256": request_hash, "reply": None})
        if self.client.set(redis_key, claim, nx=True, ex=LEASE_S):
            return self._create_and_store(redis_key, request_hash, create), True
        return self._stored_reply(redis_key, key, request_hash), False

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

    def _stored_reply(self, redis_key: str, key: str, request_hash: str) -> dict[str, Any]:
        """Wait for the first request's reply, and check that this retry is the same request."""
        deadline = time.monotonic() + WAIT_S
        while True:
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
            time.sleep(POLL_S)
