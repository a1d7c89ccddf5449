"""A trial that leaves a trace: appends ``"<trial number> <pid>"`` to ``--marker`` (one line
per run of the entry point), sleeps ``--seconds``, then prints ``loss=(x - 3)^2``."""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
parser.add_argument("--marker", required=True)
parser.add_argument("--seconds", type=float, default=3)
args = parser.parse_args()
with open(args.marker, "a") as handle:
    handle.write(f"{os.environ.get('EM_TRIAL_NUMBER', 'x')} {os.getpid()}\n")
print("training", flush=True)
time.sleep(args.seconds)
print(f"loss={(args.x - 3) ** 2:.6f}", flush=True)
