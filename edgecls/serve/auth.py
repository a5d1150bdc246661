"""The API key: ``Authorization: Bearer KEY`` or the cookie ``edgecls_api_key`` (a browser's ``<img>`` MJPEG stream and
``EventSource`` cannot send headers), compared in constant time. The health routes do not use it."""

import hmac
from typing import Any, Callable

COOKIE = "edgecls_api_key"


class Unauthorized(Exception):
    """No key, or the wrong one (the app answers 401)."""


def presented_key(headers: Any, cookies: Any) -> str | None:
    """The key a request carries: the Bearer token, else the cookie."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return cookies.get(COOKIE) or None


def key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison (of the UTF-8 bytes, so any text compares without raising)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def require_key(api_key: str | None) -> Callable[..., None]:
    """A FastAPI dependency that raises :class:`Unauthorized` unless the request carries ``api_key`` (a no-op
    when ``api_key`` is None)."""
    from fastapi import Request
    from fastapi.security import HTTPBearer

    # Declared only so /openapi.json and /docs show the scheme; the check below is the one that counts.
    bearer = HTTPBearer(auto_error=False, description="the server's --api-key")

    # async: FastAPI runs a plain function dependency in a worker thread, a thread hop on every request
    async def check(request: Request, _: Any = _depends(bearer)) -> None:
        if api_key is None:
            return
        if not key_matches(presented_key(request.headers, request.cookies), api_key):
            raise Unauthorized()

    if api_key is None:
        async def open_check() -> None:
            return None

        return open_check
    return check


def _depends(dep: Any) -> Any:
    from fastapi import Depends

    return Depends(dep)
