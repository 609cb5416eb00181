"""Routes of the cases feature (filled in by its issue)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["cases"])
routers: tuple[APIRouter, ...] = (router,)
