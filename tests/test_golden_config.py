"""Golden cases: a bad config or profile and the exact error a person sees.

Each file under ``golden/`` starts with ``# expect-key:`` and ``# expect-reason:``
lines. ``streetsense check`` must exit 2 and print ``error: FILE: KEY: REASON``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from api.cli import EXIT_CONFIG, main

GOLDEN = Path(__file__).parent / "golden"


def expectations(path: Path) -> tuple[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    key = lines[0].removeprefix("# expect-key:").strip()
    reason = lines[1].removeprefix("# expect-reason:").strip()
    return key, reason


def expected_message(file: Path, key: str, reason: str) -> str:
    return f"error: {file}: {key}: {reason}" if key else f"error: {file}: {reason}"


@pytest.mark.parametrize("case", sorted((GOLDEN / "config").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_config_names_file_key_and_reason(
    case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for sibling in case.parent.glob(f"{case.stem}.*"):
        shutil.copy(sibling, tmp_path / sibling.name)
    config = tmp_path / case.name
    key, reason = expectations(case)
    assert main(["check", "-c", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    blamed = config
    if "scenario" in case.stem:
        blamed = tmp_path / (
            "no-such-scenario.yaml" if "missing" in case.stem else f"{case.stem}.scenario"
        )
    assert err.startswith(expected_message(blamed, key, reason)), err


@pytest.mark.parametrize("case", sorted((GOLDEN / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_profile_names_file_point_and_field(
    case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(case, profiles / case.name)
    config = tmp_path / "config.yaml"
    config.write_text("profile_dirs: [profiles]\n", encoding="utf-8")
    key, reason = expectations(case)
    assert main(["check", "-c", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith(expected_message(profiles / case.name, key, reason)), err


def test_shipped_example_config_passes(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).parent.parent
    assert main(["check", "-c", str(root / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "5 cabinets" in out and "178 lamps" in out and "4 gauges" in out


def test_register_table_document_matches_the_profiles() -> None:
    from drivers.profile import ProfileLibrary
    from drivers.profile_doc import render_all

    doc = Path(__file__).parent.parent / "docs" / "profiles.md"
    assert doc.read_text(encoding="utf-8") == render_all(ProfileLibrary.load()), (
        "docs/profiles.md is stale: run python -m drivers.profile_doc > docs/profiles.md"
    )


def test_check_reports_every_problem_of_a_file_not_only_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "links: [{id: gw, kind: modbus_tcp, host: 127.0.0.1, port: 15020}]\n"
        "cabinets:\n"
        "  - {id: CAB-1, link: nope, unit: 1}\n"
        "  - {id: CAB-2, link: gw, unit: 2, profile: no-such-profile}\n"
        "gauges: [{id: WL-1, link: gw, unit: 3, levels: {blue: 0.5, red: 0.1}}]\n",
        encoding="utf-8",
    )
    assert main(["check", "-c", str(config)]) == EXIT_CONFIG
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"error: {config}: cabinets[0] (CAB-1).link: unknown link 'nope'"
    assert lines[1].startswith(f"{config}: cabinets[1] (CAB-2).profile: unknown profile")
    assert (
        lines[2]
        == f"{config}: gauges[0] (WL-1).levels: levels must rise blue < yellow < orange < red"
    )
    assert len(lines) == 3

    config.write_text(
        "polling: {cabinet_interval: -1, lamp_intervl: 5}\nsite: {timezone: Mars/Olympus}\n",
        encoding="utf-8",
    )
    assert main(["check", "-c", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "more problem" not in err
    assert "polling.cabinet_interval" in err and "polling.lamp_intervl: unknown key" in err
    assert "site.timezone" in err


def test_check_warns_when_a_profile_lacks_what_a_rule_or_duty_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    # A third-party lamp controller that reports power but not whether it is lit.
    basic = {
        "name": "slc-basic",
        "device_class": "lamp",
        "controls": {"switch": {"command": "switch_cmd", "feedback": "switch_cmd"}},
        "points": [
            {"name": "switch_cmd", "table": "holding_register", "address": 0, "access": "rw"},
            {"name": "voltage", "table": "input_register", "address": 2, "scale": 0.1},
            {"name": "power", "table": "input_register", "address": 4, "scale": 0.1},
        ],
    }
    (profiles / "slc-basic.yaml").write_text(yaml.safe_dump(basic), encoding="utf-8")
    lamp = {"link": "l", "lat": 21.86, "lon": 111.98}
    doc = {
        "profile_dirs": ["profiles"],
        "links": [{"id": "l", "kind": "modbus_tcp", "host": "127.0.0.1", "port": 1502}],
        "lamps": [
            {"id": "SLC-1", "unit": 1, **lamp},
            {"id": "OTHER-1", "unit": 2, "profile": "slc-basic", **lamp},
            {"id": "OTHER-2", "unit": 3, "profile": "slc-basic", **lamp},
        ],
        "rules": [
            {"id": "fail", "kind": "lamp_failure", "select": {"device_class": "lamp"}},
            {"id": "cycle", "kind": "lamp_cycling", "select": {"device_class": "lamp"}},
        ],
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert main(["check", "-c", str(config)]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        f"{config}: warning: rules[0] (fail): 2 device(s) of profile slc-basic lack lamp_on: "
        "not watched",
        f"{config}: warning: rules[1] (cycle): 2 device(s) of profile slc-basic lack lamp_on: "
        "not watched",
        f"{config}: warning: lighting rate: 2 device(s) of profile slc-basic lack lamp_on: "
        "not counted",
    ]


def test_profile_json_schema_matches_the_models() -> None:
    from drivers.profile_schema import render

    schema = Path(__file__).parent.parent / "docs" / "profile.schema.json"
    assert schema.read_text(encoding="utf-8") == render(), (
        "docs/profile.schema.json is stale: run python -m drivers.profile_schema > "
        "docs/profile.schema.json"
    )


def test_every_shipped_profile_validates_against_the_json_schema() -> None:
    import json

    import jsonschema
    import yaml

    root = Path(__file__).parent.parent
    schema = json.loads((root / "docs" / "profile.schema.json").read_text(encoding="utf-8"))
    files = sorted((root / "drivers" / "profiles").glob("*.yaml"))
    assert len(files) >= 5
    for file in files:
        jsonschema.validate(yaml.safe_load(file.read_text(encoding="utf-8")), schema)
    broken = yaml.safe_load((root / "drivers" / "profiles" / "slc-lamp.yaml").read_text("utf-8"))
    broken["points"][0]["table"] = "register"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
