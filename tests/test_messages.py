"""The catalogue words every refusal the code gives people, with the placeholders it fills."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import ROOT

CATALOGUE = json.loads((ROOT / "controller" / "messages.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Worded:
    """One place the code words something for people: its key and the params it gives
    (None where they are not written out at the call)."""

    where: str
    key: str
    params: frozenset[str] | None


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _worded(path: Path) -> list[Worded]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if node.func.id == "PeopleMessage" and node.args:
            key = _literal(node.args[0])
            given = node.args[1] if len(node.args) > 1 else None
            params: frozenset[str] | None = frozenset()
            if isinstance(given, ast.Dict):
                names = [_literal(k) for k in given.keys]
                params = None if None in names else frozenset(n for n in names if n)
            elif given is not None:
                params = None
        elif node.func.id == "refused" and len(node.args) >= 3:
            key = _literal(node.args[2])
            params = frozenset(k.arg for k in node.keywords if k.arg and k.arg != "headers")
            if any(k.arg is None for k in node.keywords):
                params = None
        else:
            continue
        if key is not None:
            found.append(Worded(where, key, params))
    return found


def _placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_every_refusal_the_code_words_is_in_the_catalogue_with_the_params_it_gives() -> None:
    worded = [
        w
        for folder in ("api", "controller", "drivers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for w in _worded(path)
    ]
    refusals = {w.key for w in worded if w.key.startswith("refusal.")}
    assert len(refusals) >= 60, sorted(refusals)
    missing = sorted(f"{w.where} {w.key}" for w in worded if w.key not in CATALOGUE)
    assert not missing, missing
    # Each language's sentence uses only what the code fills in: a missing one would show
    # "{device}" to the person reading it.
    unfilled = sorted(
        f"{w.where} {w.key} {lang}: {sorted(_placeholders(text) - w.params)}"
        for w in worded
        if w.params is not None
        for lang, text in CATALOGUE[w.key].items()
        if _placeholders(text) - w.params
    )
    assert not unfilled, unfilled


def test_no_route_refuses_without_words_for_people() -> None:
    # Every refusal a route gives goes through api.errors.refused or a worded domain
    # error: a bare HTTPException would reach the console in English only.
    bare = sorted(
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "api").rglob("*.py")
        if path.name != "errors.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "HTTPException(" in line
    )
    assert not bare, bare
