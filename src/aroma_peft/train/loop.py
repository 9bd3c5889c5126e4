"""A plain PyTorch fine-tuning loop for GLUE, the same for every method (the recipe is the difference)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from .. import metrics as glue_metrics
from ..data.glue import TaskSpec, get_task, load_task, majority_baseline
from ..errors import UserInputError
from ..models import check_module_names, quiet_transformers, resolve_model
from ..rank import effective_rank
from ..tuners.model import find_saved_modules
from ..tuners.sora.schedule import summarize_stages
from . import batches, checkpoint, distributed, outputs
from .config import TrainConfig, resolved
from .recipe import Recipe, block_linears, default_heads, get_recipe
from .summary import run_summary

SCHEMA_VERSION = 2  # 2: versions, world_size, "end" counts after the last step, "diverged"
MEMORIZATION_EXAMPLES = 1000  # SoRA's study: the metric on 1,000 training examples


def train(config: TrainConfig, options: Any, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Fine-tune, evaluate on dev, write the run folder; returns the contents of ``metrics.json``.

    ``resume``: continue the run in ``config.output_dir`` from its latest checkpoint (a finished run
    is left as it is). Under ``torchrun`` / ``accelerate launch``, every process runs this with the
    same arguments (see :mod:`.distributed`).
    """
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    group = distributed.setup()
    try:
        return _train(config, options, overwrite, resume, group)
    finally:
        group.close()
        torch.set_num_threads(threads)  # the caller's process keeps its own setting


@dataclass
class Progress:
    """Where the run is and what it has recorded so far: the loop's part of a checkpoint."""

    order_state: torch.Tensor  # the data-order generator at the start of the current epoch
    batch_index: int = 0  # the next batch in the current epoch's order
    step: int = 0
    train_time: float = 0.0
    wall_time: float = 0.0  # of the sessions before this one
    loss_avg: float | None = None
    last_ranks: dict[str, int] | None = None
    n_events: int = 0
    history: dict[str, list[int]] = field(default_factory=lambda: {"trainable": [], "adapter": []})
    evals: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)  # SoRA's xi stage ends
    log_offset: int = 0
    first_loss: float | None = None
    diverged: str | None = None

    def loss_limit(self, factor: float) -> float:
        """Losses above this mean the run blew up (``divergence_factor`` x the first loss, at least 1)."""
        if not factor or self.first_loss is None:
            return math.inf
        return factor * max(self.first_loss, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def _train(
    config: TrainConfig, options: Any, overwrite: bool, resume: bool, group: distributed.Group
) -> dict[str, Any]:
    session_start = time.time()
    spec = get_task(config.task)
    recipe_cls = get_recipe(config.method)
    if resume:
        out = Path(config.output_dir)
        if (out / outputs.METRICS).is_file():
            if group.main:
                print(f"{out}: the run has finished (metrics.json); nothing to resume", flush=True)
            return json.loads((out / outputs.METRICS).read_text())
        resume_from = checkpoint.latest(out)
        if resume_from is None:
            raise UserInputError(f"{out}: no checkpoint to resume from; start again with --overwrite")
    else:
        out, resume_from = outputs.prepare(config.output_dir, overwrite), None  # before any slow work
    data = load_task(spec, config.data_dir)
    train_examples = batches.subset(data["train"], config.max_train_samples)
    tokenizer, model = load_model(config.model, spec, config.seed)
    model.to(group.device)
    train_features = batches.tokenize(tokenizer, train_examples, config.max_seq_len)
    dev_features = {
        dev.name: batches.tokenize(tokenizer, data[dev.name][: config.max_eval_samples], config.max_seq_len)
        for dev in spec.dev_sets
    }
    halves = dev_halves(dev_features) if config.dev_split == "halves" else None
    distributed.check_batches(group, config.batch_size, len(train_features))
    steps_per_epoch = math.ceil(len(train_features) / config.batch_size)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    recipe = recipe_cls(config, options, total_steps)

    heads = check_module_names(model, config.modules_to_save, "modules_to_save") or default_heads(model)
    heads = find_saved_modules(model, heads)
    targets = check_module_names(model, config.target_modules, "target_modules", linear=True)
    targets = block_linears(model) if targets is None else targets
    head_params = sum(p.numel() for h in heads for p in model.get_submodule(h).parameters())
    model = recipe.wrap(model, targets, heads)
    lr = config.lr or recipe_cls.default_lr
    optimizer = torch.optim.AdamW(recipe.param_groups(lr, config.weight_decay), lr=lr)
    warmup = round(config.warmup_ratio * total_steps) if recipe_cls.scheduler_warmup else 0
    scheduler = linear_schedule(optimizer, warmup, total_steps, decay=config.lr_schedule == "linear")
    if resume_from is not None:
        checkpoint.load_model(model, resume_from)  # before the controller sees which modules finished
    recipe.start(optimizer, scheduler)
    forward = distributed.wrap(model, group)  # the training forward (DDP with several processes)

    generator = torch.Generator().manual_seed(config.seed)
    progress = Progress(order_state=generator.get_state())
    states = {"optimizer": optimizer, "scheduler": scheduler, "recipe": recipe, "progress": progress}
    writer = outputs.RunWriter(out, enabled=group.main)  # only rank 0 writes files and shows progress
    quiet = config.quiet or not group.main
    say = (lambda msg: print(msg, flush=True) if group.main else None) if quiet else tqdm.write
    group.barrier()  # every process has checked the output folder before rank 0 writes into it
    if resume_from is None:
        writer.start(resolved(config, options) | {"lr": lr}, overwrite)
    else:
        checkpoint.load_states(resume_from, states)
        writer.resume(progress.log_offset)
        warn_if_machine_differs(checkpoint.meta(resume_from).get("machine", {}))
    say(
        f"{spec.name} / {config.method}: {len(train_features)} train examples, {total_steps} steps, lr {lr:g}"
        + (f" (resumed at step {progress.step})" if resume_from is not None else "")
    )

    pad_id = tokenizer.pad_token_id
    evaluate_at = config.eval_every or steps_per_epoch
    lengths = [len(f["input_ids"]) for f in train_features]
    memorization_set: list[dict[str, Any]] = []
    last_save = time.time()
    bar = tqdm(total=total_steps, initial=progress.step, disable=quiet, dynamic_ncols=True, file=sys.stderr)
    model.train()
    while progress.step < total_steps and not recipe.finished and not progress.diverged:
        generator.set_state(progress.order_state)
        order = batches.train_order(lengths, config.batch_size, generator, config.group_by_length)
        for position in range(progress.batch_index, len(order)):
            if progress.step >= total_steps or recipe.finished:
                break
            progress.batch_index = position + 1
            if progress.batch_index == len(order):  # the next epoch's order is drawn from here on
                progress.batch_index, progress.order_state = 0, generator.get_state()
            adapter = recipe.adapter_parameters()  # what this step trains
            t0 = time.time()
            batch = batches.collate([train_features[i] for i in order[position]], pad_id)
            step_lr = optimizer.param_groups[0]["lr"]
            limit = progress.loss_limit(config.divergence_factor)
            loss, fault = optimizer_step(forward, batch, optimizer, config.max_grad_norm, limit, group)
            if fault:  # stop before the method merges anything non-finite into a base weight
                progress.diverged = f"diverged at step {progress.step + 1}: {fault}"
                break
            progress.step += 1
            progress.first_loss = loss if progress.first_loss is None else progress.first_loss
            step = progress.step
            recipe.after_optimizer_step(step)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.train_time += time.time() - t0

            ranks = recipe.ranks()
            record = {
                "type": "train",
                "step": step,
                "epoch": step / steps_per_epoch,
                "loss": loss,
                "lr": step_lr,
                "trainable_params": adapter + head_params,
                "adapter_params": adapter,
                "total_rank": sum(ranks.values()) if ranks else None,
                "finished_modules": sum(1 for e in recipe.events() if e["event"] == "finish"),
            }
            if ranks != progress.last_ranks:  # per-module ranks only when they change (the log stays small)
                record["ranks"], progress.last_ranks = ranks, ranks
            new_events = recipe.events()[progress.n_events :]
            if new_events:
                record["events"], progress.n_events = new_events, progress.n_events + len(new_events)
            writer.log(record)
            checkpoint.kill_point(f"step:{step}")
            for event in (e for e in new_events if e["event"] == "stage_end"):
                memorization_set = memorization_set or batches.tokenize(
                    tokenizer, batches.subset(train_examples, MEMORIZATION_EXAMPLES), config.max_seq_len
                )
                progress.stages.append(
                    evaluate_stage(
                        model, spec, event, memorization_set, dev_features, config, pad_id, writer, say, group
                    )
                )
                model.train()
            progress.history["trainable"].append(adapter + head_params)
            progress.history["adapter"].append(adapter)
            progress.loss_avg = loss if progress.loss_avg is None else 0.9 * progress.loss_avg + 0.1 * loss
            bar.update(1)
            bar.set_postfix(
                loss=f"{progress.loss_avg:.4f}",
                lr=f"{step_lr:.2e}",
                params=adapter + head_params,
                rank=record["total_rank"] if ranks else "-",
                refresh=False,
            )
            done = step == total_steps or recipe.finished
            if step % evaluate_at == 0 or done:
                checkpoint.kill_point(f"eval:{step}")
                progress.evals.append(
                    evaluate_and_log(
                        model, spec, dev_features, config, pad_id, step, writer, say, group, halves
                    )
                )
                model.train()
            if group.main and not done and save_due(config.save_every, step, last_save):
                progress.log_offset = writer.log_offset()
                progress.wall_time += time.time() - session_start
                session_start = last_save = time.time()
                writer.track(checkpoint.FOLDER)
                checkpoint.save(out, step, model, states, config.keep_checkpoints, {"machine": machine()})
    bar.close()
    if progress.diverged:
        return finish_diverged(spec, config, progress, writer)
    if not progress.evals or progress.evals[-1]["step"] != progress.step:
        progress.evals.append(
            evaluate_and_log(
                model, spec, dev_features, config, pad_id, progress.step, writer, say, group, halves
            )
        )
    writer.close()

    if group.main:
        writer.write_json(outputs.RANKS, delta_rank_stats(recipe))
        recipe.save(out)
        writer.track_new()
    wall_time = progress.wall_time + time.time() - session_start
    result = summarize(
        spec,
        config,
        progress.evals,
        progress.history,
        progress.step,
        total_steps,
        progress.train_time,
        wall_time,
    )
    result["trainable_params"]["end"] = recipe.adapter_parameters() + head_params  # after the last step
    result["adapter_params"]["end"] = recipe.adapter_parameters()
    result |= {
        "heads": heads,
        "head_params": head_params,
        "total_rank_end": sum(recipe.ranks().values()) if recipe.ranks() else None,
    }
    result["stopped_early"] = recipe.finished and progress.step < total_steps
    result |= recipe.summary()
    if progress.stages:
        result["stages"] = summarize_stages(progress.stages, higher_is_better=True)
    result["majority_baseline"] = majority_baseline(spec, train_examples, data, config.max_eval_samples)
    writer.write_json(outputs.METRICS, result)
    if group.main:
        checkpoint.remove_all(out)  # a finished run needs no checkpoint
    say(run_summary(result, out))
    return result


def optimizer_step(
    model: Any,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float | None,
    loss_limit: float = math.inf,
    group: distributed.Group | None = None,
) -> tuple[float, str | None]:
    """Forward, backward, (clip), step on this process's slice of the global batch; returns the
    global batch's loss and the fault that stops the run, if any: a non-finite loss or gradient, or a
    loss above ``loss_limit`` (the parameters are then left as they were), or non-finite parameters
    after the step. Every process sees the same loss and gradients, so all stop together."""
    group = group or distributed.Group()
    part, weight = distributed.shard(batch, group)
    loss = model(**part).loss
    value = distributed.global_loss(loss, weight, group)
    if not math.isfinite(value):
        return value, "non-finite loss"
    if value > loss_limit:
        return value, f"loss {value:.4g} above {loss_limit:.4g} (divergence_factor x the first loss)"
    (loss * weight if weight != 1.0 else loss).backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if not torch.isfinite(norm):
        return value, "non-finite gradient"
    if max_grad_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(params, max_grad_norm, norm)
    optimizer.step()
    if not all(bool(torch.isfinite(p).all()) for p in params):
        return value, "non-finite parameters after the optimizer step"
    return value, None


def save_due(save_every: int | None, step: int, last_save: float) -> bool:
    """Every ``save_every`` steps; by default every SAVE_MINUTES of wall time; never with 0."""
    if save_every is None:
        return time.time() - last_save >= checkpoint.SAVE_MINUTES * 60
    return save_every > 0 and step % save_every == 0


def finish_diverged(spec: TaskSpec, config: TrainConfig, progress: Progress, writer) -> dict[str, Any]:  # noqa: ANN001
    """A non-finite loss, gradient or parameter: no adapter is saved, the checkpoints are kept, and
    ``metrics.json`` says where the run diverged (it never counts as converged or stopped early)."""
    writer.log({"type": "diverged", "step": progress.step + 1, "message": progress.diverged})
    writer.close()
    result = {
        "task": spec.name,
        "method": config.method,
        "main_metric": spec.main_metric,
        "diverged": progress.diverged,
        "stopped_early": False,
        "steps": progress.step,
        "evals": progress.evals,
    } | run_info()
    writer.write_json(outputs.METRICS, result)
    return result


def warn_if_machine_differs(saved: dict[str, Any]) -> None:
    """Exactness is promised for the same thread count on the same CPU model."""
    now = machine()
    differ = [
        f"{k} {saved[k]} -> {now[k]}" for k in ("cpu", "torch_threads") if k in saved and saved[k] != now[k]
    ]
    if differ:
        print(
            f"aroma train: warning: resuming on another setup ({', '.join(differ)}): the run continues, "
            "but may not be bit-identical to an uninterrupted one",
            file=sys.stderr,
            flush=True,
        )


def load_model(name: str | None, spec: TaskSpec, seed: int) -> tuple[Any, Any]:
    """Tokenizer and sequence-classification model (regression head for STS-B); one-line errors."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    try:
        path = resolve_model(name)
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from None
    try:
        model_config = AutoConfig.from_pretrained(path, num_labels=spec.num_labels)
        if spec.is_regression:
            model_config.problem_type = "regression"
        tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(seed)  # the new head's initialisation
        with quiet_transformers():  # "newly initialized: classifier" is expected; our bar is the only one
            model = AutoModelForSequenceClassification.from_pretrained(path, config=model_config)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{name or path}: not a usable model ({first})") from None
    if tokenizer.pad_token_id is None:  # decoder-only tokenizers: pad with EOS
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def linear_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, decay: bool = True
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak, then linear decay to 0 at ``total`` (``decay=False``: the peak on)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not decay:
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(
    model: Any,
    spec: TaskSpec,
    features: dict[str, list],
    batch_size: int,
    pad_id: int,
    group: distributed.Group | None = None,
) -> dict[str, float]:
    """Every metric of the task on every dev set (MNLI: matched, and mismatched prefixed ``mm_``)."""
    return evaluate_split(model, spec, features, batch_size, pad_id, group)[0]


def dev_halves(features: dict[str, list]) -> dict[str, tuple[list[int], list[int]]]:
    """SoRA's protocol: per dev set, a fixed random half (seed 42, whatever the run's seed) on which
    checkpoints and learning rates are chosen, and the other half on which the chosen one is reported."""
    halves = {}
    for name, feats in features.items():
        order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(42)).tolist()
        cut = len(feats) // 2
        halves[name] = (sorted(order[:cut]), sorted(order[cut:]))
    return halves


@torch.no_grad()
def evaluate_split(
    model: Any,
    spec: TaskSpec,
    features: dict[str, list],
    batch_size: int,
    pad_id: int,
    group: distributed.Group | None = None,
    halves: dict[str, tuple[list[int], list[int]]] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]] | None]:
    """:func:`evaluate`, and with ``halves`` (:func:`dev_halves`) the same metrics on each half, from
    the same predictions: ``{"select": {...}, "report": {...}}``."""
    result: dict[str, float] = {}
    parts: dict[str, dict[str, float]] = {"select": {}, "report": {}}
    for dev in spec.dev_sets:
        feats = features[dev.name]
        preds, labels = predict(model, spec, feats, batch_size, pad_id, group), [f["labels"] for f in feats]
        result |= glue_metrics.compute(spec.metrics, preds, labels, dev.prefix)
        for part, rows in zip(parts, halves[dev.name] if halves else ()):
            part_preds, part_labels = [preds[i] for i in rows], [labels[i] for i in rows]
            parts[part] |= glue_metrics.compute(spec.metrics, part_preds, part_labels, dev.prefix)
    return result, parts if halves else None


@torch.no_grad()
def metrics_on(
    model: Any,
    spec: TaskSpec,
    feats: list[dict[str, Any]],
    batch_size: int,
    pad_id: int,
    prefix: str = "",
    group: distributed.Group | None = None,
) -> dict[str, float]:
    """The task's metrics on one set of tokenized examples."""
    preds = predict(model, spec, feats, batch_size, pad_id, group)
    return glue_metrics.compute(spec.metrics, preds, [f["labels"] for f in feats], prefix)


@torch.no_grad()
def predict(
    model: Any,
    spec: TaskSpec,
    feats: list[dict[str, Any]],
    batch_size: int,
    pad_id: int,
    group: distributed.Group | None = None,
) -> list[Any]:
    """The model's prediction for every example, in order (each process predicts every world-th
    example; the predictions are gathered once)."""
    group = group or distributed.Group()
    model.eval()
    mine = list(range(group.rank, len(feats), group.world))
    preds: list[tuple[int, Any]] = []
    for idx, batch in batches.eval_batches([feats[i] for i in mine], batch_size, pad_id):
        batch.pop("labels")
        logits = model(**{k: v.to(group.device) for k, v in batch.items()}).logits
        values = logits[:, 0] if spec.is_regression else logits.argmax(-1)
        preds += [(mine[i], v) for i, v in zip(idx, values.tolist())]
    ordered: list[Any] = [None] * len(feats)
    for part in distributed.gather(preds, group):
        for i, v in part:
            ordered[i] = v
    return ordered


def evaluate_stage(model, spec, event, memorization_set, dev_features, config, pad_id, writer, say, group):  # noqa: ANN001
    """At the end of a sparsifying stage: memorisation (the metric on 1,000 training examples) and
    generalisation (the dev metric), as in SoRA's study of its scheduler."""
    main = spec.main_metric
    size = config.eval_batch_size
    memorization = metrics_on(model, spec, memorization_set, size, pad_id, group=group)[main]
    generalization = evaluate(model, spec, dev_features, size, pad_id, group)[main]
    record = {k: v for k, v in event.items() if k not in ("event", "step")}
    record |= {"memorization": memorization, "generalization": generalization}
    writer.log({"type": "stage", "step": event["step"], **record})
    say(
        f"stage {record.get('stage')} ends at step {event['step']}: memorisation {main} {memorization:.4f}, "
        f"generalisation {main} {generalization:.4f}"
    )
    return record


def evaluate_and_log(
    model, spec, features, config, pad_id, step, writer, say, group, halves=None
) -> dict[str, Any]:  # noqa: ANN001
    t0 = time.time()
    values, parts = evaluate_split(model, spec, features, config.eval_batch_size, pad_id, group, halves)
    record = {"type": "eval", "step": step, "metrics": values, "eval_time_s": time.time() - t0}
    record |= parts or {}
    writer.log(record)
    shown = values | {f"select {k}": v for k, v in (parts or {}).get("select", {}).items()}
    say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return record


def delta_rank_stats(recipe: Recipe) -> dict[str, dict[str, float]]:
    """Per adapted module: the method's rank, and the numerical and effective rank of its dW."""
    ranks = recipe.ranks()
    stats = {}
    for name, dw in recipe.delta_weights().items():
        dw = dw.detach().float()
        numerical = int(torch.linalg.matrix_rank(dw)) if dw.abs().max() > 0 else 0
        stats[name] = {
            "rank": ranks.get(name, numerical),
            "numerical_rank": numerical,
            "effective_rank": effective_rank(dw),
        }
    return stats


def machine() -> dict[str, Any]:
    """What the timings were measured on."""
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in info.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def summarize(spec, config, evals, history, steps, total_steps, train_time, wall_time) -> dict[str, Any]:  # noqa: ANN001
    """metrics.json. Parameter counts: ``start`` is what the first step trained, ``mean`` the mean
    over steps of what each step trained, ``end`` what is trainable once the run has ended (AROMA:
    0 adapter parameters when every module finished)."""
    main = spec.main_metric
    best = max(evals, key=lambda e: e["metrics"][main])
    stats = {
        key: {"start": values[0], "mean": sum(values) / len(values), "end": values[-1]} if values else None
        for key, values in history.items()
    }
    return (
        {
            "task": spec.name,
            "method": config.method,
            "main_metric": main,
            "best": best["metrics"] | {"step": best["step"]},
            "final": evals[-1]["metrics"] | {"step": evals[-1]["step"]},
            "trainable_params": stats["trainable"],
            "adapter_params": stats["adapter"],
            "steps": steps,
            "planned_steps": total_steps,
            "wall_time_s": wall_time,
            "train_time_s": train_time,
            "time_per_step_s": train_time / max(1, steps),
        }
        | selected(evals, main)
        | run_info()
    )


def selected(evals: list[dict[str, Any]], main: str) -> dict[str, Any]:
    """With ``dev_split: halves``: the report half's metrics at the evaluation best on the selection
    half (the first such, so a later tie never wins), and at the last evaluation."""
    if "select" not in evals[-1]:
        return {}
    chosen = max(evals, key=lambda e: e["select"][main])
    return {
        "selected": chosen["report"] | {"step": chosen["step"], "selection": chosen["select"][main]},
        "final_report": evals[-1]["report"] | {"step": evals[-1]["step"]},
    }


def run_info() -> dict[str, Any]:
    """What every metrics.json records about how it was made."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "transformers", "peft", "aroma-peft"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    return {
        "schema_version": SCHEMA_VERSION,
        "versions": versions,
        "world_size": world_size,
        "machine": machine(),
    }
