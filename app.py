"""OpenMaker control plane: a Chalice app with one Blueprint per resource and one tick."""

from __future__ import annotations

from typing import Any

from chalice import Chalice

from chalicelib.api import (
    catalog,
    endpoints,
    experiments,
    logs,
    meta,
    models,
    tensorboard,
    training_templates,
    trainings,
    tunings,
    uploads,
)
from chalicelib.services.tick import tick

app = Chalice(app_name="openmaker")
app.api.binary_types = []

for module in (
    meta,
    experiments,
    training_templates,
    trainings,
    tunings,
    models,
    endpoints,
    logs,
    uploads,
    catalog,
    tensorboard,
):
    app.register_blueprint(module.api.blueprint)


@app.schedule("rate(1 minute)")
def scheduled_tick(event: Any) -> None:
    tick()
