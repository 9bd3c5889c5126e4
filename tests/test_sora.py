"""SoRA on tiny models: the layer, sparsity, pruning, counts, save / load / resume, PEFT export."""

import json

import pytest
import torch
from torch import nn

import aroma_peft
from aroma_peft import (
    SoraConfig,
    SoraController,
    adapt,
    load,
    sora_param_groups,
    sora_parameter_counts,
    sora_prune,
)
from aroma_peft.tuners.sora.layer import SoraLinear


class Tiny(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.up = nn.Linear(12, 20)
        self.down = nn.Linear(20, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.down(torch.tanh(self.up(x))))


def config(**kwargs) -> SoraConfig:
    return SoraConfig(**{"target_modules": ["up", "down"], "r": 4, "lora_alpha": 8, **kwargs})


def data(n: int = 16, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def train(model, controller, optimizer, steps, scheduler=None, penalty_as_grad=False):
    x, y = data()
    for _ in range(steps):
        optimizer.zero_grad()
        if penalty_as_grad:
            controller.add_penalty_grad()
            loss = nn.functional.cross_entropy(model(x), y)
        else:
            loss = nn.functional.cross_entropy(model(x), y) + controller.penalty()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        controller.step()
        if scheduler is not None:
            scheduler.step()


def setup(cfg=None, lr=1e-2, gate_lr=None, seed=0):
    model = adapt(Tiny(seed), cfg or config())
    optimizer = torch.optim.AdamW(sora_param_groups(model, lr, weight_decay=0.1, gate_lr=gate_lr))
    return model, optimizer, SoraController(model, optimizer)


def randomize_b(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.adapter_layers().values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))


def test_forward_is_w0x_plus_s_b_diag_g_a_x():
    model = adapt(Tiny(), config())
    randomize_b(model)
    layer = model.model.up
    x = torch.randn(5, 12)
    s = 8 / 4
    expected = layer.base_layer(x) + s * x @ layer.lora_A.T @ torch.diag(layer.gate) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)
    assert isinstance(model, aroma_peft.AdaptedModel) and isinstance(layer, SoraLinear)


def test_initialisation_names_and_groups():
    model = adapt(Tiny(), config(gate_init="ones"))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {f"model.{m}.{t}" for m in ("up", "down") for t in ("lora_A", "lora_B", "gate")}
    layer = model.model.down
    assert torch.equal(layer.lora_B, torch.zeros(12, 4)) and torch.equal(layer.gate, torch.ones(4))
    assert adapt(Tiny(), config()).model.down.gate.abs().sum() > 0  # randn
    groups = sora_param_groups(model, 1e-3, weight_decay=0.1, gate_lr=5e-2)
    gate_group = [g for g in groups if g.get("kind") == "gate"]
    assert len(gate_group) == 1 and gate_group[0]["weight_decay"] == 0.0 and gate_group[0]["lr"] == 5e-2
    assert {id(p) for p in gate_group[0]["params"]} == {id(model.model.up.gate), id(model.model.down.gate)}
    adapter_group = [g for g in groups if g.get("kind") == "adapter"][0]
    assert adapter_group["weight_decay"] == 0.1 and adapter_group["lr"] == 1e-3


def test_strong_penalty_reaches_exact_zeros_and_xi_zero_stays_dense():
    model, optimizer, controller = setup(config(sparse_lambda=50.0, xi=0.1), gate_lr=5e-2)
    assert controller.num_active_gates() == 8
    train(model, controller, optimizer, 30)  # prox threshold 2 xi > an Adam step (~ lr): zeros stay
    gates = torch.cat([layer.gate for layer in model.adapter_layers().values()])
    assert (gates == 0).all(), gates
    assert controller.num_active_gates() == 0 and model.ranks() == {"up": 0, "down": 0}
    assert controller.history[0]["ranks"] == {"up": 4, "down": 4}

    model, optimizer, controller = setup(config(sparse_lambda=50.0, xi=0.0), gate_lr=5e-2)
    train(model, controller, optimizer, 30)
    assert controller.num_active_gates() == 8


def test_penalty_value_and_gradient_forms_agree():
    model, optimizer, controller = setup(config(sparse_lambda=3.0))
    gates = torch.cat([layer.gate for layer in model.adapter_layers().values()])
    torch.testing.assert_close(controller.penalty(), 3.0 * gates.abs().mean())
    with torch.no_grad():
        model.model.up.gate[1] = 0.0  # sign(0) = 0 in both forms
    x, y = data()
    grads = []
    for as_grad in (False, True):
        model.zero_grad()
        if as_grad:
            controller.add_penalty_grad()
            loss = nn.functional.cross_entropy(model(x), y)
        else:
            loss = nn.functional.cross_entropy(model(x), y) + controller.penalty()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)  # clipping sees the penalty in both
        grads.append([p.grad.clone() for p in model.adapter_trainable_parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def sparse_model(seed=0):
    """A trained model with some ranks switched off (deterministic)."""
    model, optimizer, controller = setup(config(sparse_lambda=2.0, xi=1e-3), gate_lr=2e-2, seed=seed)
    train(model, controller, optimizer, 10)
    with torch.no_grad():  # make the pattern certain: one module keeps 2 ranks, the other 1
        model.model.up.gate[[0, 2]] = 0.0
        model.model.down.gate[[0, 1, 3]] = 0.0
    return model


def test_prune_keeps_the_function_and_counts():
    model = sparse_model()
    x = torch.randn(7, 12)
    before = model(x)
    counts = sora_parameter_counts(model)
    assert counts["up"] == {
        "in_features": 12,
        "out_features": 20,
        "r_max": 4,
        "active": 2,
        "per_rank": 32,
        "before": 4 * 32 + 4,
        "after": 2 * 32,
    }
    assert counts["total"] == {"r_max": 8, "active": 3, "before": 2 * (4 * 32 + 4), "after": 3 * 32}
    assert sora_prune(model) == {"up": 2, "down": 1}
    torch.testing.assert_close(model(x), before, rtol=1e-6, atol=1e-6)
    up = model.model.up
    assert up.lora_A.shape == (2, 12) and up.lora_B.shape == (20, 2) and up.is_pruned
    assert torch.equal(up.gate, torch.ones(2)) and not up.gate.requires_grad
    assert sora_parameter_counts(model)["total"]["after"] == 3 * 32
    assert model.num_trainable_parameters() == 3 * 32  # an ordinary LoRA: A and B only
    assert all(g.get("kind") != "gate" for g in model.optimizer_param_groups(1e-3))


def test_parameter_counts_rectangular_matrices():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.intermediate = nn.Linear(768, 3072)
            self.output = nn.Linear(3072, 768)

        def forward(self, x):
            return self.output(self.intermediate(x))

    model = adapt(Block(), SoraConfig(target_modules=["intermediate", "output"], r=8))
    with torch.no_grad():
        model.model.output.gate[:5] = 0.0
    counts = sora_parameter_counts(model)
    assert counts["intermediate"]["per_rank"] == 3840 and counts["output"]["per_rank"] == 3840
    assert counts["intermediate"]["before"] == 8 * 3840 + 8
    assert counts["output"]["after"] == 3 * 3840 and counts["intermediate"]["after"] == 8 * 3840
    assert counts["total"]["before"] == model.num_trainable_parameters()


@pytest.mark.parametrize("pruned", [False, True])
def test_save_load_round_trip(tmp_path, pruned):
    model = sparse_model()
    if pruned:
        sora_prune(model)
    x = torch.randn(5, 12)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["method"] == "sora"
    loaded = load(Tiny(), tmp_path)
    assert torch.equal(loaded(x), model(x))
    assert loaded.ranks() == {"up": 2, "down": 1}
    for name, layer in loaded.adapter_layers().items():
        assert layer.is_pruned == pruned and layer.gate.requires_grad != pruned
        assert layer.lora_A.shape == model.adapter_layers()[name].lora_A.shape


def test_merge_and_unload_and_peft_round_trip(tmp_path):
    from peft import PeftModel
    from transformers import BertConfig, BertForSequenceClassification

    bert = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=16,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )

    def base():
        torch.manual_seed(0)
        return BertForSequenceClassification(bert).eval()

    cfg = SoraConfig(
        target_modules=["query", "value", "intermediate.dense", "output.dense"],
        r=4,
        modules_to_save=["classifier"],
    )
    model = adapt(base(), cfg).eval()
    randomize_b(model)
    with torch.no_grad():
        model.model.classifier.weight.mul_(3.0)
        layers = model.adapter_layers()
        names = sorted(layers)
        layers[names[0]].gate.zero_()  # a module left with rank 0 is dropped from the export
        layers[names[1]].gate[1:] = 0.0
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(5))
    expected = model(input_ids=ids).logits
    model.export_lora(tmp_path)
    exported = json.loads((tmp_path / "adapter_config.json").read_text())
    assert exported["peft_type"] == "LORA" and len(exported["target_modules"]) == len(names) - 1
    peft_model = PeftModel.from_pretrained(base(), tmp_path).eval()
    torch.testing.assert_close(peft_model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    sora_prune(model)
    torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    merged = model.merge_and_unload()
    torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def schedule_config():
    return config(sparse_lambda=2.0, xi=0.0, xi_schedule="linear", xi_max=2e-3, xi_stages=3, stage_steps=2)


def test_stage_steps_move_xi():
    model, optimizer, controller = setup(schedule_config())
    xis = []
    x, y = data()
    for _ in range(8):
        xis.append(controller.xi)
        optimizer.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + controller.penalty()).backward()
        optimizer.step()
        controller.step()
    assert xis == pytest.approx([0.0, 0.0, 1e-3, 1e-3, 2e-3, 2e-3, 2e-3, 2e-3])
    assert [(e["step"], e["stage"]) for e in controller.stage_ends] == [(2, 0), (4, 1), (6, 2)]
    assert controller.stage_ends[1]["xi"] == pytest.approx(1e-3)


def test_manual_stages():
    model, optimizer, controller = setup(config(xi_schedule=[0.0, 1e-3]))
    assert controller.xi == 0.0 and controller.end_stage() and controller.xi == 1e-3
    assert not controller.end_stage() and controller.xi == 1e-3 and len(controller.stage_ends) == 2


def test_resume_continues_exactly(tmp_path):
    def fresh(model):
        optimizer = torch.optim.AdamW(sora_param_groups(model, 1e-2, weight_decay=0.1, gate_lr=3e-2))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / 20)
        return optimizer, scheduler, SoraController(model, optimizer, record_every=1)

    model = adapt(Tiny(), schedule_config())
    optimizer, scheduler, controller = fresh(model)
    train(model, controller, optimizer, 3, scheduler)
    model.save_pretrained(tmp_path)
    torch.save({"opt": optimizer.state_dict(), "sched": scheduler.state_dict()}, tmp_path / "train.pt")
    (tmp_path / "controller.json").write_text(json.dumps(controller.state_dict()))
    train(model, controller, optimizer, 4, scheduler)

    resumed = load(Tiny(), tmp_path)
    optimizer2, scheduler2, controller2 = fresh(resumed)
    states = torch.load(tmp_path / "train.pt")
    optimizer2.load_state_dict(states["opt"])
    scheduler2.load_state_dict(states["sched"])
    controller2.load_state_dict(json.loads((tmp_path / "controller.json").read_text()))
    train(resumed, controller2, optimizer2, 4, scheduler2)

    for (name, p), (name2, p2) in zip(model.named_parameters(), resumed.named_parameters(), strict=True):
        assert name == name2 and torch.equal(p, p2), name
    assert controller2.state_dict() == json.loads(json.dumps(controller.state_dict()))
    assert controller.stage == 2


def test_controller_errors():
    model = adapt(Tiny(), config())
    with pytest.raises(ValueError, match="gate of 'up' is in a param group with weight_decay=0.01"):
        SoraController(model, torch.optim.AdamW(model.parameters(), weight_decay=0.01))
    with pytest.raises(ValueError, match="gate of 'up' is in no optimizer param group"):
        SoraController(model, torch.optim.AdamW([model.model.up.lora_A]))
    with pytest.raises(ValueError, match="record_every=0 is invalid"):
        SoraController(model, torch.optim.AdamW(model.optimizer_param_groups(1e-3)), record_every=0)
    aroma = adapt(Tiny(), aroma_peft.AromaConfig(target_modules=["up"]))
    with pytest.raises(ValueError, match="SoraController needs a model adapted with SoraConfig, got 'aroma'"):
        SoraController(aroma, torch.optim.AdamW(aroma.optimizer_param_groups(1e-3)))
    with pytest.raises(ValueError, match="prune: the model has no SoRA module"):
        sora_prune(aroma)
    controller = SoraController(model, torch.optim.AdamW(model.optimizer_param_groups(1e-3)))
    state = controller.state_dict()
    state["xis"] = [1.0]
    with pytest.raises(ValueError, match="controller state has xi stages"):
        controller.load_state_dict(state)


@pytest.mark.parametrize("prox, expected", [("soft_lr", [0.75, -0.75, 0.0]), ("soft", [0.5, -0.5, 0.0])])
def test_controller_prox_uses_the_gate_group_lr(prox, expected):
    model = adapt(Tiny(), config(prox=prox, xi=0.5))
    optimizer = torch.optim.AdamW(sora_param_groups(model, 1e-3, gate_lr=0.5))
    controller = SoraController(model, optimizer)
    with torch.no_grad():
        model.model.up.gate.copy_(torch.tensor([1.0, -1.0, 0.1, 0.0]))
    controller.step()  # the proximal step alone: threshold xi * lr = 0.25 for soft_lr, xi for soft
    assert model.model.up.gate.tolist()[:3] == expected
