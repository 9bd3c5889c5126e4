"""A plain PyTorch fine-tuning loop for GLUE, the same for every method (the recipe is the difference)."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import metrics as glue_metrics
from ..data.glue import TaskSpec, get_task, load_task, majority_baseline
from ..errors import UserInputError
from ..models import check_module_names, quiet_transformers, resolve_model
from ..rank import effective_rank
from ..tuners.model import find_saved_modules
from ..tuners.sora.schedule import summarize_stages
from . import batches, outputs
from .config import TrainConfig, resolved
from .recipe import Recipe, block_linears, default_heads, get_recipe
from .summary import run_summary

MEMORIZATION_EXAMPLES = 1000  # SoRA's study: the metric on 1,000 training examples


def train(config: TrainConfig, options: Any, overwrite: bool = False) -> dict[str, Any]:
    """Fine-tune, evaluate on dev, write the run folder; returns the contents of ``metrics.json``."""
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, options, overwrite)
    finally:
        torch.set_num_threads(threads)  # the caller's process keeps its own setting


def _train(config: TrainConfig, options: Any, overwrite: bool) -> dict[str, Any]:
    start = time.time()
    spec = get_task(config.task)
    recipe_cls = get_recipe(config.method)
    out = outputs.prepare(config.output_dir, overwrite)  # before any slow work
    data = load_task(spec, config.data_dir)
    train_examples = batches.subset(data["train"], config.max_train_samples)
    tokenizer, model = load_model(config.model, spec, config.seed)
    train_features = batches.tokenize(tokenizer, train_examples, config.max_seq_len)
    dev_features = {
        dev.name: batches.tokenize(tokenizer, data[dev.name][: config.max_eval_samples], config.max_seq_len)
        for dev in spec.dev_sets
    }
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
    scheduler = linear_schedule(optimizer, warmup, total_steps)
    recipe.start(optimizer, scheduler)

    run_config = resolved(config, options) | {"lr": lr}
    writer = outputs.RunWriter(out)
    writer.write_config(run_config)
    say = (lambda msg: print(msg, flush=True)) if config.quiet else tqdm.write
    say(
        f"{spec.name} / {config.method}: {len(train_features)} train examples, {total_steps} steps, lr {lr:g}"
    )

    pad_id = tokenizer.pad_token_id
    evaluate_at = config.eval_every or steps_per_epoch
    generator = torch.Generator().manual_seed(config.seed)
    lengths = [len(f["input_ids"]) for f in train_features]
    history: dict[str, list[float]] = {"trainable": [], "adapter": []}
    evals: list[dict[str, Any]] = []
    step, train_time, loss_avg, last_ranks, n_events = 0, 0.0, None, None, 0
    stages: list[dict[str, Any]] = []  # memorisation / generalisation at each stage end (SoRA's xi stages)
    memorization_set: list[dict[str, Any]] = []
    bar = tqdm(total=total_steps, disable=config.quiet, dynamic_ncols=True, file=sys.stderr)
    model.train()
    while step < total_steps and not recipe.finished:
        for idx in batches.train_order(lengths, config.batch_size, generator, config.group_by_length):
            if step >= total_steps or recipe.finished:
                break
            adapter = recipe.adapter_parameters()  # what this step trains
            t0 = time.time()
            batch = batches.collate([train_features[i] for i in idx], pad_id)
            loss = model(**batch).loss
            loss.backward()
            step_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            step += 1
            recipe.after_optimizer_step(step)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            train_time += time.time() - t0

            ranks = recipe.ranks()
            record = {
                "type": "train",
                "step": step,
                "epoch": step / steps_per_epoch,
                "loss": loss.item(),
                "lr": step_lr,
                "trainable_params": adapter + head_params,
                "adapter_params": adapter,
                "total_rank": sum(ranks.values()) if ranks else None,
                "finished_modules": sum(1 for e in recipe.events() if e["event"] == "finish"),
            }
            if ranks != last_ranks:  # per-module ranks only when they change (the log stays small)
                record["ranks"], last_ranks = ranks, ranks
            new_events = recipe.events()[n_events:]
            if new_events:
                record["events"], n_events = new_events, n_events + len(new_events)
            writer.log(record)
            for event in (e for e in new_events if e["event"] == "stage_end"):
                memorization_set = memorization_set or batches.tokenize(
                    tokenizer, batches.subset(train_examples, MEMORIZATION_EXAMPLES), config.max_seq_len
                )
                stages.append(
                    evaluate_stage(
                        model, spec, event, memorization_set, dev_features, config, pad_id, writer, say
                    )
                )
                model.train()
            history["trainable"].append(adapter + head_params)
            history["adapter"].append(adapter)
            loss_avg = record["loss"] if loss_avg is None else 0.9 * loss_avg + 0.1 * record["loss"]
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss_avg:.4f}",
                lr=f"{step_lr:.2e}",
                params=adapter + head_params,
                rank=record["total_rank"] if ranks else "-",
                refresh=False,
            )
            if step % evaluate_at == 0 or step == total_steps or recipe.finished:
                evals.append(evaluate_and_log(model, spec, dev_features, config, pad_id, step, writer, say))
                model.train()
    bar.close()
    if not evals or evals[-1]["step"] != step:
        evals.append(evaluate_and_log(model, spec, dev_features, config, pad_id, step, writer, say))
    writer.close()

    rank_stats = delta_rank_stats(recipe)
    writer.write_json(outputs.RANKS, rank_stats)
    recipe.save(out)
    result = summarize(spec, config, evals, history, step, total_steps, train_time, time.time() - start)
    result |= {
        "heads": heads,
        "head_params": head_params,
        "total_rank_end": sum(recipe.ranks().values()) if recipe.ranks() else None,
    }
    result["stopped_early"] = recipe.finished and step < total_steps
    result |= recipe.summary()
    if stages:
        result["stages"] = summarize_stages(stages, higher_is_better=True)
    result["majority_baseline"] = majority_baseline(spec, train_examples, data, config.max_eval_samples)
    writer.write_json(outputs.METRICS, result)
    say(run_summary(result, out))
    return result


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
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak, then linear decay to 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def evaluate(
    model: Any, spec: TaskSpec, features: dict[str, list], batch_size: int, pad_id: int
) -> dict[str, float]:
    """Every metric of the task on every dev set (MNLI: matched, and mismatched prefixed ``mm_``)."""
    result: dict[str, float] = {}
    for dev in spec.dev_sets:
        result |= metrics_on(model, spec, features[dev.name], batch_size, pad_id, dev.prefix)
    return result


@torch.no_grad()
def metrics_on(
    model: Any, spec: TaskSpec, feats: list[dict[str, Any]], batch_size: int, pad_id: int, prefix: str = ""
) -> dict[str, float]:
    """The task's metrics on one set of tokenized examples."""
    model.eval()
    preds: list[Any] = [None] * len(feats)
    for idx, batch in batches.eval_batches(feats, batch_size, pad_id):
        batch.pop("labels")
        logits = model(**batch).logits
        values = logits[:, 0] if spec.is_regression else logits.argmax(-1)
        for i, v in zip(idx, values.tolist()):
            preds[i] = v
    return glue_metrics.compute(spec.metrics, preds, [f["labels"] for f in feats], prefix)


def evaluate_stage(model, spec, event, memorization_set, dev_features, config, pad_id, writer, say):  # noqa: ANN001
    """At the end of a sparsifying stage: memorisation (the metric on 1,000 training examples) and
    generalisation (the dev metric), as in SoRA's study of its scheduler."""
    main = spec.main_metric
    memorization = metrics_on(model, spec, memorization_set, config.eval_batch_size, pad_id)[main]
    generalization = evaluate(model, spec, dev_features, config.eval_batch_size, pad_id)[main]
    record = {k: v for k, v in event.items() if k not in ("event", "step")}
    record |= {"memorization": memorization, "generalization": generalization}
    writer.log({"type": "stage", "step": event["step"], **record})
    say(
        f"stage {record.get('stage')} ends at step {event['step']}: memorisation {main} {memorization:.4f}, "
        f"generalisation {main} {generalization:.4f}"
    )
    return record


def evaluate_and_log(model, spec, features, config, pad_id, step, writer, say) -> dict[str, Any]:  # noqa: ANN001
    t0 = time.time()
    values = evaluate(model, spec, features, config.eval_batch_size, pad_id)
    record = {"type": "eval", "step": step, "metrics": values, "eval_time_s": time.time() - t0}
    writer.log(record)
    say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
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
    main = spec.main_metric
    best = max(evals, key=lambda e: e["metrics"][main])
    stats = {
        key: {"start": values[0], "mean": sum(values) / len(values), "end": values[-1]} if values else None
        for key, values in history.items()
    }
    return {
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
        "machine": machine(),
    }
