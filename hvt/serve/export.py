"""Export a registered model for serving without this package: ONNX (fixed-shape paths) or ``torch.export``.

The exported graph takes what a decoder gives, uint8 clips ``[B, T, H, W, 3]`` (``B`` dynamic; T, H, W fixed by
the model's test transform), normalises them inside (``x / 127.5 - 1``, channels before time, as
``hvt.data.normalize_clips``) and returns ``logits`` ``[B, C]`` (fp32) and ``gflops`` ``[B]`` (GFLOPs the model
counts for each clip: from the tokens each clip kept, in the paper's multiply-add convention). The artefact
carries ``hvt.json``-style metadata: class list, input spec (frames, frame interval, short side, crop, views,
normalisation), model, version and halted-token mode (ONNX: ``metadata_props["hvt"]``; ``.pt2``: the extra file
``hvt.json``).

What each format keeps of the halting saving (docs/SERVING.md): ONNX runs ``mask``/``official`` or the dense
baseline with fixed shapes, so it spends the dense compute while reporting the GFLOPs the halting model *would*
spend; ``remove`` (tokens physically dropped, compute really shrinks) has data-dependent token counts, which
``torch.export`` is tried on and refused with a clear message when it cannot capture them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hvt import storage
from hvt.errors import InputError
from hvt.serve.scoring import OK, ServingModel, decode_input, load_serving_model
from hvt.serve.sources import InferInput, open_source

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torch-export")
PARITY_TOLERANCE = 1e-4  # max |logit diff| vs eager, fp32
VIDEO_SUFFIXES = ("mp4", "avi", "mkv", "webm", "mov", "gif", "m4v")  # --check VIDEO (else a folder or list file)


class ExportError(InputError):
    """The model cannot be exported in the asked format and mode; the message says what to use instead."""


class ServingGraph(nn.Module):
    """uint8 clips ``[B, T, H, W, 3]`` -> (``logits`` ``[B, C]``, ``gflops`` ``[B]``), normalisation included."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        x = clips.float() / 127.5 - 1.0  # [B, T, H, W, 3]
        out = self.network(x.permute(0, 4, 1, 2, 3).contiguous())  # [B, 3, T, H, W]
        return out.logits.float(), out.gflops.float()


def export_metadata(serving: ServingModel, fmt: str) -> dict[str, Any]:
    """What a server needs besides the graph: classes, input spec, outputs, provenance."""
    cfg = serving.data_config
    loaded = serving.loaded
    return {
        "format": fmt,
        "model": loaded.name,
        "version": loaded.version,
        "source": loaded.source,
        "architecture": loaded.network.config.name,
        "halted_token_mode": serving.mode if loaded.network.config.halting else None,  # None: dense baseline
        "classes": list(loaded.classes),
        "input": {
            "name": "clips",
            "dtype": "uint8",
            "shape": ["batch", cfg.num_frames, cfg.crop_size, cfg.crop_size, 3],
            "layout": "B,T,H,W,C (RGB)",
            "normalisation": "inside the graph: x / 127.5 - 1 (values in [-1, 1])",
            "frames": cfg.num_frames,
            "frame_interval": cfg.frame_interval,
            "short_side": cfg.test_short_side,
            "crop": cfg.crop_size,
            "views_per_video": {"clips": cfg.num_clips, "crops": cfg.test_crops,
                                "combine": "mean of the views' softmax; GFLOPs summed"},
        },
        "outputs": {
            "logits": "float32 [batch, classes]",
            "gflops": "float32 [batch]: GFLOPs (multiply-adds) the halting model counts for each clip",
        },
    }


def _default_mode(fmt: str, serving_mode: str, asked: str | None) -> str | None:
    if asked is not None:
        return asked
    return None if fmt == "torch-export" else ("mask" if serving_mode == "remove" else serving_mode)


def _check_clips(serving: ServingModel, check: str | None, store: str | None, limit: int = 4) -> tuple[np.ndarray, str]:
    """uint8 ``[N, T, H, W, 3]`` clips (N >= 3) to compare on: the first views of up to ``limit`` videos of
    ``check`` (a folder, list file or one video; padded with time-reversed copies), else seeded random clips. The
    graph is exported on the first two and checked on all N, so the dynamic batch size is checked too."""
    cfg = serving.data_config
    if check is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (3, cfg.num_frames, cfg.crop_size, cfg.crop_size, 3), dtype=np.uint8), "random"
    fs, path = storage.get_fs(check)
    one_video = fs.isfile(path) and check.rsplit(".", 1)[-1].lower() in VIDEO_SUFFIXES
    items = [InferInput(id=os.path.basename(check), path=check)] if one_video else open_source(check, store)
    clips = []
    for item in items:
        decoded = decode_input(item, cfg)
        if decoded.status == OK:
            clips.append(decoded.clip[0])
        if len(clips) == limit:
            break
    if not clips:
        raise InputError(f"--check {check}: no decodable video there to check parity on")
    videos = len(clips)
    while len(clips) < 3:  # export on a batch of 2 (1 would fix the batch size), check on another batch size too
        clips.append(clips[-1][::-1].copy())
    padded = f" + {len(clips) - videos} time-reversed copies" if len(clips) > videos else ""
    return np.stack(clips), f"{videos} videos of {check}{padded}"


def _parity(eager: tuple[Tensor, Tensor], other: tuple[np.ndarray, np.ndarray], inputs: str, n: int) -> dict:
    logits, gflops = (t.detach().float().numpy() for t in eager)
    return {
        "clips": n,
        "inputs": inputs,
        "max_abs_logit_diff": float(np.abs(logits - other[0]).max()),
        "max_abs_gflops_diff": float(np.abs(gflops - other[1]).max()),
        "top1_agree": float((logits.argmax(-1) == other[0].argmax(-1)).mean()),
        "tolerance": PARITY_TOLERANCE,
    }


def _export_onnx(graph: ServingGraph, example: Tensor, meta: dict[str, Any]) -> bytes:
    """The ONNX bytes of ``graph`` traced on ``example`` (opset 18, batch dimension dynamic), ``meta`` attached.

    The TorchScript-tracing exporter: ~10x faster than the dynamo one here, and exact for the fixed-shape paths
    (whose Python control flow does not depend on the data). It would silently bake ``remove``'s token counts
    into the graph, so ``remove`` never reaches it (:func:`export_model` refuses first)."""
    import warnings

    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python floats in the FLOP formulae: constants here
        torch.onnx.export(
            graph, (example,), buffer, dynamo=False, opset_version=18, input_names=["clips"],
            output_names=["logits", "gflops"],
            dynamic_axes={"clips": {0: "batch"}, "logits": {0: "batch"}, "gflops": {0: "batch"}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    entry = model.metadata_props.add()
    entry.key, entry.value = "hvt", json.dumps(meta)
    return model.SerializeToString()


def _run_onnx(data: bytes, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits, gflops = session.run(["logits", "gflops"], {"clips": clips})
    return logits, gflops


def _refuse_remove(err: BaseException) -> ExportError:
    return ExportError(
        "--format torch-export in 'remove' mode: torch.export cannot capture remove's data-dependent token counts "
        f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); export --halted-token-mode mask (same "
        "outputs, dense compute; --format onnx or torch-export), or serve remove eagerly with `hvt infer`"
    )


def _export_program(graph: ServingGraph, example: Tensor, mode: str) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=1024)
    noise = io.StringIO()  # on a failed capture torch prints the partial graph (hundreds of lines)
    try:
        with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
            return torch.export.export(graph, (example,), dynamic_shapes={"clips": {0: batch}})
    except Exception as err:
        log.debug("torch.export output:\n%s", noise.getvalue())  # torch raises many types for untraceable code (UserError, GuardOnDataDependent...)
        if mode == "remove" and graph.network.config.halting:
            raise _refuse_remove(err) from None
        raise


def export_model(
    model: str, *, out: str, fmt: str = "onnx", store: str | None = None, halted_token_mode: str | None = None,
    check: str | None = None,
) -> dict[str, Any]:
    """Export ``model`` (``NAME[@REF]``, ``REF`` or a path) to ``out`` in ``fmt`` and check parity with eager
    fp32 on CPU: on up to 4 videos of ``check`` (folder, list file or one video), else on random clips.

    Mode default: ``mask`` for ONNX (the fixed-shape path with ``remove``'s outputs; dense models and imported
    ``official`` weights keep theirs), ``remove`` for ``torch-export`` (refused with :class:`ExportError` when it
    cannot be captured). Returns ``{format, out, model, version, halted_token_mode, bytes, export_s, parity}``;
    ``parity``: ``max_abs_logit_diff``, ``max_abs_gflops_diff``, ``top1_agree``. Raises :class:`ExportError` when
    the exported graph disagrees with eager by more than ``1e-4`` in any logit."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    serving = load_serving_model(model, store=store)
    mode = _default_mode(fmt, serving.mode, halted_token_mode)
    if mode is not None and mode != serving.mode:
        serving.loaded.network.set_halted_token_mode(mode)
        serving = dataclasses.replace(serving, mode=mode)
    graph = ServingGraph(serving.loaded.network.float().eval()).eval()
    if fmt == "onnx" and serving.mode == "remove" and serving.loaded.network.config.halting:
        raise ExportError(
            "--format onnx in 'remove' mode: ONNX graphs have fixed shapes and remove's token counts depend on the "
            "video; export --halted-token-mode mask (the same outputs, dense compute), or --format torch-export"
        )
    clips, described = _check_clips(serving, check, store)
    example = torch.from_numpy(clips)
    meta = export_metadata(serving, fmt)
    start = time.monotonic()
    with torch.no_grad():
        eager = graph(example)
        if fmt == "onnx":
            data = _export_onnx(graph, example[:2], meta)
            other = _run_onnx(data, clips)
        else:
            program = _export_program(graph, example[:2], serving.mode)
            buffer = io.BytesIO()
            torch.export.save(program, buffer, extra_files={"hvt.json": json.dumps(meta)})
            data = buffer.getvalue()
            reloaded = torch.export.load(io.BytesIO(data)).module()
            other = tuple(t.detach().float().numpy() for t in reloaded(example))
    parity = _parity(eager, other, described, len(clips))
    if parity["max_abs_logit_diff"] > PARITY_TOLERANCE or parity["max_abs_gflops_diff"] > 1e-6:
        raise ExportError(f"--format {fmt}: the exported graph differs from eager (max |logit diff| "
                          f"{parity['max_abs_logit_diff']:.2e}, tolerance {PARITY_TOLERANCE}; max |GFLOPs diff| "
                          f"{parity['max_abs_gflops_diff']:.2e}); nothing written to {out}")
    storage.write_bytes(out, data)
    log.info("exported %s (%s mode) to %s: max |logit diff| %.2e on %s", serving.loaded.describe(), serving.mode,
             out, parity["max_abs_logit_diff"], described)
    return {"format": fmt, "out": out, "model": serving.loaded.describe(), "version": serving.loaded.version,
            "halted_token_mode": serving.mode, "bytes": len(data), "export_s": time.monotonic() - start,
            "parity": parity}
