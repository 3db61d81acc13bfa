"""Settings of the service and the workers, read from the environment."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read once from the environment."""
    return Settings()
