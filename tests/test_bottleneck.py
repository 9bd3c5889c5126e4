"""Table 2's other baselines: bottleneck adapters (AdapterH, AdapterP) and BitFit, against hand
computations on a tiny BERT, and end to end through `aroma train`."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from tiny_glue import HIDDEN, LAYERS, write_tiny_glue
from transformers import BertConfig, BertForSequenceClassification

from aroma_peft.cli import main
from aroma_peft.errors import UserInputError
from aroma_peft.train.bitfit import BitfitRecipe
from aroma_peft.train.bottleneck import AdapterhOptions, AdapterhRecipe, AdapterpOptions, AdapterpRecipe
from aroma_peft.train.config import TrainConfig
from aroma_peft.tuners.bottleneck import BottleneckAdapter, BottleneckConfig, add_bottlenecks

HEADS = ["bert.pooler", "classifier"]
HAND_ACTIVATIONS = {
    "relu": lambda z: z.clamp(min=0),
    "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / math.sqrt(2))),
    "swish": lambda z: z / (1 + torch.exp(-z)),
    "tanh": torch.tanh,
}


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12
    )
    return BertForSequenceClassification(config).eval()


def randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-zero values in every adapter (the up-projection starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BottleneckAdapter):
                for p in m.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("activation", sorted(HAND_ACTIVATIONS))
@pytest.mark.parametrize("site", ["attention.output", "output"])
def test_adapted_sublayer_equals_the_hand_formula(activation, site):
    model = tiny_bert()
    add_bottlenecks(model, BottleneckConfig(placement="houlsby", bottleneck=3, activation=activation))
    randomize(model)
    sublayer = model.get_submodule(f"bert.encoder.layer.1.{site}")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, sublayer.dense.in_features, generator=g)
    residual = torch.randn(2, 5, 8, generator=g)
    adapter = sublayer.dropout.adapter
    # LayerNorm(y + up(act(down(y))) + residual), y = dense(x); dropout is the identity in eval
    y = x @ sublayer.dense.weight.T + sublayer.dense.bias
    z = y @ adapter.down.weight.T + adapter.down.bias
    h = y + HAND_ACTIVATIONS[activation](z) @ adapter.up.weight.T + adapter.up.bias
    a = h + residual
    mean, var = a.mean(-1, keepdim=True), a.var(-1, unbiased=False, keepdim=True)
    ln = sublayer.LayerNorm
    expected = (a - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias
    torch.testing.assert_close(sublayer(x, residual), expected, rtol=1e-5, atol=1e-5)


def test_adapter_comes_after_the_dropout_and_before_the_residual():
    model = tiny_bert()
    add_bottlenecks(model, BottleneckConfig(placement="pfeiffer", bottleneck=3))
    randomize(model)
    sublayer = model.get_submodule("bert.encoder.layer.0.output").train()
    sublayer.dropout.dropout.p = 1.0  # drops the whole sublayer output: the adapter sees zeros
    x, residual = torch.randn(2, 4, 12), torch.randn(2, 4, 8)
    adapter = sublayer.dropout.adapter
    h = residual + adapter.up(torch.relu(adapter.down.bias))  # adapter(0) + residual
    torch.testing.assert_close(sublayer(x, residual), sublayer.LayerNorm(h))


@pytest.mark.parametrize(
    ("placement", "sites"), [("houlsby", ["attention.output", "output"]), ("pfeiffer", ["output"])]
)
def test_placement_and_zero_up_projection_keep_the_base_model(placement, sites):
    base = tiny_bert()
    model = copy.deepcopy(base)
    found = add_bottlenecks(model, BottleneckConfig(placement=placement, bottleneck=4))
    assert found == [f"bert.encoder.layer.{i}.{s}" for i in range(2) for s in sites]
    ids = torch.randint(0, 20, (3, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(input_ids=ids).logits, base(input_ids=ids).logits)
    randomize(model)
    assert not torch.allclose(model(input_ids=ids).logits, base(input_ids=ids).logits)
    with pytest.raises(ValueError, match="already holds a bottleneck adapter"):
        add_bottlenecks(model, BottleneckConfig(placement=placement))


def test_models_without_bert_style_sublayers_are_refused():
    with pytest.raises(ValueError, match="no post-LN sublayer output"):
        add_bottlenecks(torch.nn.Sequential(torch.nn.Linear(4, 4)), BottleneckConfig())
    with pytest.raises(ValueError, match="activation='elu' is invalid"):
        BottleneckConfig(activation="elu")
    with pytest.raises(ValueError, match="bottleneck=0 is invalid"):
        AdapterhOptions(bottleneck=0)


def test_a_model_without_bert_style_blocks_is_a_user_error():
    recipe = AdapterpRecipe(TrainConfig(), AdapterpOptions(), total_steps=1)
    with pytest.raises(UserInputError, match="adapterp: Sequential: no post-LN sublayer output"):
        recipe.wrap(torch.nn.Sequential(torch.nn.Linear(4, 4)), [], [])


def test_target_modules_are_refused_by_methods_that_adapt_no_linear():
    with pytest.raises(UserInputError, match="target_modules does not apply to method 'bitfit'"):
        BitfitRecipe(TrainConfig(target_modules=["query"]), None, total_steps=1)


def train_one_step(recipe, model: torch.nn.Module) -> set[str]:  # noqa: ANN001
    """Names of the parameters one AdamW step changes."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(recipe.param_groups(1e-2, 0.1), lr=1e-2)
    ids = torch.randint(0, 20, (4, 6), generator=torch.Generator().manual_seed(0))
    model.train()
    model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    optimizer.step()
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize(
    ("recipe_cls", "options", "per_block"),
    [(AdapterhRecipe, AdapterhOptions(bottleneck=4), 2), (AdapterpRecipe, AdapterpOptions(bottleneck=4), 1)],
)
def test_only_adapters_and_head_train(recipe_cls, options, per_block):
    recipe = recipe_cls(TrainConfig(), options, total_steps=1)
    model = recipe.wrap(tiny_bert(), [], HEADS)
    head = {n for n, _ in model.named_parameters() if n.startswith(("bert.pooler.", "classifier."))}
    adapters = {n for n, m in model.named_modules() if isinstance(m, BottleneckAdapter)}
    assert len(adapters) == 2 * per_block
    adapter_params = {
        f"{a}.{n}" for a in adapters for n in ("down.weight", "down.bias", "up.weight", "up.bias")
    }
    assert {n for n, p in model.named_parameters() if p.requires_grad} == adapter_params | head
    assert recipe.adapter_parameters() == 2 * per_block * (8 * 4 + 4 + 4 * 8 + 8)
    changed = train_one_step(recipe, model)
    assert changed <= adapter_params | head and any(n.endswith("up.weight") for n in changed)
    assert recipe.ranks() == {} and recipe.delta_weights() == {}


def test_bitfit_trains_every_bias_and_the_head_only():
    recipe = BitfitRecipe(TrainConfig(), None, total_steps=1)
    model = recipe.wrap(tiny_bert(), [], HEADS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {n for n, _ in model.named_parameters() if n.startswith(("bert.pooler.", "classifier."))}
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")} - head
    # per block: q, k, v, attention output, intermediate, output and two LayerNorms; + embeddings' LayerNorm
    assert len(biases) == 2 * 8 + 1 and trainable == biases | head
    assert recipe.adapter_parameters() == sum(p.numel() for n, p in model.named_parameters() if n in biases)
    changed = train_one_step(recipe, model)
    assert changed <= trainable and not any(n.endswith("weight") for n in changed - head)


def test_save_load_round_trip_and_no_lora_export(tmp_path):
    recipe = AdapterhRecipe(TrainConfig(), AdapterhOptions(bottleneck=4), total_steps=1)
    model = recipe.wrap(tiny_bert(), [], HEADS)
    randomize(model)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # a trained head is saved with the adapters
    recipe.save(tmp_path)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["method"] == "adapterh" and config["bottleneck"] == 4 and config["activation"] == "swish"
    loaded = AdapterhRecipe.load(tiny_bert(), tmp_path / "adapter")  # the same frozen base
    ids = torch.randint(0, 20, (2, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    with pytest.raises(UserInputError, match="adapterh: trains no low-rank update.*no LoRA export"):
        recipe.export_lora(tmp_path / "lora")
    with pytest.raises(UserInputError, match="nothing to merge"):
        recipe.merge_and_unload()
    with pytest.raises(ValueError, match="holds a 'adapterh' adapter, not 'bitfit'"):
        BitfitRecipe.load(tiny_bert(), tmp_path / "adapter")


@pytest.mark.parametrize(("method", "per_block"), [("adapterh", 2), ("adapterp", 1), ("bitfit", 0)])
def test_train_end_to_end(tmp_path, method, per_block):
    model_dir, glue = write_tiny_glue(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--task", "sst2", "--method", method, "--model", model_dir, "--data-dir", glue]
    args += ["--max-steps", "6", "--batch-size", "8", "--quiet", "--output-dir", out]
    assert main([str(a) for a in args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["total_rank_end"] is None
    if method != "bitfit":  # 64 wide: d*64 + 64 + 64*d + d per adapter
        assert metrics["adapter_params"]["end"] == LAYERS * per_block * (2 * HIDDEN * 64 + 64 + HIDDEN)
    assert json.loads((out / "ranks.json").read_text()) == {}
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "adapter_lora").exists()
    evaluated = tmp_path / "evaluated"  # `aroma evaluate --run` rebuilds the trained model from the run
    assert main(["evaluate", "--run", str(out), "--quiet", "--output-dir", str(evaluated)]) == 0
    again = json.loads((evaluated / "metrics.json").read_text())["metrics"]["accuracy"]
    assert again == pytest.approx(metrics["final"]["accuracy"])


@pytest.mark.parametrize(
    ("flags", "final_rank"),
    [
        (["--method", "lora", "--r", "16", "--lora-alpha", "32"], 16),
        (["--method", "adalora", "--target-r", "1", "--init-r", "2"], 1),
        (["--method", "adalora", "--target-r", "16", "--init-r", "24"], 16),
    ],
)
def test_table2_rank_variants_are_flags_of_existing_methods(tmp_path, flags, final_rank):
    """LoRA r=16 and AdaLoRA r=1 / r=16 (average rank once the budget is spent) need no new method."""
    model_dir, glue = write_tiny_glue(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--task", "sst2", "--model", model_dir, "--data-dir", glue, *flags]
    args += ["--max-steps", "20", "--batch-size", "8", "--quiet", "--output-dir", out]
    assert main([str(a) for a in args]) == 0
    modules = LAYERS * 6  # q, k, v, attention output, intermediate, output per block
    assert json.loads((out / "metrics.json").read_text())["total_rank_end"] == final_rank * modules
