"""Backprop truncation: once every adapted module of the lowest blocks has finished, autograd builds no
graph for them (nothing below trains), and training is exactly what full backpropagation gives."""

from __future__ import annotations

import torch
from test_trainer import TARGETS, tiny_bert

from aroma_peft import AromaConfig, AromaController, adapt


def finished_lower_block_model() -> torch.nn.Module:
    config = AromaConfig(
        target_modules=TARGETS, modules_to_save=["classifier"], t_in=3, check_interval=1, eps_in=0.5
    )
    model = adapt(tiny_bert(), config)
    for name, layer in model.adapter_layers().items():
        if ".layer.0." in name:
            layer.finish()
    return model


def train(full_backprop: bool, steps: int = 8) -> tuple[list[float], list[dict], dict, list[bool]]:
    """Losses, controller events, final adapter state and which blocks' outputs carried a graph."""
    model = finished_lower_block_model()
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(lr=1e-2))
    controller = AromaController(model, optimizer)
    graph: list[bool] = []
    for block in model.model.bert.encoder.layer:
        block.register_forward_hook(lambda m, a, out: graph.append(out[0].requires_grad))
    g = torch.Generator().manual_seed(0)
    embed = model.model.bert.embeddings.word_embeddings
    losses = []
    model.train()
    for _ in range(steps):
        ids = torch.randint(1, 50, (8, 8), generator=g)
        labels = (ids[:, 0] > 25).long()
        torch.manual_seed(1)  # the same dropout masks in both runs
        if full_backprop:  # an input that requires grad: backward runs through every block
            out = model(inputs_embeds=embed(ids).detach().requires_grad_(), labels=labels)
        else:
            out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        optimizer.step()
        controller.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    return losses, controller.events, model.adapter_state_dict(), graph[:2]


def test_finished_lower_blocks_build_no_graph_and_training_is_exact() -> None:
    losses, events, state, graph = train(full_backprop=False)
    full_losses, full_events, full_state, full_graph = train(full_backprop=True)
    assert graph == [False, True] and full_graph == [True, True]  # block 0 runs without a graph
    assert any(e["event"] == "merge" for e in events)  # pieces ended and merged along the way
    assert losses == full_losses and events == full_events
    assert state.keys() == full_state.keys()
    assert all(torch.equal(state[k], full_state[k]) for k in state)
