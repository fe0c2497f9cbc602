"""The sandbox's one error type, rendered per protocol (OpenAI shape for now)."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the sandbox answers with an HTTP error instead of a completion."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def simulated_status(status: int, retry_after: int | None = None) -> ApiError:
    """The error `[sim:status=CODE]` asks for, typed the way OpenAI types that status.
    A 429 carries `[sim:retry-after=N]` as the providers send it (a header)."""
    message = f"sandbox: simulated HTTP {status}"
    if status == 429:
        return ApiError(
            status,
            message,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            retry_after=retry_after,
        )
    if status == 401:
        return ApiError(status, message, code="invalid_api_key")
    if status >= 500:
        return ApiError(status, message, type="server_error")
    return ApiError(status, message)


def simulated_failure() -> ApiError:
    return ApiError(500, "sandbox: simulated upstream failure", type="server_error")


def error_headers(err: ApiError) -> dict[str, str]:
    """Headers an error answer carries: Retry-After on a 429 that asks for a wait
    (OpenAI and Anthropic send it; so does Ark)."""
    return {"Retry-After": str(err.retry_after)} if err.retry_after is not None else {}


def openai_error_body(err: ApiError) -> dict[str, Any]:
    return {
        "error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    }


# Ark (BytePlus ModelArk / Volcengine) answers errors as
# {"error": {"code": "InvalidParameter", "message", "param", "type": "BadRequest"}}.
_ARK_TYPES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
_ARK_CODES = {
    400: "InvalidParameter",
    401: "AuthenticationError",
    403: "AccessDenied",
    404: "ResourceNotFound",
    429: "RateLimitExceeded",
}


def ark_error_body(err: ApiError) -> dict[str, Any]:
    # Our own validation errors already carry Ark codes (CamelCase); others get the
    # code Ark uses for that status.
    code = err.code if err.code and err.code[:1].isupper() else None
    if err.status >= 500:
        kind, default = "InternalServiceError", "InternalServiceError"
    elif err.status == 429:
        kind, default = "TooManyRequests", _ARK_CODES[429]
    else:
        kind = _ARK_TYPES.get(err.status, "BadRequest")
        default = _ARK_CODES.get(err.status, "InvalidParameter")
    return {
        "error": {"code": code or default, "message": err.message, "param": err.param, "type": kind}
    }
