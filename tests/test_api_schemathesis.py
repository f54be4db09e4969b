"""Schemathesis over the running demo: every operation, all checks, an admin key.

The demo runs as a newcomer runs it (``streetsense demo``) on a copy of
config.yaml with free ports. Schemathesis reads its OpenAPI document and sends
generated requests, valid and invalid, to every operation except the live
event stream (it never ends). The run must find no server error and no answer
that contradicts the document.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demo_process import ROOT, Demo, demo_config, run_demo

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    # Schemathesis sends hundreds of bad keys on purpose: the lockout would answer 429.
    config = demo_config(tmp_path_factory.mktemp("demo"), api={"auth_failures_allowed": 1_000_000})
    with run_demo(config) as running:
        yield running


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    demo: Demo, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{demo.api}/openapi.json",
            "--checks",
            # Server errors and every conformance to the document. The checks of auth
            # handling and of data acceptance are in test_api_auth and test_api_bounds.
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--header",
            f"X-API-Key: {demo.keys['admin']}",
            "--exclude-path",
            "/events",
            "--max-examples",
            "8",
            "--seed",
            "20261202",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "2",
            "--request-timeout",
            "5",
            "--max-time",
            # The coverage phase takes 41-47 s; fuzzing repeats for the rest of the budget
            # (about 25 s, some 1,000 cases), which keeps the suite within its 15 minutes.
            "70",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # The whole output, for a person to read the failures (kept beside the screenshots).
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis.txt").write_text(run.stdout + run.stderr, encoding="utf-8")
    assert run.returncode == 0, run.stdout[-6000:]
    assert json.loads(report.read_text())  # the run reported
