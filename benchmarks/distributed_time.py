"""One process against two (torchrun, gloo) for the same `aroma train` run on CPU: time per step,
and how far apart the two runs end (the 2-process run must compute the same thing: --batch-size is
the global batch, each process takes half of it).

    python benchmarks/distributed_time.py                  # MiniLM, SST-2, AROMA, 40 steps
    python benchmarks/distributed_time.py --steps 20 --method lora

Dropout stays on in MiniLM: both runs draw the same masks only for the same rows, so the weights may
drift further apart than the dropout-free equivalence test (tests/test_distributed_train.py) allows.
Pass --no-dropout to compare the computations themselves (a model copy with dropout 0 is used).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "glue"


def run(command: list[str], out: Path) -> dict:
    t0 = time.time()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "log": log, "wall": time.time() - t0, "dir": out}


def dropout_free_copy(folder: Path) -> str:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from aroma_peft.models import resolve_model

    path = resolve_model(None)
    config = AutoConfig.from_pretrained(path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(path, config=config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(path).save_pretrained(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--method", default="aroma")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--no-dropout", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="distributed_time."))
    train = ["train", "--task", args.task, "--method", args.method, "--data-dir", str(DATA), "--quiet"]
    train += ["--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--threads", "1"]
    train += [
        "--max-seq-len",
        str(args.max_seq_len),
        "--max-train-samples",
        str(args.steps * args.batch_size),
    ]
    train += ["--max-eval-samples", "256", "--eval-every", str(args.steps), "--save-every", "0"]
    if args.method == "aroma":
        train += ["--t-in", str(max(2, args.steps // 4)), "--check-interval", "2", "--rewarmup-steps", "2"]
    if args.no_dropout:
        train += ["--model", dropout_free_copy(tmp / "model")]
    module = [sys.executable, "-m", "aroma_peft.cli"]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "-m",
        "aroma_peft.cli",
    ]
    runs = {
        "1 process x 1 thread": run([*module, *train, "--output-dir", str(tmp / "p1")], tmp / "p1"),
        "2 processes x 1 thread (torchrun)": run(
            [*torchrun, *train, "--output-dir", str(tmp / "p2")], tmp / "p2"
        ),
    }
    print(f"{args.task} / {args.method}, {args.steps} steps, global batch {args.batch_size}, ", end="")
    print(f"length {args.max_seq_len}, dropout {'off' if args.no_dropout else 'on'}")
    print("| launch | time / step (s) | wall time (s) |\n|---|---|---|")
    for name, r in runs.items():
        m = r["metrics"]
        print(f"| {name} | {m['time_per_step_s']:.3f} | {r['wall']:.0f} |")
    one, two = runs.values()
    losses = [(a["loss"], b["loss"]) for a, b in zip(one["log"], two["log"]) if a["type"] == "train"]
    events = [
        [(e["step"], e["module"], e["event"], e["rank"]) for r in x["log"] for e in r.get("events", [])]
        for x in (one, two)
    ]
    wa, wb = (load_file(r["dir"] / "adapter" / "adapter_model.safetensors") for r in (one, two))
    main_metric = one["metrics"]["main_metric"]
    print(f"max relative loss difference: {max(abs(a - b) / abs(a) for a, b in losses):.2e}")
    weight_diff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if wa[k].numel())
    print(f"max adapter weight difference: {weight_diff:.2e}")
    print(f"same merge/finish events: {events[0] == events[1]} ({len(events[0])} events)")
    finals = [r["metrics"]["final"][main_metric] for r in (one, two)]
    print(f"final {main_metric}: {finals[0]:.4f} vs {finals[1]:.4f}")
    print(f"machine: {one['metrics']['machine']}")


if __name__ == "__main__":
    main()
