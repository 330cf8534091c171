"""Results of finished jobs, as JSON or (for curves) CSV."""
from __future__ import annotations

import csv
import io

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from sqlalchemy.orm import Session

from sqlalchemy import select

from ..auth import Principal, current_user
from ..db import get_db
from ..models import Job, Result
from ..schemas import ResultId, ResultOut

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


@router.get("/{result_id}", response_model=ResultOut)
def read_result(result_id: ResultId, format: str = Query("json", pattern="^(json|csv)$"), db: Session = Depends(get_db),
                user: Principal = Depends(current_user)):
    row = db.get(Result, result_id)
    # a result is readable through any job that produced or reused it and that the asker may read
    readable = row is not None and any(user.can_read(j) for j in db.scalars(select(Job).where(Job.result_id == result_id)))
    if not readable:
        raise HTTPException(404, f"result {result_id} does not exist")
    if format == "csv":
        return Response(curves_csv(row.data), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="result-{result_id}.csv"'})
    return ResultOut(id=row.id, kind=row.kind, data=row.data, created_at=row.created_at)
