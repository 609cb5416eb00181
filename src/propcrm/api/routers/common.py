"""What the lifecycle, payout and scaling routers share: the id path parameter, the documented error
answers, and a refusal as a 409 with what is allowed instead."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from fastapi.responses import JSONResponse

from ...services.lifecycle import Refusal
from ..auth import ErrorOut
from .accounts import MAX_ID

Id = Annotated[int, Path(ge=1, le=MAX_ID)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "not logged in"},
    403: {"model": ErrorOut, "description": "the user's role may not do this"},
    404: {"model": ErrorOut, "description": "not found in the user's firm (or, for a trader, not theirs)"},
    409: {"model": ErrorOut, "description": "refused: the reason (and what is allowed instead)"},
    422: {"model": ErrorOut, "description": "a bad parameter or body (the field is named)"},
}


def refused(refusal: Refusal) -> JSONResponse:
    """A refusal as data: 409 with the reason and what is allowed instead."""
    return JSONResponse({"error": refusal.reason, "allowed": refusal.allowed}, status_code=409)
