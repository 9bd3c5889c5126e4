"""A finished run as one plain ``transformers`` model: the learned update merged into the weights,
for serving without adapter code (``aroma merge``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..models import quiet_transformers
from .outputs import CONFIG
from .recipe import RECIPES


def merge_run(run_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the run's model with its update merged (``save_pretrained``) and its tokenizer to
    ``output_dir``, which the task's Auto class loads as is (``AutoModelForSequenceClassification`` for
    GLUE, ``AutoModelForCausalLM`` for commonsense).

    ``overwrite`` replaces a previously saved model there (a folder with ``config.json``), nothing else.
    """
    run, out = Path(run_dir), Path(output_dir)
    if not (run / CONFIG).is_file():
        raise UserInputError(f"{run}: not a run folder (no {CONFIG})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserInputError(
                f"--output-dir {out}: exists and is not an empty folder (--overwrite replaces it)"
            )
        if not (out / "config.json").is_file():
            raise UserInputError(
                f"--output-dir {out}: holds no saved model (no config.json); not replacing it"
            )
    try:
        config = json.loads((run / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{run / CONFIG}: damaged run file ({err})") from None
    with quiet_transformers():  # no "Loading weights" / "Writing model shards" bars
        model, tokenizer = merged_model(run, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:  # written whole into a sibling, then moved into place: never a half-written model
        with quiet_transformers():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
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
    from ..evaluation import attach_run, require_finished, task_of_run
    from . import get_recipe
    from .recipe import NO_LOW_RANK, FrozenBaseRecipe

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
