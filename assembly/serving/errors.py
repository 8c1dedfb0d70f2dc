"""OpenAI's error shape: APIError (raised anywhere in a request), its JSON body, and what a model's failure becomes."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse

from assembly.providers.types import ModelError

log = logging.getLogger("assembly.serve")  # the command's name, as before the split: logging configs keep working


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def api_error(exc: BaseException) -> APIError:
    """What the client is told about a model's failure (a bug: its type only, never the traceback)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ModelError):
        if exc.status in (400, 404, 413, 422):
            return APIError(400, f"the model rejected the request: {exc}", code=getattr(exc, "code", None))
        if exc.retryable:
            return APIError(503, f"the model is temporarily unavailable: {exc}", type="server_error",
                            headers={"Retry-After": "1"})
        return APIError(500, f"the model failed: {exc}", type="server_error")
    log.error("model failed", exc_info=exc)
    return APIError(500, f"the model failed: {type(exc).__name__}", type="server_error")
