"""Golden cases: a bad config or profile and the exact error a person sees.

Each file under ``golden/`` starts with ``# expect-key:`` and ``# expect-reason:``
lines. ``streetsense check`` must exit 2 and print ``error: FILE: KEY: REASON``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controller.cli import EXIT_CONFIG, main

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
