"""`hvt infer` in-process (no Ray): one row per input with the right status, the top-1 of `hvt predict`, resumable
parts that end equal to an unbroken run, sources (folder, list file, dataset split), one-line errors."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile

import pyarrow.parquet as pq
import pytest
from shared_data import shared_path
from test_predict import register_tiny

from hvt.data import DataConfig
from hvt.errors import InputError
from hvt.predict import load_model, predict_video
from hvt.serve.infer import InferConfig, local_parts_scorer, read_rows, run_infer
from hvt.serve.sources import SourceError, open_source

REAL = ("kinetics/mmaction2__tests_data_rawvideo_dataset_part_0.mp4", "ucf101/tiny-ucf101__v_Basketball_g01_c01.avi",
        "ucf101/kinetics-i3d__v_CricketShot_g04_c01_rgb.gif", "other/decord__tests_test_data_corrupted.mp4")
HOSTILE = ("frame_index_h264.mp4", "vp9.webm", "h264_bframes.avi", "editlist_cut.mp4", "av1.mp4",
           "rotated_minus90.mp4", "two_seconds.mp4")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("store"))
    register_tiny(path)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> dict[str, str]:
    """A folder (with a subfolder) of real clips, the frame-coded hostile inputs, a corrupt file, a GIF, a text file
    named .mp4 and a file that is no video at all: relative id -> expected status."""
    videos, inputs = shared_path("realdata", "videos"), shared_path("inputs")
    root = tmp_path_factory.mktemp("archive")
    expected = {}
    for rel in REAL:
        (root / "real").mkdir(exist_ok=True)
        shutil.copy(videos / rel, root / "real" / rel.split("/")[-1])
        expected[f"real/{rel.split('/')[-1]}"] = "undecodable" if "corrupted" in rel else "ok"
    for name in HOSTILE:
        (root / "hostile" / "deep").mkdir(parents=True, exist_ok=True)
        shutil.copy(inputs / name, root / "hostile" / "deep" / name)
        expected[f"hostile/deep/{name}"] = "ok"
    (root / "notes.mp4").write_text("a text file, not a video\n" * 200)
    expected["notes.mp4"] = "undecodable"
    (root / "README").write_text("not a video\n")
    expected["README"] = "unsupported"
    (root / "empty.mkv").write_bytes(b"")
    expected["empty.mkv"] = "unreadable"
    (root / ".hidden.mp4").write_bytes(b"skipped: hidden files are not inputs")
    return {"root": str(root), **expected}


def _config(source: str, out: str, store: str, **kw) -> InferConfig:
    return InferConfig(source=source, out=out, model="champion", store=store, executor="local", batch_size=3,
                       part_size=kw.pop("part_size", 4), **kw)


@pytest.fixture(scope="module")
def unbroken(archive, store, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out") / "unbroken")
    summary = run_infer(_config(archive["root"], out, store))
    return summary, read_rows(out).to_pylist()


def test_one_row_per_input_with_its_status(archive, unbroken):
    summary, rows = unbroken
    expected = {k: v for k, v in archive.items() if k != "root"}
    # the fixed order: a folder's files (names sorted), then its subfolders depth first
    order = ["README", "empty.mkv", "notes.mp4", *[f"hostile/deep/{n}" for n in sorted(HOSTILE)],
             *sorted(f"real/{r.split('/')[-1]}" for r in REAL)]
    assert [r["id"] for r in rows] == order
    assert {r["id"]: r["status"] for r in rows} == expected
    assert len(rows) == len(expected) == summary["videos"]
    assert summary["failures"] == sum(s != "ok" for s in expected.values())
    for row in rows:
        if row["status"] == "ok":
            assert len(row["labels"]) == len(row["probs"]) == 5 and row["probs"] == sorted(row["probs"], reverse=True)
            assert row["top1"] == row["labels"][0] and row["gflops"] > 0 and row["views"] == 1
            assert row["gflops_per_view"] == [pytest.approx(row["gflops"])]
            assert 2 < row["mean_halting_depth"] <= 4  # nano: 2 Glimpser blocks, halting in blocks 3-4
            assert row["reason"] == "" and row["halted_token_mode"] == "remove" and row["version"] == "v1"
        else:
            assert row["reason"] and row["top1"] is None and row["gflops"] is None
    assert summary["mean_gflops_per_video"] == pytest.approx(
        sum(r["gflops"] for r in rows if r["status"] == "ok") / summary["ok"])


def test_top1_equals_hvt_predict_on_each_file(archive, store, unbroken):
    _, rows = unbroken
    loaded = load_model("champion", store=store)  # what `hvt predict --model champion` loads, once
    for row in rows:
        if row["status"] != "ok":
            continue
        prediction = predict_video(row["path"], model=loaded)
        assert row["top1"] == prediction.top5[0].label, row["id"]
        assert row["top1_prob"] == pytest.approx(prediction.top5[0].prob, abs=1e-5), row["id"]
        assert row["gflops"] == pytest.approx(prediction.gflops, rel=1e-6), row["id"]


def test_killed_run_rerun_equals_unbroken(archive, store, unbroken, tmp_path):
    out = str(tmp_path / "resumed")
    config = _config(archive["root"], out, store)
    calls = []

    def dies_after_two_parts(cfg, serving):
        score = local_parts_scorer(cfg, serving)

        def parts(window):
            for index, rows in score(window):
                if len(calls) == 2:
                    raise KeyboardInterrupt("killed")
                calls.append(index)
                yield index, rows

        return parts

    with pytest.raises(KeyboardInterrupt):
        run_infer(config, parts_scorer=dies_after_two_parts)
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["_job.json", "part-00000.parquet",
                                                                         "part-00001.parquet"]
    summary = run_infer(config)
    assert summary["parts_skipped"] == 2 and summary["videos_computed"] == unbroken[0]["videos"] - 8
    assert read_rows(out).to_pylist() == unbroken[1]
    again = run_infer(config)  # idempotent: nothing left to do, same rows
    assert again["videos_computed"] == 0 and read_rows(out).to_pylist() == unbroken[1]


def test_other_job_in_out_is_refused_and_overwrite_starts_over(archive, store, tmp_path):
    out = str(tmp_path / "job")
    run_infer(_config(archive["root"] + "/hostile", out, store))
    with pytest.raises(InputError, match="another job .*top_k.*--overwrite"):
        run_infer(_config(archive["root"] + "/hostile", out, store, top_k=2))
    summary = run_infer(_config(archive["root"] + "/hostile", out, store, top_k=2, overwrite=True))
    assert summary["videos_computed"] == len(HOSTILE)
    assert {len(r["labels"]) for r in read_rows(out).to_pylist()} == {2}
    # a model file changed in place is another job too: its weights are named by their sha256
    import torch

    weights = tmp_path / "model.pt"
    shutil.copy(f"{store}/registry/tiny-hvt/v1/model.pt", weights)
    by_path = InferConfig(source=archive["root"] + "/hostile/deep", out=str(tmp_path / "by-path"), model=str(weights),
                          executor="local", part_size=4)
    run_infer(by_path)
    payload = torch.load(weights, weights_only=True)
    payload["model"]["head.bias"] += 1.0
    torch.save(payload, weights)
    with pytest.raises(InputError, match="weights_sha256"):
        run_infer(by_path)


def test_list_file_and_single_parquet_file_via_cli(archive, store, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# two videos and a missing one\n{archive['root']}/hostile/deep/vp9.webm\n\n"
                       f"{archive['root']}/nowhere.mp4\n{archive['root']}/hostile/deep/av1.mp4\n")
    out = tmp_path / "preds.parquet"
    proc = subprocess.run([sys.executable, "-m", "hvt.cli", "infer", str(listing), "--store", store, "--out", str(out),
                           "--local", "--views", "2x1", "--top-k", "3", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert (summary["videos"], summary["ok"], summary["failures_by_status"]) == (3, 2, {"missing": 1})
    assert "infer: 3/3 videos" in proc.stderr  # progress
    rows = pq.read_table(out).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "missing", "ok"]
    assert rows[0]["views"] == 2 and len(rows[0]["gflops_per_view"]) == 2 and len(rows[0]["labels"]) == 3
    assert rows[0]["gflops"] == pytest.approx(sum(rows[0]["gflops_per_view"]))


def _tar(samples: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in samples.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_dataset_split_source(store, tmp_path):
    inputs = shared_path("inputs")
    version = tmp_path / "datasets" / "toy" / "v1"
    version.mkdir(parents=True)
    video = (inputs / "frame_index_h264.mp4").read_bytes()
    meta = json.dumps({"label": 0}).encode()
    (version / "val-000000.tar").write_bytes(_tar({"a.mp4": video, "a.json": meta, "b.json": meta}))
    (version / "manifest.json").write_text(json.dumps({
        "classes": ["x"], "splits": {"val": {"samples": 2, "shards": [{"path": "val-000000.tar", "samples": 2}]}}}))
    source = open_source("dataset:toy@v1/val", str(tmp_path))
    assert source.count() == 2
    out = str(tmp_path / "out")
    summary = run_infer(InferConfig(source="dataset:toy@v1/val", out=out, model=f"{store}/registry/tiny-hvt/v1/model.pt",
                                    store=str(tmp_path), executor="local"))
    rows = read_rows(out).to_pylist()
    assert [(r["id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "unreadable")]
    assert "no video member" in rows[1]["reason"] and summary["videos"] == 2


def test_bad_inputs_are_one_line_errors(store, tmp_path, capsys):
    from hvt.cli import main

    with pytest.raises(SourceError, match="no such folder or list file"):
        open_source(str(tmp_path / "absent"))
    with pytest.raises(SourceError, match="dataset:NAME"):
        open_source("dataset:toy")
    for args, expected in (([str(tmp_path / "absent")], "hvt infer: error: SOURCE"),
                           ([str(tmp_path), "--views", "2x2"], "hvt infer: error: --views"),
                           ([str(tmp_path), "--model", "v7"], "hvt infer: error: model 'tiny-hvt' has no version 'v7'")):
        assert main(["infer", *args, "--store", store, "--out", str(tmp_path / "o"), "--local"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(expected) and "Traceback" not in "\n".join(err), err


def test_object_store_prefix_is_listed_one_folder_at_a_time(store, tmp_path):
    """A prefix on an fsspec object store (memory:// here, s3:// in production): sorted, recursive, hidden skipped."""
    import fsspec

    inputs = shared_path("inputs")
    fs = fsspec.filesystem("memory")
    fs.pipe({"/hvt-bucket/clips/b.mp4": (inputs / "frame_index_h264.mp4").read_bytes(),
             "/hvt-bucket/clips/a/x.webm": (inputs / "vp9.webm").read_bytes(),
             "/hvt-bucket/clips/.partial.mp4": b"", "/hvt-bucket/clips/c.mp4": b"not a video"})
    try:
        calls = []
        listing = fs.ls
        fs.ls = lambda path, detail=True, **kw: calls.append(path) or listing(path, detail=detail, **kw)
        source = open_source("memory://hvt-bucket/clips")
        assert [(i.id, i.path) for i in source] == [
            ("b.mp4", "memory:///hvt-bucket/clips/b.mp4"), ("c.mp4", "memory:///hvt-bucket/clips/c.mp4"),
            ("a/x.webm", "memory:///hvt-bucket/clips/a/x.webm")]
        assert calls == ["/hvt-bucket/clips", "/hvt-bucket/clips/a"]  # one listing call per folder
        del fs.ls
        summary = run_infer(_config("memory://hvt-bucket/clips", str(tmp_path / "out"), store))
        rows = read_rows(str(tmp_path / "out")).to_pylist()
        assert [(r["id"], r["status"]) for r in rows] == [("b.mp4", "ok"), ("c.mp4", "undecodable"),
                                                          ("a/x.webm", "ok")]
        assert summary["ok"] == 2
    finally:
        fs.rm("/hvt-bucket", recursive=True)


def test_sigkilled_cli_run_rerun_equals_unbroken(archive, store, tmp_path):
    """A real kill (SIGKILL, mid-job) of `hvt infer`, then the same command again: the rows of an unbroken run."""
    import os
    import signal
    import time

    source = archive["root"] + "/hostile"
    unbroken, out = str(tmp_path / "unbroken"), tmp_path / "killed"
    run_infer(_config(source, unbroken, store, part_size=2))
    command = [sys.executable, "-m", "hvt.cli", "infer", source, "--store", store, "--out", str(out), "--local",
               "--part-size", "2", "--batch-size", "3"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "part-00000.parquet").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # killed mid-way: the last part is missing (a part being written at the kill is only a .tmp- file)
    done = sorted(p.name for p in out.iterdir() if p.name.startswith("part-") and p.name.endswith(".parquet"))
    assert "part-00003.parquet" not in done, done
    again = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["parts_skipped"] == len(done) and summary["videos"] == len(HOSTILE)
    assert read_rows(str(out)).to_pylist() == read_rows(unbroken).to_pylist()


def test_symlink_loops_and_unlistable_folders_are_no_crash(tmp_path, monkeypatch):
    """A link back up the tree is followed once (no endless walk); a folder that cannot be listed is a row with its
    reason, not a traceback or a silent gap."""
    import fsspec

    from hvt.serve.scoring import decode_input

    (tmp_path / "a" / "locked").mkdir(parents=True)
    shutil.copy(shared_path("inputs", "vp9.webm"), tmp_path / "a" / "clip.webm")
    (tmp_path / "a" / "up").symlink_to("..")
    (tmp_path / "alias").symlink_to("a")
    local = fsspec.filesystem("file")
    listing = type(local).ls

    def ls(self, path, detail=True, **kw):
        if path.rstrip("/").endswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return listing(self, path, detail=detail, **kw)

    monkeypatch.setattr(type(local), "ls", ls)
    items = list(open_source(str(tmp_path)))
    assert [i.id for i in items] == ["a/clip.webm", "a/locked"]
    assert "cannot list this folder (PermissionError" in items[1].read_error
    decoded = decode_input(items[1], DataConfig(num_frames=8, frame_interval=4, train_short_side=(32, 40),
                                                test_short_side=32, crop_size=32))
    assert decoded.status == "unreadable" and "cannot list" in decoded.reason
