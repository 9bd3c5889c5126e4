"""Save / load / merge / LoRA export round trips and the errors users see."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from aroma_peft import AdapterFileError, AromaConfig, AromaController, adapt, effective_rank, load


def trained(tiny_net, batch, steps: int = 45, **overrides):
    """A model mid-training: some merged pieces, a live piece, and (with eps_out) finished modules."""
    cfg = dict(target_modules=["up", "down"], modules_to_save=["head"], t_in=10, check_interval=5)
    model = adapt(tiny_net, AromaConfig(**{**cfg, **overrides}))
    opt = torch.optim.Adam(model.optimizer_param_groups(2e-2))
    ctl = AromaController(model, opt)
    x, y = batch
    for _ in range(steps):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        ctl.step()
        opt.zero_grad()
    return model, ctl


@pytest.mark.parametrize("eps_out", [0.0, 0.07])  # 0.07: "up" finishes at its second piece
def test_save_load_gives_identical_outputs(tiny_net, batch, tmp_path, eps_out) -> None:
    base = copy.deepcopy(tiny_net)
    model, ctl = trained(tiny_net, batch, eps_out=eps_out)
    assert sum(ctl.ranks().values()) > 0
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    assert all(p.stat().st_mode & 0o044 for p in tmp_path.iterdir())  # readable by others, not 0600
    loaded = load(base, tmp_path)
    x, _ = batch
    assert torch.equal(loaded(x), model(x))
    assert loaded.ranks() == model.ranks()
    finished = {n for n, layer in model.adapter_layers().items() if layer.is_finished}
    assert finished == {n for n, layer in loaded.adapter_layers().items() if layer.is_finished}
    assert (eps_out > 0) == bool(finished)
    for name, layer in loaded.adapter_layers().items():
        assert layer.lora_A.requires_grad == (name not in finished)


def test_merge_and_unload_gives_identical_outputs(tiny_net, batch) -> None:
    model, _ = trained(tiny_net, batch)
    x, _ = batch
    expected = model(x)
    plain = model.merge_and_unload()
    assert type(plain.up) is torch.nn.Linear and type(plain.down) is torch.nn.Linear
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("eps_out", [0.0, 0.07])  # 0.07: "up" finishes at its second piece
def test_export_lora_loads_in_peft_with_identical_outputs(tiny_net, batch, tmp_path, eps_out) -> None:
    from peft import PeftModel

    base = copy.deepcopy(tiny_net)
    model, ctl = trained(tiny_net, batch, eps_out=eps_out)
    model.export_lora(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["modules_to_save"] == ["head"]
    # model.ranks() is what the export holds: the kept pieces plus the live piece of a module in training
    exported = {k.replace("\\", ""): v for k, v in cfg["rank_pattern"].items()}
    assert exported == {n: r for n, r in model.ranks().items() if r > 0}
    live = {n: 0 if layer.is_finished else 1 for n, layer in model.adapter_layers().items()}
    assert model.ranks() == {n: r + live[n] for n, r in ctl.ranks().items()}
    peft_model = PeftModel.from_pretrained(base, tmp_path)
    x, _ = batch
    torch.testing.assert_close(peft_model(x), model(x), rtol=1e-5, atol=1e-5)


def test_export_leaves_out_rank_zero_modules(tiny_net, batch, tmp_path) -> None:
    model, _ = trained(tiny_net, batch, steps=1)
    model.adapter_layers()["down"].finish()  # finished before learning anything: rank 0
    with torch.no_grad():
        model.adapter_layers()["up"].lora_B.fill_(0.1)
    model.export_lora(tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["target_modules"] == ["up"]
    assert not any(".down." in k for k in load_file(tmp_path / "adapter_model.safetensors"))


def test_load_adapter_into_a_trained_model_replaces_its_pieces(tiny_net, batch, tmp_path) -> None:
    """A model that merged pieces since the save gets the saved outputs back, not both updates summed."""
    x, y = batch
    model, ctl = trained(tiny_net, batch, steps=25)
    model.save_pretrained(tmp_path)
    saved = model(x).detach()
    opt = torch.optim.Adam(model.optimizer_param_groups(2e-2))
    ctl = AromaController(model, opt)
    for _ in range(30):  # more pieces merged into the base weights after the save
        F.cross_entropy(model(x), y).backward()
        opt.step()
        ctl.step()
        opt.zero_grad()
    assert sum(ctl.ranks().values()) > 0 and not torch.allclose(model(x), saved)
    model.load_adapter(tmp_path)
    torch.testing.assert_close(model(x), saved, rtol=0, atol=1e-6)
    model.load_adapter(tmp_path)  # loading twice changes nothing
    torch.testing.assert_close(model(x), saved, rtol=0, atol=1e-6)


def test_a_bad_file_leaves_the_model_as_it_was(tiny_net, batch, tmp_path) -> None:
    base = copy.deepcopy(tiny_net)
    model, _ = trained(tiny_net, batch)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors["up.merged_A"] = tensors["up.merged_A"] * 2  # 'down' is checked after 'up' ...
    tensors["down.merged_B"] = torch.zeros(5, 1)  # ... and does not fit
    save_file(tensors, weights)
    x, _ = batch
    before = model(x).detach()
    with pytest.raises(AdapterFileError, match=r"module 'down': merged_B: shape \(5, 1\) does not fit"):
        model.load_adapter(tmp_path)
    assert torch.equal(model(x), before)  # 'up' was not loaded either

    weights_before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(AdapterFileError, match="module 'down'"):
        load(base, tmp_path)
    assert type(base.up) is torch.nn.Linear and all(p.requires_grad for p in base.parameters())
    assert all(torch.equal(v, weights_before[k]) for k, v in base.state_dict().items())


def test_load_onto_a_merged_model_is_refused(tiny_net, batch, tmp_path) -> None:
    model, _ = trained(tiny_net, batch)
    model.save_pretrained(tmp_path)
    merged = copy.deepcopy(model.merge_and_unload())  # the mark survives copies and pickling
    with pytest.raises(AdapterFileError, match="module 'up' of this model already holds a merged update"):
        load(merged, tmp_path)
    assert type(merged.up) is torch.nn.Linear


def test_saving_after_merge_and_unload_is_refused(tiny_net, batch, tmp_path) -> None:
    model, _ = trained(tiny_net, batch)
    model.merge_and_unload()
    with pytest.raises(ValueError, match="save_pretrained: the model holds no adapter layers"):
        model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="export_lora: the model holds no adapter layers"):
        model.export_lora(tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_adapters_load_only_from_safetensors(tiny_net, batch, tmp_path) -> None:
    base = copy.deepcopy(tiny_net)
    model, _ = trained(tiny_net, batch)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    torch.save(load_file(weights), tmp_path / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(AdapterFileError, match=r"adapter_model.bin: adapters load only from adapter_model"):
        load(base, tmp_path)
    (tmp_path / "adapter_model.bin").rename(weights)  # a pickle under the safetensors name
    with pytest.raises(AdapterFileError, match="adapter_model.safetensors: damaged safetensors file"):
        load(base, tmp_path)


def test_effective_rank_known_values() -> None:
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert effective_rank(torch.outer(torch.arange(1.0, 5), torch.ones(3))) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(3, 3)) == 0.0
    # singular values 3 and 1: p = (0.75, 0.25), exp(H) = exp(-(.75 ln .75 + .25 ln .25))
    import math

    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(expected)


def test_rank_stats_match_matrix_rank_and_effective_rank() -> None:
    from aroma_peft.rank import rank_stats

    g = torch.Generator().manual_seed(0)
    for rank in (0, 1, 3, 7):
        m = torch.randn(40, rank, generator=g) @ torch.randn(rank, 24, generator=g)
        assert rank_stats(m) == (int(torch.linalg.matrix_rank(m)), pytest.approx(effective_rank(m)))
    assert rank_stats(torch.zeros(4, 5)) == (0, 0.0)


def test_a_crash_mid_save_leaves_the_previous_save(tiny_net, batch, tmp_path, monkeypatch) -> None:
    model, _ = trained(tiny_net, batch)
    model.save_pretrained(tmp_path)
    before = (tmp_path / "adapter_model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("aroma_peft.io.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


# --- errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("target_modules", None, "target_modules=None is invalid"),
        ("target_modules", "(unclosed", "not a valid regex"),
        ("r", 0, "r=0 is invalid"),
        ("lora_alpha", -1, "lora_alpha=-1 is invalid"),
        ("lora_dropout", 1.0, "lora_dropout=1.0 is invalid"),
        ("eps_in", 0, "eps_in=0 is invalid"),
        ("eps_out", -1e-3, "eps_out=-0.001 is invalid"),
        ("t_in", 0, "t_in=0 is invalid"),
        ("check_interval", 0, "check_interval=0 is invalid"),
        ("max_steps", 0, "max_steps=0 is invalid"),
        ("warmup_steps", -1, "warmup_steps=-1 is invalid"),
        ("rewarmup_steps", -1, "rewarmup_steps=-1 is invalid"),
        ("optimizer_reset", "magnitude", "optimizer_reset='magnitude' is invalid"),
        ("reset_prune_ratio", 1.5, "reset_prune_ratio=1.5 is invalid"),
        ("inner_criterion", "relative", "inner_criterion='relative' is invalid"),
        ("sync", "layer", "sync='layer' is invalid"),
    ],
)
def test_bad_config_values_name_the_field(field, value, message) -> None:
    kwargs = {"target_modules": ["up"], field: value}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        AromaConfig(**kwargs)


def test_targets_matching_nothing_list_the_linear_modules(tiny_net) -> None:
    with pytest.raises(
        ValueError, match=r"matched no nn.Linear of TinyNet; its Linear modules are: down, head, up"
    ):
        adapt(tiny_net, AromaConfig(target_modules=["query"]))


def test_targets_matching_a_non_linear_module(tiny_net) -> None:
    tiny_net.up = torch.nn.Sequential(torch.nn.Linear(12, 20))
    with pytest.raises(ValueError, match="matched 'up', a Sequential: only nn.Linear"):
        adapt(tiny_net, AromaConfig(target_modules=["up"]))


def test_modules_to_save_matching_nothing(tiny_net) -> None:
    with pytest.raises(ValueError, match=r"modules_to_save=\['classifier'\] matched no module"):
        adapt(tiny_net, AromaConfig(target_modules=["up"], modules_to_save=["classifier"]))


def test_damaged_and_mismatched_files_name_file_and_module(tiny_net, batch, tmp_path) -> None:
    base = copy.deepcopy(tiny_net)
    model, _ = trained(tiny_net, batch)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    good = weights.read_bytes()

    weights.write_bytes(good[:100])
    with pytest.raises(AdapterFileError, match="adapter_model.safetensors: damaged safetensors file"):
        load(copy.deepcopy(base), tmp_path)

    tensors = load_file_bytes(good)
    tensors["down.lora_A"] = torch.zeros(1, 99)
    save_file(tensors, weights)
    with pytest.raises(AdapterFileError, match=r"module 'down': lora_A: shape \(1, 99\) does not fit"):
        load(copy.deepcopy(base), tmp_path)

    tensors = load_file_bytes(good)
    del tensors["up.merged_B"]
    save_file(tensors, weights)
    with pytest.raises(AdapterFileError, match=r"module 'up': missing \['merged_B'\]"):
        load(copy.deepcopy(base), tmp_path)

    tensors = load_file_bytes(good)
    tensors["modules_to_save.head.weight"] = torch.zeros(7, 7)
    save_file(tensors, weights)
    with pytest.raises(AdapterFileError, match=r"module 'head': weight: shape \(7, 7\) does not fit"):
        load(copy.deepcopy(base), tmp_path)

    weights.write_bytes(good)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterFileError, match="adapter_config.json: not valid JSON"):
        load(copy.deepcopy(base), tmp_path)

    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"format": "aroma-peft", "method": "aroma", "r": 0})
    )
    with pytest.raises(AdapterFileError, match="adapter_config.json: target_modules=None is invalid"):
        load(copy.deepcopy(base), tmp_path)

    with pytest.raises(AdapterFileError, match="nowhere/adapter_config.json: file not found"):
        load(copy.deepcopy(base), tmp_path / "nowhere")


def load_file_bytes(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(data)
