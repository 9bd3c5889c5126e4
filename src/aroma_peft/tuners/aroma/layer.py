"""AROMA's layer: a frozen Linear plus a sum of rank-r pieces, one of them live (trainable).

    y = W0 x + s * B_{p-1} A_{p-1} x + s * b_p a_p x

``B_{p-1} A_{p-1}`` (the pieces already learned) is folded into the base weight, so the forward cost
never grows with the rank; the factors themselves are kept in ``merged_A`` / ``merged_B`` for saving,
export and unmerging. The live piece runs inside :class:`FoldedRankOneLinear`: folded into the weight of
the one base matmul when the batch is large next to the layer (``W + s b a`` costs m*n), added as
``s (x a^T) b^T`` when it is not, with its gradients computed from a saved ``x a^T`` either way: about
four passes over the activations instead of the ten of ``base(x) + s * b(a(x))``. It follows
``torch.autocast`` (bf16 / fp16) and gives an unfrozen base bias or weight its gradient.

The forward branches on a Python flag, never on a tensor: no host-device sync, and ``torch.compile(...,
fullgraph=True)`` traces it; each step at which modules finish recompiles once (allow as many
recompiles as a run has finish steps: ``torch._dynamo.config.recompile_limit``).

On a quantized base (``tuners/quantized.py``) nothing is folded: the merged pieces stay a frozen
low-rank stack beside the base, ``base(x) + s * (x A^T) B^T`` with the live piece as the stack's last
rows, and remain after the module finishes.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..layer import AdapterLayer
from ..quantized import dequantized_weight, is_quantized, refuse_merge

if TYPE_CHECKING:  # the config names its layer class: a runtime import would be circular
    from .config import AromaConfig

LOW_PRECISION = (torch.bfloat16, torch.float16)


class FoldedRankOneLinear(torch.autograd.Function):
    """``y = x (W + s B A)^T + bias`` with the gradients of x, A and B (and of W and the bias if the user
    unfroze them), in one of two ways chosen per call by :func:`folds`:

    - folded: ``W + s B A`` is built (a copy of W) and used in one matmul, forward and backward;
    - unfolded: ``x W^T + s (x A^T) B^T`` and ``g W + s (g B) A``, whose extra products the backward
      computes anyway for the factors' gradients.

    Both save only ``x`` and ``x A^T``. Under ``torch.autocast`` the products run in the autocast dtype,
    as ``F.linear`` would, and every gradient comes back in its input's own dtype (fp32 factors stay
    fp32), so mixed precision works without a custom_fwd tied to one device type.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scaling: float):  # noqa: ANN001
        dtype = compute_dtype(x)
        fold = folds(x, weight)
        with autocast_off(x):
            x = cast(x, dtype)
            xa = x @ cast(lora_A, dtype).t()  # (..., r): all backward needs of x besides x itself
            b = None if bias is None else cast(bias, dtype)
            if fold:
                out = F.linear(x, cast(torch.addmm(weight, lora_B, lora_A, alpha=scaling), dtype), b)
            else:
                out = F.linear(x, cast(weight, dtype), b)
                rows = out.view(-1, out.shape[-1])
                rows.addmm_(xa.view(-1, xa.shape[-1]), cast(lora_B, dtype).t(), alpha=scaling)
        ctx.save_for_backward(x, xa, weight, lora_A, lora_B)
        ctx.scaling = scaling
        ctx.fold = fold
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_y):  # noqa: ANN001
        x, xa, weight, lora_A, lora_B = ctx.saved_tensors
        s = ctx.scaling
        need_x, need_w, need_bias, need_a, need_b, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        with autocast_off(x):
            grad_y = cast(grad_y, x.dtype)
            gy = grad_y.reshape(-1, grad_y.shape[-1])  # (tokens, m)
            x2 = x.reshape(-1, x.shape[-1])  # (tokens, n)
            a, b = cast(lora_A, x.dtype), cast(lora_B, x.dtype)
            gyb = gy @ b if need_a or (need_x and not ctx.fold) else None  # (tokens, r)
            if need_x:
                if ctx.fold:  # recomputed rather than saved: the fold costs m n, saving it would keep it
                    grad_x = grad_y @ cast(torch.addmm(weight, lora_B, lora_A, alpha=s), x.dtype)
                else:
                    grad_x = grad_y @ cast(weight, x.dtype)
                    grad_x.view(-1, grad_x.shape[-1]).addmm_(gyb, a, alpha=s)
            # s * (p @ q) as one addmm whose beta=0 ignores its first argument (one dispatch, not two)
            if need_b:
                grad_b = cast(
                    torch.addmm(b, gy.t(), xa.reshape(-1, xa.shape[-1]), beta=0, alpha=s), lora_B.dtype
                )
            if need_a:
                grad_a = cast(torch.addmm(a, gyb.t(), x2, beta=0, alpha=s), lora_A.dtype)
            if need_w:
                grad_w = cast(gy.t() @ x2, weight.dtype)
            if need_bias:
                grad_bias = cast(gy.sum(0), ctx.bias_dtype)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None


def folds(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether to fold the live piece into W for this call: the fold copies W (``m n``, twice per step),
    the unfolded path adds ``tokens (m + n)`` to the outputs and input gradients. Large batches of a
    small layer fold (MiniLM at 32 x 128); short batches through large layers do not (SmolLM2 at
    2 x 128, where folding copied 550 MB per step). The factor 4 is measured, not derived: a copy of W
    costs more than its size says (``benchmarks/speed/module_overhead.py``; at 2 the 768-token batches of
    SmolLM2 folded q, k and v and were 5-8% slower per module than unfolded)."""
    m, n = weight.shape
    return x.numel() // n * (m + n) > FOLD_FACTOR * m * n


FOLD_FACTOR = 4


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)`` without the dispatch when it is a no-op: called ~10 times per module and step."""
    return t if t.dtype == dtype else t.to(dtype)


def autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast disabled for x's device if it is on (the products pick their dtype themselves); no
    context otherwise: entering one costs more than the rank-one products of a small batch."""
    device = x.device.type
    return torch.autocast(device, enabled=False) if torch.is_autocast_enabled(device) else NO_CONTEXT


NO_CONTEXT = contextlib.nullcontext()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a Linear on ``x`` computes in: autocast's if it is on for x's device, else x's own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class AromaLinear(AdapterLayer):
    """One adapted Linear. The controller decides when to merge the live piece or finish the module."""

    def __init__(self, base_layer: nn.Linear, config: AromaConfig, generator: torch.Generator) -> None:
        super().__init__(base_layer, config)
        w = base_layer.weight
        self.quantized = is_quantized(base_layer)  # a Python flag: the forward never inspects the weight
        a, b = self.new_factors(config.r, generator)
        self.lora_A = nn.Parameter(a)  # live piece, (r, n)
        self.lora_B = nn.Parameter(b)  # live piece, (m, r)
        zeros = functools.partial(torch.zeros, dtype=self.factor_dtype, device=w.device)
        self.register_buffer("merged_A", zeros(0, self.in_features))  # (rank, n)
        self.register_buffer("merged_B", zeros(self.out_features, 0))  # (m, rank)
        # A low-precision base gets an fp32 master of its folded weight W0 + s B A: pieces are added to
        # it, and the base weight is its rounding, so merges never lose what rounding at each fold would
        # (a piece of 5e-3 of W loses ~30% in bf16). Not saved (rebuilt by re-folding on load); dropped
        # once the module finishes.
        low = w.dtype in LOW_PRECISION and not self.quantized
        self.register_buffer("master", w.detach().float().clone() if low else None, persistent=False)
        # Saved and loaded as the buffer ``finished``; the forward branches on its Python mirror, which
        # costs no host-device sync and lets torch.compile guard on it (a finish recompiles once).
        self.register_buffer("finished", torch.tensor(False, device=w.device))
        self._finished = False

    @property
    def is_finished(self) -> bool:
        return self._finished

    @property
    def factor_dtype(self) -> torch.dtype:
        """fp32 factors on a bf16 / fp16 base (as PEFT): a young piece's Adam steps are below bf16's
        resolution of the factors; fp32 on a quantized base; the base weight's dtype otherwise."""
        dtype = self.base_layer.weight.dtype
        return torch.float32 if dtype in LOW_PRECISION or self.quantized else dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized:
            return self.stacked_forward(x)
        if self.is_finished:
            return self.base_layer(x)
        weight = self.base_layer.weight
        # A low-precision weight that the user trains would part from its master: the unfused path.
        folded = weight if self.master is None else (None if weight.requires_grad else self.master)
        if folded is not None and isinstance(self.dropout, nn.Identity):
            return FoldedRankOneLinear.apply(
                x, folded, self.base_layer.bias, self.lora_A, self.lora_B, self.scaling
            )
        result = self.base_layer(x)
        h = self.dropout(x).to(self.lora_A.dtype)
        return result + (self.scaling * F.linear(F.linear(h, self.lora_A), self.lora_B)).to(result.dtype)

    def stacked_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``base(x) + s * (x A^T) B^T`` over the merged pieces and the live one: the quantized base's
        path (one pair of thin matmuls; the live piece's dropout, if any, gets its own pair)."""
        result = self.base_layer(x)
        a, b = self.merged_A, self.merged_B
        live = not self.is_finished
        if live and isinstance(self.dropout, nn.Identity):
            a, b, live = torch.cat([a, self.lora_A]), torch.cat([b, self.lora_B], dim=1), False
        h = x.to(a.dtype)
        if a.shape[0]:
            result = result + (self.scaling * F.linear(F.linear(h, a), b)).to(result.dtype)
        if live:
            piece = F.linear(F.linear(self.dropout(h), self.lora_A), self.lora_B)
            result = result + (self.scaling * piece).to(result.dtype)
        return result

    # --- statistics the controller's criteria use (all from r x r Gram matrices, never m x n) ---------
    def piece_norm(self) -> float:
        """``||b a||_F`` of the live piece, unscaled."""
        return product_inner(self.lora_B, self.lora_A, self.lora_B, self.lora_A) ** 0.5

    def weight_norm(self) -> float:
        """``||W0 + s B_{p-1} A_{p-1}||_F``: the folded base weight."""
        return float(self.folded_weight().detach().double().norm())

    def folded_weight(self) -> torch.Tensor:
        """``W0 + s B_{p-1} A_{p-1}`` at full precision: the master, or the weight itself (on a
        quantized base: built from the dequantized weight and the stack, only at outer decisions)."""
        if self.quantized:
            weight = dequantized_weight(self.base_layer)
            return torch.addmm(weight, self.merged_B.float(), self.merged_A.float(), alpha=self.scaling)
        return self.base_layer.weight if self.master is None else self.master

    # --- events -------------------------------------------------------------------------------
    @torch.no_grad()
    def merge_live(self) -> None:
        """Fold the live piece into the base weight (the function is unchanged) and keep its factors."""
        self.fold(self.lora_A, self.lora_B)
        self.merged_A = torch.cat([self.merged_A, self.lora_A.detach()], dim=0)
        self.merged_B = torch.cat([self.merged_B, self.lora_B.detach()], dim=1)

    @torch.no_grad()
    def start_piece(self, generator: torch.Generator) -> None:
        """Re-initialise the live piece in place (the optimizer keeps referring to the same tensors)."""
        a, b = self.new_factors(self.config.r, generator)
        self.lora_A.copy_(a)
        self.lora_B.copy_(b)

    @torch.no_grad()
    def finish(self) -> None:
        """Discard the live piece (Algorithm 1) and freeze the module for good."""
        self.finished.fill_(True)
        self._finished = True
        self.lora_A.zero_()
        self.lora_B.zero_()
        self.lora_A.requires_grad_(False)
        self.lora_B.requires_grad_(False)
        self.lora_A.grad = self.lora_B.grad = None
        self.master = None  # the base weight holds the final rounding; nothing is folded any more

    @torch.no_grad()
    def fold(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if self.quantized:
            return  # a quantized weight is never written: the stack holds the pieces
        # The same addmm as the forward, so the folded function is bit-identical to the unfolded one.
        target = self.folded_weight()
        target.copy_(torch.addmm(target, b.to(target.dtype), a.to(target.dtype), alpha=self.scaling))
        if target is not self.base_layer.weight:
            self.base_layer.weight.copy_(target)

    @torch.no_grad()
    def unfold_all(self) -> None:
        """Subtract every merged piece from the base weight (back to W0 up to rounding)."""
        if self.quantized:
            return
        r = self.config.r
        target = self.folded_weight()
        for start in reversed(range(0, self.merged_A.shape[0], r)):
            a, b = self.merged_A[start : start + r], self.merged_B[:, start : start + r]
            target.sub_(self.scaling * (b @ a).to(target.dtype))
        self.base_layer.weight.copy_(target)

    # --- AdapterLayer interface ----------------------------------------------------------------
    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        if self.is_finished:
            return self.merged_A, self.merged_B, self.scaling
        a = torch.cat([self.merged_A, self.lora_A.detach()], dim=0)
        b = torch.cat([self.merged_B, self.lora_B.detach()], dim=1)
        return a, b, self.scaling

    @property
    def rank(self) -> int:
        """Rank learned so far: the merged pieces (the live piece counts once it is merged)."""
        return self.merged_A.shape[0]

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        if self.quantized:
            refuse_merge(self.base_layer)
        if not self.is_finished:
            self.fold(self.lora_A, self.lora_B)
        return self.base_layer

    @torch.no_grad()
    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        self.unfold_all()  # pieces merged before (a trained model) would otherwise count twice
        self.copy_resized(state)
        self._sync_finished()
        r = self.config.r  # re-fold piece by piece, exactly as training did, for bit-identical outputs
        for start in range(0, self.merged_A.shape[0], r):
            self.fold(self.merged_A[start : start + r], self.merged_B[:, start : start + r])
        if self.is_finished:
            self.master = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._sync_finished()
        weight = state_dict.get(prefix + "base_layer.weight")
        if self.master is not None and weight is not None:
            # A full state dict holds the folded weight, rounded: the master restarts from it.
            self.master = None if self._finished else weight.detach().to(self.master).clone()

    def _sync_finished(self) -> None:
        """After a load: the Python flag and the factors' trainability follow the loaded buffer."""
        self._finished = bool(self.finished)
        self.lora_A.requires_grad_(not self._finished)
        self.lora_B.requires_grad_(not self._finished)


def product_inner(b1: torch.Tensor, a1: torch.Tensor, b2: torch.Tensor, a2: torch.Tensor) -> float:
    """Frobenius inner product ``<b1 a1, b2 a2>`` from two r x r Gram matrices, in float64."""
    with torch.no_grad():
        gram_b = b1.detach().double().t() @ b2.detach().double()  # (r1, r2)
        gram_a = a1.detach().double() @ a2.detach().double().t()  # (r1, r2)
        return float((gram_b * gram_a).sum())
