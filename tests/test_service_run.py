"""``streetsense run`` as a city's IT team runs it: a process against devices it does not own.

The devices are ``streetsense simulate`` in another process, as a field would
be; the controller is a subprocess that is read through its API, switches a
circuit, and is stopped with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from api.cli import main as cli
from controller.telemetry.embedded import stored_polls
from simulators.field import create_key, field_config, simulated_field, streetsense, wait_for_port
from simulators.servers import free_port


def test_run_serves_real_links_switches_and_stops_on_sigterm_losing_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = field_config(tmp_path, port)
    engineer = {"Authorization": "Bearer " + create_key(config, "Chen Gong", "engineer")}
    base = f"http://127.0.0.1:{port}"
    with simulated_field(config):
        run = streetsense("run", "-c", str(config), cwd=tmp_path)
        try:
            wait_for_port(port, run)
            deadline = time.monotonic() + 30
            while True:
                health = httpx.get(f"{base}/health").json()
                if health["online"] == health["poll_targets"] == 2:
                    break
                assert time.monotonic() < deadline, health
                time.sleep(0.2)
            readings: dict[str, float | None] = {}
            while readings.get("voltage_a") is None:  # the first batch is handed on at 2 s
                assert time.monotonic() < deadline, readings
                time.sleep(0.2)
                cabinet = httpx.get(f"{base}/devices/CAB-1", headers=engineer).json()
                readings = {r["point"]: r["value"] for r in cabinet["readings"]}
            assert 200 < (readings["voltage_a"] or 0) < 250 and readings["lamp_count"] == 6

            off = {"action": "off", "targets": {"cabinets": ["CAB-1"], "circuits": [2]}}
            sent = httpx.post(f"{base}/control/circuits", json=off, headers=engineer)
            assert sent.status_code == 202, sent.text
            done = httpx.get(
                f"{base}{sent.headers['Location']}", params={"wait": 5}, headers=engineer
            ).json()
            assert done["status"] == "confirmed", done

            time.sleep(1.0)  # into the 2 s batch: readings sit in the buffer now
            stopped_at = time.time()
            run.send_signal(signal.SIGTERM)
            out, err = run.communicate(timeout=30)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 0, err
    assert re.search(r"streetsense stopped: \d+ polls", out), out
    assert "Traceback" not in err

    newest = max(
        ts for name, ts in stored_polls(tmp_path / "var" / "streetsense.db") if name == "WL-1"
    )
    # The gauge is polled every 0.1 s: its last reading before SIGTERM was stored.
    assert newest / 1000.0 > stopped_at - 0.3, (newest / 1000.0, stopped_at)

    with sqlite3.connect(tmp_path / "var" / "state.db") as db:
        audit = db.execute("SELECT who, role, action, outcome FROM audit").fetchall()
    assert ("Chen Gong", "engineer", "circuit_off", "confirmed") in audit


@pytest.fixture
def field(tmp_path: Path) -> Path:
    return field_config(tmp_path, free_port())


def run_briefly(config: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "run", "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.parent,
        env={**os.environ, **(env or {})},
    )
    return proc.returncode, proc.stderr


def test_a_port_in_use_is_one_line_naming_the_port(field: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_briefly(field, "--port", str(port))
    assert code == 3
    assert err == f"error: cannot listen on 127.0.0.1:{port} for the API: address already in use\n"


def test_a_data_folder_that_cannot_be_written_is_one_line_naming_it(field: Path) -> None:
    blocker = field.parent / "not-a-folder"
    blocker.write_text("a file where the data folder should be\n", encoding="utf-8")
    code, err = run_briefly(field, env={"STREETSENSE_DATA_DIR": str(blocker / "var")})
    assert code == 3
    assert err.startswith(f"error: data folder {blocker / 'var'} cannot be written: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_secret_is_one_line_naming_the_key(field: Path) -> None:
    doc = yaml.safe_load(field.read_text(encoding="utf-8"))
    doc["storage"] = {
        "influxdb": {"url": "http://127.0.0.1:9", "password_env": "SS_TEST_NO_SUCH_SECRET"}
    }
    field.write_text(yaml.safe_dump(doc), encoding="utf-8")
    code, err = run_briefly(field)
    assert code == 2
    assert err == (
        f"error: {field}: storage.influxdb.password_env: "
        "environment variable SS_TEST_NO_SUCH_SECRET is not set\n"
    )


def test_a_state_database_that_cannot_be_opened_is_one_line(field: Path) -> None:
    doc = yaml.safe_load(field.read_text(encoding="utf-8"))
    dead = free_port()
    doc["database"] = {"url": f"postgresql+psycopg://streetsense@127.0.0.1:{dead}/cases"}
    field.write_text(yaml.safe_dump(doc), encoding="utf-8")
    code, err = run_briefly(field)
    assert code == 3
    url = f"postgresql+psycopg://streetsense@127.0.0.1:{dead}/cases"
    assert err.startswith(f"error: cannot open the state database {url}: ")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_poll_without_once_keeps_polling_until_interrupted(tmp_path: Path) -> None:
    config = field_config(tmp_path, free_port())
    with simulated_field(config):
        poll = streetsense("poll", "-c", str(config), "--interval", "0.3", cwd=tmp_path)
        time.sleep(4.0)
        poll.send_signal(signal.SIGINT)
        out, err = poll.communicate(timeout=20)
    assert poll.returncode == 0, err
    rounds = re.findall(r"^(\d+) polls, (\d+) failed", out, re.M)
    assert len(rounds) >= 3, out
    assert [int(p) for p, _ in rounds] == sorted(int(p) for p, _ in rounds)  # counts grow
    assert "WL-1" in out and "CAB-1" in out


def test_keys_offer_every_role_the_readme_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(field_config(tmp_path, free_port()))
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for role in ("viewer", "engineer", "dispatcher", "flood_duty", "reporter", "admin"):
        assert role in readme
        # The CLI in this process: what it does is the test, not how it starts.
        command = ["keys", "create", "-c", config, "--name", f"someone ({role})", "--role", role]
        assert cli(command) == 0
        assert capsys.readouterr().out.startswith("ssk_")


def test_a_copied_config_finds_shipped_resources_and_writes_to_its_data_dir(
    tmp_path: Path,
) -> None:
    root = Path(__file__).parent.parent
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    config = elsewhere / "config.yaml"
    config.write_text((root / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    # The demo's scenario and grid cells are not beside the copy: they come with streetsense.
    checked = subprocess.run(
        [sys.executable, "-m", "api.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr
    data = tmp_path / "data"
    command = ["keys", "create", "-c", str(config), "--name", "ops", "--role", "admin"]
    key = subprocess.run(
        [sys.executable, "-m", "api.cli", *command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "STREETSENSE_DATA_DIR": str(data)},
    )
    assert key.returncode == 0, key.stderr
    assert (data / "state.db").exists() and not (elsewhere / "var").exists()
