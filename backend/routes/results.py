"""Results of finished jobs, as JSON or (for curves) CSV."""
from __future__ import annotations

import csv
import io

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from sqlalchemy import exists, or_, select
from sqlalchemy.engine import Connection

from ..auth import Principal, current_user
from ..db import read
from ..models import Job, Result
from ..schemas import ResultId, ResultOut, json_response

router = APIRouter(prefix="/results", tags=["results"])


def curves_csv(data: dict) -> str:
    """The equal-length lists of a result (t, train_error, ...) as CSV columns."""
    columns = {k: v for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)}
    if not columns:
        raise HTTPException(400, "this result has no curves to export as CSV; use format=json")
    n = max(len(v) for v in columns.values())
    columns = {k: v for k, v in columns.items() if len(v) == n}
    if "t" in columns:  # the position along a path first
        columns = {"t": columns.pop("t"), **columns}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(list(columns))
    for i in range(n):
        writer.writerow([columns[k][i] for k in columns])
    return out.getvalue()


def readable_result(conn: Connection, result_id: int, user: Principal):
    """The result row, or None when it does not exist or no job that produced or reused it is
    readable by ``user`` (a result is as visible as the most visible of its jobs)."""
    jobs, results = Job.__table__, Result.__table__
    through = select(jobs.c.id).where(jobs.c.result_id == result_id)
    if not user.is_admin:
        through = through.where(or_(jobs.c.visibility == "lab", jobs.c.owner == user.name))
    return conn.execute(select(results).where(results.c.id == result_id, exists(through))).first()


@router.get("/{result_id}", response_model=ResultOut)
async def read_result(result_id: ResultId, format: str = Query("json", pattern="^(json|csv)$"),
                      user: Principal = Depends(current_user)) -> Response:
    row = await read(readable_result, result_id, user)
    if row is None:
        raise HTTPException(404, f"result {result_id} does not exist")
    if format == "csv":
        return Response(curves_csv(row.data), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="result-{result_id}.csv"'})
    return json_response(ResultOut, row)
