"""The one exception for mistakes a user can fix, and how its message is told."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class GrokkingError(Exception):
    """A mistake the user can fix; every command prints it as one line on stderr and exits with code 2."""


def pick(options: Mapping[str, T], name: str, what: str) -> T:
    """`options[name]`, or a GrokkingError listing the valid names (`what`: e.g. "preset", "--arch")."""
    try:
        return options[name]
    except KeyError:
        raise GrokkingError(f"unknown {what} {name!r}; choose one of {', '.join(options)}") from None


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (torch and pickle errors run to many lines), or its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def naming(name: str) -> Iterator[None]:
    """Let an OSError raised inside that names no file name `name`: a failed write or fsync (a full disk,
    a closed pipe) names none, and the one-line message must say which file, or stream, failed."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = name
        raise
