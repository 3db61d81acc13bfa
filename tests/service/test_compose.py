"""docker-compose.yml runs what exists: no Docker engine here, so the file is checked statically."""

import importlib
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser
from service.embedded import api_command, worker_command

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_services_present():
    assert {"redis", "api", "worker-cpu"} <= set(COMPOSE["services"])


def test_redis_keeps_append_only_file_on_volume():
    redis = COMPOSE["services"]["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-data" in COMPOSE["volumes"]


def test_every_service_has_healthcheck():
    for name, service in COMPOSE["services"].items():
        assert "healthcheck" in service, name


@pytest.mark.parametrize("name", ["api", "worker-cpu"])
def test_eulerbench_commands_parse(name):
    command = COMPOSE["services"][name]["command"]
    assert command[0] == "eulerbench"
    assert command[1] in subcommands()
    build_parser().parse_args(command[1:])


def test_commands_match_embedded_stack():
    api = COMPOSE["services"]["api"]["command"]
    worker = COMPOSE["services"]["worker-cpu"]["command"]
    assert api[1:] == api_command("0.0.0.0", 8000)[3:]
    assert worker[1:] == worker_command(1)[3:]


def test_worker_healthcheck_module_exists():
    test = COMPOSE["services"]["worker-cpu"]["healthcheck"]["test"]
    module = test[test.index("-A") + 1]
    assert hasattr(importlib.import_module(module), "app")


def test_console_script_entry_point():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'eulerbench = "service.cli:main"' in text
    assert callable(importlib.import_module("service.cli").main)


def test_images_built_from_dockerfile():
    assert COMPOSE["services"]["api"]["build"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert COMPOSE["services"]["worker-cpu"]["image"] == COMPOSE["services"]["api"]["image"]
    assert "torch==2.13.0" in (ROOT / "Dockerfile").read_text()


def test_flower_optional_under_monitoring_profile():
    flower = COMPOSE["services"]["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert "flower" in flower["command"]
    assert "--broker=redis://redis:6379/0" in flower["command"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    for name in ("redis", "api", "worker-cpu"):
        assert "profiles" not in COMPOSE["services"][name], name


def test_api_needs_key_on_public_bind_address():
    api = COMPOSE["services"]["api"]
    assert api["command"][api["command"].index("--host") + 1] == "0.0.0.0"
    assert api["environment"]["EULERBENCH_API_KEYS"].startswith("${EULERBENCH_API_KEYS:?")


def test_gpu_worker_optional_with_cuda_build():
    gpu = COMPOSE["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_INDEX"].endswith("/cu128")
    assert gpu["image"] != COMPOSE["services"]["worker-cpu"]["image"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    build_parser().parse_args(gpu["command"][1:])
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
