"""A finished run made servable: one plain ``transformers`` model with the learned update merged into
its weights (``aroma merge``), or a standard PEFT LoRA adapter (``aroma export``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserInputError
from .evaluation import attach_run, require_finished, task_of_run
from .io import read_json
from .models import quiet_transformers
from .train import get_recipe
from .train.outputs import read_config
from .train.recipe import NO_LOW_RANK, RECIPES, FrozenBaseRecipe
from .tuners.model import CONFIG_NAME, FORMAT


def merge_run(run_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the run's model with its update merged (``save_pretrained``) and its tokenizer to
    ``output_dir``, which the task's Auto class loads as is (``AutoModelForSequenceClassification`` for
    GLUE, ``AutoModelForCausalLM`` for commonsense).

    ``overwrite`` replaces a previously saved model there (a folder with ``config.json``), nothing else.
    """
    run, out = Path(run_dir), Path(output_dir)
    config = read_config(run)
    check_output_dir(out, overwrite, "config.json", "saved model")
    with quiet_transformers():  # no "Loading weights" / "Writing model shards" bars
        model, tokenizer = merged_model(run, config)

    def save(folder: Path) -> None:
        with quiet_transformers():
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

    return write_folder(out, save)


def check_output_dir(out: Path, overwrite: bool, marker: str, what: str) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite`` and it holds a previous result (``marker``)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserInputError(
                f"--output-dir {out}: exists and is not an empty folder (--overwrite replaces it)"
            )
        if not (out / marker).is_file():
            raise UserInputError(f"--output-dir {out}: holds no {what} (no {marker}); not replacing it")


def write_folder(out: Path, save: Callable[[Path], None]) -> Path:
    """Run ``save`` into a new sibling folder, then move it into place: never a half-written result."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save(tmp)
        tmp.chmod(0o755)
        old = out.parent / f".{out.name}.replaced" if out.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old)
    return out


def merged_model(run: Path, config: dict[str, Any]) -> tuple[Any, Any]:
    """The run's base model (with its task's head) and its update merged, or the fully fine-tuned model."""
    method = str(config.get("method"))
    recipe = get_recipe(method) if method in RECIPES else None
    if recipe is not None and issubclass(recipe, FrozenBaseRecipe):
        raise UserInputError(f"{run}: method {method!r} {NO_LOW_RANK}")
    require_finished(run)
    base, tokenizer = task_of_run(config).load_model(config.get("model"))
    model = attach_run(base, run)
    if (run / "model").is_dir():  # full fine-tuning: the model itself
        return model, tokenizer
    return model.merge_and_unload(), tokenizer


EXPORT_FORMATS = ("uniform", "patterns")


def export_run(
    run_dir: str | Path,
    output_dir: str | Path,
    export_format: str = "uniform",
    rank: int | None = None,
    overwrite: bool = False,
) -> tuple[Path, int | None]:
    """Write an AROMA, ReLoRA or SoRA run's update as a PEFT LoRA adapter; returns the folder and, for
    ``uniform``, the rank every module was padded to.

    ``uniform``: one rank and ``lora_alpha == r`` for every module (each module's scale folded into B),
    which servers that ignore ``rank_pattern`` / ``alpha_pattern`` (vLLM) apply as ``peft`` does; no
    ``modules_to_save``, so runs with a trained head (GLUE) need ``patterns``. ``patterns``: each
    module's own rank and scale, the ``adapter_lora/`` a run writes.
    """
    if export_format not in EXPORT_FORMATS:
        raise UserInputError(f"--format {export_format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if rank is not None and export_format != "uniform":
        raise UserInputError("--rank pads the uniform export: it needs --format uniform")
    run, out = Path(run_dir), Path(output_dir)
    config = read_config(run)
    method = config.get("method")
    if (run / "model").is_dir() or not (run / "adapter" / CONFIG_NAME).is_file():
        merged = "" if (run / "model").is_dir() else " (or the run did not finish)"
        raise UserInputError(f"{run}: method {method!r} saved no low-rank adapter{merged}")
    if read_json(run / "adapter" / CONFIG_NAME).get("format") != FORMAT:
        raise UserInputError(
            f"{run / 'adapter'}: method {method!r} saved a PEFT adapter already: serve it as is"
        )
    check_output_dir(out, overwrite, "adapter_config.json", "adapter")
    with quiet_transformers():
        base, _ = task_of_run(config).load_model(config.get("model"))
    model = attach_run(base, run)
    padded: list[int] = []

    def save(folder: Path) -> None:
        try:
            if export_format == "uniform":
                padded.append(model.export_uniform_lora(folder, rank))
            else:
                model.export_lora(folder)
        except ValueError as err:
            hint = " (--format patterns keeps them)" if "modules_to_save" in str(err) else ""
            raise UserInputError(f"{run}: {err}{hint}") from None

    return write_folder(out, save), (padded[0] if padded else None)
