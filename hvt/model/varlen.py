"""Attention over packed variable-length token sets: the active tokens of a batch as rows ``[sum_b n_b, ...]``.

``remove`` mode keeps only the still-active tokens of every clip, grouped by clip, in one packed tensor. Each
clip attends only to its own tokens, so attention costs ``sum_b n_b^2`` (not ``B * max_b n_b^2`` as padding to
the longest clip would). Paths, chosen per call (``PATH_CALLS`` counts which one ran):

* ``uniform``: every clip has the same number of tokens (e.g. before any has halted): a plain reshape to
  ``[B, n, ...]`` and one fused SDPA call, no mask.
* ``nested`` (CUDA: the device types in ``NESTED_DEVICES``): the rows become a jagged nested tensor
  (``torch.nested.nested_tensor_from_jagged``) and SDPA runs its variable-length flash / memory-efficient
  kernel on it (cumulative sequence lengths, no padding). Clips with no active token are left out (the fused
  kernels refuse empty sequences). The host already knows the lengths (``Packing.counts_host``), so this path
  makes no device-to-host sync; the offsets go to the device from pinned memory without blocking.
* ``per_sample`` (CPU, or CUDA where the nested path failed its check): one SDPA call per non-empty clip on
  its slice of rows; exact, same cost ``sum_b n_b^2``.
* ``empty``: no token left anywhere.

Set ``BACKEND`` to ``"per_sample"`` or ``"nested"`` to force a path (tests, benchmarks); ``"auto"`` picks as above.

The nested kernel is checked before it is trusted: a failure inside its ``backward`` would surface in the
training loop's ``loss.backward()``, out of reach of any fallback, and a kernel can also run and be wrong. So
the first call per key (device, dtype, heads, head_dim, autocast dtype, records gradients) runs a tiny
self-check: nested vs per-clip on random ragged rows (an empty clip included) on the caller's device and dtype,
outputs and, for a call that records gradients, input gradients too. Under ``"auto"`` a self-check that raises
or disagrees turns the nested path off for that key, with one warning, and the per-clip path (exact) serves it
from then on; a forward error at a later call does the same. Under a forced ``"nested"`` either raises
:class:`NestedAttentionError`. The self-check draws from its own generator, never the global RNG.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

PATH_CALLS: Counter[str] = Counter()
BACKEND = "auto"
NESTED_DEVICES = frozenset({"cuda"})  # device types where "auto" tries the nested path (tests add "cpu")
SELF_CHECK_LENGTHS = (3, 0, 5, 1)  # ragged: an empty clip (left out of the nested batch), a 1-token clip

# self-check verdict per (device, dtype, heads, head_dim, autocast dtype or None, records gradients)
_nested_ok: dict[tuple, bool] = {}


class NestedAttentionError(RuntimeError):
    """The nested path was forced (``BACKEND = "nested"``) and failed its self-check or raised."""


@dataclass
class Packing:
    """Where the packed rows of a batch of ``batch`` clips belong.

    ``counts_host[b]``: rows of clip ``b`` (a Python list: read from the device once per halting block);
    ``row_sample`` ``[N]`` long on the device: the clip of every row (rows grouped by clip, in clip order).
    """

    counts_host: list[int]
    row_sample: Tensor
    batch: int

    @property
    def total(self) -> int:
        return sum(self.counts_host)

    @property
    def uniform(self) -> bool:
        return len(set(self.counts_host)) == 1 and self.counts_host[0] > 0


def packed_attention(qkv: Tensor, packing: Packing, num_heads: int) -> Tensor:
    """Multi-head self-attention within each clip: ``qkv`` ``[N, 3*dim]`` (packed rows, as ``Attention.qkv``
    makes them) -> ``[N, dim]`` before the output projection. Same maths as attention over each clip alone."""
    n, three_dim = qkv.shape
    dim = three_dim // 3
    head_dim = dim // num_heads
    if n == 0:
        PATH_CALLS["empty"] += 1
        return qkv[:, :dim] * 0.0  # keeps qkv (and its weights) in the autograd graph
    if packing.uniform:
        PATH_CALLS["uniform"] += 1
        b, length = packing.batch, packing.counts_host[0]
        q, k, v = qkv.view(b, length, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, dim)
    parts = qkv.view(n, 3, num_heads, head_dim)
    key = _use_nested(qkv, num_heads, head_dim)
    if key is not None:
        try:
            out = _nested_attention(parts, packing)
        except Exception as err:  # noqa: BLE001 - a shape the self-check did not cover: stay exact
            _disable_nested(key, f"raised {type(err).__name__}: {err}", err)
        else:
            PATH_CALLS["nested"] += 1
            return out.reshape(n, dim)
    PATH_CALLS["per_sample"] += 1
    return _per_clip_attention(parts, packing.counts_host).reshape(n, dim)


def _per_clip_attention(parts: Tensor, counts: list[int]) -> Tensor:
    """``parts`` ``[N, 3, heads, head_dim]`` -> ``[N, heads, head_dim]``, one SDPA call per non-empty clip."""
    outs = []
    for chunk in parts.split(counts, dim=0):
        if chunk.shape[0] == 0:
            continue
        q, k, v = chunk.permute(1, 2, 0, 3).unsqueeze(1)  # each [1, heads, n_b, head_dim]
        outs.append(F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1))  # [n_b, heads, head_dim]
    return torch.cat(outs)


def _use_nested(qkv: Tensor, heads: int, head_dim: int) -> tuple | None:
    """This call's self-check key when it should take the nested path, else None. A new key is self-checked
    here, once."""
    if BACKEND == "per_sample":
        return None
    if BACKEND != "nested" and qkv.device.type not in NESTED_DEVICES:
        return None
    dev = qkv.device.type
    amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
    key = (str(qkv.device), qkv.dtype, heads, head_dim, amp, torch.is_grad_enabled() and qkv.requires_grad)
    if key not in _nested_ok:
        problem = _self_check(qkv.device, qkv.dtype, heads, head_dim, records_grad=key[-1])
        _nested_ok[key] = problem is None
        if problem is not None:
            _disable_nested(key, problem)
    return key if _nested_ok[key] else None


def _disable_nested(key: tuple, problem: str, err: Exception | None = None) -> None:
    """Forced nested: raise. Otherwise the per-clip path serves ``key`` from now on, after one warning."""
    device, dtype, heads, head_dim, amp, grad = key
    where = (f"{device}, {dtype}, {heads} heads of {head_dim}, autocast {amp}, "
             f"{'forward+backward' if grad else 'forward'}")
    if BACKEND == "nested":
        raise NestedAttentionError(
            f"variable-length (nested) attention is forced (varlen.BACKEND='nested') but failed on {where}: "
            f"{problem}; set varlen.BACKEND='auto' or 'per_sample' to use the per-clip path"
        ) from err
    _nested_ok[key] = False
    log.warning("variable-length (nested) attention off for %s, using the per-clip path: %s", where, problem)


def _tolerance(dtype: torch.dtype) -> float:
    """Relative (L2) disagreement allowed between two correct kernels: a few roundings of ``dtype``, and at
    least 2e-3, the TF32 rounding (10-bit mantissa) that fp32 matmuls may use on CUDA. A wrong kernel (rows of
    one clip seeing another's, wrong offsets, a wrong gradient) is off by O(0.1-1)."""
    return max(4 * torch.finfo(dtype).eps, 2e-3)


def _self_check(
    device: torch.device, dtype: torch.dtype, heads: int, head_dim: int, records_grad: bool
) -> str | None:
    """Nested vs per-clip attention on random rows (``SELF_CHECK_LENGTHS`` clips) on ``device`` in ``dtype``,
    in the caller's autocast: the outputs, and the gradients of the rows when ``records_grad``. None when they
    agree, else what went wrong (one line)."""
    counts = list(SELF_CHECK_LENGTHS)
    gen = torch.Generator().manual_seed(0)  # its own generator: the caller's RNG stream stays untouched
    parts = torch.randn(sum(counts), 3, heads, head_dim, generator=gen).to(device, dtype)  # [N, 3, heads, hd]
    upstream = torch.randn(sum(counts), heads, head_dim, generator=gen).to(device)  # d loss / d out
    row_sample = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)
    packing = Packing(counts, row_sample, len(counts))
    results = []
    try:
        for attend in (lambda p: _nested_attention(p, packing), lambda p: _per_clip_attention(p, counts)):
            rows = parts.detach().requires_grad_(records_grad)
            out = attend(rows)
            grad = None
            if records_grad:
                (grad,) = torch.autograd.grad((out.float() * upstream).sum(), rows)
            results.append((out.detach().float(), grad))
    except Exception as err:  # noqa: BLE001 - any failure of the kernel is the answer
        return f"raised {type(err).__name__}: {err}"
    (out_n, grad_n), (out_p, grad_p) = results
    tol = _tolerance(dtype)
    pairs = [("output", out_n, out_p)]
    if records_grad:
        pairs.append(("gradient", grad_n.float(), grad_p.float()))
    for what, got, ref in pairs:
        err_rel = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
        if not err_rel <= tol:  # also catches NaN
            return f"{what} differs from the per-clip path by {err_rel:.3g} (relative L2; allowed {tol:.3g})"
    return None


def _nested_attention(parts: Tensor, packing: Packing) -> Tensor:
    """``parts`` ``[N, 3, heads, head_dim]`` -> ``[N, heads, head_dim]`` through SDPA on jagged nested tensors."""
    lengths = [c for c in packing.counts_host if c > 0]
    offsets_host = [0]
    for c in lengths:
        offsets_host.append(offsets_host[-1] + c)
    offsets = torch.tensor(offsets_host, dtype=torch.int64)
    if parts.is_cuda:
        offsets = offsets.pin_memory().to(parts.device, non_blocking=True)

    def jagged(x: Tensor) -> Tensor:  # [N, heads, head_dim] -> [B', heads, j, head_dim]
        nt = torch.nested.nested_tensor_from_jagged(
            x, offsets, min_seqlen=min(lengths), max_seqlen=max(lengths)
        )
        return nt.transpose(1, 2)

    q, k, v = (jagged(parts[:, i].contiguous()) for i in range(3))
    out = F.scaled_dot_product_attention(q, k, v)  # [B', heads, j, head_dim]
    return out.transpose(1, 2).values()
