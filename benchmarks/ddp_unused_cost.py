"""What DDP's ``find_unused_parameters=True`` costs `aroma train` per step (2 gloo processes, CPU).

`aroma train` wraps the model with it because a finished AROMA module stops using its parameters
mid-run. Two copies of MiniLM with AROMA adapters (every module live, so both wrappers are valid),
one wrapped with the flag and one without, take optimizer steps in turn on the same batches, so that
machine noise hits both alike; the median step time of each is printed by rank 0.

    python benchmarks/ddp_unused_cost.py --steps 30
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel


def worker(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    from transformers import AutoModelForSequenceClassification

    from aroma_peft import AromaConfig, adapt
    from aroma_peft.models import resolve_model
    from aroma_peft.tasks.base import block_linears

    def build(unused: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        base = AutoModelForSequenceClassification.from_pretrained(resolve_model(None), num_labels=2)
        model = adapt(base, AromaConfig(target_modules=block_linears(base), modules_to_save=["classifier"]))
        ddp = DistributedDataParallel(model, find_unused_parameters=unused, forward_sync_buffers=False)
        return ddp, torch.optim.AdamW(model.optimizer_param_groups(1e-3))

    models = {False: build(False), True: build(True)}
    g = torch.Generator().manual_seed(rank)
    times: dict[bool, list[float]] = {False: [], True: []}
    for step in range(args.steps + 2):  # the first two steps warm up
        ids = torch.randint(1000, 5000, (args.batch_size // 2, args.length), generator=g)
        labels = torch.randint(0, 2, (args.batch_size // 2,), generator=g)
        for unused in (step % 2 == 0, step % 2 == 1):  # alternate which goes first
            ddp, optimizer = models[unused]
            t0 = time.perf_counter()
            ddp(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step >= 2:
                times[unused].append(time.perf_counter() - t0)
    if rank == 0:
        off, on = statistics.median(times[False]), statistics.median(times[True])
        print(f"global batch {args.batch_size} x {args.length} tokens, 2 processes x 1 thread, ", end="")
        print(f"{args.steps} steps")
        print(f"median step: find_unused_parameters=False {off:.3f} s, True {on:.3f} s ({on / off - 1:+.1%})")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (half per process)")
    parser.add_argument("--length", type=int, default=64)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args, port), nprocs=2, join=True)


if __name__ == "__main__":
    main()
