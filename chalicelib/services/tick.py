"""The periodic reconciler: one ``tick()`` run by the scheduled trigger (Lambda, every
minute) and by the embedded platform (a background timer, every second).

Later resources append their reconcilers (schedules due, jobs vs. Ray) to ``RECONCILERS``.
Each one is level-triggered and idempotent: it reads what the database says, compares it with
the world, and moves statuses with compare-and-set, so a tick may die anywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from chalicelib.observability import logger
from chalicelib.services import endpoints, idempotency, models, monitoring, trainings, tunings
from chalicelib.store.db import Database, get_database

Reconciler = Callable[[Database], object]

RECONCILERS: dict[str, Reconciler] = {
    "idempotency_records": idempotency.purge_expired,
    "trainings": trainings.reconcile,
    "hyperparameter_tunings": tunings.reconcile,
    "optuna_studies": tunings.sweep_studies,
    "models": models.reconcile,
    "endpoint_stages": endpoints.reconcile,
    "training_zombies": monitoring.flag_zombies,
}


def tick(database: Database | None = None) -> dict[str, str]:
    """Run every reconciler once; one failing reconciler does not stop the others."""
    database = database or get_database()
    outcome: dict[str, str] = {}
    for name, reconcile in RECONCILERS.items():
        try:
            reconcile(database)
            outcome[name] = "ok"
        except Exception:  # noqa: BLE001 - logged with its stack, retried next tick
            logger.exception("reconciler failed", extra={"reconciler": name})
            outcome[name] = "error"
    return outcome
