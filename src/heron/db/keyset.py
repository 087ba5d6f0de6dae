"""Lists read newest first by (time, id): the window and keyset conditions they share (messages,
events). `after` is the (time, id) of the last row shown; ties in time are cut by id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

Position = tuple[datetime, int]


def newest_first_window(
    time: Any, row_id: Any, since: datetime | None, before: datetime | None, after: Position | None
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(time >= since)
    if before is not None:
        conds.append(time < before)
    if after is not None:
        conds.append(or_(time < after[0], and_(time == after[0], row_id < after[1])))
    return conds
