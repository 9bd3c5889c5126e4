"""SoRA's layer: a frozen Linear plus a gated LoRA of maximum rank r_max.

    y = W0 x + s * B diag(g) A x,    s = alpha / r_max,  A (r_max, n),  B (m, r_max),  g (r_max,)

A gate driven to exactly 0 by the proximal step switches its rank off; :meth:`SoraLinear.prune`
removes those ranks (A' = A[K], B' = B[:, K] diag(g_K), g' = 1, frozen), which leaves an ordinary
LoRA of rank |K| with the same scale s. ``lora_factors`` returns the pruned factors at any time, so
export and merging see the same update before and after pruning. On a quantized base
(``tuners/quantized.py``) the factors and gates are fp32 and the update is exported, never merged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layer import AdapterLayer
from ..quantized import is_quantized, refuse_merge

if TYPE_CHECKING:  # the config names its layer class: a runtime import would be circular
    from .config import SoraConfig


class SoraLinear(AdapterLayer):
    """One adapted Linear with a gate per rank."""

    def __init__(self, base_layer: nn.Linear, config: SoraConfig, generator: torch.Generator) -> None:
        super().__init__(base_layer, config)
        w = base_layer.weight
        self.quantized = is_quantized(base_layer)
        a, b = self.new_factors(config.r, generator)
        self.lora_A = nn.Parameter(a)  # (r_max, n)
        self.lora_B = nn.Parameter(b)  # (m, r_max)
        if config.gate_init == "randn":
            gate = torch.randn(config.r, generator=generator)
        else:
            gate = torch.ones(config.r)
        self.gate = nn.Parameter(gate.to(device=w.device, dtype=self.factor_dtype))  # (r_max,)
        # After pruning the gates are fixed at 1 (folded into B) and no longer trained or penalised.
        self.register_buffer("pruned", torch.tensor(False, device=w.device))

    @property
    def factor_dtype(self) -> torch.dtype:
        """fp32 on a quantized base (its weight's dtype may be int8), the base weight's otherwise."""
        return torch.float32 if self.quantized else self.base_layer.weight.dtype

    @property
    def is_pruned(self) -> bool:
        return bool(self.pruned)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.lora_A.shape[0] == 0:
            return result
        h = F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A)  # (..., r)
        return result + F.linear(h * (self.gate * self.scaling), self.lora_B).to(result.dtype)

    # --- AdapterLayer interface ----------------------------------------------------------------
    @torch.no_grad()
    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The update without its switched-off ranks: ``A[K]``, ``B[:, K] diag(g_K)``, ``alpha / r_max``."""
        keep = self.gate != 0
        return self.lora_A[keep].clone(), self.lora_B[:, keep] * self.gate[keep], self.scaling

    def merged_linear(self) -> nn.Linear:
        if self.quantized:
            refuse_merge(self.base_layer)
        return super().merged_linear()

    @property
    def rank(self) -> int:
        """Active rank: the number of non-zero gates."""
        return int(torch.count_nonzero(self.gate))

    def grouped_parameters(self) -> dict[str, list[nn.Parameter]]:
        return {"adapter": [self.lora_A, self.lora_B], "gate": [self.gate]}

    def group_options(self, kind: str) -> dict[str, Any]:
        # Gates are sparsified by the L1 penalty and the proximal step only: no weight decay.
        return {"kind": kind, "weight_decay": 0.0} if kind == "gate" else {"kind": kind}

    def check_state(self, state: dict[str, torch.Tensor]) -> None:
        super().check_state(state)
        gate, rank = tuple(state["gate"].shape), state["lora_A"].shape[0]
        if gate != (rank,):
            raise ValueError(f"gate: shape {gate} does not fit lora_A's rank {rank}")

    @torch.no_grad()
    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        self.copy_resized(state)
        self.gate.requires_grad_(not self.is_pruned)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.gate.requires_grad_(not self.is_pruned)

    # --- SoRA ------------------------------------------------------------------------------------
    @torch.no_grad()
    def prune(self) -> int:
        """Remove the ranks whose gate is exactly 0; returns the rank left. The output is unchanged.

        The parameters are replaced: build a new optimizer to train the pruned LoRA further.
        """
        a, b, _ = self.lora_factors()
        self.lora_A = nn.Parameter(a.contiguous(), requires_grad=self.lora_A.requires_grad)
        self.lora_B = nn.Parameter(b.contiguous(), requires_grad=self.lora_B.requires_grad)
        self.gate = nn.Parameter(torch.ones_like(self.gate[: a.shape[0]]), requires_grad=False)
        self.pruned.fill_(True)
        return a.shape[0]

    def parameter_counts(self) -> dict[str, int]:
        """Exact counts: a rank of an m x n matrix costs m + n (3840 for 3072 x 768), a gate 1.

        ``before`` is what trains before pruning (r_max ranks and r_max gates), ``after`` the
        pruned LoRA (active ranks only, gates folded into B).
        """
        r_max, active, per_rank = self.config.r, self.rank, self.in_features + self.out_features
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "r_max": r_max,
            "active": active,
            "per_rank": per_rank,
            "before": r_max * per_rank + r_max,
            "after": active * per_rank,
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r_max={self.config.r}, pruned={self.is_pruned}"
