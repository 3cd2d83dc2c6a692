"""Attention over packed variable-length token sets: the active tokens of a batch as rows ``[sum_b n_b, ...]``.

``remove`` mode keeps only the still-active tokens of every clip, grouped by clip, in one packed tensor. Each
clip attends only to its own tokens, so attention costs ``sum_b n_b^2`` (not ``B * max_b n_b^2`` as padding to
the longest clip would). Paths, chosen per call (``PATH_CALLS`` counts which one ran):

* ``uniform``: every clip has the same number of tokens (e.g. before any has halted): a plain reshape to
  ``[B, n, ...]`` and one fused SDPA call, no mask.
* ``nested`` (CUDA): the rows become a jagged nested tensor (``torch.nested.nested_tensor_from_jagged``) and
  SDPA runs its variable-length flash / memory-efficient kernel on it (cumulative sequence lengths, no padding).
  Clips with no active token are left out (the fused kernels refuse empty sequences). The host already knows
  the lengths (``Packing.counts_host``), so this path makes no device-to-host sync; the offsets go to the device
  from pinned memory without blocking.
* ``per_sample`` (CPU, or CUDA when the nested path is unavailable): one SDPA call per non-empty clip on its
  slice of rows; exact, same cost ``sum_b n_b^2``.
* ``empty``: no token left anywhere.

Set ``BACKEND`` to ``"per_sample"`` or ``"nested"`` to force a path (tests, benchmarks); ``"auto"`` picks as above.
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
_nested_failed = False


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
    if _use_nested(qkv):
        try:
            out = _nested_attention(parts, packing)
            PATH_CALLS["nested"] += 1
            return out.reshape(n, dim)
        except Exception as err:  # noqa: BLE001 - an older torch or an unsupported shape: stay exact
            _disable_nested(err)
    PATH_CALLS["per_sample"] += 1
    outs = []
    for chunk in parts.split(packing.counts_host, dim=0):
        if chunk.shape[0] == 0:
            continue
        q, k, v = chunk.permute(1, 2, 0, 3).unsqueeze(1)  # each [1, heads, n_b, head_dim]
        outs.append(F.scaled_dot_product_attention(q, k, v)[0].transpose(0, 1))  # [n_b, heads, head_dim]
    return torch.cat(outs).reshape(n, dim)


def _use_nested(qkv: Tensor) -> bool:
    if BACKEND == "per_sample":
        return False
    if BACKEND == "nested":
        return True
    return qkv.is_cuda and not _nested_failed


def _disable_nested(err: Exception) -> None:
    global _nested_failed
    if BACKEND == "nested":
        raise err
    _nested_failed = True
    log.warning("variable-length (nested) attention unavailable, using the per-clip path: %s", err)


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
