"""A two-node trial without torch: node 0 reports the loss; node 1 gives up when x >= 2."""

import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
args, _ = parser.parse_known_args()
rank = int(os.environ["EM_NODE_RANK"])
meeting = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "EM_NODE_COUNT")}
print(f"node {rank} of {meeting['EM_NODE_COUNT']} meets at {meeting['MASTER_ADDR']}", flush=True)
if rank == 1 and args.x >= 2:
    raise SystemExit(f"node 1 gives up at x={args.x}")
if rank == 0:
    print(f"loss={(args.x - 3) ** 2:.6f}", flush=True)
    if args.x >= 2:
        time.sleep(120)  # killed when node 1 fails
    with open(os.path.join(os.environ["EM_MODEL_DIR"], "meeting.json"), "w") as handle:
        json.dump(meeting, handle)
