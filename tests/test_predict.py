"""`hvt predict`: top-5 and GFLOPs of one real video from a registered model; clear errors for bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch

from hvt import registry
from hvt.data import DataConfig, VideoDecodeError, load_clip_from_path
from hvt.model import create_model
from hvt.predict import ModelLoadError, predict_video

CLASSES = ["abseiling", "baking", "climbing", "dancing", "eating", "fencing", "golfing"]
DATA = DataConfig(num_frames=8, frame_interval=4, train_short_side=(32, 40), test_short_side=32, crop_size=32)
MODEL = "haltingvt-nano-g05-b10"


def _payload() -> dict:
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=len(CLASSES), halt_center=1.0)  # low centre: tokens may halt early
    return {
        "model": model.state_dict(),
        "model_config": model.config.to_dict(),
        "classes": CLASSES,
        "data_config": DATA.model_dump(mode="json"),
    }


def register_tiny(store: str, name: str = "tiny-hvt") -> registry.RegistryVersion:
    """A registry version as `register_run` writes it, from an untrained nano model (no training needed)."""
    buffer = io.BytesIO()
    torch.save(_payload(), buffer)
    version = registry.register_version(
        store,
        name,
        files={"model.pt": buffer.getvalue(), "report.md": b"# tiny\n"},
        metrics={"val_top1": 0.5, "eval_split": "val", "eval_manifest_sha256": "x"},
        lineage={"run_name": "none"},
        created_at="2026-01-01T00:00:00+00:00",
    )
    registry.set_alias(store, name, version.version, reason="test")
    return version


def _hvt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvt.cli", *args], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("store"))
    register_tiny(path)
    return path


@pytest.fixture
def demo_video(realdata) -> str:
    return str(realdata / "videos" / "kinetics" / "mmaction2__demo_demo.mp4")


def test_predict_top5_matches_a_direct_forward_pass(store, demo_video):
    prediction = predict_video(demo_video, model="champion", store=store)
    assert (prediction.model, prediction.version) == ("tiny-hvt", "v1")
    assert len(prediction.top5) == 5
    probs = [p.prob for p in prediction.top5]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    # the same clip through the same weights, computed here without hvt.predict
    payload = _payload()
    model = create_model(MODEL, num_classes=len(CLASSES), halt_center=1.0).eval()
    model.load_state_dict(payload["model"])
    clip = torch.from_numpy(load_clip_from_path(demo_video, DATA))[None]  # [1, T, H, W, 3]
    with torch.no_grad():
        out = model(clip.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0)
    expected = out.logits.softmax(-1)[0]
    best = int(expected.argmax())
    assert prediction.top5[0].label == CLASSES[best]
    assert prediction.top5[0].prob == pytest.approx(float(expected[best]), rel=1e-4)
    assert prediction.gflops == pytest.approx(float(out.gflops[0]), rel=1e-6)
    assert 0 < prediction.gflops


def test_cli_text_and_json(store, demo_video):
    text = _hvt("predict", demo_video, "--store", store)
    assert text.returncode == 0, text.stderr
    assert "tiny-hvt v1" in text.stdout and "GFLOPs" in text.stdout
    assert text.stdout.count("%") == 5
    as_json = _hvt("predict", demo_video, "--store", store, "--model", "v1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert [set(item) for item in body["top5"]] == [{"label", "prob"}] * 5
    assert body["model"] == "tiny-hvt" and body["version"] == "v1"
    assert body["gflops"] > 0 and body["top5"][0]["label"] in CLASSES
    assert body["top5"][0]["label"] in text.stdout


def test_model_file_path_gives_the_same_answer(store, demo_video, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_payload(), path)
    from_file = predict_video(demo_video, model=str(path))
    from_registry = predict_video(demo_video, model="champion", store=store)
    assert from_file.version is None and from_file.model == "model.pt"
    assert [p.label for p in from_file.top5] == [p.label for p in from_registry.top5]


def test_corrupt_video_is_a_one_line_error(store, realdata):
    corrupt = str(realdata / "videos" / "other" / "decord__tests_test_data_corrupted.mp4")
    with pytest.raises(VideoDecodeError, match="cannot decode"):
        predict_video(corrupt, store=store)
    proc = _hvt("predict", corrupt, "--store", store)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("hvt predict: error:") and "corrupted.mp4" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_inputs_are_clear_errors(store, demo_video, tmp_path):
    with pytest.raises(VideoDecodeError, match="no such video"):
        predict_video(str(tmp_path / "absent.mp4"), store=store)
    with pytest.raises(ModelLoadError, match="no such file"):
        predict_video(demo_video, model=str(tmp_path / "absent.pt"))
    with pytest.raises(registry.RegistryError, match="no version 'v9'"):
        predict_video(demo_video, model="v9", store=store)
    with pytest.raises(ModelLoadError, match="no registered models"):
        predict_video(demo_video, store=str(tmp_path / "empty"))
    not_a_model = tmp_path / "junk.pt"
    not_a_model.write_bytes(b"not a torch file")
    proc = _hvt("predict", demo_video, "--model", str(not_a_model))
    assert proc.returncode == 2 and "cannot read it as a torch model file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_several_models_need_a_name(tmp_path, demo_video):
    store = str(tmp_path)
    register_tiny(store, "first")
    register_tiny(store, "second")
    with pytest.raises(ModelLoadError, match="--registry-name"):
        predict_video(demo_video, store=store)
    assert predict_video(demo_video, store=store, registry_name="second").model == "second"


def test_text_file_named_mp4_is_one_line_without_its_bytes(store, tmp_path):
    """Decoder noise never echoes the input: decord's logger used to print the whole file to stderr."""
    text = tmp_path / "notes.mp4"
    line = "this is a text file, not a video; secret-looking words: hunter2\n"
    text.write_text(line * 3000)  # ~200 KB
    proc = _hvt("predict", str(text), "--store", store)
    assert proc.returncode == 2
    assert "hunter2" not in proc.stderr and "text file" not in proc.stderr
    assert proc.stderr.strip().startswith("hvt predict: error:") and "notes.mp4" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
