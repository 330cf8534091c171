"""Health and catalogues: what can be built, loaded and trained."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import text
from sqlalchemy.orm import Session

from workers.landscape import SCIENCE_VERSION, data, nets, train

from ..db import get_db

router = APIRouter(tags=["meta"])


@router.get("/health")
def health(db: Session = Depends(get_db)) -> dict:
    db.execute(text("SELECT 1"))
    return {"status": "ok", "science_version": SCIENCE_VERSION}


@router.get("/architectures")
def architectures() -> list[dict]:
    return [{"kind": kind, **info} for kind, info in nets.ARCHITECTURES.items()]


@router.get("/datasets")
def datasets() -> list[dict]:
    return data.list_datasets()


@router.get("/optimizers")
def optimizers() -> list[dict]:
    return [{"name": name, **info} for name, info in train.OPTIMIZERS.items()]
