"""The one message catalogue (controller/messages.json) for what people read.

The console reads it in the browser (served as ``/dashboard/messages.json``),
the reports and the case titles here: one vocabulary, so a fault has the same
name on the alarm list, in a case's title and in the daily report.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Literal

Lang = Literal["zh", "en"]
CATALOGUE_PATH = Path(__file__).parent / "messages.json"


class Catalogue:
    """Texts by key, in Simplified Chinese and English, with ``{name}`` placeholders."""

    def __init__(self, path: Path = CATALOGUE_PATH) -> None:
        raw: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
        self.entries = raw

    def text(self, key: str, lang: Lang, **values: object) -> str:
        """The text of ``key`` in ``lang`` with its placeholders filled (the key if absent)."""
        entry = self.entries.get(key)
        text = entry[lang] if entry else key
        for name, value in values.items():
            text = text.replace(f"{{{name}}}", str(value))
        return text

    def term(self, group: str, value: str, lang: Lang) -> str:
        """An API value's name (an alarm kind, a status), or the value itself if unnamed."""
        key = f"{group}.{value}"
        return self.text(key, lang) if key in self.entries else value


@cache
def catalogue() -> Catalogue:
    """The catalogue, read once."""
    return Catalogue()
