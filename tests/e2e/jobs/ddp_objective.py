"""A distributed trial's objective: gloo on CPU under torchrun, loss = (x - 3)^2 on rank 0."""

import argparse
import json
import os

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, required=True)
args, _ = parser.parse_known_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
print(f"rank {rank} of {world} joined", flush=True)
ranks = torch.tensor([float(rank)])
dist.all_reduce(ranks)  # 0 + 1 + ... + world-1 when every process took part
x = torch.tensor([args.x])
dist.broadcast(x, src=0)  # every node got the same suggestion
if rank == 0:
    loss = (x.item() - 3) ** 2
    print(f"loss={loss:.6f}", flush=True)
    summary = {
        "world_size": world,
        "rank_sum": ranks.item(),
        "node_count": os.environ.get("EM_NODE_COUNT"),
        "trial_number": os.environ.get("EM_TRIAL_NUMBER"),
        "x": x.item(),
    }
    with open(os.path.join(os.environ["EM_MODEL_DIR"], "summary.json"), "w") as handle:
        json.dump(summary, handle)
dist.destroy_process_group()
