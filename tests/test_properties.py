"""Property tests: every config field at and past its bounds, and damaged or mismatched adapter files.

Each bad value or file must end in one ValueError / AdapterFileError line naming the field, or the
file and the module, and a failed load must leave the model exactly as it was.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from aroma_peft import AdapterFileError, AromaConfig, SoraConfig, adapt, load
from aroma_peft.tuners.sora.config import XI_SCHEDULES
from aroma_peft.tuners.sora.controller import prune

FAST = settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Things that are no number: strings (as YAML may leave them), bools, None, lists, non-finite floats.
NOT_A_NUMBER = st.one_of(
    st.text(max_size=4), st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)  # fmt: skip


def ints_below(bound: int) -> st.SearchStrategy:
    return st.one_of(st.integers(max_value=bound - 1), st.floats(allow_nan=False), NOT_A_NUMBER)


def floats_below(bound: float, inclusive: bool) -> st.SearchStrategy:
    """Numbers past a lower bound (``inclusive``: the bound itself is valid)."""
    below = st.floats(max_value=bound, exclude_max=inclusive, allow_nan=False, allow_infinity=False)
    return st.one_of(below, NOT_A_NUMBER.filter(lambda v: v is not None or True))


def words(valid: tuple[str, ...]) -> st.SearchStrategy:
    return st.one_of(st.text(max_size=8).filter(lambda s: s not in valid), st.integers(), st.none())


COMMON = {
    # field: (valid values at the bounds, values past them)
    "r": ([1], ints_below(1)),
    "lora_alpha": ([1e-12], floats_below(0.0, inclusive=False)),
    "lora_dropout": (
        [0.0, 0.999],
        st.one_of(floats_below(0.0, inclusive=True), st.floats(min_value=1.0, allow_nan=False)),
    ),
    "seed": ([0, -1, 2**31], st.one_of(st.floats(), st.text(max_size=3), st.booleans(), st.none())),
    "target_modules": (
        [["up"], "up|down"],
        st.one_of(st.just([]), st.just(""), st.none(), st.lists(st.integers(), min_size=1), st.just("(")),
    ),
    "modules_to_save": (
        [None, ["head"]],
        st.one_of(st.text(min_size=1), st.integers(), st.lists(st.none(), min_size=1)),
    ),
}
AROMA = {
    **COMMON,
    "eps_in": ([1e-12], floats_below(0.0, inclusive=False)),
    "eps_out": ([0.0], floats_below(0.0, inclusive=True)),
    "t_in": ([1], ints_below(1)),
    "check_interval": ([1], ints_below(1)),
    "max_steps": ([None, 1], ints_below(1).filter(lambda v: v is not None)),
    "warmup_steps": ([0], ints_below(0)),
    "rewarmup_steps": ([0], ints_below(0)),
    "optimizer_reset": (["prune", "zero", "none"], words(("prune", "zero", "none"))),
    "reset_prune_ratio": (
        [0.0, 1.0],
        st.one_of(
            floats_below(0.0, inclusive=True), st.floats(min_value=1.0, exclude_min=True, allow_nan=False)
        ),
    ),
    "inner_criterion": (["paper", "abs", "delta", "none"], words(("paper", "abs", "delta", "none"))),
    "outer_criterion": (["paper", "lr"], words(("paper", "lr"))),
    "first_piece": (["keep", "check"], words(("keep", "check"))),
    "sync": (["global", "module"], words(("global", "module"))),
}
SORA = {
    **COMMON,
    "sparse_lambda": ([0.0], floats_below(0.0, inclusive=True)),
    "xi": ([0.0], floats_below(0.0, inclusive=True)),
    "xi_schedule": (
        [None, [0.0], "linear"],
        st.one_of(
            st.just([]),
            st.lists(st.floats(max_value=0, exclude_max=True), min_size=1),
            st.text(max_size=8).filter(lambda s: s.replace("_", "-") not in XI_SCHEDULES),
        ),
    ),
    "xi_max": ([None], st.one_of(st.floats(allow_nan=False), NOT_A_NUMBER.filter(lambda v: v is not None))),
    "xi_stages": ([None], st.one_of(st.integers(), NOT_A_NUMBER.filter(lambda v: v is not None))),
    "stage_steps": ([None], st.one_of(st.integers(), NOT_A_NUMBER.filter(lambda v: v is not None))),
    "prox": (["official", "soft", "soft_lr"], words(("official", "soft", "soft_lr"))),
    "gate_init": (["randn", "ones"], words(("randn", "ones"))),
}
# Fields that only make sense together: the other values a schedule needs.
SORA_CONTEXT = {"xi_schedule": {"xi": 1e-3, "xi_max": 1e-2, "xi_stages": 2}}


def build(cls, field: str, value):
    base = {"target_modules": ["up"]}
    if cls is SoraConfig and field == "xi_schedule" and value == "linear":
        base.update(SORA_CONTEXT["xi_schedule"])
    return cls(**{**base, field: value})


def test_every_field_has_bounds_tested() -> None:
    import dataclasses

    assert {f.name for f in dataclasses.fields(AromaConfig)} == set(AROMA)
    assert {f.name for f in dataclasses.fields(SoraConfig)} == set(SORA)


@pytest.mark.parametrize(
    ("cls", "field"), [(AromaConfig, f) for f in AROMA] + [(SoraConfig, f) for f in SORA]
)
def test_values_at_the_bounds_are_accepted(cls, field) -> None:
    table = AROMA if cls is AromaConfig else SORA
    for value in table[field][0]:
        assert getattr(build(cls, field, value), field) is not None or value is None


@pytest.mark.parametrize(
    ("cls", "field"), [(AromaConfig, f) for f in AROMA] + [(SoraConfig, f) for f in SORA]
)
@FAST
@given(data=st.data())
def test_values_past_the_bounds_name_the_field(cls, field, data) -> None:
    table = AROMA if cls is AromaConfig else SORA
    value = data.draw(table[field][1])
    if field == "seed" and isinstance(value, int) and not isinstance(value, bool):
        return  # every integer is a seed
    with pytest.raises(ValueError) as info:
        build(cls, field, value)
    message = str(info.value)
    assert message.startswith(f"{field}=") and "\n" not in message


# --- adapter files ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained-looking AROMA adapter (merged and live pieces) and a pruned-able SoRA one."""
    from conftest import TinyNet

    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    base = TinyNet()
    aroma = adapt(copy.deepcopy(base), AromaConfig(target_modules=["up", "down"], modules_to_save=["head"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in aroma.adapter_layers().values():
            layer.lora_B.normal_(generator=g)
            layer.merge_live()
            layer.start_piece(g)
            layer.lora_B.normal_(generator=g)
    aroma.save_pretrained(root / "aroma")
    sora = adapt(
        copy.deepcopy(base), SoraConfig(target_modules=["up", "down"], r=4, modules_to_save=["head"])
    )
    with torch.no_grad():
        sora.adapter_layers()["up"].gate[0] = 0.0
    prune(sora)
    sora.save_pretrained(root / "sora")
    return base, root


def copy_adapter(src, dst) -> None:
    dst.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (dst / name).write_bytes((src / name).read_bytes())


def assert_fails_cleanly(base, directory, *fragments: str) -> None:
    """load() fails with one line naming every fragment, and base is exactly as before."""
    model = copy.deepcopy(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterFileError) as info:
        load(model, directory)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert model.state_dict().keys() == before.keys()  # no adapter left injected
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


@FAST
@given(method=st.sampled_from(["aroma", "sora"]), cut=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_weights(saved, tmp_path_factory, method, cut) -> None:
    base, root = saved
    directory = tmp_path_factory.mktemp("cut")
    copy_adapter(root / method, directory / "a")
    weights = directory / "a" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(cut * len(data))])
    assert_fails_cleanly(base, directory / "a", str(weights), "damaged safetensors file")


@FAST
@given(method=st.sampled_from(["aroma", "sora"]), data=st.data())
def test_wrong_shapes_missing_and_extra_keys(saved, tmp_path_factory, method, data) -> None:
    base, root = saved
    directory = tmp_path_factory.mktemp("keys") / "a"
    copy_adapter(root / method, directory)
    weights = directory / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = data.draw(st.sampled_from(sorted(tensors)), label="key")
    module = key.removeprefix("modules_to_save.").rpartition(".")[0]
    if key.startswith("modules_to_save."):
        module = "head"
    change = data.draw(st.sampled_from(["shape", "missing", "extra", "non-finite"]), label="change")
    if change == "shape":
        shape = list(tensors[key].shape) or [1]
        dim = data.draw(st.integers(0, len(shape) - 1), label="dim")
        shape[dim] += data.draw(st.integers(1, 3), label="grow")
        tensors[key] = torch.zeros(shape)
    elif change == "missing":
        del tensors[key]
    elif change == "extra":
        tensors[f"{key}_extra"] = torch.zeros(1)
    else:
        if not tensors[key].is_floating_point() or tensors[key].numel() == 0:
            return
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[0] = math.nan
    save_file(tensors, weights)
    if change == "non-finite" and module == "head":
        return  # the head is the user's own module: its values are not ours to judge
    assert_fails_cleanly(base, directory, str(weights), f"'{module}")


@FAST
@given(
    change=st.sampled_from(
        [
            {"target_modules": ["head"]},  # targets a module the file holds no adapter for
            {"target_modules": ["up"]},  # the file holds 'down' too
            {"target_modules": ["nothing"]},  # matches nothing in this model
            {"modules_to_save": ["classifier"]},  # no such module here
            {"r": 0},
            {"method": "lora"},
            {"format": "peft"},
            {"unknown_field": 1},
        ]
    ),
    method=st.sampled_from(["aroma", "sora"]),
)
def test_configs_that_do_not_match_the_model(saved, tmp_path_factory, change, method) -> None:
    base, root = saved
    directory = tmp_path_factory.mktemp("cfg") / "a"
    copy_adapter(root / method, directory)
    config_path = directory / "adapter_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **change}))
    assert_fails_cleanly(base, directory, str(directory))


def test_a_pickle_is_never_loaded(saved, tmp_path) -> None:
    base, root = saved
    copy_adapter(root / "aroma", tmp_path / "a")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    torch.save(load_file(weights), tmp_path / "a" / "adapter_model.bin")
    weights.unlink()
    assert_fails_cleanly(base, tmp_path / "a", str(tmp_path / "a" / "adapter_model.bin"), "only from")
