"""Shared fixtures: a real Redis, and a real worker and API started as processes."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from service.embedded import redis_answers, start_redis, start_stack

TEST_REDIS_URL = os.environ.get("EULERBENCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="session")
def redis_url():
    """URL of a Redis for tests: database 15 of the local server, or a private server."""
    process = None
    url = TEST_REDIS_URL
    if not redis_answers(url):
        url, process = start_redis()
    redis.Redis.from_url(url).flushdb()
    yield url
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix of its own for one test."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def stack(redis_url, tmp_path_factory):
    """A real Celery worker process and the real HTTP API, on the test Redis."""
    started = start_stack(redis_url, concurrency=1, log_dir=tmp_path_factory.mktemp("stack-logs"))
    yield started
    started.stop()
