"""Data-parallel AROMA on torch.distributed (gloo, two processes): every process takes the same decisions."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from aroma_peft import AromaConfig, AromaController, adapt


def worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from conftest import TinyNet

    torch.manual_seed(0)
    cfg = AromaConfig(
        target_modules=["up", "down"],
        modules_to_save=["head"],
        t_in=12,
        check_interval=4,
        eps_out=0.03,
        warmup_steps=2,
        rewarmup_steps=2,
        max_steps=120,
    )
    model = adapt(TinyNet(), cfg)
    ddp = DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)
    opt = torch.optim.AdamW(model.optimizer_param_groups(2e-2))
    ctl = AromaController(model, opt)
    g = torch.Generator().manual_seed(100 + rank)  # every process sees different data
    while not ctl.finished:
        x, y = torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        ctl.step()
        opt.zero_grad()
    probe = torch.randn(4, 12, generator=torch.Generator().manual_seed(7))
    out[rank] = {"events": ctl.events, "ranks": ctl.ranks(), "output": model(probe).detach()}
    dist.destroy_process_group()


def test_two_processes_agree_on_every_decision_and_weight() -> None:
    manager = mp.Manager()
    out = manager.dict()
    os.environ["PYTHONPATH"] = os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")
    mp.spawn(worker, args=(2, free_port(), out), nprocs=2, join=True)
    first, second = out[0], out[1]
    assert sum(first["ranks"].values()) > 0 and first["ranks"] == second["ranks"]
    assert [(e["step"], e["module"], e["event"]) for e in first["events"]] == [
        (e["step"], e["module"], e["event"]) for e in second["events"]
    ]
    assert torch.equal(first["output"], second["output"])
