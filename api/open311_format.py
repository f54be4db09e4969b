"""GeoReport v2 answers in its two formats: JSON, and XML with the spec's element names.

The routes build plain lists of mappings (the spec's fields); this module
writes them as ``application/json`` or as ``text/xml``:
``<services><service>..``, ``<service_requests><request>..``,
``<service_definition>..<attributes><attribute>..``, ``<errors><error>..``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from xml.etree import ElementTree as ET

from fastapi.responses import Response

Format = Literal["json", "xml"]

#: The root element and the element of each item, per kind of answer.
_XML_NAMES = {
    "services": ("services", "service"),
    "requests": ("service_requests", "request"),
    "errors": ("errors", "error"),
}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _element(parent: ET.Element, name: str, value: Any) -> None:
    child = ET.SubElement(parent, name)
    if isinstance(value, Mapping):
        for k, v in value.items():
            _element(child, k, v)
    elif isinstance(value, list):
        # A list inside an item (a definition's attributes, an attribute's values).
        item = name[:-1] if name.endswith("s") else "item"
        for v in value:
            _element(child, item, v)
    else:
        child.text = _text(value)


def xml_document(
    root: str, item: str | None, body: Sequence[Mapping[str, Any]] | Mapping[str, Any]
) -> bytes:
    """``<root><item>..</item>..</root>``, or ``<root>..</root>`` for one mapping."""
    top = ET.Element(root)
    if isinstance(body, Mapping):
        for k, v in body.items():
            _element(top, k, v)
    else:
        assert item is not None
        for entry in body:
            node = ET.SubElement(top, item)
            for k, v in entry.items():
                _element(node, k, v)
    return bytes(ET.tostring(top, encoding="utf-8", xml_declaration=True))


def answer(
    fmt: Format,
    kind: str,
    body: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    status: int = 200,
) -> Response:
    """The answer in the asked format."""
    if fmt == "xml":
        if kind == "definition":
            content = xml_document("service_definition", None, body)
        else:
            root, item = _XML_NAMES[kind]
            content = xml_document(root, item, body)
        return Response(content, status_code=status, media_type="text/xml; charset=utf-8")
    return Response(
        json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status_code=status,
        media_type="application/json",
    )


def error(fmt: Format, status: int, description: str) -> Response:
    """A GeoReport error: ``[{"code", "description"}]`` or ``<errors><error>..``."""
    return answer(fmt, "errors", [{"code": status, "description": description[:300]}], status)


def format_of(path: str) -> Format:
    """The format a GeoReport path asks for (its extension; JSON when none)."""
    return "xml" if path.endswith(".xml") else "json"
