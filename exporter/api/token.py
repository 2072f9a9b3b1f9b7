"""The bearer token: given once, or read from a file at the start of every poll."""

from __future__ import annotations

from pathlib import Path

from exporter.api.errors import TokenFileError
from exporter.runtime.logs import Redactor


class TokenProblem(ValueError):
    """A token that cannot be sent; the message says why and never holds the token."""


BEARER = "bearer "


def clean_token(raw: str) -> str:
    """The token with the white space around it removed, or ``TokenProblem``.

    A line break or another control character inside would make every request fail before it
    leaves (an HTTP header cannot hold it), which looks like a network fault; a character
    beyond ASCII cannot go in the header either. Both are refused where the token is read.
    """
    token = raw.strip()
    if not token:
        raise TokenProblem("is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        raise TokenProblem(
            "holds a line break or another control character inside the token; "
            "only white space around it is removed"
        )
    if not token.isascii():
        raise TokenProblem("holds a character beyond ASCII, which an HTTP header cannot carry")
    if token.lower().startswith(BEARER):
        raise TokenProblem(
            "starts with 'Bearer ': give the token alone, the exporter sends 'Bearer ' itself"
        )
    return token


def read_token_file(path: Path) -> str:
    """The token in ``path``, checked by ``clean_token``.

    Raises ``TokenFileError`` (reason ``token_file``, with ``path`` and ``problem``) if the file
    cannot be read or holds no usable token.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise TokenFileError(path, f"cannot read {path}: {reason}") from None
    try:
        return clean_token(raw)
    except TokenProblem as problem:
        raise TokenFileError(path, f"{path} {problem}") from None


class TokenSource:
    """The current token; ``refresh()`` re-reads the file so a rotated secret is used at once.

    Every token it hands out is added to the log redactor first.
    """

    def __init__(
        self,
        redactor: Redactor,
        token: str | None = None,
        path: Path | None = None,
        *,
        origin: str = "the configured token",
    ):
        if (token is None) == (path is None):
            raise ValueError("exactly one of token and path")
        self._redactor = redactor
        self._path = path
        # Where the token comes from, for an operator reading why the API refused it.
        self.origin = origin if path is None else f"the token file {path}, read again next poll"
        self._token = ""
        if token is not None:
            self._set(token)

    def _set(self, token: str) -> None:
        self._redactor.add(token)
        self._token = token

    def refresh(self) -> None:
        """Re-read the token file (nothing to do for a fixed token); ``TokenFileError`` if bad."""
        if self._path is not None:
            self._set(read_token_file(self._path))

    def __call__(self) -> str:
        return self._token
