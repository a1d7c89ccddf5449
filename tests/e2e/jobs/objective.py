"""A tiny objective: loss = (x - 3)^2 + (0.1 if optimizer == 'sgd'), printed as it 'trains'."""

import argparse
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
parser.add_argument("--optimizer", default="adam")
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--fail_above", type=float, default=1e9)
args = parser.parse_args()
if args.x > args.fail_above:
    raise SystemExit(f"x={args.x} is too large for this model")
target = (args.x - 3) ** 2 + (0.1 if args.optimizer == "sgd" else 0.0)
for step in range(1, args.steps + 1):
    loss = target + 1.0 / step
    print(f"epoch={step} loss={loss:.6f} accuracy={1 / (1 + loss):.6f}", flush=True)
    time.sleep(0.05)
with open(os.path.join(os.environ["EM_MODEL_DIR"], "model.txt"), "w") as handle:
    handle.write(f"x={args.x} optimizer={args.optimizer}\n")
