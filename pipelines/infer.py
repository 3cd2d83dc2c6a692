"""Flow `infer-haltingvt`: a registered model over a video archive -> Parquet (``hvt.serve.infer``), with progress
and a summary artifact. The same library call as `hvt infer`; resumable: a re-run finishes the missing parts."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from pydantic import Field

from hvt import storage
from hvt.serve.infer import InferConfig, run_infer
from hvt.train.ray_env import ensure_ray
from pipelines.credentials import apply_store_credentials
from pipelines.shard import _artifact_key


def default_out(store: str, model: str, source: str) -> str:
    """``{store}/inference/<model>/<source>`` (both made path-safe): where a run writes when no ``out`` is given."""
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"

    return storage.join(store, "inference", safe(model), safe(source))


def _summary_markdown(summary: dict[str, Any]) -> str:
    model = f"{summary['model']} {summary['version']}" if summary["version"] else summary["model"]
    lines = [
        f"# {model} over `{summary['source']}`",
        "",
        f"Output: `{summary['out']}` ({summary['halted_token_mode']} mode, views {summary['views']})",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key in ("videos", "ok", "failures", "videos_computed", "parts", "parts_skipped", "videos_per_s",
                "mean_gflops_per_video", "wall_s"):
        value = summary[key]
        lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    for status, count in summary["failures_by_status"].items():
        lines.append(f"| failed: {status} | {count} |")
    return "\n".join(lines) + "\n"


@flow(name="infer-haltingvt", log_prints=True)
def infer_haltingvt(
    source: str,
    model: str = "champion",
    out: str | None = None,
    store: str | None = None,
    views: Annotated[str | None, Field(pattern=r"^[1-9]\d*x[13]$")] = None,
    top_k: Annotated[int, Field(ge=1)] = 5,
    halted_token_mode: Literal["official", "mask", "remove"] | None = None,
    batch_size: Annotated[int, Field(ge=1)] = 8,
    part_size: Annotated[int, Field(ge=1)] = 256,
    gpu: bool = False,
    overwrite: bool = False,
    ray_address: str | None = None,
    credentials_block: str | None = None,
) -> dict[str, Any]:
    """Classify every video of ``source`` (folder, ``s3://`` prefix, list file, ``dataset:NAME[@VERSION]/SPLIT``)
    with ``model`` (``NAME[@REF]``, ``REF`` or a model.pt path) and write one Parquet row per input video.

    ``out``: a folder of parts or a ``.parquet`` file; None = ``{store}/inference/<model>/<source>``. ``store``:
    None = $HVT_STORE, else ./hvt-store. ``ray_address``: None = a local Ray. ``gpu``: one model actor per GPU,
    bf16. Returns the summary (videos, failures, videos/s, mean GFLOPs/video, wall time)."""
    logger = get_run_logger()
    apply_store_credentials(credentials_block)
    store = storage.resolve_store(store)
    out = out or default_out(store, model, source)
    ensure_ray(ray_address)
    config = InferConfig(source=source, out=out, model=model, store=store, views=views, top_k=top_k,
                         halted_token_mode=halted_token_mode, batch_size=batch_size, part_size=part_size, gpu=gpu,
                         overwrite=overwrite, executor="ray")
    progress_id = create_progress_artifact(progress=0.0, description=f"videos of {source} done")

    def report(p: dict[str, Any]) -> None:
        update_progress_artifact(progress_id, progress=100.0 * p["done"] / max(1, p["total"]))

    summary = run_infer(config, progress=report)
    create_markdown_artifact(
        key=f"inference-{_artifact_key(summary['model'])}",
        markdown=_summary_markdown(summary),
        description=f"{summary['model']} over {source}",
    )
    logger.info("%d videos (%d failed) -> %s: %.2f videos/s, %.4f GFLOPs/video", summary["videos"],
                summary["failures"], out, summary["videos_per_s"], summary["mean_gflops_per_video"])
    return summary
