"""Health and catalogues: what can be built, loaded and trained."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import text
from sqlalchemy.engine import Connection

from workers.landscape import SCIENCE_VERSION, data, kinds, nets, paths, train

from ..auth import Principal, current_user
from ..config import get_settings
from ..db import read

router = APIRouter(tags=["meta"])


def _ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


@router.get("/health")
async def health() -> dict:
    """The service answers and its database does (no token needed)."""
    await read(_ping)
    return {"status": "ok", "science_version": SCIENCE_VERSION}


@router.get("/architectures")
def architectures() -> list[dict]:
    """Every architecture with its parameters, an example spec, and whether its networks are binary."""
    return [{"kind": kind, **info, "binary": nets.is_binary({"kind": kind})} for kind, info in nets.ARCHITECTURES.items()]


@router.get("/datasets")
def datasets() -> list[dict]:
    return data.list_datasets(get_settings().dataset_root)


@router.get("/optimizers")
def optimizers() -> list[dict]:
    return [{"name": name, **info} for name, info in train.OPTIMIZERS.items()]


@router.get("/me")
async def me(request: Request, user: Principal = Depends(current_user)) -> dict:
    """Who the service takes the caller for, and whether it requires tokens."""
    return {"name": user.name, "is_admin": user.is_admin, "auth_required": bool(request.app.state.require_auth),
            "max_running_jobs": user.max_running_jobs, "max_stored_bytes": user.max_stored_bytes}


@router.get("/job-kinds")
def job_kinds() -> list[dict]:
    """Every job kind: its inputs (params holding network ids), its parameter table (type, default, bounds,
    choices, help, applies_to, when) and its queue; what the API accepts is exactly this."""
    return kinds.catalogue()


@router.get("/path-types", deprecated=True)
def path_types() -> list[dict]:
    """Path types of a path job, and whether they are for real-valued or binary networks (an alias of
    /api/job-kinds' path entry, kept for one release)."""
    out = [{"type": t, "description": d, "binary": t == "hamming"} for t, d in paths.PATH_TYPES.items()]
    out.append({"type": "bend", "binary": False,
                "description": "single-bend path: a trained midpoint joined to both ends (variant geodesic or garipov)"})
    return out
