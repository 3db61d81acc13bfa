"""Schemathesis against the real API: no 5xx and replies that match the OpenAPI schema.

The API runs as a process on a Redis of its own with no worker, so the valid specs that
schemathesis generates stay queued instead of occupying the session stack's worker.
The run is bounded by `--max-examples` per operation and by `--max-time` overall.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.api_server import api_server

MAX_TIME_S = 40
MAX_EXAMPLES = 25
# A sweep of up to the service's job limit is validated in full before the reply, which
# takes seconds on a loaded 2-core machine; a shorter timeout reports that as an error.
REQUEST_TIMEOUT_S = 30


def schemathesis_command() -> str:
    """Return the schemathesis console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "schemathesis"
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed; run pip install -e '.[test]'")
    return found


@pytest.mark.slow
def test_no_server_error_and_schema_conformance(tmp_path):
    with api_server({}, tmp_path) as (url, _):
        done = subprocess.run(
            [schemathesis_command(), "run", f"{url}/openapi.json",
             "--checks", "not_a_server_error,response_schema_conformance",
             "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S), "--seed", "1",
             "--workers", "2", "--request-timeout", str(REQUEST_TIMEOUT_S), "--no-shrink",
             "--suppress-health-check", "all", "--warnings", "off"],
            capture_output=True, text=True, timeout=MAX_TIME_S + 60)
    report = done.stdout + done.stderr
    problems = re.search(r"=+ (FAILURES|ERRORS) =+(.*?)=+ SUMMARY", report, re.S)
    assert done.returncode == 0, problems.group(2)[:4000] if problems else report[-3000:]
    assert re.search(r"\d+ generated", report)
