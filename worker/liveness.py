"""Which worker process runs a job attempt, and whether that process is still alive.

A job record's `worker` field names the attempt's owner as `NODENAME/TOKEN/PID`. These
are the Celery node name (`celery@HOST`), a random token drawn once per worker start and
the pool process's id. The token makes a restarted worker on the same host a new instance.

Each worker's main process writes a heartbeat (`Heartbeat`) to Redis every
`heartbeat_interval_s`: the ids of its live pool processes, its pid namespace and the
time. The heartbeat expires `stale_after_s` after the last write. An attempt counts as
alive unless one of these shows that its process is gone:

- its pid namespace is the reader's own and the process no longer exists (a check that
  is exact, and immediate after a pool process is killed);
- a heartbeat written after the attempt started no longer lists the pid (the pool
  replaced the process);
- its worker's heartbeat has expired and the attempt started over `stale_after_s` ago
  (the whole worker was killed, or lost Redis for that long).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache

INSTANCE_ENV = "EULERBENCH_WORKER_INSTANCE"


def instance_token() -> str:
    """Return this worker instance's token, drawn on first use and inherited by pool processes."""
    return os.environ.setdefault(INSTANCE_ENV, uuid.uuid4().hex[:12])


@dataclass(frozen=True)
class Owner:
    """The process that runs one attempt of a job: its worker instance and pid."""

    instance: str
    pid: int

    def __str__(self) -> str:
        return f"{self.instance}/{self.pid}"

    @classmethod
    def current(cls, nodename: str) -> "Owner":
        """Return the owner name of this process, in the worker instance named nodename."""
        return cls(f"{nodename}/{instance_token()}", os.getpid())

    @classmethod
    def parse(cls, text: str | None) -> "Owner | None":
        """Read `NODENAME/TOKEN/PID`; return None for any other text (records of older versions)."""
        instance, separator, pid = (text or "").rpartition("/")
        if not separator or "/" not in instance or not pid.isdigit():
            return None
        return cls(instance, int(pid))


@lru_cache(maxsize=1)
def process_namespace() -> str:
    """Return an id of this machine's pid namespace: the kernel's boot id and the namespace inode.

    Two processes with the same id see the same pids, so one may test whether the other's
    pid is alive. Where /proc is missing the host name is used, which is right unless
    containers share a host name.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot_id:
            return f"{boot_id.read().strip()}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def process_alive(pid: int) -> bool:
    """Return True when process pid exists in this namespace and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass(frozen=True)
class Heartbeat:
    """A worker's latest heartbeat: its pool pids (None when unknown), pid namespace and time.

    beat_at is a Unix time in seconds, from the worker's clock.
    """

    pids: list[int] | None
    namespace: str
    beat_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | None) -> "Heartbeat | None":
        if raw is None:
            return None
        data = json.loads(raw)
        return cls(data.get("pids"), data.get("namespace", ""), float(data.get("beat_at", 0.0)))


def attempt_alive(owner: Owner | None, heartbeat: Heartbeat | None, started_at: datetime | None,
                  now: float, stale_after_s: float, reader: Owner | None = None) -> bool:
    """Return whether the attempt that owner started at started_at may still be running.

    heartbeat is the owner's worker's latest heartbeat (None once expired), now the
    current Unix time in seconds, and reader the process asking when it is about to run
    the job itself. A process runs one job at a time, so an attempt owned by the reader
    has ended. An owner name that cannot be parsed (None) counts as gone.
    """
    if owner is None or owner == reader:
        return False
    started = started_at.timestamp() if started_at is not None else 0.0
    if heartbeat is None:
        # NOTE: started_at and now come from two hosts' clocks when the sweeper runs on
        # another host. A clock skew of more than stale_after_s misjudges a fresh attempt.
        return now - started < stale_after_s
    if heartbeat.namespace == process_namespace() and not process_alive(owner.pid):
        return False
    if heartbeat.pids is not None and heartbeat.beat_at > started and owner.pid not in heartbeat.pids:
        return False
    return True
