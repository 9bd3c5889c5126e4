"""``transformers.Trainer`` with ``AromaCallback`` in two gloo processes (DDP through Accelerate, as
``torchrun`` would start it): every process takes rank 0's AROMA decisions.

After every optimizer step rank 1 shrinks its live pieces (DDP syncs gradients, not parameters, so
the two processes' pieces then differ): alone, rank 1 would judge every piece too small and finish its
modules early, while rank 0 keeps merging. The callback's controller must follow rank 0 on both
(with the agreement step replaced by an identity, rank 1 stops on its own and the run aborts).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port
from transformers import Trainer, TrainerCallback

from aroma_peft import AromaCallback, adapt


def worker(rank: int, world: int, port: int, out_dir: str, out: dict) -> None:
    # what torchrun sets; Accelerate (inside TrainingArguments) then starts a gloo process group
    env = dict(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=world, LOCAL_WORLD_SIZE=world, MASTER_PORT=port)
    os.environ.update({k: str(v) for k, v in env.items()} | {"MASTER_ADDR": "127.0.0.1"})
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(__file__))
    from test_trainer import Pairs, args, aroma_config, tiny_bert

    class ShrinkOnRank1(TrainerCallback):
        """Runs before AromaCallback's on_optimizer_step: rank 1's pieces look too small to keep."""

        def on_optimizer_step(self, a, state, control, model=None, **kwargs):
            if rank == 1:
                with torch.no_grad():
                    for layer in getattr(model, "module", model).adapter_layers().values():
                        layer.lora_B.mul_(0.01)

    try:
        model = adapt(tiny_bert(), aroma_config(eps_out=0.03, t_in=6, check_interval=3))
        callback = AromaCallback()
        a = args(
            out_dir,
            max_steps=30,
            per_device_train_batch_size=8,
            ddp_backend="gloo",
            ddp_find_unused_parameters=True,
        )
        trainer = Trainer(model=model, args=a, train_dataset=Pairs(), callbacks=[ShrinkOnRank1(), callback])
        trainer.train()
        ctl = callback.controller
        out[rank] = {
            "world_size": a.world_size,
            "wrapped": type(trainer.model_wrapped).__name__,
            "events": [(e["step"], e["module"], e["event"], e["rank"]) for e in ctl.events],
            "ranks": ctl.ranks(),
            "steps": ctl.global_step,
        }
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow  # about 40 s on the busy 2-core machine: two processes import transformers
def test_trainer_ranks_take_rank_0s_decisions(tmp_path) -> None:
    out = mp.Manager().dict()
    mp.spawn(worker, args=(2, free_port(), str(tmp_path), out), nprocs=2, join=True)
    first, second = out[0], out[1]
    assert first["world_size"] == second["world_size"] == 2
    assert first["wrapped"] == "DistributedDataParallel"
    events = first["events"]
    assert {e[2] for e in events} == {"merge", "finish"}  # merges, and modules that finish
    assert any(e[2] == "merge" and e[0] > min(e[0] for e in events if e[2] == "merge") for e in events)
    assert second["events"] == events
    assert second["ranks"] == first["ranks"]
    assert second["steps"] == first["steps"]
