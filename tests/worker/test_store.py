"""The job store against a real Redis."""

import math

import pytest

from solvers.record import JobRecord
from solvers.spec import JobSpec
from worker.store import Claim, JobNotFound, JobStateError, JobStore, RecordUnreadable

ERRORS = {"box": {"max_log10": -12.0, "mean_log10": -13.0},
          "path": {"max_log10": -11.5, "mean_log10": -12.5, "share_outside_box": 0.0},
          "closed_form": None}


@pytest.fixture
def store(redis_url, key_prefix):
    return JobStore.from_url(redis_url, key_prefix)


def make_spec(kind="chebyshev"):
    return JobSpec.model_validate({"method": {"basis": {"kind": kind}}})


def test_create_and_get(store):
    record = store.create(make_spec())
    again = store.get(record.id)
    assert again.status == "queued"
    assert again.spec == record.spec
    assert again.created_at == record.created_at


def test_create_with_claim_writes_once(store):
    claim = Claim(f"{store.prefix}:test-claim", '{"reply": 1}', 60)
    first = store.create(make_spec(), claim=claim)
    assert store.get(first.id).status == "queued"
    assert store.client.get(claim.key) == '{"reply": 1}'
    assert 0 < store.client.ttl(claim.key) <= 60
    total = store.list(None, None, None, 1, 0)[1]
    taken = Claim(claim.key, '{"reply": 2}', 60)
    assert store.create(make_spec(), job_id="a" * 32, claim=taken) is None
    assert store.list(None, None, None, 1, 0)[1] == total
    assert store.client.get(claim.key) == '{"reply": 1}'
    with pytest.raises(JobNotFound):
        store.get("a" * 32)


def test_missing_job_raises(store):
    with pytest.raises(JobNotFound):
        store.get("nope")


def test_lifecycle_moves_forward(store):
    record = store.create(make_spec())
    running = store.start(record.id, worker="w1")
    assert running.status == "running"
    assert running.attempts == 1
    store.progress(record.id, 3, 1e-5, 0.2)
    assert store.get(record.id).progress.iteration == 3
    assert store.finish(record.id, "succeeded", {"errors": ERRORS, "iterations": 4}, {"theta": [1.0]})
    done = store.get(record.id)
    assert done.status == "succeeded"
    assert done.errors.box.max_log10 == -12.0
    assert done.finished_at is not None
    assert store.get_policy(record.id) == {"theta": [1.0]}


def test_finished_result_never_overwritten(store):
    record = store.create(make_spec())
    store.start(record.id, worker="w1")
    assert store.finish(record.id, "succeeded", {"errors": ERRORS, "iterations": 4})
    assert not store.finish(record.id, "failed", {"error": "late duplicate", "iterations": 99})
    done = store.get(record.id)
    assert done.status == "succeeded"
    assert done.iterations == 4
    assert done.error is None


def test_start_after_end_returns_none(store):
    record = store.create(make_spec())
    store.request_cancel(record.id)
    assert store.start(record.id, worker="w1") is None
    assert store.get(record.id).status == "cancelled"


def test_redelivery_counts_attempts(store):
    record = store.create(make_spec())
    store.start(record.id, worker="w1")
    again = store.start(record.id, worker="w2")
    assert again.attempts == 2
    assert again.worker == "w2"


def test_cancel_running_sets_flag(store):
    record = store.create(make_spec())
    store.start(record.id, worker="w1")
    assert not store.cancel_requested(record.id)
    assert store.request_cancel(record.id).status == "running"
    assert store.cancel_requested(record.id)
    store.finish(record.id, "cancelled", {"error": "cancelled"})
    assert not store.cancel_requested(record.id)


def test_cancel_after_end_rejected(store):
    record = store.create(make_spec())
    store.start(record.id, worker="w1")
    store.finish(record.id, "failed", {"error": "boom"})
    with pytest.raises(JobStateError, match="already ended"):
        store.request_cancel(record.id)


def test_finish_needs_terminal_status(store):
    record = store.create(make_spec())
    with pytest.raises(ValueError, match="terminal status"):
        store.finish(record.id, "running", {})


def test_list_filters_and_pages(store):
    ids = [store.create(make_spec(kind)).id for kind in ("chebyshev", "spline", "chebyshev", "nn")]
    store.start(ids[0], worker="w1")
    items, total = store.list()
    assert total == 4
    assert [r.id for r in items] == ids[::-1]
    items, total = store.list(basis="chebyshev")
    assert total == 2
    assert {r.id for r in items} == {ids[0], ids[2]}
    items, total = store.list(status="running")
    assert [r.id for r in items] == [ids[0]]
    items, total = store.list(limit=2, offset=1)
    assert [r.id for r in items] == [ids[2], ids[1]]
    assert total == 4
    with pytest.raises(ValueError, match="limit must be in 1..500"):
        store.list(limit=0)


def test_delete_only_after_end(store):
    record = store.create(make_spec())
    with pytest.raises(JobStateError, match="cancel it before deleting"):
        store.delete(record.id)
    store.request_cancel(record.id)
    store.delete(record.id)
    with pytest.raises(JobNotFound):
        store.get(record.id)
    assert store.list()[1] == 0


def test_non_finite_floats_round_trip(store):
    record = store.create(make_spec())
    store.start(record.id, worker="w1")
    errors = {"box": {"max_log10": float("-inf"), "mean_log10": float("nan")},
              "path": {"max_log10": float("inf"), "mean_log10": -1.0, "share_outside_box": 1.0}}
    store.finish(record.id, "diverged", {"errors": errors})
    raw = store.client.get(f"{store.prefix}:job:{record.id}")
    assert '"-Infinity"' in raw
    assert '"NaN"' in raw
    back = store.get(record.id)
    assert back.errors.box.max_log10 == float("-inf")
    assert math.isnan(back.errors.box.mean_log10)
    assert JobRecord.model_validate_json(raw).errors.path.max_log10 == float("inf")


def test_repeated_deliveries_give_up(store):
    record = store.create(make_spec())
    for attempt in range(3):
        assert store.start(record.id, worker=f"w{attempt}", max_attempts=3).status == "running"
    assert store.start(record.id, worker="w3", max_attempts=3) is None
    failed = store.get(record.id)
    assert failed.status == "failed"
    assert "started 3 times" in failed.error


def test_unreadable_record_skipped_in_list(store):
    good = store.create(make_spec())
    bad = store.create(make_spec())
    store.client.set(f"{store.prefix}:job:{bad.id}", '{"id": "x", "status": "queued", "spec": {"bogus": 1}}')
    items, total = store.list()
    assert [r.id for r in items] == [good.id]
    with pytest.raises(RecordUnreadable, match=f"job {bad.id} cannot be read"):
        store.get(bad.id)


def test_live_workers_by_queue(store):
    store.register_worker("cpu-1", ["cpu"], ttl_s=30)
    store.register_worker("both-1", ["cpu", "gpu"], ttl_s=30)
    assert store.workers("cpu") == ["both-1", "cpu-1"]
    assert store.workers("gpu") == ["both-1"]
    store.unregister_worker("both-1", ["cpu", "gpu"])
    assert store.workers("cpu") == ["cpu-1"]
    assert store.workers("gpu") == []
    store.client.delete(f"{store.prefix}:workers:cpu:cpu-1")
    assert store.workers("cpu") == []
    assert store.client.smembers(f"{store.prefix}:workers:cpu") == set()
