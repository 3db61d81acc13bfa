"""The request size limit: bodies over `max_request_bytes` get HTTP 413.

A declared `Content-Length` over the limit is rejected before the body is read. A body
without one (`Transfer-Encoding: chunked`) is counted as the app reads it, and reading
stops with 413 as soon as the count passes the limit, so at most the limit plus one
chunk is ever held in memory.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


class RequestTooLarge(HTTPException):
    """A request body passed the size limit while it was read.

    It is an HTTPException so that FastAPI's body parsing passes it on unchanged (it
    turns any other exception into 400) and the app's handler writes it as JSON.
    """

    def __init__(self, received: int, limit: int):
        super().__init__(413, f"the request body is larger than this service's limit of {limit} "
                              f"bytes ({received} bytes received before reading stopped; "
                              f"sent without Content-Length)")


class RequestSizeLimit:
    """Reject request bodies over limit bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            logger.info("%s %s rejected (413): Content-Length %d over the limit of %d bytes",
                        scope["method"], scope["path"], declared, self.limit)
            await _send_413(send, f"the request body is {declared} bytes, over this service's "
                                  f"limit of {self.limit} bytes")
            return
        await self.app(scope, self._counting(receive, scope), send)

    def _counting(self, receive: Receive, scope: Scope) -> Receive:
        """Wrap receive so that it raises RequestTooLarge once the body passes the limit."""
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    logger.info("%s %s rejected (413): body passed the limit of %d bytes while read",
                                scope["method"], scope["path"], self.limit)
                    raise RequestTooLarge(received, self.limit)
            return message

        return counted


def _content_length(scope: Scope) -> int | None:
    """Return the declared Content-Length, or None when it is missing or not a number."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, message: str) -> None:
    body = json.dumps({"message": message, "detail": message}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def install_request_limit(app: FastAPI, limit: int) -> None:
    """Add the request size limit to app."""
    app.add_middleware(RequestSizeLimit, limit=limit)
