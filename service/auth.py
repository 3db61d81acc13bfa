"""API keys: who may change state, who may read, and whose jobs a key may cancel.

Settings hold only the SHA-256 of each key (`api_keys`, entries `SUBMITTER:SHA256HEX`).
A request names its key as `Authorization: Bearer KEY` or `X-API-Key: KEY`; its hash is
compared with every configured hash by `hmac.compare_digest`.

Rules, enforced by `AuthMiddleware` for every route the app has or will include:

- a request with a method other than GET and HEAD needs a valid key (else 401);
- GET and HEAD need one too unless reads are public (`public_reads`);
- `/healthz`, `/openapi.json` and the docs pages are always open;
- a key given but unknown gets 401 even where reads are public.

The submitter of the key is recorded on the jobs it submits. Only that submitter, or an
admin key (submitter `*`), may cancel or delete them (else 403). With no key configured,
authentication is off: every caller is an anonymous admin, and the API rejects (403)
requests that reach it on a non-loopback IP address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.settings import Settings

logger = logging.getLogger(__name__)

ADMIN = "*"
OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
READ_METHODS = frozenset({"GET", "HEAD"})
FAILURE_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class Caller:
    """The sender of a request: the submitter of its key (None when authentication is off)."""

    submitter: str | None
    admin: bool


ANONYMOUS_ADMIN = Caller(submitter=None, admin=True)
ANONYMOUS_READER = Caller(submitter=None, admin=False)


def hash_key(key: str) -> str:
    """Return the SHA-256 of key in lowercase hex, as settings store it."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """Return a new random key: 32 bytes from `secrets`, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Return True when host is `localhost` or a loopback IP address (127.0.0.0/8, ::1).

    Any other name is taken as non-loopback, since it may resolve to a public address.
    """
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip_address(host: str) -> bool:
    """Return True when host is an IP address, as a socket's local address is; a Unix
    socket path or an in-process test client's name is not."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def check_bind_address(host: str, settings: Settings) -> None:
    """Raise ValueError when the API would listen on a non-loopback host with no API key."""
    if settings.api_keys or is_loopback(host):
        return
    raise ValueError(
        f"refusing to serve on {host}: no API key is configured, so anyone who reaches this "
        f"address could submit and cancel jobs. Create a key with `eulerbench key new NAME`, "
        f"put its entry in EULERBENCH_API_KEYS, or bind to 127.0.0.1.")


class KeyTable:
    """The configured key hashes and their submitters."""

    def __init__(self, entries: list[str]):
        self.entries = [tuple(entry.split(":", 1)) for entry in entries]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def caller_for(self, key: str) -> Caller | None:
        """Return the caller whose key this is, or None when no entry matches.

        Every entry is compared, so the time taken does not tell which one matched.
        """
        digest = hash_key(key)
        found = None
        for submitter, expected in self.entries:
            if hmac.compare_digest(digest, expected):
                found = Caller(submitter=submitter, admin=submitter == ADMIN)
        return found


def presented_key(headers: dict[str, str]) -> str | None:
    """Return the key of a request, from `Authorization: Bearer` or `X-API-Key`."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


class FailureLog:
    """Log failed authentications without the key, at most one line per interval per reason."""

    def __init__(self, interval_s: float = FAILURE_LOG_INTERVAL_S):
        self.interval_s = interval_s
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def record(self, reason: str, method: str, path: str, client: str) -> None:
        now = time.monotonic()
        if now - self.last.get(reason, -self.interval_s) < self.interval_s:
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            return
        repeats = self.suppressed.pop(reason, 0)
        more = f" ({repeats} more since the last line)" if repeats else ""
        logger.warning("authentication failed: %s on %s %s from %s%s", reason, method, path, client, more)
        self.last[reason] = now


class AuthMiddleware:
    """Authenticate every HTTP request and put its `Caller` in `request.state.caller`."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.keys = KeyTable(settings.api_keys)
        self.public_reads = settings.reads_are_public()
        self.failures = FailureLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        caller, status, message = self._authenticate(scope)
        if caller is None:
            await _send_json(send, status, {"message": message, "detail": message},
                             [(b"www-authenticate", b"Bearer")] if status == 401 else [])
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> tuple[Caller | None, int, str]:
        """Return the caller, or None with the status and message of the rejection."""
        method, path = scope["method"], scope["path"]
        client = (scope.get("client") or ("unknown", 0))[0]
        if not self.keys:
            server_host = str((scope.get("server") or ("127.0.0.1", 0))[0])
            if _is_ip_address(server_host) and not is_loopback(server_host):
                self.failures.record("no API key configured, request on a non-loopback address",
                                     method, path, client)
                return None, 403, ("authentication is off because no API key is configured, "
                                   "so this service answers on loopback addresses only")
            return ANONYMOUS_ADMIN, 200, ""
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in scope.get("headers", [])}
        key = presented_key(headers)
        if key is not None:
            caller = self.keys.caller_for(key)
            if caller is None:
                self.failures.record("unknown API key", method, path, client)
                return None, 401, "the API key is not valid"
            return caller, 200, ""
        if path in OPEN_PATHS or (method in READ_METHODS and self.public_reads):
            return ANONYMOUS_READER, 200, ""
        self.failures.record("no API key", method, path, client)
        return None, 401, ("this request needs an API key: send `Authorization: Bearer KEY` "
                           "or `X-API-Key: KEY`")


async def _send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    """Send a complete JSON response from ASGI middleware."""
    content = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(content)).encode()), *headers]})
    await send({"type": "http.response.body", "body": content})


async def current_caller(request: Request) -> Caller:
    """Return the caller that `AuthMiddleware` stored for this request (a FastAPI dependency,
    async so that it runs without a hand-off to the thread pool)."""
    return getattr(request.state, "caller", ANONYMOUS_READER)


def check_owner(caller: Caller, submitter: str | None, what: str) -> None:
    """Raise HTTP 403 unless caller submitted the job or sweep `what`, or is an admin."""
    if caller.admin or (caller.submitter is not None and caller.submitter == submitter):
        return
    logger.warning("%s rejected (403): may not %s, submitted by %s", caller.submitter or "an anonymous caller",
                   what, submitter or "an anonymous caller")
    raise HTTPException(403, f"only its submitter or an admin key may {what}")


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Add the authentication middleware, and warn when no key is configured."""
    app.add_middleware(AuthMiddleware, settings=settings)
    if not settings.api_keys:
        logger.warning("no API key configured (EULERBENCH_API_KEYS): authentication is off, and "
                       "requests that reach the API on a non-loopback address are rejected")
    else:
        logger.info("%d API keys configured; reads are %s", len(settings.api_keys),
                    "public" if settings.reads_are_public() else "authenticated")
