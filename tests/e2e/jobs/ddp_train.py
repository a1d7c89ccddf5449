"""A real PyTorch DDP training (gloo on CPU), run by torchrun across the job's nodes."""

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = DistributedDataParallel(nn.Linear(4, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
generator = torch.Generator().manual_seed(rank)
for step in range(args.steps):
    x = torch.randn(16, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    print(f"step={step} loss={loss.item():.4f} rank={rank}", flush=True)

ranks = torch.tensor([float(rank)])
dist.all_reduce(ranks)  # 0 + 1 + ... + world-1 when every process took part
weights = [p.detach().clone() for p in model.parameters()]
for weight in weights:  # DDP keeps replicas identical: the max equals the min everywhere
    high, low = weight.clone(), weight.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    assert torch.equal(high, low), "replicas diverged"
if rank == 0:
    summary = {
        "world_size": world,
        "rank_sum": ranks.item(),
        "node_count": os.environ.get("EM_NODE_COUNT"),
        "tf_config": json.loads(os.environ.get("TF_CONFIG", "{}")),
        "loss": loss.item(),
    }
    with open(os.path.join(os.environ["EM_MODEL_DIR"], "summary.json"), "w") as handle:
        json.dump(summary, handle)
    torch.save(model.module.state_dict(), os.path.join(os.environ["EM_MODEL_DIR"], "model.pt"))
dist.destroy_process_group()
