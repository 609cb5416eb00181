"""Reading a signed request (platform event batches, provider webhooks): the signature headers and a
body read up to a limit. What the signature is and how it is checked is :mod:`propcrm.services.apikeys`;
each route answers a refusal in its own words."""

from __future__ import annotations

from fastapi import Request

from ..services.apikeys import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

SIGNED_HEADERS = (KEY_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)


def signature_headers(request: Request) -> tuple[dict[str, str | None], list[str]]:
    """The key id, timestamp and signature headers of ``request``, and the names of those missing or empty."""
    headers = {name: request.headers.get(name) for name in SIGNED_HEADERS}
    return headers, [name for name, value in headers.items() if not value]


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, read as it streams in, or ``None`` as soon as it is longer than ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


__all__ = ["SIGNED_HEADERS", "read_body", "signature_headers"]
