"""See what the model sees: decode dataset samples through the training-time path and write them to a folder.

For each sample, ``<key>.png`` (a contact sheet: one row per view, one column per clip frame, the source frame
index under each) and ``<key>.npz`` with ``clip`` (uint8 ``[T,H,W,3]``, or ``[V,T,H,W,3]`` with several views)
and ``frame_indices`` (int64 ``[T]`` or ``[V,T]``: the shown source frame each clip frame came from, 0 = first).
Decoding is :class:`hvt.data.decode.ClipLoader`, the code the Ray decode actors run: the same sampling, the same
test transform, or with ``training`` the same random training transform with the same random draws (the
stream of ``(seed, epoch, key)`` the decode actors use), so a browse is reproducible.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from hvt import storage
from hvt.data.config import DataConfig
from hvt.data.decode import ClipLoader, sample_rng
from hvt.data.shards import ShardSample, iter_tar_samples, resolve_shard_urls

log = logging.getLogger(__name__)

_GAP = 2  # pixels between frames of the contact sheet
_CAPTION = 12  # pixels of caption under each row


@dataclass
class BrowsedSample:
    """One sample as browsed; ``png``/``npz`` are None when it failed to decode (``error`` says why)."""

    key: str
    label: int
    label_name: str | None
    frame_indices: list
    decode_ok: bool
    png: str | None
    npz: str | None
    error: str | None = None


def iter_split_samples(version_url: str, split: str) -> Iterator[ShardSample]:
    """Every sample of ``split`` of a dataset version, shard by shard in manifest order, as training reads them."""
    for url in resolve_shard_urls(version_url, split):
        fs, path = storage.get_fs(url)
        with fs.open(path, "rb") as handle:
            yield from iter_tar_samples(handle, url)


def _file_stem(key: str) -> str:
    """The key as a file name in the output folder (keys written by ``hvt shard`` are already safe)."""
    stem = key.replace("/", "_").replace(os.sep, "_")
    return "_" + stem if stem.startswith(".") or not stem else stem


def contact_sheet(clip: np.ndarray, frame_indices: np.ndarray) -> np.ndarray:
    """uint8 ``[T,H,W,3]`` / ``[V,T,H,W,3]`` -> one uint8 RGB image: a row per view, frames left to right, each
    row captioned with the source frame indices."""
    from PIL import Image, ImageDraw

    views = clip.reshape(-1, *clip.shape[-4:])  # [V,T,H,W,3]
    indices = np.asarray(frame_indices).reshape(views.shape[0], -1)  # [V,T]
    v, t, h, w, _ = views.shape
    sheet = np.full((v * (h + _CAPTION + _GAP), t * (w + _GAP), 3), 255, np.uint8)
    for i in range(v):
        top = i * (h + _CAPTION + _GAP)
        for j in range(t):
            sheet[top : top + h, j * (w + _GAP) : j * (w + _GAP) + w] = views[i, j]
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for i in range(v):
        for j in range(t):
            draw.text((j * (w + _GAP) + 1, i * (h + _CAPTION + _GAP) + h), str(int(indices[i, j])), fill=(0, 0, 0))
    return np.asarray(image)


def browse_samples(
    version_url: str,
    split: str,
    out_dir: str,
    config: DataConfig,
    *,
    training: bool = False,
    limit: int | None = None,
    epoch: int = 0,
) -> tuple[list[BrowsedSample], int]:
    """Decode up to ``limit`` samples of ``split`` and write their PNG and NPZ into ``out_dir`` (a local folder).

    With ``training``, each sample's augmentation is drawn from the stream training uses for it in ``epoch``
    (:func:`hvt.data.decode.sample_rng`). Returns the browsed samples and the number that failed to decode
    (counted, never raised: a browse of a dataset with a bad sample still shows the others).
    """
    from PIL import Image

    out_dir = os.path.abspath(out_dir)  # the paths in the report work from any folder
    os.makedirs(out_dir, exist_ok=True)
    loader = ClipLoader(config)
    browsed: list[BrowsedSample] = []
    failures = 0
    for sample in iter_split_samples(version_url, split):
        if limit is not None and len(browsed) >= limit:
            break
        label_name = sample.meta.get("label_name") if sample.meta else None
        try:
            if sample.read_error:
                raise ValueError(sample.read_error)
            rng = sample_rng(config.seed, epoch, sample.key) if training else None  # the training stream
            hint = (int(sample.meta.get("height") or 0), int(sample.meta.get("width") or 0)) if sample.meta else None
            out = loader.load(sample.video, training, rng, hint)  # the size hint the decode actors get too
        except Exception as err:  # noqa: BLE001 - counted like a training-time decode failure
            failures += 1
            message = " ".join(str(err).split())[:300]
            log.warning("sample %r does not decode: %s", sample.key, message)
            browsed.append(BrowsedSample(sample.key, sample.label, label_name, [], False, None, None, message))
            continue
        stem = os.path.join(out_dir, _file_stem(sample.key))
        np.savez(stem + ".npz", clip=out["clip"], frame_indices=out["frame_indices"].astype(np.int64))
        Image.fromarray(contact_sheet(out["clip"], out["frame_indices"])).save(stem + ".png")
        browsed.append(BrowsedSample(sample.key, sample.label, label_name, out["frame_indices"].tolist(), True,
                                     stem + ".png", stem + ".npz"))
    return browsed, failures


def browse_report(browsed: list[BrowsedSample], failures: int) -> dict:
    """The ``--json`` form: ``{"samples": [{key, label, label_name, frame_indices, decode_ok, png, npz}],
    "decode_failures": N}``."""
    fields = ("key", "label", "label_name", "frame_indices", "decode_ok", "png", "npz")
    return {"samples": [{k: asdict(b)[k] for k in fields} for b in browsed], "decode_failures": failures}
