"""Status enums and transition tables of every resource (chalicelib.domain.states)."""

from __future__ import annotations

import re
from collections import deque
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import pytest

from chalicelib.domain import states
from chalicelib.domain.states import (
    MACHINES,
    ApiGatewayStatus,
    BatchInferenceStatus,
    EndpointStageStatus,
    EndpointStatus,
    ExperimentStatus,
    HyperparameterTuningStatus,
    ImageStatus,
    ModelStatus,
    NotebookStatus,
    PipelineRunStatus,
    PipelineScheduleStatus,
    PipelineStatus,
    RegistryAccountStatus,
    StageResourceStatus,
    StateMachine,
    TrainingStatus,
    TrialStatus,
    is_terminal,
    transition,
)
from chalicelib.errors import ConflictError, InvalidTransition

Machine = StateMachine[Any]

# The exact status lists of the console guide's tables (and the two documented additions).
SEED_STATUSES: dict[str, tuple[type[StrEnum], list[str]]] = {
    "notebook": (
        NotebookStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "ACTIVE_HEALTHY",
            "ACTIVE_UNHEALTHY",
            "STOP_IN_PROGRESS",
            "STOPPED",
            "START_IN_PROGRESS",
            "REBOOT_IN_PROGRESS",
            "DELETE_IN_PROGRESS",
            "CREATE_FAILED",
            "STOP_FAILED",
            "START_FAILED",
            "REBOOT_FAILED",
            "DELETE_FAILED",
        ],
    ),
    "experiment": (
        ExperimentStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "CREATE_FAILED",
            "ACTIVE",
        ],
    ),
    "training": (
        TrainingStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "RUNNING",
            "STOPPED",
            "COMPLETE",
            "STOP_IN_PROGRESS",
            "FAIL_TRAIN",
            "CREATE_FAILED",
            "FAIL_TRAIN_IN_PROGRESS",
            "COMPLETE_IN_PROGRESS",
        ],
    ),
    "hyperparameter_tuning": (
        HyperparameterTuningStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "RUNNING",
            "STOPPED",
            "COMPLETE",
            "STOP_IN_PROGRESS",
            "FAIL_HYPERPARAMETER_TUNING",
            "CREATE_FAILED",
            "FAIL_HYPERPARAMETER_TUNING_IN_PROGRESS",
            "COMPLETE_IN_PROGRESS",
        ],
    ),
    "trial": (
        TrialStatus,
        [
            "CREATED",
            "RUNNING",
            "SUCCEEDED",
            "KILLED",
            "FAILED",
            "METRICS_UNAVAILABLE",
            "EARLY_STOPPED",
        ],
    ),
    "model": (
        ModelStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "DELETE_IN_PROGRESS",
            "ACTIVE",
            "CREATE_FAILED",
            "DELETE_FAILED",
        ],
    ),
    "endpoint": (
        EndpointStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "UPDATE_IN_PROGRESS",
            "DELETE_IN_PROGRESS",
            "ACTIVE",
            "CREATE_FAILED",
            "UPDATE_FAILED",
        ],
    ),
    "api_gateway": (
        ApiGatewayStatus,
        [
            "CREATE_IN_PROGRESS",
            "STAGE_DEPLOYING",
            "ACTIVE",
            "NOT_FOUND_STAGE",
            "NOT_FOUND_STAGE_DEPLOY_RESULT",
            "STAGE_DEPLOY_FAIL",
        ],
    ),
    "endpoint_stage": (
        EndpointStageStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "DEPLOY_IN_PROGRESS",
            "DELETE_IN_PROGRESS",
            "ACTIVE",
            "CREATE_FAILED",
            "DEPLOY_FAILED",
        ],
    ),
    "stage_resource": (
        StageResourceStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "DELETE_IN_PROGRESS",
            "ACTIVE",
            "CREATE_FAILED",
        ],
    ),
    "batch_inference": (
        BatchInferenceStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "RUNNING",
            "STOPPED",
            "COMPLETE",
            "STOP_IN_PROGRESS",
            "FAIL_BATCH_INFERENCE",
            "CREATE_FAILED",
            "FAIL_BATCH_INFERENCE_IN_PROGRESS",
            "COMPLETE_IN_PROGRESS",
        ],
    ),
    "pipeline": (
        PipelineStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "CREATE_FAILED",
            "ACTIVE",
        ],
    ),
    "pipeline_run": (
        PipelineRunStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "CREATE_FAILED",
            "RUNNING",
            "COMPLETE_IN_PROGRESS",
            "COMPLETE",
            "STOP_IN_PROGRESS",
            "STOPPED",
            "FAIL_PIPELINE_RUN_IN_PROGRESS",
            "FAIL_PIPELINE_RUN",
        ],
    ),
    "pipeline_schedule": (
        PipelineScheduleStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_FAILED",
            "ENABLED",
            "ENABLED(EXPIRED)",
            "DISABLED",
        ],
    ),
    "image": (
        ImageStatus,
        [
            "CREATE_REQUESTED",
            "CREATE_IN_PROGRESS",
            "ACTIVE",
            "CREATE_FAILED",
            "DELETE_IN_PROGRESS",
            "DELETE_FAILED",
        ],
    ),
    "registry_account": (RegistryAccountStatus, ["ACTIVE", "DELETE_IN_PROGRESS", "DELETE_FAILED"]),
}

CONSTANTS = {
    "notebook": "NOTEBOOK",
    "experiment": "EXPERIMENT",
    "training": "TRAINING",
    "hyperparameter_tuning": "HYPERPARAMETER_TUNING",
    "trial": "TRIAL",
    "model": "MODEL",
    "endpoint": "ENDPOINT",
    "api_gateway": "API_GATEWAY",
    "endpoint_stage": "ENDPOINT_STAGE",
    "stage_resource": "STAGE_RESOURCE",
    "batch_inference": "BATCH_INFERENCE",
    "pipeline": "PIPELINE",
    "pipeline_run": "PIPELINE_RUN",
    "pipeline_schedule": "PIPELINE_SCHEDULE",
    "image": "IMAGE",
    "registry_account": "REGISTRY_ACCOUNT",
}

JOBS = {
    "training": "FAIL_TRAIN",
    "hyperparameter_tuning": "FAIL_HYPERPARAMETER_TUNING",
    "batch_inference": "FAIL_BATCH_INFERENCE",
    "pipeline_run": "FAIL_PIPELINE_RUN",
}

UPPER_SNAKE = re.compile(r"^[A-Z]+(_[A-Z]+)*$")


def _edges() -> list[tuple[str, str, str]]:
    return [
        (name, str(current), str(target))
        for name, machine in MACHINES.items()
        for current, targets in machine.transitions.items()
        for target in sorted(targets)
    ]


def _statuses() -> list[tuple[str, str]]:
    return [(name, str(s)) for name, m in MACHINES.items() for s in m.statuses]


def _terminal_exits() -> list[tuple[str, str, str]]:
    return [
        (name, str(end), str(target))
        for name, machine in MACHINES.items()
        for end in sorted(machine.terminal)
        for target in machine.statuses
    ]


def _reachable(machine: Machine) -> set[Any]:
    seen, queue = {machine.initial}, deque([machine.initial])
    while queue:
        for nxt in machine.transitions[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def _assert_rejected(machine: Machine, current: str, target: str) -> None:
    with pytest.raises(InvalidTransition) as caught:
        transition(machine, current, target)
    assert (caught.value.resource, caught.value.current, caught.value.target) == (
        machine.resource,
        current,
        target,
    )


# --- the tables are complete and exact ---------------------------------------------------


def test_machines_cover_every_resource_under_its_name() -> None:
    assert set(MACHINES) == set(SEED_STATUSES)
    for name, machine in MACHINES.items():
        assert machine.resource == name
        assert getattr(states, CONSTANTS[name]) is machine


@pytest.mark.parametrize("name", sorted(SEED_STATUSES))
def test_each_enum_holds_exactly_the_seed_statuses(name: str) -> None:
    enum_cls, expected = SEED_STATUSES[name]
    assert [member.value for member in enum_cls] == expected
    assert type(MACHINES[name].initial) is enum_cls


@pytest.mark.parametrize("name", sorted(SEED_STATUSES))
def test_each_enum_is_a_str_enum_whose_members_equal_their_wire_value(name: str) -> None:
    enum_cls, expected = SEED_STATUSES[name]
    assert issubclass(enum_cls, StrEnum)
    assert all(enum_cls(value) == value == str(enum_cls(value)) for value in expected)


@pytest.mark.parametrize(("name", "status"), _statuses())
def test_wire_values_are_upper_snake_case(name: str, status: str) -> None:
    if status == "ENABLED(EXPIRED)":
        assert name == "pipeline_schedule"
    else:
        assert UPPER_SNAKE.match(status), f"{name}: {status}"


def test_the_expired_schedule_keeps_the_guide_spelling() -> None:
    assert PipelineScheduleStatus.ENABLED_EXPIRED.value == "ENABLED(EXPIRED)"


def test_no_resource_has_a_deleted_status_and_experiments_have_no_delete_statuses() -> None:
    assert all("DELETED" not in {str(s) for s in m.statuses} for m in MACHINES.values())
    assert not any(s.startswith("DELETE") for s in ExperimentStatus)


# --- reachability and allowed transitions --------------------------------------------------


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_status_is_reachable_from_the_initial_status(name: str) -> None:
    machine = MACHINES[name]
    assert _reachable(machine) == set(machine.statuses)


@pytest.mark.parametrize(("name", "current", "target"), _edges())
def test_every_allowed_transition_succeeds_and_returns_the_enum_member(
    name: str, current: str, target: str
) -> None:
    machine = MACHINES[name]
    result = transition(machine, current, target)
    assert result == target and type(result) is type(machine.initial)
    assert transition(machine, machine.parse(current), machine.parse(target)) is result


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_transition_outside_the_table_raises_invalid_transition(name: str) -> None:
    machine = MACHINES[name]
    for current in machine.statuses:
        for target in machine.statuses:
            if target not in machine.transitions[current]:
                _assert_rejected(machine, str(current), str(target))


@pytest.mark.parametrize(("name", "status"), _statuses())
def test_a_same_status_transition_is_rejected(name: str, status: str) -> None:
    _assert_rejected(MACHINES[name], status, status)


@pytest.mark.parametrize(("name", "end", "target"), _terminal_exits())
def test_nothing_leaves_a_terminal_status(name: str, end: str, target: str) -> None:
    _assert_rejected(MACHINES[name], end, target)


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_allowed_from_lists_exactly_the_statuses_whose_table_reaches_the_target(
    name: str,
) -> None:
    machine = MACHINES[name]
    for target in machine.statuses:
        expected = {s for s, nxt in machine.transitions.items() if target in nxt}
        assert machine.allowed_from(target) == expected
        assert all(machine.can(s, target) for s in expected)


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_the_tables_are_read_only(name: str) -> None:
    with pytest.raises(TypeError):
        MACHINES[name].transitions[MACHINES[name].initial] = frozenset()  # type: ignore[index]


# --- transition() and is_terminal() -------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target"),
    [("RUNNING", "NOPE"), ("NOPE", "RUNNING"), ("running", "STOP_IN_PROGRESS"), ("", "")],
)
def test_unknown_status_strings_raise_invalid_transition(current: str, target: str) -> None:
    _assert_rejected(states.TRAINING, current, target)


def test_invalid_transition_is_a_conflict_naming_resource_and_both_statuses() -> None:
    with pytest.raises(ConflictError, match="training cannot go from COMPLETE to RUNNING"):
        transition(states.TRAINING, TrainingStatus.COMPLETE, TrainingStatus.RUNNING)


def test_a_status_of_another_resource_is_rejected_when_this_one_lacks_it() -> None:
    _assert_rejected(states.MODEL, "ACTIVE", str(EndpointStatus.UPDATE_IN_PROGRESS))


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_is_terminal_agrees_with_the_terminal_set(name: str) -> None:
    machine = MACHINES[name]
    for status in machine.statuses:
        expected = status in machine.terminal
        assert is_terminal(machine, status) is expected
        assert is_terminal(machine, str(status)) is expected
        assert machine.is_terminal(status) is expected
    assert is_terminal(machine, "NO_SUCH_STATUS") is False


def test_a_machine_rejects_a_self_loop_or_an_exit_from_a_terminal() -> None:
    s = ModelStatus
    table = {m: frozenset[ModelStatus]() for m in s}
    looping = MappingProxyType({**table, s.ACTIVE: frozenset({s.ACTIVE})})
    with pytest.raises(ValueError):
        StateMachine("model", s.CREATE_REQUESTED, looping, frozenset())
    leaving = MappingProxyType({**table, s.ACTIVE: frozenset({s.DELETE_IN_PROGRESS})})
    with pytest.raises(ValueError):
        StateMachine("model", s.CREATE_REQUESTED, leaving, frozenset({s.ACTIVE}))


# --- the rules per resource --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(JOBS))
def test_jobs_end_only_in_complete_stopped_fail_or_create_failed(name: str) -> None:
    fail = JOBS[name]
    assert {str(s) for s in MACHINES[name].terminal} == {
        "COMPLETE",
        "STOPPED",
        fail,
        "CREATE_FAILED",
    }


@pytest.mark.parametrize("name", sorted(JOBS))
def test_a_job_runs_then_completes_through_complete_in_progress(name: str) -> None:
    machine, status = MACHINES[name], MACHINES[name].initial
    for nxt in ("CREATE_IN_PROGRESS", "RUNNING", "COMPLETE_IN_PROGRESS", "COMPLETE"):
        status = transition(machine, status, nxt)
    assert is_terminal(machine, status)


@pytest.mark.parametrize("name", sorted(JOBS))
@pytest.mark.parametrize("start", ["CREATE_REQUESTED", "CREATE_IN_PROGRESS", "RUNNING"])
def test_a_job_can_be_stopped_while_requested_creating_or_running(name: str, start: str) -> None:
    machine = MACHINES[name]
    assert transition(machine, start, "STOP_IN_PROGRESS") == "STOP_IN_PROGRESS"
    assert transition(machine, "STOP_IN_PROGRESS", "STOPPED") == "STOPPED"


@pytest.mark.parametrize("name", sorted(JOBS))
@pytest.mark.parametrize(
    "start", ["CREATE_IN_PROGRESS", "RUNNING", "STOP_IN_PROGRESS", "COMPLETE_IN_PROGRESS"]
)
def test_a_job_fails_only_through_its_clean_up_status(name: str, start: str) -> None:
    machine, fail = MACHINES[name], JOBS[name]
    _assert_rejected(machine, start, fail)
    transition(machine, start, f"{fail}_IN_PROGRESS")
    assert transition(machine, f"{fail}_IN_PROGRESS", fail) == fail


@pytest.mark.parametrize("name", sorted(JOBS))
def test_a_job_create_failure_comes_only_before_running(name: str) -> None:
    machine = MACHINES[name]
    assert {str(s) for s in machine.allowed_from(machine.parse("CREATE_FAILED"))} == {
        "CREATE_REQUESTED",
        "CREATE_IN_PROGRESS",
    }
    _assert_rejected(machine, "CREATE_REQUESTED", "RUNNING")


def test_a_trial_ends_in_any_katib_outcome_and_never_reopens() -> None:
    ends = {"SUCCEEDED", "KILLED", "FAILED", "METRICS_UNAVAILABLE", "EARLY_STOPPED"}
    assert {str(s) for s in states.TRIAL.terminal} == ends
    assert {str(s) for s in states.TRIAL.transitions[TrialStatus.RUNNING]} == ends


def test_notebook_health_flips_both_ways() -> None:
    n = states.NOTEBOOK
    assert transition(n, "ACTIVE_HEALTHY", "ACTIVE_UNHEALTHY") == "ACTIVE_UNHEALTHY"
    assert transition(n, "ACTIVE_UNHEALTHY", "ACTIVE_HEALTHY") == "ACTIVE_HEALTHY"


@pytest.mark.parametrize(
    ("failed", "retry"),
    [
        ("STOP_FAILED", "STOP_IN_PROGRESS"),
        ("START_FAILED", "START_IN_PROGRESS"),
        ("REBOOT_FAILED", "REBOOT_IN_PROGRESS"),
        ("DELETE_FAILED", "DELETE_IN_PROGRESS"),
    ],
)
def test_a_failed_notebook_operation_can_be_retried(failed: str, retry: str) -> None:
    assert not is_terminal(states.NOTEBOOK, failed)
    assert transition(states.NOTEBOOK, failed, retry) == retry


def test_a_notebook_is_deleted_from_stopped_active_or_any_failure() -> None:
    sources = {str(s) for s in states.NOTEBOOK.allowed_from(NotebookStatus.DELETE_IN_PROGRESS)}
    assert sources == {
        "STOPPED",
        "ACTIVE_HEALTHY",
        "ACTIVE_UNHEALTHY",
        "CREATE_FAILED",
        "STOP_FAILED",
        "START_FAILED",
        "REBOOT_FAILED",
        "DELETE_FAILED",
    }
    assert states.NOTEBOOK.terminal == frozenset()


@pytest.mark.parametrize("name", ["model", "image", "registry_account"])
def test_a_failed_delete_can_be_retried(name: str) -> None:
    machine = MACHINES[name]
    assert transition(machine, "ACTIVE", "DELETE_IN_PROGRESS") == "DELETE_IN_PROGRESS"
    assert transition(machine, "DELETE_IN_PROGRESS", "DELETE_FAILED") == "DELETE_FAILED"
    assert transition(machine, "DELETE_FAILED", "DELETE_IN_PROGRESS") == "DELETE_IN_PROGRESS"


def test_a_stage_resource_is_deleted_from_active_or_create_failed() -> None:
    sources = states.STAGE_RESOURCE.allowed_from(StageResourceStatus.DELETE_IN_PROGRESS)
    assert {str(s) for s in sources} == {"ACTIVE", "CREATE_FAILED"}


def test_registry_accounts_start_active() -> None:
    assert states.REGISTRY_ACCOUNT.initial == RegistryAccountStatus.ACTIVE


def test_an_experiment_may_skip_provisioning_and_retry_after_failure() -> None:
    e = states.EXPERIMENT
    assert transition(e, "CREATE_REQUESTED", "ACTIVE") == "ACTIVE"
    assert transition(e, "CREATE_FAILED", "CREATE_REQUESTED") == "CREATE_REQUESTED"
    _assert_rejected(e, "ACTIVE", "CREATE_REQUESTED")


def test_an_endpoint_updates_back_and_forth_and_retries_a_failed_update() -> None:
    ep = states.ENDPOINT
    assert transition(ep, "ACTIVE", "UPDATE_IN_PROGRESS") == "UPDATE_IN_PROGRESS"
    assert transition(ep, "UPDATE_IN_PROGRESS", "ACTIVE") == "ACTIVE"
    assert transition(ep, "UPDATE_IN_PROGRESS", "UPDATE_FAILED") == "UPDATE_FAILED"
    assert transition(ep, "UPDATE_FAILED", "UPDATE_IN_PROGRESS") == "UPDATE_IN_PROGRESS"
    sources = {str(s) for s in ep.allowed_from(EndpointStatus.DELETE_IN_PROGRESS)}
    assert sources == {"ACTIVE", "CREATE_FAILED", "UPDATE_FAILED"}


def test_an_api_gateway_deploy_failure_recovers_by_redeploying_but_a_lost_stage_does_not() -> None:
    g = states.API_GATEWAY
    assert transition(g, "STAGE_DEPLOY_FAIL", "STAGE_DEPLOYING") == "STAGE_DEPLOYING"
    assert transition(g, "NOT_FOUND_STAGE_DEPLOY_RESULT", "STAGE_DEPLOYING") == "STAGE_DEPLOYING"
    assert g.terminal == {ApiGatewayStatus.NOT_FOUND_STAGE}


def test_an_endpoint_stage_redeploys_after_a_failed_deploy() -> None:
    es = states.ENDPOINT_STAGE
    assert transition(es, "ACTIVE", "DEPLOY_IN_PROGRESS") == "DEPLOY_IN_PROGRESS"
    assert transition(es, "DEPLOY_IN_PROGRESS", "DEPLOY_FAILED") == "DEPLOY_FAILED"
    assert transition(es, "DEPLOY_FAILED", "DEPLOY_IN_PROGRESS") == "DEPLOY_IN_PROGRESS"


def test_a_pipeline_is_provisioned_before_it_is_active() -> None:
    p = states.PIPELINE
    _assert_rejected(p, "CREATE_REQUESTED", "ACTIVE")
    assert transition(p, "CREATE_IN_PROGRESS", "ACTIVE") == "ACTIVE"
    assert transition(p, "CREATE_IN_PROGRESS", "CREATE_FAILED") == "CREATE_FAILED"


def test_a_schedule_toggles_expires_and_can_be_disabled_once_expired() -> None:
    ps = states.PIPELINE_SCHEDULE
    assert transition(ps, "ENABLED", "DISABLED") == "DISABLED"
    assert transition(ps, "DISABLED", "ENABLED") == "ENABLED"
    expired = transition(ps, "ENABLED", "ENABLED(EXPIRED)")
    assert expired is PipelineScheduleStatus.ENABLED_EXPIRED
    assert transition(ps, expired, "DISABLED") == "DISABLED"
    _assert_rejected(ps, "ENABLED(EXPIRED)", "ENABLED")
