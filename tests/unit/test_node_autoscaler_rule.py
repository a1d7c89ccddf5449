"""The node autoscaler's rule (serving.nodescale): up at once when the pods' cores do not fit,
down only after use stayed low long enough and not soon after an addition, within bounds."""

from __future__ import annotations

from serving.nodescale import NodeScaler

PLAN = {
    "count": 1,
    "flavor": {"cpus": 2, "memoryBytes": 4 * 2**30, "gpus": 0},
    "autoscale": {
        "minNodes": 1,
        "maxNodes": 3,
        "scaleDown": True,
        "utilThreshold": 50,
        "unneededMinutes": 2,
        "delayAfterAddMinutes": 5,
    },
}


def test_nodes_follow_the_pods_within_the_bounds() -> None:
    scaler = NodeScaler.from_plan(PLAN)

    assert scaler.decide(pod_cores=1.5, used_cores=1.0, now=0) is None  # fits on one
    assert scaler.decide(pod_cores=3.0, used_cores=2.5, now=10) == 2
    assert scaler.decide(pod_cores=9.0, used_cores=2.5, now=20) == 3  # never over the max
    assert scaler.decide(pod_cores=9.0, used_cores=2.5, now=30) is None
    # the pods shrank: down only after 2 minutes under 50 % and 5 minutes after the add
    assert scaler.decide(pod_cores=1.0, used_cores=0.2, now=40) is None
    assert scaler.decide(pod_cores=1.0, used_cores=0.2, now=200) is None  # added at 20
    assert scaler.decide(pod_cores=1.0, used_cores=4.0, now=330) is None  # busy: starts over
    assert scaler.decide(pod_cores=1.0, used_cores=0.2, now=340) is None
    assert scaler.decide(pod_cores=1.0, used_cores=0.2, now=460) == 1
    assert scaler.decisions[0].startswith("node autoscaler: 1 -> 2 nodes")
    assert "bounds 1..3" in scaler.decisions[-1] and "3 -> 1 nodes" in scaler.decisions[-1]


def test_without_the_autoscaler_or_scale_down_the_count_stays() -> None:
    fixed = NodeScaler.from_plan({"count": 2, "flavor": PLAN["flavor"]})
    assert fixed.decide(pod_cores=20, used_cores=20, now=0) is None and fixed.nodes == 2
    assert fixed.flavor.bundle() == {"CPU": 2.0, "memory": 4.0 * 2**30}
    no_down = NodeScaler.from_plan(
        {**PLAN, "autoscale": {**PLAN["autoscale"], "scaleDown": False}}
    )
    assert no_down.decide(pod_cores=4, used_cores=0, now=0) == 2
    assert no_down.decide(pod_cores=1, used_cores=0, now=10_000) is None
