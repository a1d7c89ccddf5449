"""Status enums and transition tables of every OpenMaker resource.

Statuses are exactly those of the AI EasyMaker console guide's status tables (the Japanese
edition is the newest), on the wire in upper snake case: ``CREATE REQUESTED`` is
``CREATE_REQUESTED``, ``ACTIVE (HEALTHY)`` is ``ACTIVE_HEALTHY``. The one exception is the
schedule's ``ENABLED(EXPIRED)``, kept verbatim as the guide shows it. Personal images and
registry accounts have no table in the guide; they follow the model's create/delete pattern.

The guide lists statuses, not transitions; the tables below are what its descriptions imply:

* Jobs (training, tuning, batch inference, pipeline run): ``CREATE_REQUESTED ->
  CREATE_IN_PROGRESS -> RUNNING -> COMPLETE_IN_PROGRESS -> COMPLETE``; a user stop passes
  ``STOP_IN_PROGRESS`` to ``STOPPED``; a failure always passes the clean-up status
  ``FAIL_X_IN_PROGRESS`` before ``FAIL_X``, also while stopping or uploading outputs.
  ``COMPLETE``, ``STOPPED``, ``FAIL_X`` and ``CREATE_FAILED`` are terminal (the guide's answer
  is "copy", i.e. create a new job).
* Notebooks: stop/start/reboot each pass ``*_IN_PROGRESS`` and may end in ``*_FAILED``, which
  the guide says to retry, so failures are not terminal. Deleted rows are removed: no DELETED.
* Models, stage resources, images, registry accounts: deletion passes ``DELETE_IN_PROGRESS``;
  a ``DELETE_FAILED`` may be retried.
* Experiments: the guide's "retry" moves ``CREATE_FAILED`` back to ``CREATE_REQUESTED``; an
  experiment needing no provisioning may go straight from ``CREATE_REQUESTED`` to ``ACTIVE``.
* Endpoints: ``UPDATE_IN_PROGRESS`` while a stage has work going on, ``UPDATE_FAILED`` when a
  stage is broken; a ``CREATE_FAILED`` endpoint can only be deleted and created again.
* API Gateway stage status: ``STAGE_DEPLOY_FAIL`` and ``NOT_FOUND_STAGE_DEPLOY_RESULT`` recover
  by a manual stage deploy; ``NOT_FOUND_STAGE`` is terminal (a deleted stage cannot return).
* Schedules: ``ENABLED <-> DISABLED``; past its end time an enabled schedule is
  ``ENABLED(EXPIRED)``, which can still be disabled.

``terminal`` statuses are settled for good: nothing leaves them. A ``DELETE_IN_PROGRESS``
without ``DELETE_FAILED`` has no exit either, but is not terminal: it ends when the row is
removed. A same-status "transition" is never allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from chalicelib.errors import InvalidTransition

S = TypeVar("S", bound=StrEnum)


class NotebookStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    ACTIVE_HEALTHY = "ACTIVE_HEALTHY"
    ACTIVE_UNHEALTHY = "ACTIVE_UNHEALTHY"
    STOP_IN_PROGRESS = "STOP_IN_PROGRESS"
    STOPPED = "STOPPED"
    START_IN_PROGRESS = "START_IN_PROGRESS"
    REBOOT_IN_PROGRESS = "REBOOT_IN_PROGRESS"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    CREATE_FAILED = "CREATE_FAILED"
    STOP_FAILED = "STOP_FAILED"
    START_FAILED = "START_FAILED"
    REBOOT_FAILED = "REBOOT_FAILED"
    DELETE_FAILED = "DELETE_FAILED"


class ExperimentStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_FAILED = "CREATE_FAILED"
    ACTIVE = "ACTIVE"


class TrainingStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    COMPLETE = "COMPLETE"
    STOP_IN_PROGRESS = "STOP_IN_PROGRESS"
    FAIL_TRAIN = "FAIL_TRAIN"
    CREATE_FAILED = "CREATE_FAILED"
    FAIL_TRAIN_IN_PROGRESS = "FAIL_TRAIN_IN_PROGRESS"
    COMPLETE_IN_PROGRESS = "COMPLETE_IN_PROGRESS"


class HyperparameterTuningStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    COMPLETE = "COMPLETE"
    STOP_IN_PROGRESS = "STOP_IN_PROGRESS"
    FAIL_HYPERPARAMETER_TUNING = "FAIL_HYPERPARAMETER_TUNING"
    CREATE_FAILED = "CREATE_FAILED"
    FAIL_HYPERPARAMETER_TUNING_IN_PROGRESS = "FAIL_HYPERPARAMETER_TUNING_IN_PROGRESS"
    COMPLETE_IN_PROGRESS = "COMPLETE_IN_PROGRESS"


class TrialStatus(StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    KILLED = "KILLED"
    FAILED = "FAILED"
    METRICS_UNAVAILABLE = "METRICS_UNAVAILABLE"
    EARLY_STOPPED = "EARLY_STOPPED"


class ModelStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    ACTIVE = "ACTIVE"
    CREATE_FAILED = "CREATE_FAILED"
    DELETE_FAILED = "DELETE_FAILED"


class EndpointStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    ACTIVE = "ACTIVE"
    CREATE_FAILED = "CREATE_FAILED"
    UPDATE_FAILED = "UPDATE_FAILED"


class ApiGatewayStatus(StrEnum):
    """API Gateway deploy status of an endpoint stage (the guide's "NOT FOUND: STAGE" etc.)."""

    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    STAGE_DEPLOYING = "STAGE_DEPLOYING"
    ACTIVE = "ACTIVE"
    NOT_FOUND_STAGE = "NOT_FOUND_STAGE"
    NOT_FOUND_STAGE_DEPLOY_RESULT = "NOT_FOUND_STAGE_DEPLOY_RESULT"
    STAGE_DEPLOY_FAIL = "STAGE_DEPLOY_FAIL"


class EndpointStageStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    DEPLOY_IN_PROGRESS = "DEPLOY_IN_PROGRESS"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    ACTIVE = "ACTIVE"
    CREATE_FAILED = "CREATE_FAILED"
    DEPLOY_FAILED = "DEPLOY_FAILED"


class StageResourceStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    ACTIVE = "ACTIVE"
    CREATE_FAILED = "CREATE_FAILED"


class BatchInferenceStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    COMPLETE = "COMPLETE"
    STOP_IN_PROGRESS = "STOP_IN_PROGRESS"
    FAIL_BATCH_INFERENCE = "FAIL_BATCH_INFERENCE"
    CREATE_FAILED = "CREATE_FAILED"
    FAIL_BATCH_INFERENCE_IN_PROGRESS = "FAIL_BATCH_INFERENCE_IN_PROGRESS"
    COMPLETE_IN_PROGRESS = "COMPLETE_IN_PROGRESS"


class PipelineStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_FAILED = "CREATE_FAILED"
    ACTIVE = "ACTIVE"


class PipelineRunStatus(StrEnum):
    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_FAILED = "CREATE_FAILED"
    RUNNING = "RUNNING"
    COMPLETE_IN_PROGRESS = "COMPLETE_IN_PROGRESS"
    COMPLETE = "COMPLETE"
    STOP_IN_PROGRESS = "STOP_IN_PROGRESS"
    STOPPED = "STOPPED"
    FAIL_PIPELINE_RUN_IN_PROGRESS = "FAIL_PIPELINE_RUN_IN_PROGRESS"
    FAIL_PIPELINE_RUN = "FAIL_PIPELINE_RUN"


class PipelineScheduleStatus(StrEnum):
    """Status of a recurring pipeline run (pipeline schedule)."""

    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_FAILED = "CREATE_FAILED"
    ENABLED = "ENABLED"
    # Not upper snake case on purpose: the guide shows this wire value verbatim.
    ENABLED_EXPIRED = "ENABLED(EXPIRED)"
    DISABLED = "DISABLED"


class ImageStatus(StrEnum):
    """Personal image status (no table in the guide; follows the model's pattern)."""

    CREATE_REQUESTED = "CREATE_REQUESTED"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    ACTIVE = "ACTIVE"
    CREATE_FAILED = "CREATE_FAILED"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    DELETE_FAILED = "DELETE_FAILED"


class RegistryAccountStatus(StrEnum):
    """Registry account status (no table in the guide): created directly as ACTIVE."""

    ACTIVE = "ACTIVE"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    DELETE_FAILED = "DELETE_FAILED"


@dataclass(frozen=True)
class StateMachine(Generic[S]):
    """Allowed status changes of one resource; ``resource`` names it in error messages."""

    resource: str
    initial: S
    transitions: Mapping[S, frozenset[S]]
    terminal: frozenset[S]

    def __post_init__(self) -> None:
        members = set(self.statuses)
        if set(self.transitions) != members:
            raise ValueError(f"{self.resource}: transition table must list every status")
        for current, targets in self.transitions.items():
            if not targets <= members or current in targets:
                raise ValueError(f"{self.resource}: bad targets for {current}")
            if current in self.terminal and targets:
                raise ValueError(f"{self.resource}: terminal {current} has exits")
        if not self.terminal <= members:
            raise ValueError(f"{self.resource}: unknown terminal status")

    @property
    def statuses(self) -> tuple[S, ...]:
        """Every status of the resource, in declaration order."""
        return tuple(type(self.initial))

    def allowed_from(self, target: S) -> frozenset[S]:
        """Every status that may move to ``target`` (for compare-and-set updates)."""
        return frozenset(s for s, targets in self.transitions.items() if target in targets)

    def can(self, current: S, target: S) -> bool:
        return target in self.transitions.get(current, frozenset())

    def is_terminal(self, status: S) -> bool:
        return status in self.terminal

    def parse(self, value: S | str) -> S | None:
        """The status named by ``value``, or ``None`` when it is not one of this resource's."""
        try:
            return type(self.initial)(value)
        except ValueError:
            return None


def transition(machine: StateMachine[S], current: S | str, target: S | str) -> S:
    """Return ``target`` as a status; raise :class:`InvalidTransition` if it is not allowed."""
    old, new = machine.parse(current), machine.parse(target)
    if old is None or new is None or not machine.can(old, new):
        raise InvalidTransition(machine.resource, str(current), str(target))
    return new


def path(machine: StateMachine[S], current: S | str, target: S | str) -> list[S]:
    """The shortest chain of allowed transitions from ``current`` to ``target`` (excluding
    ``current``); raise :class:`InvalidTransition` when none exists.

    Runners report where a job *is* (RUNNING, COMPLETE); a report may overtake the
    dispatcher's own step (CREATE_IN_PROGRESS), so the store walks the allowed steps between.
    """
    old, new = machine.parse(current), machine.parse(target)
    if old is None or new is None:
        raise InvalidTransition(machine.resource, str(current), str(target))
    if old == new:
        return []
    previous: dict[S, S] = {}
    frontier = [old]
    while frontier:
        following: list[S] = []
        for status in frontier:
            for step in sorted(machine.transitions[status]):
                if step in previous or step == old:
                    continue
                previous[step] = status
                if step == new:
                    chain = [new]
                    while chain[-1] != old and previous[chain[-1]] != old:
                        chain.append(previous[chain[-1]])
                    return list(reversed(chain))
                following.append(step)
        frontier = following
    raise InvalidTransition(machine.resource, str(current), str(target))


def is_terminal(machine: StateMachine[S], status: S | str) -> bool:
    """Whether ``status`` is settled for good; an unknown status is not terminal."""
    parsed = machine.parse(status)
    return parsed is not None and machine.is_terminal(parsed)


def _machine(
    resource: str, initial: S, table: Mapping[S, Iterable[S]], terminal: Iterable[S] = ()
) -> StateMachine[S]:
    """Build a machine; statuses missing from ``table`` have no exits."""
    full = {s: frozenset(table.get(s, ())) for s in type(initial)}
    return StateMachine(resource, initial, MappingProxyType(full), frozenset(terminal))


def _job(resource: str, cls: type[S], fail: str) -> StateMachine[S]:
    """A run-to-completion job; ``fail`` names its FAIL_X status (training: FAIL_TRAIN)."""
    names = (
        "CREATE_REQUESTED",
        "CREATE_IN_PROGRESS",
        "RUNNING",
        "COMPLETE_IN_PROGRESS",
        "STOP_IN_PROGRESS",
        f"{fail}_IN_PROGRESS",
        "CREATE_FAILED",
    )
    requested, creating, running, completing, stopping, failing, create_failed = (
        cls[name] for name in names
    )
    table = {
        requested: (creating, create_failed, stopping),
        creating: (running, create_failed, stopping, failing),
        running: (completing, stopping, failing),
        # Stopping during the upload is allowed: the job ends STOPPED, its partial upload removed.
        completing: (cls["COMPLETE"], failing, stopping),
        stopping: (cls["STOPPED"], failing),
        failing: (cls[fail],),
    }
    ends = (cls["COMPLETE"], cls["STOPPED"], create_failed, cls[fail])
    return _machine(resource, requested, table, ends)


N = NotebookStatus
_NOTEBOOK_ACTIVE_EXITS = (N.STOP_IN_PROGRESS, N.REBOOT_IN_PROGRESS, N.DELETE_IN_PROGRESS)
_NOTEBOOK_UP = (N.ACTIVE_HEALTHY, N.ACTIVE_UNHEALTHY)
NOTEBOOK = _machine(
    "notebook",
    N.CREATE_REQUESTED,
    {
        N.CREATE_REQUESTED: (N.CREATE_IN_PROGRESS, N.CREATE_FAILED),
        N.CREATE_IN_PROGRESS: (*_NOTEBOOK_UP, N.CREATE_FAILED),
        N.ACTIVE_HEALTHY: (N.ACTIVE_UNHEALTHY, *_NOTEBOOK_ACTIVE_EXITS),
        N.ACTIVE_UNHEALTHY: (N.ACTIVE_HEALTHY, *_NOTEBOOK_ACTIVE_EXITS),
        N.STOP_IN_PROGRESS: (N.STOPPED, N.STOP_FAILED),
        N.STOPPED: (N.START_IN_PROGRESS, N.DELETE_IN_PROGRESS),
        N.START_IN_PROGRESS: (*_NOTEBOOK_UP, N.START_FAILED),
        N.REBOOT_IN_PROGRESS: (*_NOTEBOOK_UP, N.REBOOT_FAILED),
        N.DELETE_IN_PROGRESS: (N.DELETE_FAILED,),
        N.CREATE_FAILED: (N.DELETE_IN_PROGRESS,),
        N.STOP_FAILED: (N.STOP_IN_PROGRESS, N.DELETE_IN_PROGRESS),
        N.START_FAILED: (N.START_IN_PROGRESS, N.DELETE_IN_PROGRESS),
        N.REBOOT_FAILED: (N.REBOOT_IN_PROGRESS, N.DELETE_IN_PROGRESS),
        N.DELETE_FAILED: (N.DELETE_IN_PROGRESS,),
    },
)

E = ExperimentStatus
EXPERIMENT = _machine(
    "experiment",
    E.CREATE_REQUESTED,
    {
        E.CREATE_REQUESTED: (E.CREATE_IN_PROGRESS, E.ACTIVE, E.CREATE_FAILED),
        E.CREATE_IN_PROGRESS: (E.ACTIVE, E.CREATE_FAILED),
        E.CREATE_FAILED: (E.CREATE_REQUESTED,),
    },
    terminal=(E.ACTIVE,),
)

TRAINING = _job("training", TrainingStatus, "FAIL_TRAIN")

HYPERPARAMETER_TUNING = _job(
    "hyperparameter_tuning", HyperparameterTuningStatus, "FAIL_HYPERPARAMETER_TUNING"
)

T = TrialStatus
_TRIAL_ENDS = (T.SUCCEEDED, T.KILLED, T.FAILED, T.METRICS_UNAVAILABLE, T.EARLY_STOPPED)
TRIAL = _machine(
    "trial",
    T.CREATED,
    {
        T.CREATED: (T.RUNNING, T.KILLED, T.FAILED),
        T.RUNNING: _TRIAL_ENDS,
    },
    terminal=_TRIAL_ENDS,
)

M = ModelStatus
MODEL = _machine(
    "model",
    M.CREATE_REQUESTED,
    {
        M.CREATE_REQUESTED: (M.CREATE_IN_PROGRESS, M.CREATE_FAILED),
        M.CREATE_IN_PROGRESS: (M.ACTIVE, M.CREATE_FAILED),
        M.ACTIVE: (M.DELETE_IN_PROGRESS,),
        M.CREATE_FAILED: (M.DELETE_IN_PROGRESS,),
        M.DELETE_IN_PROGRESS: (M.DELETE_FAILED,),
        M.DELETE_FAILED: (M.DELETE_IN_PROGRESS,),
    },
)

EP = EndpointStatus
ENDPOINT = _machine(
    "endpoint",
    EP.CREATE_REQUESTED,
    {
        EP.CREATE_REQUESTED: (EP.CREATE_IN_PROGRESS, EP.CREATE_FAILED),
        EP.CREATE_IN_PROGRESS: (EP.ACTIVE, EP.CREATE_FAILED),
        EP.ACTIVE: (EP.UPDATE_IN_PROGRESS, EP.DELETE_IN_PROGRESS),
        EP.UPDATE_IN_PROGRESS: (EP.ACTIVE, EP.UPDATE_FAILED),
        EP.UPDATE_FAILED: (EP.UPDATE_IN_PROGRESS, EP.DELETE_IN_PROGRESS),
        EP.CREATE_FAILED: (EP.DELETE_IN_PROGRESS,),
    },
)

G = ApiGatewayStatus
API_GATEWAY = _machine(
    "api_gateway",
    G.CREATE_IN_PROGRESS,
    {
        G.CREATE_IN_PROGRESS: (G.STAGE_DEPLOYING, G.NOT_FOUND_STAGE),
        G.STAGE_DEPLOYING: (
            G.ACTIVE,
            G.STAGE_DEPLOY_FAIL,
            G.NOT_FOUND_STAGE_DEPLOY_RESULT,
            G.NOT_FOUND_STAGE,
        ),
        G.ACTIVE: (G.STAGE_DEPLOYING, G.NOT_FOUND_STAGE_DEPLOY_RESULT, G.NOT_FOUND_STAGE),
        G.STAGE_DEPLOY_FAIL: (G.STAGE_DEPLOYING, G.NOT_FOUND_STAGE),
        G.NOT_FOUND_STAGE_DEPLOY_RESULT: (G.STAGE_DEPLOYING, G.NOT_FOUND_STAGE),
    },
    terminal=(G.NOT_FOUND_STAGE,),
)

ES = EndpointStageStatus
ENDPOINT_STAGE = _machine(
    "endpoint_stage",
    ES.CREATE_REQUESTED,
    {
        ES.CREATE_REQUESTED: (ES.CREATE_IN_PROGRESS, ES.CREATE_FAILED),
        ES.CREATE_IN_PROGRESS: (ES.ACTIVE, ES.CREATE_FAILED),
        ES.ACTIVE: (ES.DEPLOY_IN_PROGRESS, ES.DELETE_IN_PROGRESS),
        ES.DEPLOY_IN_PROGRESS: (ES.ACTIVE, ES.DEPLOY_FAILED),
        ES.DEPLOY_FAILED: (ES.DEPLOY_IN_PROGRESS, ES.DELETE_IN_PROGRESS),
        ES.CREATE_FAILED: (ES.DELETE_IN_PROGRESS,),
    },
)

R = StageResourceStatus
STAGE_RESOURCE = _machine(
    "stage_resource",
    R.CREATE_REQUESTED,
    {
        R.CREATE_REQUESTED: (R.CREATE_IN_PROGRESS, R.CREATE_FAILED),
        R.CREATE_IN_PROGRESS: (R.ACTIVE, R.CREATE_FAILED),
        R.ACTIVE: (R.DELETE_IN_PROGRESS,),
        R.CREATE_FAILED: (R.DELETE_IN_PROGRESS,),
    },
)

BATCH_INFERENCE = _job("batch_inference", BatchInferenceStatus, "FAIL_BATCH_INFERENCE")

P = PipelineStatus
PIPELINE = _machine(
    "pipeline",
    P.CREATE_REQUESTED,
    {
        P.CREATE_REQUESTED: (P.CREATE_IN_PROGRESS, P.CREATE_FAILED),
        P.CREATE_IN_PROGRESS: (P.ACTIVE, P.CREATE_FAILED),
    },
    terminal=(P.ACTIVE, P.CREATE_FAILED),
)

PIPELINE_RUN = _job("pipeline_run", PipelineRunStatus, "FAIL_PIPELINE_RUN")

PS = PipelineScheduleStatus
PIPELINE_SCHEDULE = _machine(
    "pipeline_schedule",
    PS.CREATE_REQUESTED,
    {
        PS.CREATE_REQUESTED: (PS.ENABLED, PS.CREATE_FAILED),
        PS.ENABLED: (PS.DISABLED, PS.ENABLED_EXPIRED),
        PS.ENABLED_EXPIRED: (PS.DISABLED,),
        PS.DISABLED: (PS.ENABLED,),
    },
    terminal=(PS.CREATE_FAILED,),
)

IM = ImageStatus
IMAGE = _machine(
    "image",
    IM.CREATE_REQUESTED,
    {
        IM.CREATE_REQUESTED: (IM.CREATE_IN_PROGRESS, IM.CREATE_FAILED),
        IM.CREATE_IN_PROGRESS: (IM.ACTIVE, IM.CREATE_FAILED),
        IM.ACTIVE: (IM.DELETE_IN_PROGRESS,),
        IM.CREATE_FAILED: (IM.DELETE_IN_PROGRESS,),
        IM.DELETE_IN_PROGRESS: (IM.DELETE_FAILED,),
        IM.DELETE_FAILED: (IM.DELETE_IN_PROGRESS,),
    },
)

RA = RegistryAccountStatus
REGISTRY_ACCOUNT = _machine(
    "registry_account",
    RA.ACTIVE,
    {
        RA.ACTIVE: (RA.DELETE_IN_PROGRESS,),
        RA.DELETE_IN_PROGRESS: (RA.DELETE_FAILED,),
        RA.DELETE_FAILED: (RA.DELETE_IN_PROGRESS,),
    },
)

MACHINES: dict[str, StateMachine[Any]] = {
    m.resource: m
    for m in (
        NOTEBOOK,
        EXPERIMENT,
        TRAINING,
        HYPERPARAMETER_TUNING,
        TRIAL,
        MODEL,
        ENDPOINT,
        API_GATEWAY,
        ENDPOINT_STAGE,
        STAGE_RESOURCE,
        BATCH_INFERENCE,
        PIPELINE,
        PIPELINE_RUN,
        PIPELINE_SCHEDULE,
        IMAGE,
        REGISTRY_ACCOUNT,
    )
}

del N, E, T, M, EP, G, ES, R, P, PS, IM, RA
