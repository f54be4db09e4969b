"""The fence of a pair's state database: PostgreSQL refusing a write of an older epoch.

Migration 0005 fences the audit log and 0006 the alarms and cases: a trigger compares the
row's epoch with the lease's and raises ``fenced: epoch ...``. Here that error
becomes :class:`NotLeading`, the one the rest of the controller knows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from drivers.errors import NotLeading, PeopleMessage


def refusal_of(exc: DBAPIError) -> NotLeading | None:
    """The fence's refusal in ``exc`` as NotLeading; None for any other database error."""
    if "fenced: epoch" not in str(exc.orig):
        return None
    return NotLeading(
        "this controller no longer leads its pair: "
        + str(exc.orig).splitlines()[0].removeprefix("fenced: "),
        PeopleMessage("refusal.not_leading"),
    )


@contextmanager
def fenced() -> Iterator[None]:
    """Database writes inside, with the fence's refusal raised as NotLeading."""
    try:
        yield
    except DBAPIError as exc:
        refused = refusal_of(exc)
        if refused is None:
            raise
        raise refused from None
