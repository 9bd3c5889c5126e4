"""``aroma evaluate``: a trained run (base model + its adapter) or a bare causal LM on a task's test sets.

Commonsense: accuracy per set (keyed by folder name) and their average, in ``loglik`` or ``generate``
mode. GLUE runs are evaluated on their task's dev sets with the training loop's own metric code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .errors import UserInputError
from .io import AdapterFileError, read_json, write_json

if TYPE_CHECKING:
    from .tasks.base import Task

METRICS = "metrics.json"


def require_finished(run_dir: Path) -> None:
    """Refuse a run that saved no trained adapter or model, before any slow model load."""
    if not ((run_dir / "model").is_dir() or (run_dir / "adapter").is_dir()):
        raise UserInputError(f"{run_dir}: no adapter/ or model/ folder (the run did not finish)")


def attach_run(base: nn.Module, run_dir: Path) -> nn.Module:
    """The run's trained model: ``model/`` for full fine-tuning, else ``base`` with ``adapter/``."""
    from .train import get_recipe
    from .train.lora import load_peft_adapter
    from .train.recipe import FrozenBaseRecipe
    from .tuners.model import CONFIG_NAME, FORMAT, load

    if (run_dir / "model").is_dir():  # full fine-tuning saved the whole model
        return type(base).from_pretrained(str(run_dir / "model"))
    adapter = run_dir / "adapter"
    try:
        config = read_json(adapter / CONFIG_NAME)
        if config.get("format") == FORMAT:
            return load(base, adapter)  # aroma, relora, sora
        recipe = get_recipe(config["method"]) if "method" in config else None
        if recipe is not None and issubclass(recipe, FrozenBaseRecipe):
            return recipe.load(base, adapter)  # bitfit, adapterh, adapterp: the trained tensors by name
    except AdapterFileError as err:
        raise UserInputError(f"{run_dir}: no trained adapter or model ({err})") from None
    return load_peft_adapter(base, adapter)  # lora, adalora


def evaluate(
    output_dir: str | Path,
    task: str | None = None,
    run: str | Path | None = None,
    model: str | None = None,
    data_dir: str | Path | None = None,
    eval_sets: list[str] | None = None,
    eval_limit: int | None = None,
    eval_mode: str = "loglik",
    num_beams: int = 1,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate and write ``<output_dir>/metrics.json``; returns what it wrote."""
    from .train.outputs import read_config

    out = Path(output_dir)
    if (out / METRICS).exists() and not overwrite:
        raise UserInputError(f"{out / METRICS} exists: pass --overwrite to replace it")
    if (run is None) == (model is None):
        raise UserInputError("give exactly one of --run RUN_DIR and --model NAME_OR_PATH")
    run_config: dict[str, Any] = {}
    if run is not None:
        run = Path(run)
        run_config = read_config(run)
        require_finished(run)
        if task and task != run_config.get("task"):
            raise UserInputError(f"--task {task} differs from the run's task {run_config.get('task')!r}")
        task = run_config.get("task")
    start = time.perf_counter()
    if task == "commonsense":
        result = _commonsense(
            run,
            run_config,
            model,
            data_dir,
            eval_sets,
            eval_limit,
            eval_mode,
            num_beams,
            batch_size,
            progress,
        )
    elif run is not None:
        result = _glue_run(run, run_config, data_dir, eval_limit, batch_size)
    elif task is None:
        raise UserInputError("--task is required with --model: commonsense")
    else:
        raise UserInputError(
            f"--task {task!r}: --model evaluates causal LMs on --task commonsense; evaluate GLUE with --run"
        )
    result |= {"task": task, "run": str(run) if run else None, "seconds": time.perf_counter() - start}
    write_json(out / METRICS, result)
    return result


def _commonsense(
    run: Path | None,
    run_config: dict[str, Any],
    model: str | None,
    data_dir: str | Path | None,
    eval_sets: list[str] | None,
    eval_limit: int | None,
    mode: str,
    num_beams: int,
    batch_size: int,
    progress: bool,
) -> dict[str, Any]:
    from .tasks import get_task

    if data_dir is None:
        raise UserInputError("--data-dir is required: a folder of <set>/test.json files")
    task = get_task("commonsense")
    sets = task.load_split(data_dir, "test", eval_sets, eval_limit)  # data errors before the slow load
    name = run_config.get("model") if run is not None else model
    net, tokenizer = task.load_model(None if name in (None, "default") else name)
    if run is not None:
        net = attach_run(net, run)
    metrics = task.evaluate(
        net, tokenizer, sets, mode=mode, batch_size=batch_size, num_beams=num_beams, progress=progress
    )
    model_name = getattr(net.config, "name_or_path", None) or name
    return metrics | {
        "model": model_name,
        "accuracy": {k: v["accuracy"] for k, v in metrics["sets"].items()},
        "eval_limit": eval_limit,
    }


def _glue_run(
    run: Path, config: dict[str, Any], data_dir: str | Path | None, eval_limit: int | None, batch_size: int
) -> dict[str, Any]:
    """A GLUE run on its dev sets, through the training loop's task: its loading, tokenizing and metrics."""
    task = task_of_run(config)
    sets = task.load_split(data_dir or config.get("data_dir"), "dev", limit=eval_limit)
    base, tokenizer = task.load_model(config.get("model"))
    metrics = task.evaluate(attach_run(base, run), tokenizer, sets, batch_size=batch_size)
    return {"model": config.get("model"), "metrics": metrics, "eval_limit": eval_limit}


def task_of_run(config: dict[str, Any]) -> Task:
    """The task a run trained on, set up from its saved ``config.json`` as ``aroma train`` set it up."""
    from .tasks import task_for
    from .train.config import TrainConfig, field_types

    fields = field_types(TrainConfig)
    return task_for(TrainConfig(**{k: v for k, v in config.items() if k in fields}))


def format_table(result: dict[str, Any]) -> str:
    """The printed summary: one row per set (commonsense) or per metric (GLUE)."""
    if "sets" not in result:
        return "\n".join(f"{k:>16} {v:.4f}" for k, v in result["metrics"].items())
    lines = [f"{'set':<16} {'n':>5} {'accuracy':>9} {'majority':>9} {'valid':>6}  ({result['mode']})"]
    for name, s in result["sets"].items():
        lines.append(
            f"{name:<16} {s['n']:>5} {s['accuracy']:>9.1f} {s['majority_class']:>9.1f} {s['valid']:>6}"
        )
    lines.append(f"{'average':<16} {'':>5} {result['average']:>9.1f}")
    return "\n".join(lines)
