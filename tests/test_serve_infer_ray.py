"""`hvt infer` on Ray Data (decode tasks + a model actor) and the `infer-haltingvt` flow: the same rows as the
in-process run, one per input, and a summary artifact. One local Ray for the module."""

from __future__ import annotations

import shutil

import pytest
from shared_data import shared_path
from test_predict import register_tiny

from hvt.serve.infer import InferConfig, read_rows, run_infer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

INPUTS = ("frame_index_h264.mp4", "h264_bframes.avi", "editlist_cut.mp4", "vp9.webm")


@pytest.fixture(scope="module")
def ray_local(shared_ray):
    """The test process's local Ray (tests/conftest.py: shared_ray)."""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("store"))
    register_tiny(path)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("archive")
    (root / "sub").mkdir()
    for name in INPUTS:
        shutil.copy(shared_path("inputs", name), root / "sub" / name)
    videos = shared_path("realdata", "videos")
    shutil.copy(videos / "other" / "decord__tests_test_data_corrupted.mp4", root / "corrupted.mp4")
    shutil.copy(videos / "ucf101" / "kinetics-i3d__v_CricketShot_g04_c01_rgb.gif", root / "cricket.gif")
    (root / "notes.txt").write_text("not a video\n")
    return str(root)


def _comparable(rows: list[dict]) -> list[tuple]:
    return [(r["id"], r["status"], r["top1"], r["labels"], r["gflops"], r["views"]) for r in rows]


def test_flow_on_ray_gives_the_in_process_rows_and_publishes_a_summary(ray_local, store, archive, tmp_path):
    """The flow (Ray Data: decode tasks, a model actor, batches of 2, two parts) writes one Parquet file with the
    rows the in-process executor writes, and the summary artifact."""
    import pyarrow.parquet as pq
    from prefect.artifacts import Artifact

    from pipelines.infer import infer_haltingvt

    local = run_infer(InferConfig(source=archive, out=str(tmp_path / "local"), store=store, executor="local",
                                  part_size=4, batch_size=2))
    out = str(tmp_path / "flow.parquet")
    summary = infer_haltingvt(source=archive, model="tiny-hvt@champion", out=out, store=store, part_size=4,
                              batch_size=2)
    assert (summary["videos"], summary["failures"], summary["parts"]) == (7, 2, 2) == (local["videos"], 2, 2)
    rows_ray, rows_local = pq.read_table(out).to_pylist(), read_rows(str(tmp_path / "local")).to_pylist()
    assert {r["id"]: r["status"] for r in rows_ray} == {
        "corrupted.mp4": "undecodable", "cricket.gif": "ok", "notes.txt": "unsupported",
        **{f"sub/{n}": "ok" for n in INPUTS}}
    assert _comparable(rows_ray) == _comparable(rows_local)
    for a, b in zip(rows_ray, rows_local, strict=True):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5) and a["reason"] == b["reason"]
    artifact = Artifact.get("inference-tiny-hvt")
    assert artifact is not None and "| videos | 7 |" in artifact.data
