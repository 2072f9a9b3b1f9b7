"""The client's errors: one root, and a bounded ``reason`` on each for metrics and logs.

Callers never put an error's free text into a label; they use ``reason``, which is one of
``REASONS``. Messages never contain the token: it is sent in a header and no URL carries it.
"""

from __future__ import annotations

from pathlib import Path

REASONS = (
    "auth",
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connection",
    "invalid_response",
    "token_file",
)
# A poll can also fail on a bug of the exporter's own; the loop survives it.
POLL_REASONS = (*REASONS, "internal")


class EvoticError(Exception):
    """Root of every error the exporter raises while talking to the API."""

    reason = "connection"


class ApiConnectionError(EvoticError):
    """The request never got an answer: DNS, refused connection, reset, TLS failure.

    ``endpoint`` is the API endpoint asked; ``cause`` says in words why no answer came
    (``connection refused``, ``host name not resolved (…)``, ``TLS certificate not trusted: …``),
    never with a URL, so neither the token nor a query string can be part of it.
    """

    reason = "connection"

    def __init__(self, endpoint: str, cause: str) -> None:
        super().__init__(f"{endpoint}: {cause}")
        self.endpoint = endpoint
        self.cause = cause


class ApiTimeoutError(ApiConnectionError):
    """No answer within the request timeout."""

    reason = "timeout"


class ApiStatusError(EvoticError):
    """The API answered with a status other than 200."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code

    @property
    def reason(self) -> str:  # type: ignore[override]
        if self.status_code in (401, 403):
            return "auth"
        if self.status_code == 429:
            return "rate_limited"
        if self.status_code >= 500:
            return "server_error"
        return "client_error"


class RateLimitedError(ApiStatusError):
    """429, or a request held back because a previous 429 asked to wait ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, 429)
        self.retry_after = retry_after


class InvalidResponseError(EvoticError):
    """A 200 whose body is not a listing we can trust, or a redirect we refuse to follow."""

    reason = "invalid_response"


class TokenFileError(EvoticError):
    """The token file could not be read, or holds no token; ``problem`` says which."""

    reason = "token_file"

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem
