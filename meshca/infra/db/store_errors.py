"""SQLAlchemy's errors, translated where they happen into the error tree's StoreUnavailable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from meshca.errors import StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def store_call(method: Callable[P, T]) -> Callable[P, T]:
    """A database call whose driver errors are StoreUnavailable (503 to an admin, retryable).
    Errors the method itself raises (NotFound, Conflict) pass through untouched."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"the database did not answer: {type(exc).__name__}") from exc

    return call
