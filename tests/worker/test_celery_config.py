from worker.celery_app import create_celery


def test_json_only_late_ack_prefetch_one():
    conf = create_celery("redis://127.0.0.1:6379/15").conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_default_queue == "cpu"
    assert conf.task_ignore_result is True


def test_visibility_timeout_outlasts_longest_job():
    from worker.settings import get_settings

    conf = create_celery("redis://127.0.0.1:6379/15").conf
    assert conf.broker_transport_options["visibility_timeout"] > get_settings().max_time_limit_s
