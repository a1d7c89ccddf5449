"""The search behind a hyperparameter tuning: one Optuna study per tuning, on an RDB storage
next to the platform's database, that hands out suggestions in a reproducible order.

Determinism. Optuna does not promise the same suggestions for the same seed once trials run
in parallel (a sampler's random state and the history it reads both depend on which trial
finished first). Here a suggestion is a function of its *index* (0, 1, 2, ... among the
tuning's own trials) and the seed, never of the order in which trials end:

* GRID: the grid is the product of the values in sorted name order, permuted once with
  ``numpy.random.RandomState(seed)`` (the order Optuna's ``GridSampler(space, seed)`` gives
  trials 0..n-1 when run alone); suggestion ``i`` is position ``i`` of that order (skipping
  points a warm start already evaluated), recorded with ``enqueue_trial`` + ``ask``.
* RANDOM: suggestion ``i`` comes from a fresh ``RandomSampler(seed=derive(seed, i))``, which
  reads no history, so it is a pure function of (spec, seed, i).
* BAYESIAN_OPTIMIZATION: suggestion ``i`` comes from a fresh ``TPESampler(seed=derive(seed,
  i))`` over the study's history; with one trial at a time the history at index ``i`` is
  fixed too, so the sequence is reproducible, also across a restart of the driver.

The next index is read back from the stored trials, so a new :class:`Search` on the same study
(after the driver died) continues where the old one stopped without repeating a suggestion.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.pruners import BasePruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from chalicelib.store.studies import normalize_url, optuna_storage_url

optuna.logging.set_verbosity(optuna.logging.WARNING)
logger = logging.getLogger(__name__)

GRID = "GRID"
RANDOM = "RANDOM"
BAYESIAN_OPTIMIZATION = "BAYESIAN_OPTIMIZATION"
STRATEGIES = (GRID, RANDOM, BAYESIAN_OPTIMIZATION)

TYPE_INT = "int"
TYPE_DOUBLE = "double"
TYPE_DISCRETE = "discrete"
TYPE_CATEGORICAL = "categorical"
TYPE_CODES = (TYPE_INT, TYPE_DOUBLE, TYPE_DISCRETE, TYPE_CATEGORICAL)

MAX_GRID_SIZE = 10_000_000

# Trial user attributes written by this module.
INDEX_ATTR = "suggestion_index"  # the trial's place in the tuning's suggestion order
WARM_START_ATTR = "warm_start"  # copied from an earlier tuning: not one of this tuning's trials
WARM_SOURCE_ATTR = "warm_start_source"  # "<study name>#<trial number>" it was copied from
# Study user attributes.
SEED_ATTR = "openmaker_seed"
STRATEGY_ATTR = "openmaker_strategy"

_PG_LOCK_ID = 0x0E4A_0B7A  # serializes creating Optuna's schema and tables on PostgreSQL
_INT_LITERAL = re.compile(r"^[+-]?\d+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SEARCH_PATH = re.compile(r"-csearch_path=([^\s,]+)")


# --------------------------------------------------------------------------- specifications


@dataclass(frozen=True)
class HyperparameterSpec:
    """One hyperparameter, parsed from the SDK's wire shape."""

    name: str
    type_code: str
    low: Decimal | None = None
    high: Decimal | None = None  # for a range with a step: the last value on the step
    step: Decimal | None = None
    values: tuple[int | float | str, ...] = ()  # discrete (numbers) and categorical (strings)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> HyperparameterSpec:
        name = str(data.get("hyperparameterName") or "").strip()
        if not name:
            raise ValueError("a hyperparameter needs a hyperparameterName")
        type_code = str(data.get("hyperparameterTypeCode") or "").strip().lower()
        if type_code not in TYPE_CODES:
            raise ValueError(
                f"hyperparameter {name!r}: hyperparameterTypeCode must be one of "
                f"{', '.join(TYPE_CODES)}, not {type_code!r}"
            )
        if type_code in (TYPE_INT, TYPE_DOUBLE):
            return cls._range(name, type_code, data)
        raw = data.get("hyperparameterSpecifiedValues")
        items = raw if isinstance(raw, list | tuple) else str(raw or "").split(",")
        texts = [str(item).strip() for item in items if str(item).strip()]
        if not texts:
            raise ValueError(f"hyperparameter {name!r}: hyperparameterSpecifiedValues is empty")
        values: list[int | float | str]
        if type_code == TYPE_CATEGORICAL:
            values = list(texts)
        else:
            numbers = [_decimal(name, "hyperparameterSpecifiedValues", t) for t in texts]
            if all(_INT_LITERAL.match(t) for t in texts):
                values = [int(n) for n in numbers]
            else:
                values = [float(n) for n in numbers]
        return cls(name=name, type_code=type_code, values=tuple(_unique(values)))

    @classmethod
    def _range(cls, name: str, type_code: str, data: Mapping[str, Any]) -> HyperparameterSpec:
        low = _decimal(name, "hyperparameterMinValue", data.get("hyperparameterMinValue"))
        high = _decimal(name, "hyperparameterMaxValue", data.get("hyperparameterMaxValue"))
        raw_step = data.get("hyperparameterStep")
        step = (
            _decimal(name, "hyperparameterStep", raw_step)
            if raw_step is not None and str(raw_step).strip() != ""
            else None
        )
        if low > high:
            raise ValueError(f"hyperparameter {name!r}: min value {low} is above max {high}")
        if step is not None and step <= 0:
            raise ValueError(f"hyperparameter {name!r}: step must be positive, not {step}")
        if type_code == TYPE_INT:
            for label, number in (("min", low), ("max", high), ("step", step)):
                if number is not None and number != number.to_integral_value():
                    raise ValueError(f"hyperparameter {name!r}: {label} {number} is not an int")
            step = step or Decimal(1)
        if step is not None:  # the last value on the step (Optuna would warn and do the same)
            high = low + ((high - low) // step) * step
        return cls(name=name, type_code=type_code, low=low, high=high, step=step)

    @property
    def decimals(self) -> int:
        """Decimal places of a double range with a step: its values are rounded to these."""
        places = [-int(n.as_tuple().exponent) for n in (self.low, self.step) if n is not None]
        return max([0, *places])

    def render(self, value: Any) -> str:
        """A value as it is passed to the training as ``--name value``."""
        if self.type_code == TYPE_CATEGORICAL:
            return str(value)
        if self.type_code == TYPE_INT or (isinstance(value, int) and not isinstance(value, bool)):
            return str(int(value))
        number = float(value)
        if self.type_code == TYPE_DOUBLE and self.step is not None:
            number = round(number, self.decimals)
        return repr(number)


def _decimal(name: str, field: str, raw: Any) -> Decimal:
    if raw is None or str(raw).strip() == "":
        raise ValueError(f"hyperparameter {name!r}: {field} is required")
    try:
        number = Decimal(str(raw).strip())
    except InvalidOperation:
        raise ValueError(f"hyperparameter {name!r}: {field} {raw!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"hyperparameter {name!r}: {field} {raw!r} is not finite")
    return number


def _unique(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


SpecLike = Mapping[str, Any] | HyperparameterSpec


def parse_specs(specs: Iterable[SpecLike]) -> list[HyperparameterSpec]:
    parsed = [
        spec if isinstance(spec, HyperparameterSpec) else HyperparameterSpec.from_wire(spec)
        for spec in specs
    ]
    if not parsed:
        raise ValueError("a tuning needs at least one hyperparameter")
    names = [spec.name for spec in parsed]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"hyperparameters named more than once: {', '.join(duplicated)}")
    return parsed


def _distribution(spec: HyperparameterSpec) -> BaseDistribution:
    if spec.type_code == TYPE_INT:
        assert spec.low is not None and spec.high is not None and spec.step is not None
        return IntDistribution(int(spec.low), int(spec.high), step=int(spec.step))
    if spec.type_code == TYPE_DOUBLE:
        assert spec.low is not None and spec.high is not None
        step = float(spec.step) if spec.step is not None else None
        return FloatDistribution(float(spec.low), float(spec.high), step=step)
    return CategoricalDistribution(spec.values)


def build_distributions(specs: Iterable[SpecLike]) -> dict[str, BaseDistribution]:
    """Optuna distributions of the hyperparameters, in the order given."""
    return {spec.name: _distribution(spec) for spec in parse_specs(specs)}


def _grid_values(spec: HyperparameterSpec) -> list[Any]:
    if spec.type_code not in (TYPE_INT, TYPE_DOUBLE):
        return list(spec.values)
    assert spec.low is not None and spec.high is not None
    if spec.step is None:
        if spec.low != spec.high:
            raise ValueError(
                f"hyperparameter {spec.name!r}: a GRID search needs hyperparameterStep "
                "for a double range"
            )
        return [float(spec.low)]
    count = int((spec.high - spec.low) // spec.step) + 1
    points = [spec.low + k * spec.step for k in range(count)]
    if spec.type_code == TYPE_INT:
        return [int(p) for p in points]
    return [float(p) for p in points]


def grid_search_space(specs: Iterable[SpecLike]) -> dict[str, list[Any]]:
    """The candidate values of every hyperparameter, as ``GridSampler`` takes them."""
    return {spec.name: _grid_values(spec) for spec in parse_specs(specs)}


class _Grid:
    """The grid in a seeded order; position ``i`` decoded on demand (never all points)."""

    def __init__(self, space: Mapping[str, list[Any]], seed: int) -> None:
        self.names = sorted(space)  # GridSampler's order: sorted names, last varies fastest
        self.axes = [space[name] for name in self.names]
        self.size = math.prod(len(axis) for axis in self.axes)
        if self.size > MAX_GRID_SIZE:
            raise ValueError(f"the grid has {self.size} points, more than {MAX_GRID_SIZE}")
        # The permutation GridSampler applies to its list of points (Fisher-Yates, RandomState).
        self._order = np.random.RandomState(seed & 0xFFFF_FFFF).permutation(self.size)

    def params(self, position: int) -> dict[str, Any]:
        flat = int(self._order[position])
        values: list[Any] = []
        for axis in reversed(self.axes):
            flat, rest = divmod(flat, len(axis))
            values.append(axis[rest])
        return dict(zip(self.names, reversed(values), strict=True))


def derive_seed(seed: int, index: int) -> int:
    """The sampler seed of suggestion ``index``: independent streams, unlike ``seed + index``
    (where seed 0 index 1 and seed 1 index 0 would draw the same values)."""
    digest = hashlib.sha256(f"openmaker-tuning:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


# --------------------------------------------------------------------------------- storage


def _search_path_schema(engine_kwargs: Mapping[str, Any]) -> str | None:
    options = str(engine_kwargs.get("connect_args", {}).get("options", ""))
    match = _SEARCH_PATH.search(options)
    return match.group(1) if match else None


def open_storage(url: str, engine_kwargs: Mapping[str, Any] | None = None) -> RDBStorage:
    """An Optuna RDB storage; creates the PostgreSQL schema named by the search path and
    Optuna's tables if missing, safe against other processes doing the same at once."""
    url = normalize_url(url)
    kwargs = copy.deepcopy(dict(engine_kwargs or {}))
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return _open_postgres(url, kwargs, _search_path_schema(kwargs))
    if backend == "sqlite":
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):  # two processes creating the tables at once: one loses
            try:
                return RDBStorage(url, engine_kwargs=kwargs)
            except DBAPIError:
                if attempt == 2:
                    raise
                time.sleep(0.2)
    return RDBStorage(url, engine_kwargs=kwargs)


def _open_postgres(url: str, kwargs: dict[str, Any], schema: str | None) -> RDBStorage:
    if schema is not None and not _IDENTIFIER.match(schema):
        raise ValueError(f"not a plain schema name: {schema!r}")
    admin = create_engine(url, poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _PG_LOCK_ID})
            try:
                if schema is not None:
                    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                connection.commit()
                return RDBStorage(url, engine_kwargs=kwargs)
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _PG_LOCK_ID})
                connection.commit()
    finally:
        admin.dispose()


def delete_study(
    storage: BaseStorage | str, name: str, engine_kwargs: Mapping[str, Any] | None = None
) -> bool:
    """Delete a study and its trials; False if there was none of that name."""
    owned = open_storage(storage, engine_kwargs) if isinstance(storage, str) else None
    try:
        optuna.delete_study(study_name=name, storage=owned or storage)
        return True
    except KeyError:
        return False
    finally:
        if owned is not None:
            owned.engine.dispose()


# ---------------------------------------------------------------------------------- search


class Suggestion(NamedTuple):
    number: int  # the Optuna trial number
    params: dict[str, str]  # rendered as they are passed: ``--name value``


class BestTrial(NamedTuple):
    number: int
    value: float
    params: dict[str, str]


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: str  # Optuna's TrialState name: RUNNING, COMPLETE, PRUNED, FAIL, WAITING
    value: float | None
    params: dict[str, str]
    warm_start: bool
    index: int | None  # place in the suggestion order; None for warm-start trials


def _is_warm(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(WARM_START_ATTR))


def _contains(distribution: BaseDistribution, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def _strategy(name: str) -> str:
    upper = name.strip().upper()
    if upper == "TPE":
        return BAYESIAN_OPTIMIZATION
    if upper not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; one of {', '.join(STRATEGIES)}")
    return upper


class Search:
    """One tuning's study: suggestions in a fixed order, results, pruning and warm start.

    ``pruner`` is ``(min_trials, start_step)`` for Optuna's ``MedianPruner(n_startup_trials=
    min_trials, n_warmup_steps=start_step)``, or None for no early stopping. Thread-safe.
    """

    def __init__(
        self,
        storage_url: str | BaseStorage,
        engine_kwargs: Mapping[str, Any] | None,
        study_name: str,
        specs: Iterable[SpecLike],
        strategy: str,
        seed: int | None,
        direction: str,
        pruner: tuple[int, int] | None = None,
    ) -> None:
        self.specs = {spec.name: spec for spec in parse_specs(specs)}
        self.strategy = _strategy(strategy)
        self.distributions = {name: _distribution(spec) for name, spec in self.specs.items()}
        direction = direction.strip().lower()
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be minimize or maximize, not {direction!r}")
        self.study_name = study_name
        self._lock = threading.RLock()
        self._trial_ids: dict[int, int] = {}
        self._owned: RDBStorage | None = None
        self._storage: BaseStorage
        if isinstance(storage_url, str):
            self._owned = self._storage = open_storage(storage_url, engine_kwargs)
        else:
            self._storage = storage_url
        self._pruner: BasePruner = (
            MedianPruner(n_startup_trials=pruner[0], n_warmup_steps=pruner[1])
            if pruner is not None
            else NopPruner()
        )
        try:
            self._study = optuna.create_study(
                storage=self._storage,
                sampler=self._sampler(seed, None),
                pruner=self._pruner,
                study_name=study_name,
                direction=StudyDirection.MAXIMIZE
                if direction == "maximize"
                else StudyDirection.MINIMIZE,
                load_if_exists=True,
            )
            self.seed = self._settle(seed, direction)
            self._study_id = self._storage.get_study_id_from_name(study_name)
            self._grid = (
                _Grid(grid_search_space(self.specs.values()), self.seed)
                if self.strategy == GRID
                else None
            )
        except BaseException:
            self.close()
            raise

    # -- setup

    def _sampler(self, seed: int | None, index: int | None) -> BaseSampler:
        """The sampler drawing suggestion ``index`` (a fresh one, seeded for that index)."""
        if seed is not None and index is not None:
            seed = derive_seed(seed, index)
        if self.strategy == BAYESIAN_OPTIMIZATION:
            return TPESampler(seed=seed)
        # GRID trials have all their params fixed (enqueued), so no sampler draws for them;
        # not GridSampler, whose after_trial calls study.stop() (a RuntimeError outside
        # optimize()) or fails with KeyError on trials without its grid_id.
        return RandomSampler(seed=seed)

    def _settle(self, seed: int | None, direction: str) -> int:
        """The study's seed and strategy, written on creation and read back on a resume."""
        attrs = self._study.user_attrs
        stored_strategy = attrs.get(STRATEGY_ATTR)
        if stored_strategy is not None and stored_strategy != self.strategy:
            raise ValueError(
                f"study {self.study_name!r} was created for {stored_strategy}, not {self.strategy}"
            )
        if self._study.direction.name.lower() != direction:
            logger.warning(
                "study %s keeps its direction %s", self.study_name, self._study.direction.name
            )
        stored_seed = attrs.get(SEED_ATTR)
        if stored_seed is not None:
            if seed is not None and seed != stored_seed:
                logger.warning(
                    "study %s keeps the seed %s it was created with (not %s)",
                    self.study_name,
                    stored_seed,
                    seed,
                )
            return int(stored_seed)
        settled = seed if seed is not None else secrets.randbelow(2**31)
        self._study.set_user_attr(SEED_ATTR, settled)
        self._study.set_user_attr(STRATEGY_ATTR, self.strategy)
        return settled

    def close(self) -> None:
        """Release the database connections of a storage this object opened."""
        if self._owned is not None:
            self._owned.engine.dispose()

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- suggestions

    def suggest(self) -> Suggestion | None:
        """The next hyperparameters to try, recorded as a RUNNING trial; None once a GRID is
        exhausted (SuggestionEndReached)."""
        with self._lock:
            own = [t for t in self._study.get_trials(deepcopy=False) if not _is_warm(t)]
            if self._grid is not None:
                if not any(t.state == TrialState.WAITING for t in own):
                    position = self._next_grid_position(own)
                    if position is None:
                        return None
                    self._study.enqueue_trial(
                        self._grid.params(position), user_attrs={INDEX_ATTR: position}
                    )
                self._study.sampler = self._sampler(None, None)  # draws nothing: params fixed
                trial = self._study.ask(self.distributions)  # takes the enqueued trial
            else:
                index = len(own)
                self._study.sampler = self._sampler(self.seed, index)
                trial = self._study.ask(self.distributions)
                trial.set_user_attr(INDEX_ATTR, index)
            return Suggestion(trial.number, self._render(trial.params))

    def _next_grid_position(self, own: Sequence[FrozenTrial]) -> int | None:
        assert self._grid is not None
        position = 1 + max((int(t.user_attrs.get(INDEX_ATTR, -1)) for t in own), default=-1)
        evaluated = {
            self._key(t.params)
            for t in self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _is_warm(t)
        }
        while position < self._grid.size:
            if not evaluated or self._key(self._grid.params(position)) not in evaluated:
                return position
            position += 1
        return None

    def _key(self, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        try:
            return tuple(
                dist.to_internal_repr(params[name]) for name, dist in self.distributions.items()
            )
        except (KeyError, ValueError):
            return None

    def _render(self, params: Mapping[str, Any]) -> dict[str, str]:
        return {
            name: self.specs[name].render(params[name]) for name in self.specs if name in params
        }

    def grid_size(self) -> int | None:
        """The number of points of a GRID search; None for the other strategies."""
        return self._grid.size if self._grid is not None else None

    # -- results

    def _trial_id(self, number: int) -> int:
        trial_id = self._trial_ids.get(number)
        if trial_id is None:
            trial_id = self._storage.get_trial_id_from_study_id_trial_number(
                self._study_id, number
            )
            self._trial_ids[number] = trial_id
        return trial_id

    def report(self, number: int, step: int, value: float) -> bool:
        """Record an intermediate objective value; whether the trial should now be pruned."""
        if not math.isfinite(value):
            return False
        with self._lock:
            trial_id = self._trial_id(number)
            try:
                self._storage.set_trial_intermediate_value(trial_id, int(step), float(value))
            except UpdateFinishedTrialError:
                return False
            return bool(self._pruner.prune(self._study, self._storage.get_trial(trial_id)))

    def complete(self, number: int, value: float | None) -> None:
        """Finish a trial with its objective value; without one (or a non-finite one) the
        trial FAILS in Optuna's terms (e.g. METRICS_UNAVAILABLE). Idempotent."""
        if value is None or not math.isfinite(value):
            self._tell(number, None, TrialState.FAIL)
        else:
            self._tell(number, float(value), TrialState.COMPLETE)

    def fail(self, number: int) -> None:
        self._tell(number, None, TrialState.FAIL)

    def prune(self, number: int) -> None:
        """Finish a trial stopped early; its last intermediate value becomes its value."""
        self._tell(number, None, TrialState.PRUNED)

    def _tell(self, number: int, value: float | None, state: TrialState) -> None:
        with self._lock:
            self._study.tell(number, value, state=state, skip_if_finished=True)

    def best(self) -> BestTrial | None:
        """The best COMPLETE trial, warm-start ones included; the lowest number on a tie."""
        with self._lock:
            trials = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        scored = [t for t in trials if t.value is not None]
        if not scored:
            return None
        sign = -1.0 if self._study.direction == StudyDirection.MAXIMIZE else 1.0
        best = min(scored, key=lambda t: (sign * float(t.value or 0.0), t.number))
        assert best.value is not None
        return BestTrial(best.number, float(best.value), self._render(best.params))

    # -- bookkeeping

    def trials(self) -> list[TrialRecord]:
        with self._lock:
            trials = self._study.get_trials(deepcopy=False)
        return [
            TrialRecord(
                number=t.number,
                state=t.state.name,
                value=t.value if t.state != TrialState.RUNNING else None,
                params=self._render(t.params),
                warm_start=_is_warm(t),
                index=None if _is_warm(t) else t.user_attrs.get(INDEX_ATTR),
            )
            for t in trials
        ]

    def suggested_count(self) -> int:
        """How many suggestions this tuning handed out (warm-start trials excluded)."""
        return sum(1 for t in self.trials() if not t.warm_start and t.state != "WAITING")

    def counts(self) -> dict[str, int]:
        """This tuning's own trials by state name (warm-start trials excluded)."""
        counts: dict[str, int] = {}
        for record in self.trials():
            if not record.warm_start and record.state != "WAITING":
                counts[record.state] = counts.get(record.state, 0) + 1
        return counts

    def running_numbers(self) -> list[int]:
        """Own trials still RUNNING: after a driver died, those it left behind (to fail)."""
        return [t.number for t in self.trials() if not t.warm_start and t.state == "RUNNING"]

    # -- warm start

    def warm_start(self, from_study_name: str) -> int:
        """Copy the COMPLETE trials of an earlier study (on this storage) whose params fit
        this search space; idempotent. The number of trials copied now."""
        if from_study_name == self.study_name:
            raise ValueError("a study cannot warm-start from itself")
        source = optuna.load_study(
            study_name=from_study_name, storage=self._storage, sampler=RandomSampler()
        )
        with self._lock:
            copied = {
                t.user_attrs.get(WARM_SOURCE_ATTR)
                for t in self._study.get_trials(deepcopy=False)
                if _is_warm(t)
            }
            fresh: list[FrozenTrial] = []
            for trial in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                origin = str(
                    trial.user_attrs.get(WARM_SOURCE_ATTR) or f"{from_study_name}#{trial.number}"
                )
                if origin in copied or trial.value is None or not self._fits(trial.params):
                    continue
                copied.add(origin)
                fresh.append(
                    optuna.trial.create_trial(
                        params={name: trial.params[name] for name in self.distributions},
                        distributions=self.distributions,
                        value=trial.value,
                        intermediate_values=dict(trial.intermediate_values),
                        user_attrs={WARM_START_ATTR: True, WARM_SOURCE_ATTR: origin},
                    )
                )
            self._study.add_trials(fresh)
        return len(fresh)

    def _fits(self, params: Mapping[str, Any]) -> bool:
        if set(params) != set(self.distributions):
            return False
        return all(_contains(dist, params[name]) for name, dist in self.distributions.items())


__all__ = [
    "BAYESIAN_OPTIMIZATION",
    "GRID",
    "RANDOM",
    "BestTrial",
    "HyperparameterSpec",
    "Search",
    "Suggestion",
    "TrialRecord",
    "build_distributions",
    "delete_study",
    "derive_seed",
    "grid_search_space",
    "open_storage",
    "optuna_storage_url",
    "parse_specs",
]
