"""SoRA's sparse penalty under ``--max-grad-norm``: the loop clips the task gradient plus the gates'
penalty gradient, as if the penalty were part of the loss (``SoraCallback`` does the same)."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from aroma_peft.tasks import task_for
from aroma_peft.tasks.base import block_linears
from aroma_peft.tasks.glue import classifier_heads
from aroma_peft.train.config import TrainConfig
from aroma_peft.train.loop import TaskLoss, optimizer_step
from aroma_peft.train.sora import SoraOptions, SoraRecipe
from aroma_peft.tuners.sora.controller import SoraController

LR = 1.0  # plain SGD with lr 1: the update is minus the (clipped) gradient


def bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config)


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 20, (8, 10), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(8) % 2}


def sora_recipe(max_grad_norm: float | None):
    """A SoRA recipe as the loop builds it, with SGD so that the step shows the clipped gradient."""
    config = TrainConfig(task="sst2", method="sora", output_dir="unused", max_grad_norm=max_grad_norm)
    recipe = SoraRecipe(config, SoraOptions(sparse_lambda=10.0), total_steps=4)
    model = bert()
    model = recipe.wrap(model, block_linears(model), classifier_heads(model))
    optimizer = torch.optim.SGD(recipe.param_groups(LR, 0.0), lr=LR)
    recipe.start(optimizer, None)
    return recipe, optimizer


def reference_gradients(recipe: SoraRecipe) -> dict[str, torch.Tensor]:
    """The gradient of task loss + penalty, computed with the penalty inside the loss."""
    model = bert()
    model = recipe.wrap(model, block_linears(model), classifier_heads(model))
    model.train()
    controller = SoraController(model, torch.optim.SGD(model.parameters(), lr=LR))
    (model(**batch()).loss + controller.penalty()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("max_grad_norm", [None, 1e-2])
def test_clipping_sees_the_penalty_gradient(max_grad_norm):
    recipe, optimizer = sora_recipe(max_grad_norm)
    model = recipe.model
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    forward = TaskLoss(model, task_for(recipe.config), recipe)  # the loop's training forward
    _, fault = optimizer_step(forward, batch(), optimizer, max_grad_norm)
    assert fault is None
    updates = {n: before[n] - p.detach() for n, p in model.named_parameters() if n in before}

    expected = reference_gradients(recipe)
    norm = torch.nn.utils.get_total_norm(list(expected.values()))
    scale = 1.0 if max_grad_norm is None else min(1.0, max_grad_norm / (float(norm) + 1e-6))
    gates = [n for n in expected if n.endswith("gate")]
    assert gates, "the model has SoRA gates"
    penalty = 10.0 / sum(expected[n].numel() for n in gates)
    # the penalty dominates the gates' gradient: leaving it out of the norm would change the step
    assert max(expected[n].abs().max().item() for n in gates) > 0.5 * penalty
    assert set(updates) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(updates[name], LR * scale * grad, rtol=1e-5, atol=1e-7, msg=name)
    if max_grad_norm is not None:
        assert float(norm) > 10 * max_grad_norm  # clipping was active
        total = torch.nn.utils.get_total_norm(list(updates.values()))
        assert float(total) == pytest.approx(LR * max_grad_norm, rel=1e-4)


def test_evaluation_forward_adds_no_penalty():
    recipe, _ = sora_recipe(None)
    model = recipe.model
    model.eval()
    with torch.no_grad():
        model(**batch())
    assert all(p.grad is None for p in model.parameters())


class BypassingTask:
    """A task whose loss runs the wrapped model directly, not ``AdaptedModel.forward`` (as the causal-LM
    loss does, to apply the head at loss positions only)."""

    def loss(self, model, batch):  # noqa: ANN001, ANN201
        return model.model(**batch).loss


def test_penalty_reaches_a_loss_that_bypasses_the_model_forward():
    recipe, optimizer = sora_recipe(None)
    model = recipe.model
    model.train()
    optimizer_step(TaskLoss(model, BypassingTask(), recipe), batch(), optimizer, None)
    with_penalty = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("gate")}

    recipe, optimizer = sora_recipe(None)
    recipe.model.train()
    optimizer.zero_grad()
    recipe.model.model(**batch()).loss.backward()  # the task gradient alone
    optimizer.step()
    without = {n: p.detach() for n, p in recipe.model.named_parameters() if n.endswith("gate")}
    assert with_penalty and any(not torch.equal(with_penalty[n], without[n]) for n in without)
