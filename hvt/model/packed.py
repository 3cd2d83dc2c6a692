"""``remove`` mode of the halting blocks: halted tokens leave the computation, with one host sync per block.

The active tokens of the whole batch are packed rows ``[sum_b n_b, dim]``, grouped by clip in clip order. Norms,
projections and the MLP run on those rows only; attention runs within each clip on the packed rows
(``varlen.packed_attention``: cost ``sum_b n_b^2``, a variable-length kernel on CUDA). The halting recurrence is
the one in ``halting.py`` (same maths as ``mask``; only the float summation order differs).

Host syncs: the bookkeeping (class-token accumulation, ponder cost, halting depths, per-clip counts) stays on
the device, indexed by each row's original position; the only read is the per-clip count of tokens still active
after a block (one ``tolist()``), which the next block's attention needs on the host and which sizes the
compaction. So a forward with L halting blocks makes L - 1 device-to-host syncs (none after the last block, whose
scores are forced to 1). Compaction is a stable sort of the rows by "halted" (active rows first, in their order)
and a slice of the known length: no ``nonzero``, no ``bincount``, no boolean indexing.

Every joint block runs even when no token is left (on zero rows), so every parameter stays in the autograd
graph in every step and DDP needs no ``find_unused_parameters``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .varlen import Packing


def run_remove(
    blocks, x: Tensor, scale: float, center: float, eps: float, offsets: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``x`` ``[B, N0, dim]`` (class token first) through the halting ``blocks``. Returns the fields of
    ``halting.HaltingResult`` in order: class output ``[B, dim]``, token depth ``[B, N0]``, tokens per block
    ``[B, L]``, ponder (scalar), mean raw score per block ``[L]``."""
    b, n0, c = x.shape
    depth_l = len(blocks)
    thr = 1.0 - eps
    dev, dt = x.device, torch.float32  # halting bookkeeping in fp32, also under autocast
    rows = x.reshape(b * n0, c)
    row_id = torch.arange(b * n0, device=dev)  # original position: clip * N0 + token
    row_sample = row_id // n0
    is_cls = (row_id % n0 == 0).to(dt)
    cum = torch.zeros(b * n0, device=dev, dtype=dt)
    rem = torch.ones(b * n0, device=dev, dtype=dt)
    counts = torch.full((b,), n0, device=dev, dtype=torch.long)
    counts_host = [n0] * b
    cls_out = torch.zeros(b, c, device=dev, dtype=dt)
    ponder_sum = torch.zeros((), device=dev, dtype=dt)
    depth_flat = torch.zeros(b * n0, device=dev, dtype=dt)
    tokens = torch.zeros(b, depth_l, device=dev, dtype=torch.long)
    mean_h = []
    for layer, blk in enumerate(blocks):
        n_rows = rows.shape[0]  # = sum(counts_host), known on the host
        tokens[:, layer] = counts
        out = blk.forward_packed(rows, Packing(counts_host, row_sample, b))
        h_raw = torch.sigmoid(out[:, 0].float() * scale - center + offsets[layer])
        mean_h.append(h_raw.sum() / max(n_rows, 1))
        last = layer == depth_l - 1
        h = torch.ones_like(h_raw) if last else h_raw
        cum = cum + h
        not_reached = cum < thr
        reached = ~not_reached
        reached_f = reached.to(dt)
        weight = torch.where(reached, rem, h)
        cls_out = cls_out.index_add(0, row_sample, (weight * is_cls)[:, None] * out.float())
        ponder_sum = ponder_sum + ((layer + 1 + rem) * reached_f).sum()
        depth_flat = depth_flat.index_add(0, row_id, reached_f * float(layer + 1))  # each token halts once
        rem = rem - h * not_reached.to(dt)
        rows = out
        if last:
            break
        counts = torch.zeros(b, device=dev, dtype=torch.long).index_add_(0, row_sample, not_reached.long())
        counts_host = counts.tolist()  # the one device-to-host sync of this block
        kept = sum(counts_host)
        if kept == n_rows:  # nothing halted here: the packing stays as it is
            continue
        order = torch.argsort(reached.to(torch.uint8), stable=True)[:kept]  # active rows first, in order
        rows, cum, rem = rows[order], cum[order], rem[order]
        row_sample, row_id, is_cls = row_sample[order], row_id[order], is_cls[order]
    return cls_out, depth_flat.view(b, n0), tokens, ponder_sum / (b * n0), torch.stack(mean_h)
