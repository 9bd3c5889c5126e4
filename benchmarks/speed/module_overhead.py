"""One adapted Linear's forward + backward against the frozen Linear's, both ways AROMA's live piece can
run (folded into the weight, or as separate rank-one products): where AROMA's cost over the frozen
floor comes from, shape by shape.

    python benchmarks/speed/module_overhead.py                       # MiniLM and SmolLM2 shapes
    python benchmarks/speed/module_overhead.py 768:576x576 768:192x576 --threads 2

Each argument is TOKENSxOUTxIN written TOKENS:OUTxIN. The three variants are interleaved (the order
reversed every round), 7 rounds; the table gives median milliseconds of the frozen Linear (input
gradient only, as in the frozen floor) and the ratios of the folded and unfolded AROMA function to it,
with the path ``folds()`` picks for that shape.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from aroma_peft.allocator import keep_freed_memory
from aroma_peft.tuners.aroma import layer

# MiniLM (hidden 384, FFN 1536) at 32 x 128 and 32 x 64; SmolLM2 (hidden 576, k/v 192, FFN 1536) at
# 2 x 128, 8 x 96 (the commonsense runs' batch) and 16 x 128.
DEFAULT_SHAPES = [
    "4096:384x384", "4096:1536x384", "4096:384x1536", "2048:384x384", "2048:1536x384",
    "256:576x576", "256:192x576", "256:1536x576", "768:576x576", "768:192x576", "768:1536x576",
    "768:576x1536", "2048:576x576", "2048:192x576", "2048:1536x576",
]  # fmt: skip
ROUNDS = 7
ROUND_SECONDS = 0.25  # per variant and round


def variants(tokens: int, out_features: int, in_features: int) -> dict[str, Callable[[], None]]:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.02
    a = torch.nn.Parameter(torch.randn(1, in_features, generator=generator) * 0.01)
    b = torch.nn.Parameter(torch.randn(out_features, 1, generator=generator) * 0.01)
    x = torch.randn(tokens, in_features, generator=generator, requires_grad=True)
    grad = torch.randn(tokens, out_features, generator=generator)

    def frozen() -> None:
        F.linear(x, weight).backward(grad)

    def aroma(fold: bool) -> Callable[[], None]:
        def step() -> None:
            chosen = layer.folds
            layer.folds = lambda *_: fold
            try:
                layer.FoldedRankOneLinear.apply(x, weight, None, a, b, 2.0).backward(grad)
            finally:
                layer.folds = chosen

        return step

    return {"frozen": frozen, "fold": aroma(True), "unfold": aroma(False)}


def timed(step: Callable[[], None], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure(shape: str) -> dict[str, float | str]:
    tokens, _, size = shape.partition(":")
    out_features, _, in_features = size.partition("x")
    tokens, m, n = int(tokens), int(out_features), int(in_features)
    steps = variants(tokens, m, n)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        timed(step, 3)  # warmup
    one_call = min(timed(steps["frozen"], 3))
    repeats = min(1000, max(5, int(ROUND_SECONDS / one_call)))  # about the same time per shape
    for round_ in range(ROUNDS):
        order = list(steps) if round_ % 2 else list(reversed(steps))
        for name in order:
            times[name] += timed(steps[name], repeats)
    median = {name: statistics.median(t) for name, t in times.items()}
    chosen = layer.folds(torch.empty(tokens, n, device="meta"), torch.empty(m, n, device="meta"))
    return {
        "frozen_ms": median["frozen"] * 1e3,
        "fold": median["fold"] / median["frozen"],
        "unfold": median["unfold"] / median["frozen"],
        "chosen": "fold" if chosen else "unfold",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shapes", nargs="*", default=DEFAULT_SHAPES, help="TOKENS:OUTxIN")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    print(f"| tokens | out x in | frozen ms ({args.threads} threads) | folded | unfolded | `folds()` picks |")
    print("|---|---|---|---|---|---|")
    for shape in tqdm(args.shapes, desc="shapes", leave=False):
        r = measure(shape)
        tokens, _, size = shape.partition(":")
        ratios = f"{r['fold']:.3f}x | {r['unfold']:.3f}x"
        tqdm.write(f"| {tokens} | {size} | {r['frozen_ms']:.2f} | {ratios} | {r['chosen']} |")


if __name__ == "__main__":
    main()
