"""Metrics parsed from a trial's log lines (Katib's TEXT format)."""

from __future__ import annotations

import pytest

from runners.tuning.metrics import DEFAULT_METRIC_REGEX, MetricCollector


def collector(names: list[str] | None = None, objective: str = "accuracy") -> MetricCollector:
    return MetricCollector(DEFAULT_METRIC_REGEX, names if names is not None else [], objective)


def test_realistic_lines_yield_the_objective_with_counted_steps() -> None:
    metrics = collector(["accuracy", "loss"])
    lines = [
        "2024-05-01 10:00:00,123 INFO Starting training on 1 GPU",
        "Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.301",  # no name=value pair
        "accuracy=0.81 loss=0.52",
        "INFO:root:Validation-accuracy=0.9",  # another metric: the name is the whole token
        "accuracy = 0.875",
        "accuracy=9.1e-1",
    ]
    seen = [value for line in lines for value in metrics.feed(line)]
    assert seen == [(1, 0.81), (2, 0.875), (3, 0.91)]
    assert metrics.observations == 3


def test_step_or_epoch_on_the_same_line_is_the_step() -> None:
    metrics = collector(["accuracy"])
    assert metrics.feed("epoch=3 loss=0.2 accuracy=0.9") == [(3, 0.9)]
    assert metrics.feed("step=120 epoch=4 accuracy=0.91") == [(120, 0.91)]  # step wins
    assert metrics.feed("accuracy=0.92") == [(3, 0.92)]  # the third observation
    assert metrics.feed("epoch=2.5 accuracy=0.93") == [(4, 0.93)]  # not an integral step


def test_several_metrics_on_one_line_are_all_kept() -> None:
    metrics = collector(["accuracy", "loss", "f1"])
    assert metrics.feed("epoch=1 loss=0.4 accuracy=0.8 f1=0.7") == [(1, 0.8)]
    assert metrics.feed("epoch=2 loss=0.3 accuracy=0.85 f1=0.75") == [(2, 0.85)]
    summary = metrics.summary()
    assert summary["loss"] == {"min": 0.3, "max": 0.4, "latest": 0.3}
    assert summary["f1"] == {"min": 0.7, "max": 0.75, "latest": 0.75}
    assert "epoch" not in summary  # not a named metric


def test_names_outside_the_list_are_ignored_but_the_objective_never_is() -> None:
    metrics = collector(["loss"], objective="accuracy")
    assert metrics.feed("lr=0.01 loss=1.5 accuracy=0.5 gpu-mem=300") == [(1, 0.5)]
    assert set(metrics.summary()) == {"loss", "accuracy"}


def test_without_names_every_metric_is_kept() -> None:
    metrics = collector([])
    metrics.feed("lr=0.01 loss=1.5 accuracy=0.5")
    assert set(metrics.summary()) == {"lr", "loss", "accuracy"}


def test_non_finite_values_are_ignored() -> None:
    metrics = MetricCollector(r"(\w+)=(\S+)", [], "loss")  # a regex that can read "nan"
    assert metrics.feed("loss=nan") == []
    assert metrics.feed("loss=inf") == []
    assert metrics.feed("loss=-Infinity") == []
    assert metrics.feed("loss=abc") == []
    assert metrics.feed("loss=0.5") == [(1, 0.5)]
    assert metrics.summary() == {"loss": {"min": 0.5, "max": 0.5, "latest": 0.5}}


def test_the_katib_regex_skips_a_name_without_a_number() -> None:
    metrics = collector(["accuracy"])
    assert metrics.feed("accuracy=NaN") == []
    assert metrics.feed("accuracy=") == []
    assert metrics.feed("accuracy=-.5") == [(1, -0.5)]


def test_min_max_latest_and_value() -> None:
    metrics = collector(["accuracy", "loss"])
    for line in ["accuracy=0.7 loss=0.9", "accuracy=0.9 loss=0.4", "accuracy=0.8 loss=0.6"]:
        metrics.feed(line)
    assert metrics.summary()["accuracy"] == {"min": 0.7, "max": 0.9, "latest": 0.8}
    assert metrics.value("max") == 0.9
    assert metrics.value("min") == 0.7
    assert metrics.value("latest") == 0.8
    assert metrics.value("min", "loss") == 0.4
    assert metrics.value("latest", "f1") is None


def test_a_fresh_collector_has_nothing() -> None:
    metrics = collector(["accuracy"])
    assert metrics.summary() == {}
    assert metrics.value() is None
    assert metrics.feed("") == []
    assert metrics.feed("no metrics here") == []


def test_a_regex_without_two_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="two groups"):
        MetricCollector(r"\w+=\d+", [], "accuracy")
    with pytest.raises(ValueError, match="name"):
        MetricCollector(DEFAULT_METRIC_REGEX, [], "")


def test_an_empty_regex_means_katibs_default() -> None:
    assert MetricCollector("", [], "accuracy").feed("accuracy=0.5") == [(1, 0.5)]


def test_a_custom_regex_for_json_lines() -> None:
    metrics = MetricCollector(r'"(\w+)":\s*([\d.]+)', ["accuracy"], "accuracy")
    assert metrics.feed('{"epoch": 2, "accuracy": 0.75}') == [(2, 0.75)]
