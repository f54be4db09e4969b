"""Bulk import of poles from CSV or GeoJSON, with a report of every rejected row.

Pure: bytes in, accepted assets and rejected rows out. A row is rejected with
its number and the reason (a bad value, a duplicate pole id, a cabinet that is
not installed); the good rows are kept, so one typo does not cost a whole
district's survey.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from controller.assets.model import AssetInvalid, PoleAsset, check_against_site
from controller.registry import Registry
from drivers.errors import Invalid, PeopleMessage


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not imported: where it is and why."""

    row: int
    pole_id: str
    reason: str
    #: The reason in the catalogue's words (``reject.*``), for the console.
    message: PeopleMessage


@dataclass
class ImportReport:
    """What an import accepted and rejected."""

    accepted: list[PoleAsset] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)


class ImportFormatError(Invalid, ValueError):
    """The file as a whole cannot be read (not CSV with a header, not GeoJSON)."""


def _reason(exc: ValidationError) -> tuple[str, PeopleMessage]:
    parts, columns = [], []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "row"
        parts.append(f"{where}: {error['msg']}")
        columns.append(where)
    # pydantic's own words are English: people are told which columns, in theirs.
    return "; ".join(parts), PeopleMessage(
        "reject.invalid_columns", {"columns": ", ".join(columns)}
    )


def _rejected(row: int, pole_id: str, reason: str, key: str) -> RejectedRow:
    return RejectedRow(row, pole_id, reason, PeopleMessage(key))


def _take(
    report: ImportReport, seen: set[str], registry: Registry, row: int, raw: dict[str, Any]
) -> None:
    pole_id = str(raw.get("pole_id", "") or "")
    try:
        asset = PoleAsset.model_validate(raw)
        check_against_site(asset, registry)
    except ValidationError as exc:
        report.rejected.append(RejectedRow(row, pole_id, *_reason(exc)))
        return
    except AssetInvalid as exc:
        assert exc.message is not None  # every check against the site words its refusal
        report.rejected.append(RejectedRow(row, pole_id, str(exc), exc.message))
        return
    if asset.pole_id in seen:
        report.rejected.append(
            _rejected(row, pole_id, "pole_id: repeats an earlier row", "reject.repeated_pole")
        )
        return
    seen.add(asset.pole_id)
    report.accepted.append(asset)


def _text(data: bytes) -> str:
    # Survey sheets come out of Excel: UTF-8 with a BOM, or GB18030 on older installs.
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(
            f"the file is neither UTF-8 nor GB18030 (a bad byte at {exc.start})",
            PeopleMessage("refusal.import_encoding"),
        ) from exc


def parse_csv(data: bytes, registry: Registry) -> ImportReport:
    """Rows of a CSV with a header (column names as PoleAsset fields); row 1 is the header."""
    reader = csv.DictReader(io.StringIO(_text(data)))
    try:
        fields = reader.fieldnames
    except csv.Error as exc:
        raise ImportFormatError(f"not CSV: {exc}", PeopleMessage("refusal.import_not_csv")) from exc
    if not fields or "pole_id" not in fields:
        raise ImportFormatError(
            "CSV needs a header row with at least pole_id", PeopleMessage("refusal.import_header")
        )
    report = ImportReport()
    seen: set[str] = set()
    try:
        _take_rows(reader, report, seen, registry)
    except csv.Error as exc:
        # A cell over the csv module's field limit (128 KiB) or a broken quote.
        raise ImportFormatError(
            f"CSV row {reader.line_num}: {exc}",
            PeopleMessage("refusal.import_csv_row", {"row": reader.line_num}),
        ) from exc
    return report


def _take_rows(
    reader: csv.DictReader[str], report: ImportReport, seen: set[str], registry: Registry
) -> None:
    for row in reader:
        line = reader.line_num
        if None in row:
            report.rejected.append(
                _rejected(
                    line,
                    row.get("pole_id") or "",
                    "more cells than header columns",
                    "reject.extra_cells",
                )
            )
            continue
        cells = {k.strip(): v.strip() for k, v in row.items() if k and v is not None}
        if not any(cells.values()):
            continue  # blank line
        _take(report, seen, registry, line, cells)


def parse_geojson(data: bytes, registry: Registry) -> ImportReport:
    """Point features of a FeatureCollection; a row is the feature's 1-based position."""
    try:
        doc = json.loads(_text(data))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(
            f"not JSON: {exc}", PeopleMessage("refusal.import_not_json")
        ) from exc
    except (RecursionError, ValueError) as exc:
        # Nested deeper than the parser goes, or a number of thousands of digits.
        raise ImportFormatError(
            f"JSON too deep or a number too long: {str(exc)[:80]}",
            PeopleMessage("refusal.import_not_json"),
        ) from exc
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ImportFormatError(
            "GeoJSON must be a FeatureCollection", PeopleMessage("refusal.import_not_collection")
        )
    features = doc.get("features")
    if not isinstance(features, list):
        raise ImportFormatError(
            "FeatureCollection has no features list",
            PeopleMessage("refusal.import_not_collection"),
        )
    report = ImportReport()
    seen: set[str] = set()
    for i, feature in enumerate(features, start=1):
        props = feature.get("properties") if isinstance(feature, dict) else None
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(props, dict):
            report.rejected.append(
                _rejected(i, "", "feature has no properties", "reject.no_properties")
            )
            continue
        pole_id = str(props.get("pole_id", ""))
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        if (
            not isinstance(geometry, dict)
            or geometry.get("type") != "Point"
            or not isinstance(coords, list)
            or len(coords) < 2
        ):
            report.rejected.append(
                _rejected(i, pole_id, "geometry must be a Point [lon, lat]", "reject.not_point")
            )
            continue
        # GeoJSON orders coordinates longitude first.
        _take(report, seen, registry, i, {**props, "lon": coords[0], "lat": coords[1]})
    return report
