"""Photos attached to a case: the disposal's proof (处置照片) and inspectors' pictures.

Kept in the case database (one place for a case and all it carries); the case's
``media`` lists a link to each, which is what the city platform's exchange sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from controller.cases.db import CaseRow, PhotoRow
from controller.cases.requests import no_case
from controller.cases.stages import Stage
from controller.state.database import StateDatabase
from drivers.errors import Conflict, Invalid, NotFound, PeopleMessage

#: What a phone camera sends, recognised by the file's first bytes (not by what it claims).
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"WEBP", 8, "image/webp"),
)
MAX_PHOTO_BYTES = 8 * 1024 * 1024


def image_type(data: bytes) -> str | None:
    """The image type of ``data`` by its signature, or None if it is no photo we keep."""
    for signature, at, kind in _SIGNATURES:
        if data[at : at + len(signature)] == signature and (at == 0 or data[:4] == b"RIFF"):
            return kind
    return None


@dataclass(frozen=True)
class CasePhoto:
    """A stored photo and its bytes."""

    id: int
    case_id: int
    at: float
    actor: str
    stage: str
    content_type: str
    data: bytes

    @property
    def url(self) -> str:
        """Where the API serves it (the link kept in the case's media)."""
        return photo_url(self.case_id, self.id)


def photo_url(case_id: int, photo_id: int) -> str:
    """The API path of a case's photo."""
    return f"/cases/{case_id}/photos/{photo_id}"


class CasePhotos:
    """Attaches photos to open cases and reads them back."""

    def __init__(self, db: StateDatabase, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def attach(self, case_id: int, data: bytes, actor: str) -> CasePhoto:
        """Store a photo on an open case and list its link in the case's media."""
        if len(data) > MAX_PHOTO_BYTES:
            megabytes = MAX_PHOTO_BYTES // 2**20
            raise Invalid(
                f"photo larger than {megabytes} MB",
                PeopleMessage("refusal.photo_too_large", {"mb": megabytes}),
            )
        kind = image_type(data)
        if kind is None:
            raise Invalid("not a JPEG, PNG or WebP photo", PeopleMessage("refusal.not_a_photo"))
        async with self.db.session() as session:
            case = await session.get(CaseRow, case_id)
            if case is None:
                raise NotFound(f"no case {case_id}", no_case(case_id))
            if not Stage(case.stage).open:
                raise Conflict(
                    f"case {case_id} is {case.stage}: no more photos",
                    PeopleMessage("refusal.photo_stage", {"case": case_id, "stage": case.stage}),
                )
            now = self.clock()
            row = PhotoRow(
                case_id=case_id, at=now, actor=actor, stage=case.stage, content_type=kind, data=data
            )
            session.add(row)
            await session.flush()
            case.media = [*case.media, photo_url(case_id, row.id)]
            case.updated_at = now
            await session.commit()
            return _photo(row)

    async def get(self, case_id: int, photo_id: int) -> CasePhoto:
        """One photo of a case."""
        async with self.db.session() as session:
            row = (
                await session.execute(
                    select(PhotoRow).where(PhotoRow.id == photo_id, PhotoRow.case_id == case_id)
                )
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(
                    f"no photo {photo_id} on case {case_id}",
                    PeopleMessage("refusal.no_photo", {"photo": photo_id, "case": case_id}),
                )
            return _photo(row)


def _photo(row: PhotoRow) -> CasePhoto:
    return CasePhoto(
        row.id, row.case_id, row.at, row.actor, row.stage, row.content_type, bytes(row.data)
    )
