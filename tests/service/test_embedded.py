"""Pieces of the embedded stack that a user meets when something is off."""

import socket

import pytest

from service.embedded import StackError, find_redis_server, redis_answers, start_redis, start_stack


def test_private_redis_starts_and_stops():
    url, process = start_redis()
    try:
        assert redis_answers(url)
        assert url.startswith("redis://127.0.0.1:")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not redis_answers(url, timeout_s=0.2)


def test_redis_server_binary_found():
    assert find_redis_server().endswith("redis-server")


def test_busy_port_is_clear_error(redis_url):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_stack(redis_url, port=port)


def test_unreachable_url_is_not_redis():
    assert not redis_answers("redis://127.0.0.1:1/0", timeout_s=0.2)
