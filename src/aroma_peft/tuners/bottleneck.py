"""Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2021): a small residual MLP in a block.

    h <- h + W_up act(W_down h + b_down) + b_up      W_down: d -> m, W_up: m -> d, m = bottleneck

It sits after a sublayer's output dropout, before the residual add and LayerNorm of a post-LN
(BERT-style) block: ``LayerNorm(adapter(dropout(dense(x))) + x_in)``. W_up and b_up start at zero, so
the adapted model starts exactly as the base model. Houlsby places one after the attention output and
one after the feed-forward output; Pfeiffer one after the feed-forward output only.

There is no low-rank update of any weight: nothing to merge into the model and no LoRA export.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .config import check

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu, "tanh": torch.tanh}
PLACEMENTS = {"houlsby": ("attention", "feed_forward"), "pfeiffer": ("feed_forward",)}


@dataclass
class BottleneckConfig:
    """Where the adapters go and their size."""

    placement: str = field(
        default="houlsby",
        metadata={
            "help": "'houlsby': after the attention output and after the feed-forward output of every "
            "block; 'pfeiffer': after the feed-forward output only."
        },
    )
    bottleneck: int = field(default=64, metadata={"help": "Width m of the adapter's hidden layer."})
    activation: str = field(
        default="relu", metadata={"help": f"Non-linearity between the projections: {', '.join(ACTIVATIONS)}."}
    )

    def __post_init__(self) -> None:
        check(self.placement in PLACEMENTS, "placement", self.placement, f"use one of {tuple(PLACEMENTS)}")
        check(
            isinstance(self.bottleneck, int) and self.bottleneck >= 1,
            "bottleneck",
            self.bottleneck,
            "use an integer >= 1",
        )
        check(
            self.activation in ACTIVATIONS, "activation", self.activation, f"use one of {tuple(ACTIVATIONS)}"
        )


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``; the up-projection starts at zero (the identity map)."""

    def __init__(self, size: int, bottleneck: int, activation: str) -> None:
        super().__init__()
        self.down = nn.Linear(size, bottleneck)
        self.up = nn.Linear(bottleneck, size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.activation = activation

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., d)
        return h + self.up(ACTIVATIONS[self.activation](self.down(h)))


class DropoutThenAdapter(nn.Module):
    """Takes the place of a sublayer's dropout: the dropout, then the adapter (before the residual)."""

    def __init__(self, dropout: nn.Dropout, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.dropout = dropout
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.dropout(x))


def sublayer_outputs(model: nn.Module) -> dict[str, str]:
    """Post-LN sublayer outputs found by structure, with their kind: modules whose only children are one
    Linear, one Dropout and one LayerNorm (BERT's ``BertSelfOutput`` and ``BertOutput`` and their copies
    in RoBERTa, ELECTRA, MiniLM, ...). The attention output projects hidden -> hidden; the feed-forward
    output projects the wider intermediate size -> hidden."""
    found = {}
    for name, module in model.named_modules():
        children = list(module.children())
        linears = [m for m in children if isinstance(m, nn.Linear)]
        dropouts = [m for m in children if isinstance(m, (nn.Dropout, DropoutThenAdapter))]
        norms = [m for m in children if isinstance(m, nn.LayerNorm)]
        if len(children) == 3 and len(linears) == len(dropouts) == len(norms) == 1:
            square = linears[0].in_features == linears[0].out_features
            found[name] = "attention" if square else "feed_forward"
    kinds = list(found.values())
    if kinds.count("attention") != kinds.count("feed_forward"):
        raise ValueError(
            f"cannot tell attention outputs from feed-forward outputs ({kinds.count('attention')} vs "
            f"{kinds.count('feed_forward')}): bottleneck adapters need BERT-style blocks whose "
            "intermediate size differs from the hidden size"
        )
    return found


def add_bottlenecks(model: nn.Module, config: BottleneckConfig) -> list[str]:
    """Insert the adapters in place (after each chosen sublayer's dropout); returns the sublayer names."""
    sites = [n for n, kind in sublayer_outputs(model).items() if kind in PLACEMENTS[config.placement]]
    if not sites:
        raise ValueError(
            f"{type(model).__name__}: no post-LN sublayer output (a module of one Linear, one Dropout and "
            "one LayerNorm, as BERT's) to place bottleneck adapters after"
        )
    for name in sites:
        sublayer = model.get_submodule(name)
        if any(isinstance(m, DropoutThenAdapter) for m in sublayer.children()):
            raise ValueError(f"{name}: already holds a bottleneck adapter")
        (dense,) = [m for m in sublayer.children() if isinstance(m, nn.Linear)]
        (dropout_name,) = [n for n, m in sublayer.named_children() if isinstance(m, nn.Dropout)]
        adapter = BottleneckAdapter(dense.out_features, config.bottleneck, config.activation)
        adapter.to(dense.weight.device, dense.weight.dtype)
        setattr(sublayer, dropout_name, DropoutThenAdapter(getattr(sublayer, dropout_name), adapter))
    return sites
