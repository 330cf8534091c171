"""Results of finished jobs, as JSON or (for curves) CSV."""
from __future__ import annotations

import csv
import io
import re

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy import exists, or_, select
from sqlalchemy.engine import Connection

from .. import visibility
from ..auth import Principal, current_user
from ..db import read
from ..errors import Invalid, NotFound
from ..models import Job, Result
from ..schemas import ResultId, ResultOut, json_response

router = APIRouter(prefix="/results", tags=["results"])


NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?", re.IGNORECASE)


PIECE = re.compile(r"(^|[,;\t])( *)([^,;\t]*)")


def _neutral_piece(m: re.Match) -> str:
    sep, space, piece = m.groups()
    if piece[:1] in ("=", "+", "-", "@", "\r") and not NUMBER.fullmatch(piece):
        return f"{sep}{space}'{piece}"
    return m.group(0)


def csv_cell(value):
    """A CSV cell a spreadsheet will not run (names in results are other users' text): each piece of a
    text cell between separators (, ; tab: a spreadsheet may split at a separator this file does not use)
    that would start a formula (= + - @, tab or CR) gets a leading ' ; text cells are quoted by the
    writer, numbers stay numbers. The dashboard's exports do the same (frontend/js/util.js: csvCell)."""
    if not isinstance(value, str):
        return value
    value = PIECE.sub(_neutral_piece, value)
    return "'" + value if value[:1] in ("\t", "\r") else value


def curves_csv(data: dict) -> str:
    """The equal-length lists of a result (t, train_error, ...) as CSV columns."""
    columns = {k: v for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)}
    if not columns:
        raise Invalid("this result has no curves to export as CSV; use format=json")
    n = max(len(v) for v in columns.values())
    columns = {k: v for k, v in columns.items() if len(v) == n}
    if "t" in columns:  # the position along a path first
        columns = {"t": columns.pop("t"), **columns}
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC)  # every text cell quoted
    writer.writerow([csv_cell(k) for k in columns])
    for i in range(n):
        writer.writerow([csv_cell(columns[k][i]) for k in columns])
    return out.getvalue()


def readable_result(conn: Connection, result_id: int, user: Principal):
    """The result row, or None when it does not exist or no job that produced or reused it is
    readable by ``user`` (a result is as visible as the most visible of its jobs), or it names a network
    ``user`` may not read."""
    jobs, results = Job.__table__, Result.__table__
    through = select(jobs.c.inputs).where(jobs.c.result_id == result_id)
    if not user.is_admin:
        through = through.where(or_(jobs.c.visibility == "lab", jobs.c.owner == user.name))
    row = conn.execute(select(results).where(results.c.id == result_id, exists(through))).first()
    if row is None or user.is_admin:
        return row
    inputs = [list(i or []) for i in conn.scalars(through)]
    return row if visibility.result_readable(conn, user, row.kind, row.data, inputs) else None


@router.get("/{result_id}", response_model=ResultOut)
async def read_result(result_id: ResultId, format: str = Query("json", pattern="^(json|csv)$"),
                      user: Principal = Depends(current_user)) -> Response:
    row = await read(readable_result, result_id, user)
    if row is None:
        raise NotFound(f"result {result_id} does not exist")
    if format == "csv":
        return Response(curves_csv(row.data), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="result-{result_id}.csv"'})
    return json_response(ResultOut, row)
