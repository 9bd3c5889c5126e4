"""A plain PyTorch fine-tuning loop, the same for every task and every method: the task (``tasks/``)
gives the data, model, batches, loss and metrics; the recipe (``train/<method>.py``) the adapters."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers.utils import ModelOutput

from ..data import batches
from ..errors import UserInputError
from ..models import check_module_names
from ..tasks import task_for
from ..tasks.base import Task
from ..tuners.model import find_saved_modules
from ..tuners.sora.schedule import summarize_stages
from . import checkpoint, distributed, outputs
from .config import TrainConfig, resolved
from .evals import dev_halves, evaluate_and_log, evaluate_stage
from .recipe import Recipe, get_recipe
from .results import (
    delta_rank_stats,
    early_stop_reason,
    finish_diverged,
    machine,
    summarize,
    warn_if_machine_differs,
)
from .summary import run_summary

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
    stop_reason: str | None = None  # early stopping's, once it has stopped the run
    stop_changed_model: bool = False  # the method's last decisions at the stop changed the function

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
    task = task_for(config)  # the task's own settings are checked before anything is written
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
    train_examples, eval_examples = task.load_data(config)
    torch.manual_seed(config.seed)  # the adapters' initialisation (GLUE seeds again for its new head)
    model, tokenizer = task.load_model(config.model)
    model.to(group.device)
    train_features, dropped = task.encode(train_examples, tokenizer)
    if not train_features:
        raise UserInputError(f"no training example fits in max_seq_len={task.max_seq_len} tokens")
    eval_items = {name: task.eval_items(examples, tokenizer) for name, examples in eval_examples.items()}
    halves = dev_halves(eval_items) if config.dev_split == "halves" else None
    distributed.check_batches(group, config.batch_size, len(train_features))
    steps_per_epoch = math.ceil(len(train_features) / config.batch_size)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    recipe = recipe_cls(config, options, total_steps)

    heads = check_module_names(model, config.modules_to_save, "modules_to_save") or task.default_heads(model)
    heads = find_saved_modules(model, heads)
    targets = check_module_names(model, config.target_modules, "target_modules", linear=True)
    targets = task.default_target_modules(model) if targets is None else targets
    head_params = sum(p.numel() for h in heads for p in model.get_submodule(h).parameters())
    model = recipe.wrap(model, targets, heads)
    lr, optimizer, scheduler = optimization(recipe, config, total_steps)
    if resume_from is not None:
        checkpoint.load_model(model, resume_from)  # before the controller sees which modules finished
    recipe.start(optimizer, scheduler)
    forward = distributed.wrap(
        TaskLoss(model, task, recipe), group
    )  # the training loss (DDP with several processes)

    generator = torch.Generator().manual_seed(config.seed)
    progress = Progress(order_state=generator.get_state())
    states = {"optimizer": optimizer, "scheduler": scheduler, "recipe": recipe, "progress": progress}
    writer = outputs.RunWriter(out, enabled=group.main)  # only rank 0 writes files and shows progress
    quiet = config.quiet or not group.main
    say = (lambda msg: print(msg, flush=True) if group.main else None) if quiet else tqdm.write
    group.barrier()  # every process has checked the output folder before rank 0 writes into it
    if resume_from is None:
        writer.start(resolved(config, options) | {"lr": lr, "max_seq_len": task.max_seq_len}, overwrite)
    else:
        checkpoint.load_states(resume_from, states)
        writer.resume(progress.log_offset)
        warn_if_machine_differs(checkpoint.meta(resume_from).get("machine", {}))
    say(
        f"{task.name} / {config.method}: {len(train_features)} train examples"
        + (f" ({dropped} longer than {task.max_seq_len} tokens dropped)" if dropped else "")
        + f", {total_steps} steps, lr {lr:g}"
        + (f" (resumed at step {progress.step})" if resume_from is not None else "")
    )

    evaluate_at = config.eval_every or steps_per_epoch
    lengths = [len(f["input_ids"]) for f in train_features]
    memorization_set: list[dict[str, Any]] = []
    last_save = time.time()
    bar = tqdm(total=total_steps, initial=progress.step, disable=quiet, dynamic_ncols=True, file=sys.stderr)
    model.train()
    while (
        progress.step < total_steps
        and not recipe.finished
        and not progress.diverged
        and not progress.stop_reason
    ):
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
            batch = task.collate([train_features[i] for i in order[position]])
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
            new_events = take_new_events(progress, recipe, record)
            writer.log(record)
            checkpoint.kill_point(f"step:{step}")
            for event in (e for e in new_events if e["event"] == "stage_end"):
                memorization_set = memorization_set or task.eval_items(
                    batches.subset(train_examples, MEMORIZATION_EXAMPLES), tokenizer
                )
                progress.stages.append(
                    evaluate_stage(
                        model, task, event, memorization_set, eval_items, config, writer, say, group
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
                    evaluate_and_log(model, task, eval_items, config, step, writer, say, group, halves)
                )
                model.train()
                if not done and early_stop(progress, recipe, config, task, writer, say):
                    break
            if group.main and not done and save_due(config.save_every, step, last_save):
                progress.log_offset = writer.log_offset()
                progress.wall_time += time.time() - session_start
                session_start = last_save = time.time()
                writer.track(checkpoint.FOLDER)
                checkpoint.save(out, step, model, states, config.keep_checkpoints, {"machine": machine()})
    bar.close()
    if progress.diverged:
        return finish_diverged(task, config, progress, writer)
    if not progress.evals or progress.evals[-1]["step"] != progress.step or progress.stop_changed_model:
        progress.evals.append(
            evaluate_and_log(model, task, eval_items, config, progress.step, writer, say, group, halves)
        )
    writer.close()

    if group.main:
        writer.write_json(outputs.RANKS, delta_rank_stats(recipe))
        recipe.save(out)
        writer.track_new()
    wall_time = progress.wall_time + time.time() - session_start
    result = summarize(
        task,
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
    result["stopped_early"] = progress.step < total_steps
    result["stop_reason"] = progress.stop_reason or (
        f"{config.method}: every adapted module finished" if progress.step < total_steps else None
    )
    result |= recipe.summary()
    if progress.stages:
        result["stages"] = summarize_stages(progress.stages, higher_is_better=True)
    if dropped:
        result["dropped_train_examples"] = dropped
    if group.main:  # a final evaluation (e.g. on test files) runs once
        result |= task.final_results(model, tokenizer, train_examples, config)
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
    # One fused reduction and one sync (the max |entry| is NaN or inf iff some entry is), not one per tensor.
    if not torch.isfinite(torch.nn.utils.get_total_norm(params, norm_type=math.inf)):
        return value, "non-finite parameters after the optimizer step"
    return value, None


class TaskLoss(torch.nn.Module):
    """The task's loss as a module's forward, so that DDP wraps it (its hooks reduce the gradients of
    whatever parameters the loss used, also when the task calls parts of the model, not its forward)."""

    def __init__(self, model: torch.nn.Module, task: Task, recipe: Recipe) -> None:
        super().__init__()
        self.model, self.task, self.recipe = model, task, recipe

    def forward(self, **batch: torch.Tensor) -> LossOutput:
        self.recipe.before_training_forward()  # here, not as a model hook: a task may bypass forward
        return LossOutput(loss=self.task.loss(self.model, batch))


@dataclass
class LossOutput(ModelOutput):
    """A model output holding the loss (DDP finds the tensors of a ModelOutput, not of any object)."""

    loss: torch.Tensor | None = None


def early_stop(
    progress: Progress,
    recipe: Recipe,
    config: TrainConfig,
    task: Task,
    writer: outputs.RunWriter,
    say: Callable[[str], None],
) -> bool:
    """Early stopping after an evaluation: records why, lets the method end its training (AROMA's final
    decisions), and returns True when the run stops here."""
    reason = early_stop_reason(
        progress.evals, task.main_metric, config.early_stopping_patience, config.early_stopping_threshold
    )
    if reason is None:
        return False
    progress.stop_reason, progress.stop_changed_model = reason, recipe.stop()
    record = {"type": "stop", "step": progress.step, "reason": reason}
    take_new_events(progress, recipe, record)  # e.g. AROMA's final merges and finishes
    writer.log(record)
    say(f"step {progress.step}: {reason}")
    return True


def take_new_events(progress: Progress, recipe: Recipe, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The method's events since the last logged record, put on ``record`` (and counted as logged)."""
    new_events = recipe.events()[progress.n_events :]
    if new_events:
        record["events"], progress.n_events = new_events, progress.n_events + len(new_events)
    return new_events


def save_due(save_every: int | None, step: int, last_save: float) -> bool:
    """Every ``save_every`` steps; by default every SAVE_MINUTES of wall time; never with 0."""
    if save_every is None:
        return time.time() - last_save >= checkpoint.SAVE_MINUTES * 60
    return save_every > 0 and step % save_every == 0


def optimization(recipe: Recipe, config: TrainConfig, total_steps: int) -> tuple[float, Any, Any]:
    """The run's peak lr, AdamW over the recipe's param groups, and its schedule (after ``wrap``)."""
    lr = config.lr or recipe.default_lr
    # foreach: one multi-tensor update instead of a Python loop over every small factor (CPU's default)
    optimizer = torch.optim.AdamW(recipe.param_groups(lr, config.weight_decay), lr=lr, foreach=True)
    warmup = round(config.warmup_ratio * total_steps) if recipe.scheduler_warmup else 0
    scheduler = linear_schedule(optimizer, warmup, total_steps, decay=config.lr_schedule == "linear")
    return lr, optimizer, scheduler


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
