"""What computing SmolLM2's LM head only at the loss positions saves per training step.

One AROMA r=1 model (q, k, v, up, down) on the prepared SmolLM2-135M-Instruct; a batch of the longest
training rows (all sets) that fit the 256-token cutoff (response-only labels). Forward + backward with the
full-logits loss (``model(**batch).loss``) and with ``causal_lm_loss`` (head at loss positions only),
interleaved so machine noise hits both alike; median seconds and peak RSS.

    .venv/bin/python benchmarks/commonsense_head.py --batch 8 --rounds 3
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch
from torch.nn import functional as F

from aroma_peft import AromaConfig, adapt
from aroma_peft.tasks import get_task
from aroma_peft.tasks.causal_lm import IGNORE, causal_lm_loss

DATA = "../shared/data/commonsense"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DATA)
    parser.add_argument("--model", default=None, help="causal LM folder (default: prepared SmolLM2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = get_task("commonsense")
    base, tok = task.load_model(args.model)
    model = adapt(base, AromaConfig(target_modules=task.default_target_modules(base), r=1))
    rows = [e for examples in task.load_split(args.data_dir, "train").values() for e in examples]
    features, _ = task.encode(rows, tok)
    features = sorted(features, key=lambda f: len(f["input_ids"]))[-args.batch :]
    batch = task.collate(features)
    n_loss = int((batch["labels"][:, 1:] != IGNORE).sum())
    losses = {
        "full logits": lambda: model(**batch).loss,
        "loss positions only": lambda: causal_lm_loss(model, batch),
    }
    # The head alone (forward + backward into the hidden states), where the two differ.
    head = base.get_output_embeddings()
    hidden = torch.randn(*batch["input_ids"].shape, head.in_features, requires_grad=True)
    targets, keep = batch["labels"][:, 1:], batch["labels"][:, 1:] != IGNORE
    losses["head alone, full"] = lambda: F.cross_entropy(
        head(hidden[:, :-1]).flatten(0, 1), targets.flatten(), ignore_index=IGNORE
    )
    losses["head alone, loss positions"] = lambda: F.cross_entropy(head(hidden[:, :-1][keep]), targets[keep])
    times: dict[str, list[float]] = {k: [] for k in losses}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, loss_fn in losses.items():
            start = time.perf_counter()
            loss_fn().backward()
            model.zero_grad(set_to_none=True)
            if r:
                times[name].append(time.perf_counter() - start)
    shape = tuple(batch["input_ids"].shape)
    print(
        f"batch {shape[0]} x {shape[1]} tokens, {n_loss} loss positions; {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, {args.rounds} rounds"
    )
    for name, ts in times.items():
        print(f"{name:>28}: median {statistics.median(ts):.2f} s/step  ({', '.join(f'{t:.2f}' for t in ts)})")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")


if __name__ == "__main__":
    main()
