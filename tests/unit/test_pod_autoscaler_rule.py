"""The pod autoscaler's rule (serving.controller): usage in percent of what each pod was
given, and the horizontal pod autoscaler's desired count within the policy's bounds."""

from __future__ import annotations

from serving.controller import ScalePolicy, desired_pods, utilization

CPU = ScalePolicy(metric="CPU", target=50, min_pods=1, max_pods=4)
MEMORY = ScalePolicy(metric="MEMORY", target=80, min_pods=2, max_pods=3)


def test_usage_is_the_mean_percent_of_what_each_pod_was_given() -> None:
    usages = [{"cpuCores": 0.5, "memoryBytes": 100.0}, {"cpuCores": 0.25, "memoryBytes": 300.0}]
    assert utilization(CPU, usages, given=0.5) == 75.0
    assert utilization(MEMORY, usages, given=400.0) == 50.0
    assert utilization(CPU, [], given=0.5) == 0.0


def test_the_count_follows_usage_over_target_within_the_bounds() -> None:
    assert desired_pods(CPU, current=1, percent=100.0) == 2
    assert desired_pods(CPU, current=2, percent=120.0) == 4  # ceil(2 * 2.4) = 5, bounded
    assert desired_pods(CPU, current=3, percent=10.0) == 1
    assert desired_pods(CPU, current=2, percent=53.0) == 2  # within 10 % of the target
    assert desired_pods(MEMORY, current=3, percent=1.0) == 2  # never under the lower bound
    assert desired_pods(MEMORY, current=0, percent=0.0) == 2


def test_a_policy_is_read_from_the_deployment() -> None:
    raw = {"metric": "memory", "target": 70, "minPods": 1, "maxPods": 5}
    assert ScalePolicy.from_dict(raw) == ScalePolicy("MEMORY", 70, 1, 5)
    assert ScalePolicy.from_dict(None) is None
