"""A trial node that leaves a trace: appends ``"<trial number> <node rank> <pid>"`` to
``--marker``, sleeps ``--seconds``; node 0 then prints ``loss=(x - 3)^2``."""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
parser.add_argument("--marker", required=True)
parser.add_argument("--seconds", type=float, default=3)
args = parser.parse_args()
rank = os.environ["EM_NODE_RANK"]
with open(args.marker, "a") as handle:
    handle.write(f"{os.environ['EM_TRIAL_NUMBER']} {rank} {os.getpid()}\n")
time.sleep(args.seconds)
if rank == "0":
    print(f"loss={(args.x - 3) ** 2:.6f}", flush=True)
