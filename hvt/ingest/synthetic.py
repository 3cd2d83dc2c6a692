"""A synthetic video dataset whose class can only be told from motion.

Each clip shows one textured shape over a textured, slowly drifting background. The class is *how the shape
moves* (left, right, up, down, rotating either way, zooming in or out, shaking): its colour, texture, shape,
size, angle and position are drawn independently of the class, and the scene wraps around like a torus so that
the position in any single frame is uniform for every class. A single frame therefore carries no label
information, while two frames do. This is what lets a tiny HaltingVT really learn on a CPU, and what gives
halting redundant (background) tokens to drop.

The clips are real H.264 mp4 files (yuv420p, short keyframe interval) encoded by PyAV with one thread and the
bit-exact flags, so the same seed yields the same bytes. Alongside them go ``annotations.csv`` in Kinetics form
(``label,youtube_id,time_start,time_end,split``) and ``classes.txt`` (one class name per line).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from hvt import storage

log = logging.getLogger(__name__)

#: Class names in order; ``classes=N`` uses the first N. The first four differ in the *kind* of motion
#: (horizontal, vertical, rotation, scale); the next four are their mirror images, told apart only by the
#: direction of time, which a small model trained from scratch on a CPU learns much later than the kind.
MOTION_CLASSES: tuple[str, ...] = (
    "moving left",
    "moving up",
    "rotating clockwise",
    "zooming in",
    "moving right",
    "moving down",
    "rotating counterclockwise",
    "zooming out",
    "shaking horizontally",
    "shaking vertically",
)

CLIP_SECONDS = 10  # time_end - time_start in the CSV, as in Kinetics
GOP = 8  # keyframe interval: cheap random access at training time

# Object size as a fraction of the short side; zoom cycles through the same range so size says nothing.
_LOG_SCALE_RANGE = (np.log(0.55), np.log(1.45))
_RADIUS = 0.2  # object radius at scale 1, as a fraction of the short side
# Translation classes: (dx, dy) direction, and the share of the free room (frame minus object) travelled per clip.
_TRANSLATIONS = {"moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1), "moving down": (0, 1)}
_TRAVEL = (0.75, 1.0)


@dataclass(frozen=True)
class SyntheticDataset:
    root: str
    annotations_csv: str
    classes_txt: str
    class_names: list[str]
    num_videos: int
    videos_dir: str


@dataclass(frozen=True)
class _ClipSpec:
    class_index: int
    index: int  # within its class
    youtube_id: str
    time_start: int
    split: str

    @property
    def file_name(self) -> str:
        return f"{self.youtube_id}_{self.time_start:06d}_{self.time_start + CLIP_SECONDS:06d}.mp4"


def youtube_like_id(seed: int, class_index: int, index: int) -> str:
    """A deterministic 11-character id in YouTube's alphabet (``A-Za-z0-9-_``)."""
    digest = hashlib.sha256(f"hvt-synthetic/{seed}/{class_index}/{index}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:11]


def make_synthetic_dataset(
    out_dir: str,
    *,
    classes: int = 4,
    per_class: int = 40,
    seed: int = 0,
    frames: int = 32,
    size: tuple[int, int] = (112, 112),
    fps: int = 8,
    val_fraction: float = 0.25,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> SyntheticDataset:
    """Write ``classes * per_class`` motion clips plus ``annotations.csv`` and ``classes.txt`` under ``out_dir``.

    Args:
        out_dir: local folder or fsspec URL; videos go to ``<out_dir>/videos/``.
        classes: number of classes, the first ``classes`` of :data:`MOTION_CLASSES`.
        per_class: clips per class.
        seed: everything (content, ids, split) is a function of the seed; same seed, same bytes.
        frames: frames per clip.
        size: ``(width, height)`` in pixels, both even and at least 32.
        fps: frame rate written into the container.
        val_fraction: fraction of each class assigned to ``val`` (stratified), the rest ``train``.
        progress: called as ``progress(done, total)`` after each clip.
        workers: processes rendering and encoding clips at once (the bytes do not depend on it; each clip is a
            function of ``(seed, class, index)``). Files are written by the calling process.
    """
    _check_arguments(classes, per_class, frames, size, fps, val_fraction, workers)
    width, height = size
    names = list(MOTION_CLASSES[:classes])
    specs = _plan_clips(seed, classes, per_class, val_fraction)

    out_dir = out_dir if "://" in out_dir else storage.resolve_store(out_dir)
    videos_dir = storage.join(out_dir, "videos")
    storage.makedirs(videos_dir)
    total = len(specs)
    jobs = [(names[spec.class_index], (seed, spec.class_index, spec.index), frames, width, height, fps) for spec in specs]
    with _clip_encoder(workers) as encode:
        for done, (spec, video) in enumerate(zip(specs, encode(jobs), strict=True), start=1):
            storage.write_bytes(storage.join(videos_dir, spec.file_name), video)
            if progress is not None:
                progress(done, total)

    annotations_csv = storage.join(out_dir, "annotations.csv")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
    for spec in specs:
        writer.writerow(
            [names[spec.class_index], spec.youtube_id, spec.time_start, spec.time_start + CLIP_SECONDS, spec.split]
        )
    storage.write_text(annotations_csv, buf.getvalue())
    classes_txt = storage.join(out_dir, "classes.txt")
    storage.write_text(classes_txt, "".join(f"{name}\n" for name in names))
    log.info("wrote %d synthetic clips (%d classes) to %s", total, classes, out_dir)
    return SyntheticDataset(
        root=out_dir,
        annotations_csv=annotations_csv,
        classes_txt=classes_txt,
        class_names=names,
        num_videos=total,
        videos_dir=videos_dir,
    )


def _encoded_clip(job: tuple[str, tuple[int, int, int], int, int, int, int]) -> bytes:
    """One clip's mp4 bytes from ``(class name, rng seed words, frames, width, height, fps)``."""
    class_name, seed_words, frames, width, height, fps = job
    clip = render_clip(class_name, np.random.default_rng(list(seed_words)), frames=frames, width=width, height=height)
    return encode_h264(clip, fps=fps)


@contextlib.contextmanager
def _clip_encoder(workers: int) -> Iterator[Callable[[list], Iterator[bytes]]]:
    """``encode(jobs)`` -> mp4 bytes in job order: in this process for one worker, else in a pool of ``workers``
    spawned processes (spawned, not forked: the caller may be a Prefect flow or a Ray driver with threads)."""
    if workers == 1:
        yield lambda jobs: map(_encoded_clip, jobs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda jobs: pool.map(_encoded_clip, jobs, chunksize=8)


def _check_arguments(
    classes: int, per_class: int, frames: int, size: tuple[int, int], fps: int, val_fraction: float, workers: int
) -> None:
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not 1 <= classes <= len(MOTION_CLASSES):
        raise ValueError(f"classes must be between 1 and {len(MOTION_CLASSES)}, got {classes}")
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if frames < 2:
        raise ValueError(f"frames must be at least 2 (motion needs two frames), got {frames}")
    width, height = size
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError(f"size must be even and at least 32x32 (H.264 yuv420p), got {width}x{height}")
    if fps < 1:
        raise ValueError(f"fps must be positive, got {fps}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _plan_clips(seed: int, classes: int, per_class: int, val_fraction: float) -> list[_ClipSpec]:
    specs: list[_ClipSpec] = []
    for class_index in range(classes):
        rng = np.random.default_rng([seed, class_index, 1_000_003])
        n_val = int(round(per_class * val_fraction))
        if per_class >= 2:
            n_val = min(max(n_val, 1 if val_fraction > 0 else 0), per_class - 1)
        val_indices = set(rng.permutation(per_class)[:n_val].tolist())
        starts = rng.integers(0, 600, size=per_class)
        for index in range(per_class):
            specs.append(
                _ClipSpec(
                    class_index=class_index,
                    index=index,
                    youtube_id=youtube_like_id(seed, class_index, index),
                    time_start=int(starts[index]),
                    split="val" if index in val_indices else "train",
                )
            )
    return specs


# ---------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random texture (a few oriented sinusoids plus blurred noise) on a random base colour."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(30, 110, size=3).astype(np.float32)
    tex = np.zeros((height, width, 3), np.float32)
    for _ in range(4):
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(0.04, 0.18)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
        tex += wave[..., None] * rng.uniform(-8, 8, size=3).astype(np.float32)
    # Coarse noise blown up by repetition, then box-blurred: cheap and smooth enough to look like texture.
    coarse = rng.normal(0, 6, size=(height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    fine = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:height, :width]
    fine = (fine + np.roll(fine, 2, axis=0) + np.roll(fine, 2, axis=1) + np.roll(fine, (2, 2), axis=(0, 1))) / 4
    return np.clip(base + tex + fine, 0, 255)


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of object coordinates ``(u, v)`` (about [-1, 1]) in one of four asymmetric shapes."""
    if kind == 0:  # ellipse with an off-centre hole
        return (u**2 + (v / 0.65) ** 2 < 1.0) & ((u - 0.45) ** 2 + v**2 > 0.07)
    if kind == 1:  # triangle
        return (v > -0.7) & (v < 0.9 - 1.6 * np.abs(u) * 1.1)
    if kind == 2:  # L shape
        return ((np.abs(u) < 0.85) & (v > -0.85) & (v < -0.3)) | ((u > -0.85) & (u < -0.3) & (np.abs(v) < 0.85))
    # lopsided cross
    return ((np.abs(u) < 0.9) & (np.abs(v) < 0.25)) | ((np.abs(u) < 0.25) & (v > -0.9) & (v < 0.5))


def _trajectory(
    class_name: str, rng: np.random.Generator, frames: int, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre x, centre y, angle (radians) and log-scale for one motion class."""
    t = np.arange(frames, dtype=np.float64)
    cx = np.full(frames, rng.uniform(0, width))
    cy = np.full(frames, rng.uniform(0, height))
    angle = np.full(frames, rng.uniform(0, 2 * np.pi))
    lo, hi = _LOG_SCALE_RANGE
    log_scale = np.full(frames, rng.uniform(lo, hi))
    short = min(width, height)
    if class_name in _TRANSLATIONS:
        # The whole path stays inside the frame (no wrap-around mid-clip, which would read as a jump the other
        # way). The start is uniform over the feasible range, so the position at a uniformly random time has
        # the same symmetric distribution for every direction: one frame still says nothing about the class.
        dx, dy = _TRANSLATIONS[class_name]
        radius = _RADIUS * short * np.exp(log_scale[0])
        travel = rng.uniform(*_TRAVEL) * (short - 2 * radius)  # pixels over the whole clip
        step = travel / max(1, frames - 1)
        for axis_len, direction, centre in ((width, dx, cx), (height, dy, cy)):
            if direction == 0:
                continue
            low, high = radius, axis_len - radius - travel
            start = rng.uniform(low, max(low, high))
            path = start + step * t
            centre[:] = path if direction > 0 else axis_len - path
    elif class_name in ("rotating clockwise", "rotating counterclockwise"):
        omega = np.deg2rad(rng.uniform(7, 12))
        # Image y points down, so a growing angle turns clockwise on screen.
        angle = angle + (omega if class_name == "rotating clockwise" else -omega) * t
    elif class_name in ("zooming in", "zooming out"):
        rate = rng.uniform(0.022, 0.032) * (1 if class_name == "zooming in" else -1)
        # A sawtooth through the same size range from a random phase: no size is typical of either class.
        log_scale = lo + np.mod(log_scale - lo + rate * t, hi - lo)
    elif class_name in ("shaking horizontally", "shaking vertically"):
        amplitude = rng.uniform(0.05, 0.09) * short
        period = rng.uniform(6, 10)
        offset = amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        if class_name == "shaking horizontally":
            cx = cx + offset
        else:
            cy = cy + offset
    else:
        raise ValueError(f"unknown motion class {class_name!r}; known: {', '.join(MOTION_CLASSES)}")
    return cx, cy, angle, log_scale


def render_clip(class_name: str, rng: np.random.Generator, *, frames: int, width: int, height: int) -> np.ndarray:
    """Render one clip of ``class_name`` as uint8 ``[T, H, W, 3]``; all nuisance factors come from ``rng``."""
    pad = int(np.ceil(0.6 * frames)) + 2  # room for the background drift
    background = _background(rng, height + 2 * pad, width + 2 * pad)
    drift_angle = rng.uniform(0, 2 * np.pi)
    drift_speed = rng.uniform(0.1, 0.5)  # pixels per frame: slow next to the object
    # A bright object with faint stripes (they make rotation visible) on a darker, low-contrast background:
    # the object changes the mean of the patches it covers, which a linear patch embedding sees at once, so
    # what is left to learn is how it moves. (Light/dark stripes averaging to the background's mid-tone made
    # the object nearly invisible to 16x16 patch means, and a small ViT learned nothing in 1,400 steps.)
    colour_a = rng.uniform(210, 255, size=3).astype(np.float32)
    colour_b = rng.uniform(170, 215, size=3).astype(np.float32)
    stripe_freq = rng.uniform(2.5, 4.5) * np.pi
    stripe_phase = rng.uniform(0, 2 * np.pi)
    kind = int(rng.integers(0, 4))
    radius = _RADIUS * min(width, height)
    cx, cy, angle, log_scale = _trajectory(class_name, rng, frames, width, height)

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    clip = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        ox = int(round(pad + np.cos(drift_angle) * drift_speed * i))
        oy = int(round(pad + np.sin(drift_angle) * drift_speed * i))
        frame = background[oy : oy + height, ox : ox + width].copy()
        # Offsets on a torus: the object leaving one edge enters at the opposite one.
        dx = np.mod(xx - cx[i] + width / 2, width) - width / 2
        dy = np.mod(yy - cy[i] + height / 2, height) - height / 2
        cos, sin = np.cos(angle[i]), np.sin(angle[i])
        scale = radius * np.exp(log_scale[i])
        u = (cos * dx + sin * dy) / scale
        v = (-sin * dx + cos * dy) / scale
        mask = _shape_mask(kind, u, v)
        stripes = (np.sin(stripe_freq * u + stripe_phase) > 0)[..., None]
        texture = np.where(stripes, colour_a, colour_b)
        frame[mask] = texture[mask]
        clip[i] = frame.astype(np.uint8)
    return clip


# ---------------------------------------------------------------- encoding


def encode_h264(clip: np.ndarray, *, fps: int, gop: int = GOP, crf: int = 20) -> bytes:
    """Encode uint8 ``[T, H, W, 3]`` RGB frames as an H.264 yuv420p mp4, byte-for-byte reproducibly.

    One encoder thread (x264's threaded lookahead is not deterministic across runs) and the ``bitexact``
    flags (no library version strings or timestamps in the container).
    """
    import av  # imported where clips are encoded: listing the motion classes needs no codec library

    frames, height, width, _ = clip.shape
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": "0",
            "flags": "+bitexact",
            "threads": "1",
        }
        for i in range(frames):
            # RGB -> YUV here, on one thread: left to the encoder, swscale picks its thread count itself and the
            # bytes then vary now and then between runs and processes (seen in Nov 2026)
            frame = av.VideoFrame.from_ndarray(clip[i], format="rgb24").reformat(format="yuv420p", threads=1)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()
