"""Typed errors raised by service functions; the API maps each to one status code and body."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    type: str = "body"  # where the problem is: body, query or path


class HeronError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(HeronError):
    """Input that fails validation; names the field(s)."""

    status_code = 400

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    @classmethod
    def field(cls, field: str, message: str, where: str = "body") -> InvalidInput:
        return cls(f"{field}: {message}", [FieldError(field, message, where)])


class NotAuthenticated(HeronError):
    status_code = 401


class Forbidden(HeronError):
    status_code = 403


class NotFound(HeronError):
    status_code = 404


class Conflict(HeronError):
    status_code = 409


class Unavailable(HeronError):
    """A part of Heron this request needs is not reachable (the caller may retry)."""

    status_code = 503


class RateLimited(HeronError):
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
