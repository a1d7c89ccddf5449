"""The control plane is what Chalice packages for Lambda: it must not pull in Ray, torch,
Optuna, the runners or the CLI (DESIGN.md section 1)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_app_loads_no_ray_torch_or_runner_code() -> None:
    probe = (
        "import sys, app\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'ray', 'torch', 'runners', 'sklearn', 'tensorboard', 'openmaker', 'optuna'})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
