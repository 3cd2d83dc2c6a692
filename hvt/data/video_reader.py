"""The training decoder itself: decord reading a video's frames from memory, quietly, with one-line errors.

Kept apart from the augmentation code: shard-time checks (``hvt.ingest.framecheck``) read through exactly this
code, so what the check accepts is what training will read.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

_decord_quiet = False


class VideoDecodeError(RuntimeError):
    """The bytes are not a video decord can read, or the frames a clip needs cannot be decoded."""


def quiet_decord():  # noqa: ANN201 - the decord module
    """The decord module, its FFmpeg log level lowered to errors on first use."""
    global _decord_quiet
    import decord

    if not _decord_quiet:  # FFmpeg's per-frame complaints about a corrupt file would flood the worker logs
        decord.logging.set_level(decord.logging.ERROR)
        _decord_quiet = True
    return decord


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2 while decord runs: its C++ logger prints the whole input (the bytes of a text
    file named ``.mp4``) before raising. The exception still carries the message, which we shorten ourselves."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decoder_message(err: BaseException) -> str:
    """One printable line from a decoder exception, bounded: never the input's bytes."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[-1] if lines else repr(err)
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\]\s*|\S+\.cc:\d+:\s*", "", text)  # decord's clock and source line
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return f"{type(err).__name__}: {text}"[:300]


@contextlib.contextmanager
def open_video(data: bytes, num_threads: int = 1, width: int = -1, height: int = -1) -> Iterator[Any]:
    """A ``decord.VideoReader`` over ``data`` in memory, the training decoder. While it is open FFmpeg's stderr
    is silenced, and any decoder error (opening or reading) becomes a one-line :class:`VideoDecodeError`.
    ``width``/``height`` (both > 0): frames come out rescaled to that size inside the decoder (FFmpeg's scaler,
    in the same pass as the colour conversion), -1: as stored."""
    if not data:
        raise VideoDecodeError("empty video bytes")
    decord = quiet_decord()
    reader = None
    try:
        with stderr_silenced():
            reader = decord.VideoReader(
                io.BytesIO(data), ctx=decord.cpu(0), width=width, height=height, num_threads=num_threads
            )
            yield reader
    except VideoDecodeError:
        raise
    except Exception as err:  # decord raises DECORDError / RuntimeError with FFmpeg's text
        raise VideoDecodeError(decoder_message(err)) from None
    finally:
        reader = None  # drop the decoder (and its buffers) before the next video


def read_frames(data: bytes, indices: list[int], num_threads: int = 1) -> tuple[int, np.ndarray]:
    """The training decoder's view of a video: its frame count and uint8 ``[len(indices), H, W, 3]`` at
    ``indices`` (sorted, unique), read as :func:`hvt.data.decode.decode_frames` reads them (:func:`open_video`).
    Raises ``VideoDecodeError``. Used at shard time to check the training decoder against a reference decode."""
    with open_video(data, num_threads) as reader:
        num_frames = len(reader)
        frames = reader.get_batch(list(indices)).asnumpy() if indices else np.zeros((0, 1, 1, 3), np.uint8)
    return num_frames, frames
