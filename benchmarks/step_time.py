"""Median optimizer-step time on MiniLM: frozen-base floor vs AROMA vs PEFT LoRA (issue: AROMA core).

All methods live in one process and are stepped in turn (interleaved), so machine noise hits them
alike. The floor is the frozen base with gradients flowing through every layer (what any adapter
method must at least pay). AROMA's controller time is measured on its own.

    .venv/bin/python benchmarks/step_time.py                  # 32 x 128, 30 rounds
    .venv/bin/python benchmarks/step_time.py --rounds 10 --out runs/step_time.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from aroma_peft import AromaConfig, AromaController, adapt
from aroma_peft.models import default_encoder_path

TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def floor_model(base: nn.Module) -> nn.Module:
    """Frozen base whose embeddings output requires grad, so backward runs through every layer."""
    base.requires_grad_(False)
    base.bert.embeddings.register_forward_hook(lambda module, args, out: out.requires_grad_())
    return base


def build(
    name: str, base: nn.Module, lr: float = 1e-4
) -> tuple[nn.Module, Callable[[], None], Callable[[], None]]:
    """(model, optimizer step, controller step) for one method."""
    if name == "floor":
        model = floor_model(base)
        return model, lambda: None, lambda: None
    if name == "aroma":
        model = adapt(
            base, AromaConfig(target_modules=TARGETS, r=1, lora_alpha=4, t_in=10**9, check_interval=10)
        )
        opt = torch.optim.AdamW(model.optimizer_param_groups(lr))
        ctl = AromaController(model, opt)
        return model, opt.step, ctl.step
    from peft import LoraConfig, get_peft_model

    r = int(name.removeprefix("lora_r"))
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    return model, opt.step, lambda: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--methods", default="floor,aroma,lora_r1,lora_r8")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(default_encoder_path(), num_labels=2)
    base.train()
    for module in base.modules():  # dropout's random masks are noise the comparison does not need
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    methods = args.methods.split(",")
    built = {name: build(name, copy.deepcopy(base)) for name in methods}
    ids = torch.randint(1000, 20000, (args.batch, args.seq))
    labels = torch.randint(0, 2, (args.batch,))
    step_times: dict[str, list[float]] = {name: [] for name in methods}
    controller_times: list[float] = []

    for round_index in range(args.warmup + args.rounds):
        for name in methods:
            model, optimizer_step, controller_step = built[name]
            start = time.perf_counter()
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimizer_step()
            mid = time.perf_counter()
            controller_step()
            end = time.perf_counter()
            model.zero_grad(set_to_none=True)
            if round_index >= args.warmup:
                step_times[name].append(end - start)
                if name == "aroma":
                    controller_times.append(end - mid)

    floor = statistics.median(step_times["floor"]) if "floor" in step_times else None
    machine = f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}"
    lines = [
        f"Median optimizer step on MiniLM-L6 (batch {args.batch} x {args.seq} tokens, "
        f"{args.rounds} interleaved rounds), {machine}:",
        "",
        "| method | median step (s) | vs floor |",
        "|---|---|---|",
    ]
    for name in methods:
        median = statistics.median(step_times[name])
        ratio = f"{median / floor:.3f}x" if floor else "-"
        lines.append(f"| {name} | {median:.3f} | {ratio} |")
    if controller_times:
        lines += [
            "",
            f"AROMA controller time per step (median): {statistics.median(controller_times) * 1e3:.3f} ms",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
