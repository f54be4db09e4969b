"""The layers import only downwards: drivers < rules < controller < api.

A test walks every import statement (also those inside functions) with ``ast``,
so a shortcut from a lower layer into a higher one fails here instead of
tangling the house again (see docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Package -> the top-level packages it must not import.
FORBIDDEN = {
    "drivers": {"rules", "controller", "api", "simulators", "bench", "tests"},
    "rules": {"controller", "api", "simulators", "bench", "tests"},
    "controller": {"api", "simulators", "bench", "tests"},
    "api": {"bench", "tests"},
    "simulators": {"api", "bench", "tests"},
}
#: Simulators read the site's config (to know which devices to play), never its services.
SIMULATORS_MAY_USE = {"controller.config", "controller.device_config"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, with the line of the import."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layer_violations(package: str) -> list[str]:
    """``file:line imports module`` for each import that goes up from ``package``."""
    bad: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top == "controller" and package == "simulators":
                if module not in SIMULATORS_MAY_USE:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_goes_up_a_layer(package: str) -> None:
    assert layer_violations(package) == []


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The check itself must catch a lazy import, the usual way round a layer.
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from controller.poller import Poller\n    return Poller\n")
    assert imported_modules(sneaky) == [(2, "controller.poller")]


#: Protocol modules the neutral poller may name: the link type its targets share.
POLLER_MAY_USE = {"drivers.modbus.links"}


def test_the_poller_reads_through_the_pull_interface_not_a_protocol() -> None:
    """The poller knows when to read; which protocol and how is each pull reader's."""
    protocols = ("drivers.modbus", "drivers.dlt645", "drivers.sl651", "drivers.mqtt_json")
    named = [
        f"controller/poller.py:{line}: {module}"
        for line, module in imported_modules(ROOT / "controller" / "poller.py")
        if module.startswith(protocols) and module not in POLLER_MAY_USE
    ]
    assert named == []
