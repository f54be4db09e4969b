"""Errors that a person has to act on: bad configuration or profiles, and link failures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError


class ConfigError(Exception):
    """A configuration or profile file is wrong: names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


def _describe_location(loc: Sequence[int | str], raw: Any) -> str:
    """Turn a pydantic location into ``points[3] (voltage_a).type``.

    Where the path passes a list item that has a ``name`` or ``id``, that name is
    added, because a person looks for ``voltage_a`` in the file, not for item 3.
    """
    parts: list[str] = []
    node: Any = raw
    for element in loc:
        if isinstance(element, int):
            label = f"[{element}]"
            if isinstance(node, list) and 0 <= element < len(node):
                node = node[element]
                if isinstance(node, dict):
                    name = node.get("id", node.get("name"))
                    if isinstance(name, str | int):
                        label += f" ({name})"
            else:
                node = None
            parts.append(label)
        elif isinstance(node, dict) and element not in node and node.get("kind") == element:
            continue  # the tag pydantic adds for a union member chosen by `kind`
        else:
            parts.append(("." if parts else "") + element)
            node = node.get(element) if isinstance(node, dict) else None
    return "".join(parts)


def format_validation_error(exc: ValidationError, raw: Any) -> tuple[str, str]:
    """The key and reason of the first error pydantic found, in the file's own terms."""
    first = exc.errors()[0]
    loc = [part for part in first["loc"] if not (isinstance(part, str) and "[" in part)]
    key = _describe_location(loc, raw)
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown key (check the spelling)"
    elif first["type"] == "missing":
        reason = "required key is missing"
    extra = len(exc.errors()) - 1
    if extra:
        reason += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return key, reason


class LinkError(Exception):
    """A request on a link did not give a usable answer."""

    kind = "error"


class LinkTimeout(LinkError):
    """No answer within the timeout."""

    kind = "timeout"


class LinkGarbled(LinkError):
    """Bytes came back but no valid frame (bad CRC, wrong length)."""

    kind = "garbled"


class LinkDown(LinkError):
    """The link is not connected and its next reconnect attempt is not yet due."""

    kind = "link_down"


class DeviceException(LinkError):
    """The device answered with a Modbus exception code."""

    kind = "exception"

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        super().__init__(message or f"Modbus exception code {code}")
