"""``python -m runners.tuning <tuning-id>``: the driver of one hyperparameter tuning (a Ray
job whose submission id is the tuning id)."""

from __future__ import annotations

import sys

from runners.tuning.driver import TuningDriver


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m runners.tuning <hyperparameter-tuning-id>", file=sys.stderr)
        return 2
    return TuningDriver(args[0], handle_signals=True).run()


if __name__ == "__main__":
    sys.exit(main())
