"""The tuning search on Optuna's RDB storage, next to the platform's database (both backends):
reproducible suggestions with trials in flight, pruning, resume after a crash, warm start."""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
from sqlalchemy import text

from chalicelib.store.db import Database
from chalicelib.store.migrate import upgrade
from runners.tuning.search import (
    BAYESIAN_OPTIMIZATION,
    GRID,
    RANDOM,
    HyperparameterSpec,
    Search,
    build_distributions,
    delete_study,
    grid_search_space,
    optuna_storage_url,
)

SearchFactory = Callable[..., Search]


def spec(name: str, type_code: str, **fields: str) -> dict[str, str]:
    wire = {"hyperparameterName": name, "hyperparameterTypeCode": type_code}
    keys = {
        "low": "hyperparameterMinValue",
        "high": "hyperparameterMaxValue",
        "step": "hyperparameterStep",
        "values": "hyperparameterSpecifiedValues",
    }
    wire.update({keys[key]: value for key, value in fields.items()})
    return wire


# A grid of 4 * 2 * 2 = 16 points; continuous ranges for RANDOM and TPE.
GRID_SPECS = [
    spec("lr", "double", low="0.1", high="0.4", step="0.1"),
    spec("layers", "int", low="1", high="2"),
    spec("optimizer", "categorical", values="sgd,adam"),
]
RANGE_SPECS = [
    spec("lr", "double", low="0.0001", high="0.1"),
    spec("layers", "int", low="1", high="8"),
    spec("dropout", "discrete", values="0.1,0.25,0.5"),
    spec("optimizer", "categorical", values="sgd,adam,rmsprop"),
]


def objective(params: dict[str, str]) -> float:
    """A deterministic score of the rendered params (higher is better)."""
    score = -abs(math.log10(float(params["lr"])) + 2) - abs(int(params["layers"]) - 3)
    return score + {"sgd": 0.0, "adam": 0.5, "rmsprop": 0.25}[params["optimizer"]]


@pytest.fixture
def storage(backend_url: str) -> tuple[str, dict[str, Any]]:
    return optuna_storage_url(backend_url)


@pytest.fixture
def make_search(storage: tuple[str, dict[str, Any]]) -> Iterator[SearchFactory]:
    """Searches on the backend under test; a new study name unless ``study_name`` is given."""
    opened: list[Search] = []

    def make(**overrides: Any) -> Search:
        arguments: dict[str, Any] = {
            "storage_url": storage[0],
            "engine_kwargs": storage[1],
            "study_name": f"tuning-{uuid.uuid4().hex[:12]}",
            "specs": RANGE_SPECS,
            "strategy": RANDOM,
            "seed": 7,
            "direction": "maximize",
            "pruner": None,
        }
        arguments.update(overrides)
        search = Search(**arguments)
        opened.append(search)
        return search

    yield make
    for search in opened:
        search.close()


def run_in_flight(search: Search, total: int, parallel: int = 3) -> list[dict[str, str]]:
    """Suggest ``total`` trials with ``parallel`` in flight, finishing them out of order
    (the last suggested first, then the oldest, ...) and some of them as failures."""
    suggested: list[dict[str, str]] = []
    in_flight: list[int] = []
    pattern = [2, 0, 1]
    finished = 0
    while len(suggested) < total or in_flight:
        while len(in_flight) < parallel and len(suggested) < total:
            suggestion = search.suggest()
            assert suggestion is not None
            suggested.append(suggestion.params)
            in_flight.append(suggestion.number)
        number = in_flight.pop(pattern[finished % 3] % len(in_flight))
        if finished % 5 == 4:
            search.fail(number)
        else:
            search.complete(number, float(finished))
        finished += 1
    return suggested


def run_sequential(search: Search, total: int) -> list[dict[str, str]]:
    suggested = []
    for _ in range(total):
        suggestion = search.suggest()
        assert suggestion is not None
        suggested.append(suggestion.params)
        search.complete(suggestion.number, objective(suggestion.params))
    return suggested


# ----------------------------------------------------------------------------- storage URL


def test_sqlite_studies_go_to_a_sibling_file() -> None:
    url, kwargs = optuna_storage_url("sqlite:////var/lib/openmaker/openmaker.db")
    assert url == "sqlite:////var/lib/openmaker/openmaker-optuna.db"
    assert kwargs == {"connect_args": {"timeout": 30.0}}
    assert optuna_storage_url("sqlite:///data/meta")[0] == "sqlite:///data/meta-optuna"
    with pytest.raises(ValueError, match="in-memory"):
        optuna_storage_url("sqlite:///:memory:")
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        optuna_storage_url("mysql://root@localhost/openmaker")


def test_postgresql_studies_go_to_their_own_schema() -> None:
    url, kwargs = optuna_storage_url("postgresql://user:secret@db:5432/openmaker")
    assert url == "postgresql+psycopg://user:secret@db:5432/openmaker"
    assert kwargs["connect_args"] == {"options": "-csearch_path=optuna"}


def platform_revision(database: Database) -> list[tuple[str, ...]]:
    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return [tuple(row) for row in rows]


def test_optuna_tables_never_touch_the_platform_schema(
    backend_url: str, make_search: SearchFactory
) -> None:
    database = Database(backend_url)
    try:
        upgrade(database)
        revision = platform_revision(database)
        assert len(revision) == 1
        search = make_search(strategy=GRID, specs=GRID_SPECS)
        first = search.suggest()
        assert first is not None
        search.complete(first.number, 1.0)
        assert platform_revision(database) == revision
        upgrade(database)  # the platform's next start still finds its own revision
        assert platform_revision(database) == revision
        if database.is_sqlite:
            platform_file = backend_url.split("///", 1)[1]
            with sqlite3.connect(platform_file) as connection:
                tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
            assert "studies" not in tables and "trials" not in tables
            optuna_file = Path(platform_file).with_name("contract-optuna.db")
            with sqlite3.connect(optuna_file) as connection:
                tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
                (optuna_revision,) = connection.execute("SELECT version_num FROM alembic_version")
            assert {"studies", "trials", "alembic_version"} <= tables
            assert optuna_revision != revision[0]
        else:
            with psycopg.connect(backend_url) as connection:
                rows = connection.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_name IN ('alembic_version', 'studies', 'trials')"
                ).fetchall()
            assert set(rows) == {
                ("public", "alembic_version"),
                ("optuna", "alembic_version"),
                ("optuna", "studies"),
                ("optuna", "trials"),
            }
    finally:
        database.dispose()


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("strategy", [RANDOM, GRID])
def test_the_same_seed_gives_the_same_sequence_whatever_finishes_first(
    make_search: SearchFactory, strategy: str
) -> None:
    specs = GRID_SPECS if strategy == GRID else RANGE_SPECS
    total = 12
    sequential = run_sequential(make_search(strategy=strategy, specs=specs), total)
    in_flight = run_in_flight(make_search(strategy=strategy, specs=specs), total)
    assert in_flight == sequential
    assert len(sequential) == total
    if strategy == GRID:  # a grid never repeats a point
        assert len({tuple(p.items()) for p in sequential}) == total
    other_seed = run_in_flight(make_search(strategy=strategy, specs=specs, seed=8), total)
    assert other_seed != sequential


def test_the_grid_order_is_optunas_grid_sampler_order(make_search: SearchFactory) -> None:
    search = make_search(strategy=GRID, specs=GRID_SPECS, seed=3)
    ours = run_sequential(search, 16)
    specs = {s["hyperparameterName"]: HyperparameterSpec.from_wire(s) for s in GRID_SPECS}
    distributions = build_distributions(GRID_SPECS)
    theirs: list[dict[str, str]] = []

    def record(trial: optuna.Trial) -> float:
        params = {name: trial._suggest(name, dist) for name, dist in distributions.items()}
        theirs.append({name: specs[name].render(value) for name, value in params.items()})
        return 0.0

    study = optuna.create_study(
        sampler=optuna.samplers.GridSampler(grid_search_space(GRID_SPECS), seed=3)
    )
    study.optimize(record)
    assert ours == theirs


def test_a_grid_ends_after_exactly_its_size(make_search: SearchFactory) -> None:
    search = make_search(strategy=GRID, specs=GRID_SPECS)
    assert search.grid_size() == 16
    suggestions = [search.suggest() for _ in range(16)]  # all in flight at once
    assert all(s is not None for s in suggestions)
    assert search.suggest() is None  # SuggestionEndReached, even before any trial ended
    points = {tuple(s.params.items()) for s in suggestions if s is not None}
    expected = {
        (("lr", lr), ("layers", layers), ("optimizer", optimizer))
        for lr in ("0.1", "0.2", "0.3", "0.4")
        for layers in ("1", "2")
        for optimizer in ("sgd", "adam")
    }
    assert points == expected
    for s in suggestions:
        assert s is not None
        search.complete(s.number, 0.5)
    assert search.suggest() is None
    assert search.suggested_count() == 16
    assert search.counts() == {"COMPLETE": 16}


def test_a_one_point_grid(make_search: SearchFactory) -> None:
    search = make_search(strategy=GRID, specs=[spec("x", "categorical", values="only")])
    first = search.suggest()
    assert first is not None and first.params == {"x": "only"}
    search.complete(first.number, 1.0)  # Optuna's GridSampler would raise KeyError here
    assert search.suggest() is None


def test_tpe_one_at_a_time_is_reproducible(make_search: SearchFactory) -> None:
    total = 14  # past TPE's 10 random startup trials
    first = run_sequential(make_search(strategy=BAYESIAN_OPTIMIZATION), total)
    second = run_sequential(make_search(strategy=BAYESIAN_OPTIMIZATION), total)
    assert first == second
    other = run_sequential(make_search(strategy=BAYESIAN_OPTIMIZATION, seed=8), total)
    assert other != first


def test_tpe_continues_the_same_sequence_after_a_restart(make_search: SearchFactory) -> None:
    uninterrupted = run_sequential(make_search(strategy=BAYESIAN_OPTIMIZATION), 13)
    name = f"tpe-{uuid.uuid4().hex[:8]}"
    before = run_sequential(make_search(strategy=BAYESIAN_OPTIMIZATION, study_name=name), 11)
    after = run_sequential(make_search(strategy=BAYESIAN_OPTIMIZATION, study_name=name), 2)
    assert before + after == uninterrupted


# -------------------------------------------------------------------------------- pruning


def test_the_median_pruner_stops_a_clearly_worse_trial(make_search: SearchFactory) -> None:
    search = make_search(pruner=(2, 2))  # min 2 trials, from step 2 on

    def good_trial() -> None:
        suggestion = search.suggest()
        assert suggestion is not None
        for step in range(1, 6):
            assert search.report(suggestion.number, step, 0.8 + step / 100) is False
        search.complete(suggestion.number, 0.85)

    good_trial()
    early = search.suggest()
    assert early is not None
    assert search.report(early.number, 3, 0.1) is False  # only one trial completed so far
    good_trial()
    bad = search.suggest()
    assert bad is not None
    assert search.report(bad.number, 1, 0.1) is False  # before the start step
    assert search.report(bad.number, 2, 0.1) is True
    fine = search.suggest()
    assert fine is not None
    assert search.report(fine.number, 2, 0.9) is False
    assert search.report(fine.number, 3, math.nan) is False  # ignored
    search.prune(bad.number)
    search.complete(fine.number, 0.9)
    states = {t.number: (t.state, t.value) for t in search.trials()}
    assert states[bad.number] == ("PRUNED", 0.1)
    assert states[fine.number] == ("COMPLETE", 0.9)
    assert search.report(bad.number, 3, 0.1) is False  # a finished trial takes no reports


def test_without_a_pruner_nothing_is_pruned(make_search: SearchFactory) -> None:
    search = make_search(pruner=None)
    for value in (0.9, 0.9, 0.9):
        suggestion = search.suggest()
        assert suggestion is not None
        search.report(suggestion.number, 5, value)
        search.complete(suggestion.number, value)
    bad = search.suggest()
    assert bad is not None
    assert search.report(bad.number, 5, -100.0) is False


def test_failures_and_results(make_search: SearchFactory) -> None:
    search = make_search(direction="minimize")
    numbers = []
    for _ in range(5):
        suggestion = search.suggest()
        assert suggestion is not None
        numbers.append(suggestion.number)
    assert search.best() is None
    search.complete(numbers[0], None)  # METRICS_UNAVAILABLE
    search.complete(numbers[1], math.inf)
    search.fail(numbers[2])
    search.complete(numbers[3], 2.0)
    search.complete(numbers[4], 1.0)
    search.complete(numbers[4], 5.0)  # already finished: ignored
    assert search.counts() == {"FAIL": 3, "COMPLETE": 2}
    best = search.best()
    assert best is not None
    assert (best.number, best.value) == (numbers[4], 1.0)
    assert search.running_numbers() == []


# ------------------------------------------------------------------------------ resuming


@pytest.mark.parametrize("strategy", [RANDOM, GRID])
def test_a_new_search_after_a_crash_continues_without_repeating(
    make_search: SearchFactory, strategy: str
) -> None:
    specs = GRID_SPECS if strategy == GRID else RANGE_SPECS
    uninterrupted = run_sequential(make_search(strategy=strategy, specs=specs), 10)
    name = f"crash-{uuid.uuid4().hex[:8]}"
    dead = make_search(strategy=strategy, specs=specs, study_name=name)
    first = [dead.suggest() for _ in range(5)]
    for s in first[:3]:
        assert s is not None
        dead.complete(s.number, objective(s.params))
    dead.close()  # the driver dies with two trials running

    alive = make_search(strategy=strategy, specs=specs, study_name=name, seed=None)
    assert alive.seed == 7  # the stored seed wins
    left = [s.number for s in first[3:] if s is not None]
    assert alive.running_numbers() == left
    for number in left:
        alive.fail(number)
    assert alive.running_numbers() == []
    rest = run_sequential(alive, 5)
    assert [s.params for s in first if s is not None] + rest == uninterrupted
    assert alive.suggested_count() == 10
    assert alive.counts() == {"COMPLETE": 8, "FAIL": 2}


def test_a_crash_between_recording_and_handing_out_a_grid_point(
    make_search: SearchFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    uninterrupted = run_sequential(make_search(strategy=GRID, specs=GRID_SPECS), 16)
    name = f"crash-{uuid.uuid4().hex[:8]}"
    dead = make_search(strategy=GRID, specs=GRID_SPECS, study_name=name)
    before = run_sequential(dead, 4)
    real_ask = optuna.study.Study.ask

    def crash(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the driver died")

    monkeypatch.setattr(optuna.study.Study, "ask", crash)
    with pytest.raises(RuntimeError):
        dead.suggest()  # the next point is enqueued (WAITING), never handed out
    monkeypatch.setattr(optuna.study.Study, "ask", real_ask)
    dead.close()

    alive = make_search(strategy=GRID, specs=GRID_SPECS, study_name=name)
    assert alive.suggested_count() == 4
    after = run_sequential(alive, 12)
    assert before + after == uninterrupted
    assert alive.suggest() is None


# ---------------------------------------------------------------------------- warm start


def test_warm_start_copies_the_completed_trials_that_fit(make_search: SearchFactory) -> None:
    earlier = make_search(
        specs=[
            spec("lr", "double", low="0.0001", high="0.2"),  # wider than the new range
            *RANGE_SPECS[1:],
        ]
    )
    values = {}
    for _ in range(12):
        suggestion = earlier.suggest()
        assert suggestion is not None
        values[suggestion.number] = objective(suggestion.params)
        earlier.report(suggestion.number, 1, values[suggestion.number] - 1)
        earlier.complete(suggestion.number, values[suggestion.number])
    failed = earlier.suggest()
    assert failed is not None
    earlier.fail(failed.number)
    fitting = {
        t.number: t
        for t in earlier.trials()
        if t.state == "COMPLETE" and float(t.params["lr"]) <= 0.1
    }
    assert 0 < len(fitting) < 12

    later = make_search(strategy=BAYESIAN_OPTIMIZATION)
    assert later.warm_start(earlier.study_name) == len(fitting)
    assert later.warm_start(earlier.study_name) == 0  # idempotent
    copied = later.trials()
    assert all(t.warm_start and t.state == "COMPLETE" for t in copied)
    assert sorted((t.value, sorted(t.params.items())) for t in copied) == sorted(
        (t.value, sorted(t.params.items())) for t in fitting.values()
    )
    best = later.best()
    top = max(fitting.values(), key=lambda t: (t.value, -t.number))
    assert best is not None and best.value == top.value and best.params == top.params
    assert later.suggested_count() == 0 and later.counts() == {}

    suggestion = later.suggest()  # TPE reads the copies as its history
    assert suggestion is not None
    later.complete(suggestion.number, -100.0)
    assert later.suggested_count() == 1 and later.counts() == {"COMPLETE": 1}
    assert later.running_numbers() == []
    assert later.best() == best


def test_warm_start_of_a_grid_skips_the_points_already_evaluated(
    make_search: SearchFactory,
) -> None:
    earlier = make_search(strategy=GRID, specs=GRID_SPECS)
    done = run_sequential(earlier, 5)
    later = make_search(strategy=GRID, specs=GRID_SPECS, seed=11)
    assert later.warm_start(earlier.study_name) == 5
    rest = run_sequential(later, 11)
    assert later.suggest() is None
    assert {tuple(p.items()) for p in done + rest} == {
        tuple(p.items()) for p in run_sequential(make_search(strategy=GRID, specs=GRID_SPECS), 16)
    }
    with pytest.raises(ValueError, match="itself"):
        later.warm_start(later.study_name)


def test_a_study_is_deleted(
    storage: tuple[str, dict[str, Any]], make_search: SearchFactory
) -> None:
    search = make_search()
    run_sequential(search, 2)
    assert delete_study(storage[0], search.study_name, storage[1]) is True
    assert delete_study(storage[0], search.study_name, storage[1]) is False
    again = make_search(study_name=search.study_name)  # a new study of the same name
    assert again.trials() == []


def test_a_study_keeps_its_strategy(make_search: SearchFactory) -> None:
    search = make_search(strategy=RANDOM)
    with pytest.raises(ValueError, match="RANDOM"):
        make_search(strategy=GRID, specs=GRID_SPECS, study_name=search.study_name)


# ------------------------------------------------------------------------ specs and params


def test_distributions_of_the_wire_specs() -> None:
    distributions = build_distributions(
        [
            spec("epochs", "int", low="1", high="10", step="3"),
            spec("batch", "int", low="16", high="64"),
            spec("lr", "double", low="0.001", high="0.1"),
            spec("momentum", "double", low="0.1", high="0.95", step="0.1"),
            spec("units", "discrete", values="32, 64,128"),
            spec("ratio", "discrete", values="0.5,1,2.5"),
            spec("optimizer", "categorical", values="sgd,adam"),
        ]
    )
    dists = optuna.distributions
    assert distributions == {
        "epochs": dists.IntDistribution(1, 10, step=3),
        "batch": dists.IntDistribution(16, 64, step=1),
        "lr": dists.FloatDistribution(0.001, 0.1),
        "momentum": dists.FloatDistribution(0.1, 0.9, step=0.1),  # the last value on the step
        "units": dists.CategoricalDistribution([32, 64, 128]),
        "ratio": dists.CategoricalDistribution([0.5, 1.0, 2.5]),
        "optimizer": dists.CategoricalDistribution(["sgd", "adam"]),
    }
    units = distributions["units"]
    assert isinstance(units, dists.CategoricalDistribution)
    assert all(type(choice) is int for choice in units.choices)


def test_grid_search_space_of_the_wire_specs() -> None:
    space = grid_search_space(
        [
            spec("epochs", "int", low="1", high="10", step="3"),
            spec("momentum", "double", low="0.1", high="0.5", step="0.1"),
            spec("units", "discrete", values="32,64"),
            spec("optimizer", "categorical", values="sgd,adam"),
        ]
    )
    assert space == {
        "epochs": [1, 4, 7, 10],
        "momentum": [0.1, 0.2, 0.3, 0.4, 0.5],  # exact, not 0.30000000000000004
        "units": [32, 64],
        "optimizer": ["sgd", "adam"],
    }
    with pytest.raises(ValueError, match="hyperparameterStep"):
        grid_search_space([spec("lr", "double", low="0.1", high="0.5")])


@pytest.mark.parametrize(
    ("wire", "value", "rendered"),
    [
        (spec("epochs", "int", low="1", high="9"), 3, "3"),
        (spec("epochs", "int", low="1", high="9"), 3.0, "3"),
        (spec("lr", "double", low="0.001", high="0.1"), 0.012345678901234, "0.012345678901234"),
        (spec("lr", "double", low="0.00001", high="0.1"), 1e-05, "1e-05"),
        (spec("lr", "double", low="0", high="1"), 1.0, "1.0"),
        (
            spec("momentum", "double", low="0.1", high="0.9", step="0.1"),
            0.30000000000000004,
            "0.3",
        ),
        (spec("units", "discrete", values="32,64"), 64, "64"),
        (spec("ratio", "discrete", values="0.5,1.0"), 1.0, "1.0"),
        (spec("optimizer", "categorical", values=" adam , sgd"), "adam", "adam"),
        (spec("flag", "categorical", values="True,False"), "True", "True"),
    ],
)
def test_params_render_as_strings(wire: dict[str, str], value: Any, rendered: str) -> None:
    assert HyperparameterSpec.from_wire(wire).render(value) == rendered


def test_suggestions_are_rendered_strings(make_search: SearchFactory) -> None:
    search = make_search()
    for _ in range(20):
        suggestion = search.suggest()
        assert suggestion is not None
        params = suggestion.params
        assert set(params) == {"lr", "layers", "dropout", "optimizer"}
        assert all(isinstance(v, str) for v in params.values())
        assert 0.0001 <= float(params["lr"]) <= 0.1
        assert params["layers"] in {str(n) for n in range(1, 9)}
        assert params["dropout"] in {"0.1", "0.25", "0.5"}
        assert params["optimizer"] in {"sgd", "adam", "rmsprop"}


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ({"hyperparameterTypeCode": "int"}, "hyperparameterName"),
        (spec("x", "float", low="1", high="2"), "hyperparameterTypeCode"),
        (spec("x", "int", low="1.5", high="2"), "not an int"),
        (spec("x", "int", low="5", high="2"), "above max"),
        (spec("x", "double", low="a", high="2"), "not a number"),
        (spec("x", "double", low="0", high="inf"), "not finite"),
        (spec("x", "double", low="0", high="1", step="0"), "positive"),
        (spec("x", "double", high="1"), "hyperparameterMinValue"),
        (spec("x", "categorical", values=" , "), "empty"),
    ],
)
def test_bad_specs_are_refused(wire: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_distributions([wire])


def test_names_must_be_unique_and_strategies_known(
    storage: tuple[str, dict[str, Any]],
) -> None:
    with pytest.raises(ValueError, match="more than once"):
        build_distributions([RANGE_SPECS[0], RANGE_SPECS[0]])
    with pytest.raises(ValueError, match="strategy"):
        Search(storage[0], storage[1], "x", RANGE_SPECS, "HYPERBAND", 1, "maximize")
    with pytest.raises(ValueError, match="direction"):
        Search(storage[0], storage[1], "x", RANGE_SPECS, RANDOM, 1, "up")
