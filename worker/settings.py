"""Settings of the service and the workers, read from the environment."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

API_KEY_ENTRY = re.compile(r"([^:\s]+):([0-9a-f]{64})")


class Settings(BaseSettings):
    """Every setting of eulerbench; environment variables are prefixed `EULERBENCH_`."""

    model_config = SettingsConfigDict(env_prefix="EULERBENCH_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("EULERBENCH_REDIS_URL", "REDIS_URL"),
        description="Redis used as Celery broker and as the job store.")
    key_prefix: str = Field("eulerbench", description="Prefix of every Redis key the store writes.")
    max_time_limit_s: float = Field(
        86_400.0, description="Largest time_limit_s a job may ask for, in seconds.")
    time_limit_grace_s: float = Field(
        60.0, description="Seconds past a job's time_limit_s before Celery's soft limit "
        "stops it; the solver stops itself at time_limit_s, and evaluation needs a few seconds.")
    max_attempts: int = Field(
        3, description="Deliveries of a job whose worker died before it is recorded as failed.")
    progress_interval_s: float = Field(
        0.5, description="Minimum seconds between two progress writes of a running job.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="API keys as `SUBMITTER:SHA256HEX` entries (the SHA-256 of the key in hex, "
        "never the key), separated by commas, or a JSON list of such strings or of "
        "`{\"submitter\": ..., \"sha256\": ...}` objects. The submitter `*` is an admin key, "
        "which may cancel and delete any job. Empty: authentication is off, and the API "
        "only serves on a loopback address. `eulerbench key new NAME` makes one.")
    public_reads: bool | None = Field(
        None, description="Whether GET requests need no key. Default: true while no API key "
        "is configured, else false.")
    max_request_bytes: int = Field(
        1_048_576, ge=1, description="Largest request body the API accepts, in bytes; larger "
        "ones get HTTP 413.")
    idempotency_ttl_s: int = Field(
        86_400, ge=1, description="Seconds an Idempotency-Key of a submission is remembered.")
    max_params: int = Field(
        200_000, ge=1, description="Largest parameter count (coefficients or network weights) "
        "of a multi_country job; larger specs get HTTP 422 before they are queued.")
    max_memory_mb: float = Field(
        2_048.0, gt=0, description="Largest estimated peak memory of a multi_country solve, in "
        "MiB; larger specs get HTTP 422 before they are queued.")
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Seconds between two heartbeats of a worker, which list its live "
        "pool processes in Redis. Each worker also runs the stale-job sweeper at this interval.")
    stale_after_s: float = Field(
        45.0, gt=0, description="Seconds without a heartbeat after which a worker counts as gone: "
        "its running jobs are queued again, or failed once they have used max_attempts. It "
        "bounds how long a job waits after its whole worker was killed; it must be at least "
        "twice heartbeat_interval_s.")
    unsent_after_s: float = Field(
        60.0, gt=0, description="Seconds after its creation at which the stale-job sweeper "
        "sends the message of a queued job that the API never sent, because its process "
        "stopped between writing the record and sending. A job sent twice runs once.")
    max_value_bytes: int = Field(
        16 * 2**20, ge=1024, description="Largest Redis value the job store writes, in bytes. A "
        "fitted policy larger than this is not stored (the record says so), and a record over it "
        "loses its history and diagnostics.")
    store_retry_s: float = Field(
        120.0, ge=0, description="Seconds a worker keeps retrying to start a job or write its "
        "result while Redis is unreachable, such as during a Redis restart.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> list[str]:
        """Accept a comma-separated string, a JSON list, or a list of strings or objects."""
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [e for e in re.split(r"[,\s]+", text) if e]
        if not isinstance(value, list):
            raise ValueError(f"api_keys must be a list of SUBMITTER:SHA256HEX entries; got {type(value).__name__}")
        entries = []
        for position, item in enumerate(value, start=1):
            if isinstance(item, dict):
                item = f"{item.get('submitter')}:{str(item.get('sha256', '')).lower()}"
            if not isinstance(item, str) or not API_KEY_ENTRY.fullmatch(item):
                shown = item.split(":", 1)[0] if isinstance(item, str) else type(item).__name__
                raise ValueError(f"api_keys entry {position} (submitter {shown!r}) is invalid: "
                                 f"expected SUBMITTER:SHA256HEX with 64 lowercase hex digits "
                                 f"and no ':' or spaces in SUBMITTER")
            entries.append(item)
        return entries

    def reads_are_public(self) -> bool:
        """Return whether GET requests are served without a key."""
        return (not self.api_keys) if self.public_reads is None else self.public_reads


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
