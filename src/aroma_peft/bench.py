"""``aroma bench``: seconds per optimizer step of every method, measured the way users train.

Every method is built by its ``aroma train`` recipe (same targets, heads, optimizer, schedule and
controller), the model is in training mode with its config's dropout, and a step is the whole step:
forward, backward, AdamW step, the method's controller (``controller.step()``, AdaLoRA's
``update_and_allocate``), the schedule and ``zero_grad``. Methods live in one process and take turns
(a block of steps each, the order rotated every round), so machine noise hits them alike. Two floors:

- ``frozen``: the frozen base whose head trains with the same optimizer and whose gradients flow through
  every layer (the embeddings' output requires grad): the least any adapter method can cost.
- ``forward``: no gradients, eval mode: the cost once nothing below the head trains.

``--quantize int8`` quantizes every block Linear (torchao int8 weight-only) before the methods adapt
it, the floors included; only methods that train beside a frozen base run on it (see QUANTIZABLE).

``aroma_late`` is AROMA late in a run: every module of the lower half of the blocks has finished, so
backpropagation stops at the lowest block that still trains (autograd builds no graph below it).

Batches are random token ids of exactly ``batch_size x seq_len`` (no padding), so every step has the
same shape; the loss is the task's (``--task commonsense``: a causal LM whose loss is taken on the last
``RESPONSE_TOKENS`` positions of each row, as a commonsense response, with the LM head only there).
Peak memory comes from one subprocess per method that loads the model, resets its peak resident memory
(Linux) and steps: the peak of training with the model resident. Like ``aroma train``, the bench keeps
freed memory in the process (``allocator.py``: without it glibc hands the heap back after every step
and the next step page-faults it in again, which costs a method in proportion to the activations it
keeps).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .allocator import keep_freed_memory
from .errors import UserInputError
from .io import atomic_write, write_json

FLOORS = ("frozen", "forward")
LATE = "aroma_late"
METHODS = ("aroma", "sora", "lora", "adalora", "relora", "full", LATE, *FLOORS)
QUANTIZABLE = ("aroma", "sora", "lora", LATE, *FLOORS)  # the others write or train the base weights
JSON_NAME, MARKDOWN_NAME = "bench.json", "bench.md"
RESPONSE_TOKENS = 8  # "the correct answer is answer1" + EOS: the positions a commonsense row trains on


@dataclass
class BenchConfig:
    """What to time; every field is an ``aroma bench`` flag."""

    model: str | None = field(default=None, metadata={"help": "Model folder or hub name; default: MiniLM."})
    task: str = field(
        default="sst2",
        metadata={"help": "GLUE task (sets the head: labels, regression) or commonsense (a causal LM)."},
    )
    batch_size: int = field(default=32, metadata={"help": "Examples per step."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per example (every step has this shape)."})
    methods: list[str] = field(
        default_factory=lambda: list(METHODS), metadata={"help": f"Comma-separated: {', '.join(METHODS)}."}
    )
    rounds: int = field(default=5, metadata={"help": "Interleaved rounds (each method once per round)."})
    steps: int = field(default=15, metadata={"help": "Timed steps per method per round."})
    warmup: int = field(default=3, metadata={"help": "Untimed steps per method before the first round."})
    threads: int | None = field(default=None, metadata={"help": "Torch CPU threads; default: torch's."})
    bf16: bool = field(
        default=False, metadata={"help": "Run forward and loss under torch.autocast(bfloat16)."}
    )
    quantize: str | None = field(
        default=None,
        metadata={
            "help": "Quantize the blocks' Linear weights first: int8 (torchao weight-only, extra quant)."
        },
    )
    memory: bool = field(
        default=False, metadata={"help": "Also measure peak memory, one subprocess per method (slower)."}
    )
    output_dir: str = field(default="", metadata={"help": "Folder for bench.json and bench.md."})
    seed: int = 0

    def check(self) -> None:
        problems = [f"--methods: unknown {m!r}" for m in self.methods if m not in METHODS]
        problems += [f"--methods: {m!r} given twice" for m in set(self.methods) if self.methods.count(m) > 1]
        problems += ["--methods: give at least one method"] if not self.methods else []
        for name in ("batch_size", "seq_len", "rounds", "steps", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')}={value}: use an integer >= 1")
        if self.quantize is not None:
            problems += [f"--quantize={self.quantize}: use int8"] if self.quantize != "int8" else []
            problems += [f"--methods: {m!r} cannot train on a quantized base" for m in self.methods
                         if m not in QUANTIZABLE]  # fmt: skip
        if self.warmup < 0:
            problems.append(f"--warmup={self.warmup}: use an integer >= 0")
        if not self.output_dir:
            problems.append("--output-dir is required")
        if problems:
            raise UserInputError("; ".join(problems) + f" (methods: {', '.join(METHODS)})")
        bench_task(self)  # names the task if it is unknown

    @property
    def total_steps(self) -> int:
        """Steps each method takes; the recipes plan one more, so no schedule ends inside the bench."""
        return self.warmup + self.rounds * self.steps


@dataclass
class Runner:
    """One method, ready to step: ``step(batch)`` is one optimizer step (forward only for ``forward``)."""

    name: str
    model: torch.nn.Module
    step: Callable[[dict[str, torch.Tensor]], None] = lambda batch: None

    def trainable(self) -> int:
        """Parameters that train now (AROMA's finished modules no longer count)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings

    optimizer_steps: list[int] = field(default_factory=lambda: [0])
    controller_times: list[float] = field(default_factory=list)


def build(name: str, config: BenchConfig, finished_blocks: int | None = None) -> Runner:
    """A method as ``aroma train`` sets it up (the recipe's defaults), or one of the two floors.
    ``finished_blocks``: AROMA with every adapted module of that many lowest blocks finished (default:
    none for ``aroma``, the lower half for ``aroma_late``)."""
    from .train.config import TrainConfig
    from .train.loop import optimization
    from .train.recipe import get_recipe
    from .tuners.model import find_saved_modules

    task = bench_task(config)
    model, _ = task.load_model(config.model)
    heads = find_saved_modules(model, task.default_heads(model))
    if config.quantize:
        from .tasks.base import block_linears
        from .tuners.quantized import quantize_linears

        quantize_linears(model, block_linears(model), config.quantize)
    if name == "forward":
        model.requires_grad_(False).eval()

        def forward_step(batch: dict[str, torch.Tensor]) -> None:
            with torch.no_grad(), autocast(config):
                task.loss(model, batch)

        return Runner(name, model, forward_step)
    if name == "frozen":
        model.requires_grad_(False)
        params = [p for h in heads for p in model.get_submodule(h).parameters()]
        params = params or list(model.get_decoder().norm.parameters())  # no head: the final norm trains
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=1e-3, foreach=True)
        embed = model.get_input_embeddings()

        def inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            # A leaf that requires grad below the lowest layer: backward runs through every block.
            embeds = embed(batch["input_ids"]).detach().requires_grad_()
            return {k: v for k, v in batch.items() if k != "input_ids"} | {"inputs_embeds": embeds}

        runner = Runner(name, model)
        runner.step = training_step(model, task, optimizer, runner, inputs, config)
        model.train()
        return runner
    recipe_cls = get_recipe("aroma" if name == LATE else name)
    planned = config.total_steps + 1
    train_config = TrainConfig(
        task=config.task, method=recipe_cls.name, output_dir=config.output_dir, model=config.model,
        batch_size=config.batch_size, max_seq_len=config.seq_len, max_steps=planned, seed=config.seed,
    )  # fmt: skip
    recipe = recipe_cls(train_config, recipe_cls.Options(), planned)
    model = recipe.wrap(model, task.default_target_modules(model), heads)
    if name == LATE or finished_blocks:
        finish_lower_blocks(model, finished_blocks)
    _, optimizer, scheduler = optimization(recipe, train_config, planned)  # as aroma train builds it
    recipe.start(optimizer, scheduler)
    runner = Runner(name, model)

    def after_step() -> None:
        recipe.after_optimizer_step(runner.optimizer_steps[0])
        scheduler.step()

    runner.step = training_step(model, task, optimizer, runner, lambda b: b, config, after_step)
    model.train()
    return runner


def block_index(module_name: str) -> int | None:
    """The transformer block a module belongs to (``encoder.layer.3.output.dense`` -> 3), else None."""
    from .tasks.base import BLOCK

    match = BLOCK.search(module_name)
    return int(match.group(0).rstrip(".").rpartition(".")[2]) if match else None


def finish_lower_blocks(model: torch.nn.Module, count: int | None = None) -> None:
    """Finish every adapted module of the ``count`` lowest transformer blocks (default: the lower half),
    before the controller is built, which then leaves their parameters out of the optimizer."""
    layers = model.adapter_layers()
    index = {name: block_index(name) for name in layers}
    blocks = {i for i in index.values() if i is not None}  # modules outside the blocks never finish here
    count = (max(blocks) + 1) // 2 if count is None else count
    for name, layer in layers.items():
        if index[name] is not None and index[name] < count:
            layer.finish()


def bench_task(config: BenchConfig) -> Any:
    """The task whose model, targets, heads and loss the bench uses (``seq_len`` is its length)."""
    from .data.glue import get_task
    from .tasks import TASKS
    from .tasks.glue import GlueTask

    if config.task in TASKS:
        return TASKS[config.task](config.seq_len)
    return GlueTask(get_task(config.task), config.seq_len, config.seed)


def default_model(task: str) -> str:
    """What a bench without ``--model`` ran, for its table."""
    from .tasks import TASKS

    return "SmolLM2-135M-Instruct-Q4_1-dequantized (default)" if task in TASKS else "MiniLM (default)"


def training_step(
    model: torch.nn.Module,
    task: Any,
    optimizer: torch.optim.Optimizer,
    runner: Runner,
    inputs: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
    config: BenchConfig,
    after_step: Callable[[], None] = lambda: None,
) -> Callable[[dict[str, torch.Tensor]], None]:
    """The loop's step: forward, backward, optimizer step, controller and schedule, zero_grad."""

    def count(*_: Any) -> None:
        runner.optimizer_steps[0] += 1

    optimizer.register_step_post_hook(count)

    def step(batch: dict[str, torch.Tensor]) -> None:
        with autocast(config):
            loss = task.loss(model, inputs(batch))
        loss.backward()
        optimizer.step()
        start = time.perf_counter()
        after_step()
        runner.controller_times.append(time.perf_counter() - start)
        optimizer.zero_grad(set_to_none=True)

    return step


def autocast(config: BenchConfig) -> torch.autocast:
    """bf16 autocast (as ``Trainer(bf16=True)``) when asked, else a disabled one."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16)


def runners_and_batches(config: BenchConfig) -> tuple[dict[str, Runner], list[dict]]:
    """Every method of ``config`` built from the same seed, and the batches they all step on."""
    torch.manual_seed(config.seed)
    runners = {name: build(name, config) for name in config.methods}
    vocab_size = next(iter(runners.values())).vocab_size
    return runners, make_batches(config, vocab_size, bench_task(config))


def make_batches(config: BenchConfig, vocab_size: int, task: Any, count: int = 4) -> list[dict]:
    """``count`` batches of random ids of exactly batch_size x seq_len, labels for the task's head
    (a causal LM: the ids themselves on the last RESPONSE_TOKENS positions, -100 elsewhere)."""
    from .tasks.causal_lm import IGNORE

    num_labels = task.spec.num_labels if hasattr(task, "spec") else None
    g = torch.Generator().manual_seed(config.seed)
    shape = (config.batch_size, config.seq_len)
    result = []
    for _ in range(count):
        ids = torch.randint(0, vocab_size, shape, generator=g)
        if num_labels is None:
            labels = ids.clone()
            labels[:, : -RESPONSE_TOKENS - 1] = IGNORE  # position t predicts t + 1: the last 8 tokens
        elif num_labels == 1:
            labels = torch.rand(config.batch_size, generator=g) * 5
        else:
            labels = torch.randint(0, num_labels, (config.batch_size,), generator=g)
        result.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return result


def time_methods(
    config: BenchConfig, runners: dict[str, Runner], batches: list[dict]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process CPU seconds of every timed step per method: warmup, then rounds of
    ``steps`` per method in turn. CPU time is what other jobs on a shared machine disturb least."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu_times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    total = len(names) * config.total_steps
    with tqdm(total=total, desc="bench", dynamic_ncols=True, file=sys.stderr) as bar:
        for name in names:
            for i in range(config.warmup):
                runners[name].step(batches[i % len(batches)])
                bar.update(1)
        for round_index in range(config.rounds):
            shift = round_index % len(names)  # rotate the order: no method always runs first
            for name in names[shift:] + names[:shift]:
                for i in range(config.steps):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    runners[name].step(batches[i % len(batches)])
                    times[name].append(time.perf_counter() - start)
                    cpu_times[name].append(time.process_time() - cpu_start)
                    bar.update(1)
    return times, cpu_times


def run(config: BenchConfig, command: str | None = None) -> dict[str, Any]:
    """Time every method, write ``bench.json`` and ``bench.md`` to the output folder; returns the JSON.
    ``command`` (the command line that ran it) is recorded with the results."""
    config.check()
    allocator = "glibc, freed memory kept (allocator.py)" if keep_freed_memory() else "default"
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        load_before = os.getloadavg()
        runners, batches = runners_and_batches(config)
        trainable_start = {name: r.trainable() for name, r in runners.items()}
        times, cpu_times = time_methods(config, runners, batches)
        result = summarize(config, runners, times, cpu_times, trainable_start, load_before)
        result["command"] = command
        result["allocator"] = allocator
    finally:
        torch.set_num_threads(threads)
    if config.memory:
        for name in config.methods:
            result["methods"][name]["peak_memory_mb"] = peak_memory(config, name)
    out = Path(config.output_dir)
    write_json(out / JSON_NAME, result)
    text = markdown(result)
    atomic_write(out / MARKDOWN_NAME, lambda tmp: Path(tmp).write_text(text))
    print(text)
    return result


def summarize(config, runners, times, cpu_times, trainable_start, load_before) -> dict[str, Any]:  # noqa: ANN001
    medians = {name: statistics.median(t) for name, t in times.items()}
    cpu_medians = {name: statistics.median(t) for name, t in cpu_times.items()}
    methods = {}
    for name, runner in runners.items():
        t = sorted(times[name])
        controller = runner.controller_times[config.warmup :]
        methods[name] = {
            "median_s": medians[name],
            "p90_s": t[min(len(t) - 1, round(0.9 * (len(t) - 1)))],
            "timed_steps": len(t),
            "optimizer_steps": runner.optimizer_steps[0],
            "trainable_params_start": trainable_start[name],
            "trainable_params_end": runner.trainable(),
            "controller_median_ms": statistics.median(controller) * 1e3 if controller else None,
            # the mean counts the steps at which the controller checks its modules (every check_interval)
            "controller_mean_ms": statistics.fmean(controller) * 1e3 if controller else None,
            "controller_share": statistics.fmean(controller) / statistics.median(t) if controller else None,
            "cpu_median_s": cpu_medians[name],
            "step_times_s": times[name],
            "step_cpu_times_s": cpu_times[name],
        }
        for floor in FLOORS:
            methods[name][f"vs_{floor}"] = medians[name] / medians[floor] if floor in medians else None
            cpu_ratio = cpu_medians[name] / cpu_medians[floor] if floor in cpu_medians else None
            methods[name][f"cpu_vs_{floor}"] = cpu_ratio
    return {
        "config": asdict(config),
        "machine": machine(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "methods": methods,
    }


def machine() -> dict[str, Any]:
    """The CPU (model and flags), the threads and the torch build the timings come from."""
    from .train.loop import machine as run_machine

    info = run_machine()
    cpuinfo = Path("/proc/cpuinfo")
    flags = []
    if cpuinfo.is_file():
        lines = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith(("flags", "Features"))]
        flags = lines[0].split(":", 1)[1].split() if lines else []
    return info | {"cpu_flags": flags, "platform": platform.platform()}


def markdown(result: dict[str, Any]) -> str:
    c, m = result["config"], result["machine"]
    simd = [
        f for f in m["cpu_flags"] if f.startswith(("avx", "amx", "fma", "sse4_2", "f16c", "asimd", "sve"))
    ]
    load = result["load_average"]
    lines = [
        f"Seconds per optimizer step, {c['task']} head, batch {c['batch_size']} x {c['seq_len']} tokens, "
        f"model {c['model'] or default_model(c['task'])}{', bf16 autocast' if c['bf16'] else ''}"
        f"{', ' + c['quantize'] + ' weight-only base (torchao)' if c.get('quantize') else ''}; "
        f"{c['rounds']} interleaved rounds of {c['steps']} steps "
        f"after {c['warmup']} warmup steps per method.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}; SIMD flags: {' '.join(simd) or 'none listed'}; load average (1 min) "
        f"{load['before'][0]:.2f} before, {load['after'][0]:.2f} after; allocator: "
        f"{result.get('allocator', 'default')}.",
    ]
    if result["command"]:
        lines += ["", f"Command: `{result['command']}`"]
    has_memory = any("peak_memory_mb" in v for v in result["methods"].values())
    header = (
        "| method | trainable params (start / end) | median s/step | p90 s/step | vs frozen | vs forward |"
    )
    header += " CPU s/step | CPU vs frozen | controller ms, median / mean (share of the step) |"
    header += " peak memory (MB) |" if has_memory else ""
    lines += ["", header, "|" + "---|" * (header.count("|") - 1)]
    for name, v in result["methods"].items():
        ratio = [f"{v[f'vs_{f}']:.3f}x" if v[f"vs_{f}"] is not None else "-" for f in FLOORS]
        ctl = "-"
        if v["controller_median_ms"] is not None:
            share = 100 * v["controller_share"]
            ctl = f"{v['controller_median_ms']:.2f} / {v['controller_mean_ms']:.2f} ({share:.2f}%)"
        row = f"| {name} | {v['trainable_params_start']:,} / {v['trainable_params_end']:,} |"
        row += f" {v['median_s']:.3f} | {v['p90_s']:.3f} | {ratio[0]} | {ratio[1]} |"
        cpu_ratio = f"{v['cpu_vs_frozen']:.3f}x" if v["cpu_vs_frozen"] is not None else "-"
        row += f" {v['cpu_median_s']:.3f} | {cpu_ratio} | {ctl} |"
        row += f" {v['peak_memory_mb']:.0f} |" if has_memory else ""
        lines.append(row)
    return "\n".join(lines) + "\n"


def peak_memory(config: BenchConfig, name: str) -> float:
    """Peak resident memory (MB) of a fresh process that builds ``name`` and takes a few steps."""
    probe = asdict(config) | {"methods": [name], "rounds": 1, "steps": 2, "warmup": 1, "memory": False}
    proc = subprocess.run(
        [sys.executable, "-m", "aroma_peft.bench", json.dumps(probe)],
        capture_output=True,
        text=True,
        env=os.environ | {"TQDM_DISABLE": "1"},
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserInputError(f"peak memory of {name}: the subprocess failed ({last})")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_memory_mb"]


def _memory_probe(config: BenchConfig) -> None:
    keep_freed_memory()  # as the timed run: the peak is the allocator's too
    if config.threads:
        torch.set_num_threads(config.threads)
    runner = build(config.methods[0], config)
    vocab_size = runner.vocab_size
    batches = make_batches(config, vocab_size, bench_task(config), count=config.total_steps)
    reset = reset_peak_memory()  # loading a checkpoint peaks above a small batch's training
    for batch in batches:
        runner.step(batch)
    print(json.dumps({"peak_memory_mb": peak_resident_mb(), "peak_reset_after_load": reset}))


def reset_peak_memory() -> bool:
    """Reset the process's peak resident memory to its current size (Linux: ``/proc/self/clear_refs``),
    so the peak measured next is training's, with the model resident, not the checkpoint loader's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_resident_mb() -> float:
    """Peak resident memory since the last reset (``VmHWM``), else since the process started."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


if __name__ == "__main__":
    _memory_probe(BenchConfig(**json.loads(sys.argv[1])))
