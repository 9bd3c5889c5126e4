"""Rank agreement (two gloo processes): every process takes rank 0's decisions even when its own
criteria say otherwise.

Nothing here syncs the parameters (no DDP) and rank 1 sees other data and shrinks its live pieces
and gates, so every local criterion differs between the two processes: without the agreement step
rank 1 would finish modules that rank 0 keeps growing and switch off other gates.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port
from torch.nn import functional as F

from aroma_peft import AromaConfig, AromaController, SoraConfig, SoraController, adapt, sora_prune


def aroma_run(rank: int) -> dict:
    from conftest import TinyNet

    torch.manual_seed(0)
    cfg = AromaConfig(
        target_modules=["up", "down"],
        modules_to_save=["head"],
        t_in=6,
        check_interval=3,
        eps_out=0.03,
        warmup_steps=2,
        rewarmup_steps=2,
        sync="module",
        max_steps=60,
    )
    model = adapt(TinyNet(), cfg)
    opt = torch.optim.AdamW(model.optimizer_param_groups(2e-2))
    ctl = AromaController(model, opt)
    g = torch.Generator().manual_seed(100 + rank)  # every process sees different data
    while not ctl.finished:
        x, y = torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if rank == 1:  # rank 1's pieces look too small to keep: alone, it would finish every module
            with torch.no_grad():
                for layer in model.adapter_layers().values():
                    layer.lora_B.mul_(0.01)
        ctl.step()
        opt.zero_grad()
    return {
        "events": [(e["step"], e["module"], e["event"], e["rank"]) for e in ctl.events],
        "ranks": ctl.ranks(),
    }


def sora_run(rank: int) -> dict:
    from conftest import TinyNet

    torch.manual_seed(0)
    model = adapt(
        TinyNet(), SoraConfig(target_modules=["up", "down"], r=6, xi=0.05, modules_to_save=["head"])
    )
    opt = torch.optim.AdamW(model.optimizer_param_groups(2e-2))
    ctl = SoraController(model, opt)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(8):
        x, y = torch.randn(32, 12, generator=g), torch.randint(0, 3, (32,), generator=g)
        (F.cross_entropy(model(x), y) + ctl.penalty()).backward()
        opt.step()
        if rank == 1:  # rank 1 alone would switch off every gate
            with torch.no_grad():
                for gate in ctl.gates():
                    gate.mul_(1e-3)
        ctl.step()
        opt.zero_grad()
    gates = {n: layer.gate.detach().clone() for n, layer in model.adapter_layers().items()}
    return {"gates": gates, "pruned": sora_prune(model)}


def worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        out[rank] = {"aroma": aroma_run(rank), "sora": sora_run(rank)}
    finally:
        dist.destroy_process_group()


def test_every_process_takes_rank_0s_decisions() -> None:
    manager = mp.Manager()
    out = manager.dict()
    os.environ["PYTHONPATH"] = os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")
    mp.spawn(worker, args=(2, free_port(), out), nprocs=2, join=True)
    first, second = out[0], out[1]
    events = first["aroma"]["events"]
    assert {e[2] for e in events} == {"merge", "finish"}  # merges with resets, and modules that finish
    assert any(e[2] == "merge" for e in events if e[0] < max(e[0] for e in events))
    assert second["aroma"]["events"] == events
    assert second["aroma"]["ranks"] == first["aroma"]["ranks"]
    assert 0 < sum(first["sora"]["pruned"].values()) < 12  # some ranks switched off, some kept
    assert second["sora"]["pruned"] == first["sora"]["pruned"]
    for name, gate in first["sora"]["gates"].items():
        assert torch.equal(second["sora"]["gates"][name], gate)


def test_nccl_broadcasts_from_each_processs_own_gpu(monkeypatch) -> None:
    """Not "cuda" (GPU 0 on every process): the device torch.cuda.set_device gave this process."""
    from aroma_peft.tuners import distributed

    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(distributed.torch.cuda, "current_device", lambda: 3)
    assert distributed.communication_device() == torch.device("cuda", 3)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "gloo")
    assert distributed.communication_device() == torch.device("cpu")
