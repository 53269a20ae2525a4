"""SQLAlchemy's errors become the tree's `StoreUnavailable`, at the adapter's edge."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from meshca.errors import StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def unavailable(what: str, exc: SQLAlchemyError) -> StoreUnavailable:
    """One line naming the store and the driver's complaint, without the statement."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    return StoreUnavailable(f"{what}: the database did not answer: {first}")


def translated(what: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate an adapter method: SQLAlchemyError out of it is StoreUnavailable."""
    def wrap(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return method(*args, **kwargs)
            except SQLAlchemyError as exc:
                raise unavailable(what, exc) from exc
        return call
    return wrap


# The admin adapters' spelling: `@store_call` on a method.
store_call = translated("admin store")
