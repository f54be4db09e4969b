"""The errors of streetsense: one root, the kinds a caller acts on, config and link errors.

Every error streetsense raises on purpose derives from :class:`StreetsenseError`.
Errors a person's request can meet are one of five kinds (:class:`NotFound`,
:class:`Conflict`, :class:`Invalid`, :class:`NeedsConfirmation`,
:class:`RateLimited`); a domain error names its kind by inheriting from it, and
the API maps the kind to an HTTP status in one place (``api/app.py``), so no
HTTP code lives below the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class PeopleMessage:
    """A refusal as the message catalogue words it: its key and its placeholders' values.

    The English ``reason`` stays for machines and logs; a console shows this in
    the reader's language (``refusal.*`` keys of ``controller/messages.json``).
    """

    key: str
    params: Mapping[str, str | int] = field(default_factory=dict)


class StreetsenseError(Exception):
    """The root of every error streetsense raises on purpose; ``reason`` is for people,
    and ``message``, where given, is the same in the catalogue's words."""

    def __init__(self, reason: str = "", message: PeopleMessage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


class NotFound(StreetsenseError):
    """What the request names does not exist."""


class Conflict(StreetsenseError):
    """The request does not fit the current state (an acknowledged alarm acknowledged again)."""


class Invalid(StreetsenseError):
    """The request itself is wrong (a value out of range, an unknown name)."""


class NeedsConfirmation(StreetsenseError):
    """The request would have a large effect: send it again confirmed."""


class RateLimited(StreetsenseError):
    """Too many requests; ``retry_after`` seconds until the next is taken."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class NotLeading(StreetsenseError):
    """This controller of a pair does not (or no longer) lead: it may not act on devices."""


class ConfigError(StreetsenseError):
    """A configuration or profile file is wrong: names the file, the key and the reason."""

    def __init__(self, file: str, key: str, reason: str, more: Sequence[ConfigError] = ()) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        #: Further problems of the same file: a person fixes them all in one go.
        self.more = list(more)
        lines = [
            self._line(file, key, reason),
            *(self._line(m.file, m.key, m.reason) for m in more),
        ]
        Exception.__init__(self, "\n".join(lines))

    @staticmethod
    def _line(file: str, key: str, reason: str) -> str:
        return f"{file}: {key}: {reason}" if key else f"{file}: {reason}"


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


def validation_problems(exc: ValidationError, raw: Any) -> list[tuple[str, str]]:
    """The key and reason of every error pydantic found, in the file's own terms."""
    found = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not (isinstance(part, str) and "[" in part)]
        key = _describe_location(loc, raw)
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown key (check the spelling)"
        elif error["type"] == "missing":
            reason = "required key is missing"
        if (key, reason) not in found:
            found.append((key, reason))
    return found


def invalid_file(file: str, exc: ValidationError, raw: Any) -> ConfigError:
    """A ConfigError naming every problem pydantic found in a file."""
    (key, reason), *more = validation_problems(exc, raw)
    return ConfigError(file, key, reason, [ConfigError(file, k, r) for k, r in more])


class LinkError(StreetsenseError):
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
