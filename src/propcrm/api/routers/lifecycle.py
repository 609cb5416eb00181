"""Routes of the lifecycle feature (filled in by its issue)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["lifecycle"])
routers: tuple[APIRouter, ...] = (router,)
