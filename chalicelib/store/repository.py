"""Tenant-scoped reads and compare-and-set status writes shared by every resource."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from chalicelib.domain.states import StateMachine, transition
from chalicelib.errors import InvalidTransition, NotFoundError, StaleStateError
from chalicelib.store.models import Base

RowT = TypeVar("RowT", bound=Base)


@cache
def _owned_query(model: type[Base]) -> Select[Any]:
    """Built once per model: SQLAlchemy then reuses the compiled statement from its cache."""
    return select(model).where(
        model.id == bindparam("row_id"),  # type: ignore[attr-defined]
        model.appkey == bindparam("appkey"),  # type: ignore[attr-defined]
    )


def get_owned(session: Session, model: type[RowT], appkey: str, row_id: str, label: str) -> RowT:
    """The row with ``row_id`` in tenant ``appkey``; another tenant's row is simply not found."""
    row = session.scalars(_owned_query(model), {"row_id": row_id, "appkey": appkey}).one_or_none()
    if row is None:
        raise NotFoundError(f"{label} {row_id[:64]} not found")
    return row  # type: ignore[no-any-return]


def page(
    session: Session, query: Select[Any], page_number: int, limit: int, *, entities: bool = True
) -> tuple[Sequence[Any], int]:
    """One page of ``query`` and the total number of rows it matches.

    The total rides along as a window count in the same statement; only a page past the end
    (no rows to carry it) needs a separate COUNT. With ``entities`` the first column of each
    row (an ORM object) is returned, otherwise the rows themselves (columns by name).
    """
    counted = query.add_columns(func.count().over().label("total_count"))
    rows = session.execute(counted.offset((page_number - 1) * limit).limit(limit)).all()
    if rows:
        return [row[0] for row in rows] if entities else rows, int(rows[0][-1])
    if page_number == 1:
        return [], 0
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    return [], int(total or 0)


def set_status(
    session: Session,
    row: Any,
    machine: StateMachine[Any],
    target: str,
    *,
    reason: str | None = None,
    **values: Any,
) -> None:
    """Move ``row`` to ``target`` as a compare-and-set on its current status and version.

    Raises ``InvalidTransition`` when the table forbids it and ``StaleStateError`` when
    another writer changed the row first (nothing is written then).
    """
    target_status = transition(machine, row.status, target)
    model, row_id = type(row), row.id  # row.id of an expired, deleted row would raise
    result = session.execute(
        update(model)
        .where(
            model.id == row_id,
            model.version == row.version,
            model.status.in_([str(s) for s in machine.allowed_from(target_status)]),
        )
        .values(
            status=str(target_status), status_reason=reason, version=model.version + 1, **values
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.expire(row)
        current = session.get(model, row_id)
        if current is None:
            raise NotFoundError(f"{machine.resource} {row_id} not found")
        if not machine.can(current.status, target_status):
            raise InvalidTransition(machine.resource, current.status, str(target_status))
        raise StaleStateError(f"{machine.resource} {row_id} changed concurrently; retry")
    session.expire(row)
