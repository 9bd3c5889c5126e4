"""A finished run as one plain ``transformers`` model: the learned update merged into the weights,
for serving without adapter code (``aroma merge``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..data.glue import get_task
from ..errors import UserInputError
from ..io import AdapterFileError
from ..models import quiet_transformers
from .outputs import CONFIG


def merge_run(run_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the run's model with its update merged (``save_pretrained``) and its tokenizer to
    ``output_dir``, which ``AutoModelForSequenceClassification.from_pretrained`` loads as is.

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
    """The base model of the run with its adapter merged (or the fully fine-tuned model)."""
    from ..tasks.glue import load_model

    spec = get_task(str(config.get("task", "")))
    tokenizer, base = load_model(config.get("model"), spec, int(config.get("seed", 0)))
    if (run / "model").is_dir():  # full fine-tuning: the model itself
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(run / "model"), tokenizer
    adapter = run / "adapter"
    try:
        if is_peft_adapter(adapter):
            from .lora import load_peft_adapter

            return load_peft_adapter(base, adapter).merge_and_unload(), tokenizer
        from ..tuners.model import load

        return load(base, adapter).merge_and_unload(), tokenizer
    except AdapterFileError as err:
        raise UserInputError(str(err)) from None


def is_peft_adapter(adapter: Path) -> bool:
    """True for PEFT's own format (lora, adalora), False for ours (aroma, relora, sora)."""
    from ..tuners.model import CONFIG_NAME, FORMAT

    path = adapter / CONFIG_NAME
    if not path.is_file():
        raise UserInputError(f"{adapter.parent}: no adapter/ or model/ folder (the run did not finish)")
    try:
        return json.loads(path.read_text()).get("format") != FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise UserInputError(f"{path}: damaged adapter config ({err})") from None
