"""Method options derived from the adapter configs, `aroma train --help`, and the import arrows."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from aroma_peft.cli import build_parser, main
from aroma_peft.train import RECIPES
from aroma_peft.train.aroma import AromaOptions, AromaRecipe
from aroma_peft.train.config import TrainConfig
from aroma_peft.train.relora import ReloraOptions
from aroma_peft.train.sora import SoraOptions
from aroma_peft.tuners.aroma.config import AromaConfig
from aroma_peft.tuners.sora.config import SoraConfig

SRC = Path(__file__).resolve().parents[1] / "src" / "aroma_peft"
DERIVED = [(AromaOptions, AromaConfig), (ReloraOptions, AromaConfig), (SoraOptions, SoraConfig)]


@pytest.mark.parametrize(("options", "config"), DERIVED)
def test_derived_options_take_default_and_help_from_the_config(options, config):
    fields = {f.name: f for f in dataclasses.fields(config)}
    for f in dataclasses.fields(options):
        source = f.metadata.get("config_field")
        if source is None:  # a recipe-only option (SoRA's gate_lr)
            continue
        change = options.overrides.get(source)
        if change is None:
            assert (f.name, f.default) == (source, fields[source].default)
            assert f.metadata["help"] == fields[source].metadata["help"]
        else:  # every departure says why, and a changed default says so in the flag's help
            assert change.reason
            if f.default != fields[source].default:
                assert f"Differs from {config.__name__}'s {fields[source].default!r}" in f.metadata["help"]


def test_options_map_back_to_the_config():
    options = AromaOptions(t_in=30, eps_out=0.0)
    assert options.config_values()["t_in"] == 30 and "warmup_steps" not in options.config_values()
    recipe = AromaRecipe(TrainConfig(seed=4, warmup_ratio=0.1), options, total_steps=50)
    config = recipe.adapter_config(["query"], ["classifier"])
    found = (config.t_in, config.eps_out, config.r, config.warmup_steps, config.max_steps)
    assert found == (30, 0.0, 1, 5, 50)
    assert config.seed == 4 and config.check_interval == AromaConfig.check_interval
    relora = ReloraOptions(restart_every=7).config_values()
    assert relora["t_in"] == relora["check_interval"] == 7 and "restart_every" not in relora
    assert (relora["inner_criterion"], relora["eps_out"], relora["r"]) == ("none", 0.0, 8)
    sora = SoraOptions(r_max=3, xi_schedule="0,1e-3").config_values()
    assert sora["r"] == 3 and sora["xi_schedule"] == [0.0, 1e-3] and "r_max" not in sora
    with pytest.raises(ValueError, match="eps_in=-1 is invalid"):  # the config's own validation
        AromaOptions(eps_in=-1)
    with pytest.raises(ValueError, match="r=0 is invalid"):
        ReloraOptions(r=0)


def help_sections(capsys) -> dict[str, str]:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    parts = re.split(r"\n\n(?=\S)", text)
    return {part.splitlines()[0]: " ".join(part.split()) for part in parts}


def test_help_lists_each_methods_lr_flags_and_defaults(capsys):
    sections = help_sections(capsys)
    common = sections["common settings:"]
    assert "--batch-size BATCH_SIZE Training batch size. (default: 32)" in common
    assert "--warmup-ratio WARMUP_RATIO Linear warmup as a fraction of the steps. (default: 0.06)" in common
    for name, recipe in RECIPES.items():
        title = f"{name} options (default lr {recipe.default_lr:g}):"
        assert title in sections, f"no help group for {name}"
        entries = {e.split()[0]: e for e in re.split(r" (?=--[a-z0-9-]+ [A-Z0-9_]+ )", sections[title])[1:]}
        for f in dataclasses.fields(recipe.Options):  # each method lists all of its own flags
            entry = entries["--" + f.name.replace("_", "-")]
            assert f"(default: {f.default})" in entry or (f.default is None and "default:" in entry), entry
    aroma, lora = sections["aroma options (default lr 0.001):"], sections["lora options (default lr 0.001):"]
    assert "--r R Rank of the trainable factors. (default: 1)" in aroma
    assert "(default: 4.0)" in aroma.split("--lora-alpha")[1].split("--")[0]
    assert "--r R LoRA rank of every adapted module. (default: 8)" in lora
    assert "No options of its own." in sections["full options (default lr 5e-05):"]


def test_a_shared_flag_is_parsed_once_for_every_method():
    args = build_parser().parse_args(["train", "--method", "aroma", "--r", "3", "--output-dir", "x"])
    assert args.r == "3" and args.method == "aroma"


def imported_modules(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved against its package)."""
    package = ".".join(("aroma_peft", *path.relative_to(SRC).parent.parts))
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.add(".".join([*base, *([node.module] if node.module else [])]))
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_method_folder_imports_the_generic_callbacks_module():
    for path in (SRC / "tuners").rglob("*.py"):
        assert "aroma_peft.callbacks" not in imported_modules(path), path
    from aroma_peft import AromaCallback, SoraCallback
    from aroma_peft.callbacks import AromaCallback as FromCallbacks
    from aroma_peft.callbacks import ControllerCallback

    assert FromCallbacks is AromaCallback
    assert issubclass(AromaCallback, ControllerCallback) and issubclass(SoraCallback, ControllerCallback)


def test_method_help_names_every_registered_method():
    help_text = next(f.metadata["help"] for f in dataclasses.fields(TrainConfig) if f.name == "method")
    assert RECIPES and all(name in help_text for name in RECIPES)


def test_docs_override_table_shows_every_recipe_override_and_its_reason():
    """docs/baselines.md's override table is the reader's view of every recipe's ``overrides``: one row
    per (recipe, field), with the reason the code gives (which ``aroma train --help`` prints)."""
    docs = (SRC.parents[1] / "docs" / "baselines.md").read_text()
    rows = [line.split("|")[1:-1] for line in docs.splitlines() if line.startswith("| ") and "`" in line]
    reasons: dict[tuple[str, str], list[str]] = {}
    for recipe, fields, *_, reason in rows:
        for field in re.findall(r"`(\w+)`", fields):
            reasons.setdefault((recipe.strip(), field), []).append(reason.strip())
    for name, recipe in RECIPES.items():
        for field, override in getattr(recipe.Options, "overrides", {}).items():
            assert reasons.get((name, field)) == [override.reason], f"baselines.md: row of {name} {field}"
