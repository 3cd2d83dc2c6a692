"""`hvt export`: ONNX and torch.export artefacts match eager within 1e-4 on real clips, carry classes, input spec
and the GFLOPs output, load without this package; `remove` is refused where it cannot be captured, naming what
to use. Models: the released-layout fidelity fixture (imported, `official`) and a briefly trained micro model."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from shared_data import shared_path

from hvt import registry
from hvt.cli import main
from hvt.data import DataConfig
from hvt.imports import overrides_from_released_config
from hvt.model import create_model
from hvt.serve.export import export_model
from hvt.serve.scoring import decode_input, load_serving_model
from hvt.serve.sources import InferInput

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIPS = ("kinetics/mmaction2__tests_data_rawvideo_dataset_part_0.mp4", "ucf101/tiny-ucf101__v_Basketball_g01_c01.avi")
MICRO = DataConfig(num_frames=8, frame_interval=4, train_short_side=(32, 40), test_short_side=32, crop_size=32)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory) -> str:
    videos = shared_path("realdata", "videos")
    folder = tmp_path_factory.mktemp("clips")
    for rel in CLIPS:
        shutil.copy(videos / rel, folder / rel.split("/")[-1])
    return str(folder)


@pytest.fixture(scope="module")
def released_store(tmp_path_factory) -> str:
    """The fidelity fixture (random weights in the released mmaction2 layout) imported as `hvt registry import`
    does: official halted-token mode."""
    case = torch.load(shared_path("fidelity", "g05_b20_shifted_center.pt"), map_location="cpu", weights_only=True)
    tmp = tmp_path_factory.mktemp("released")
    torch.save(case["state_dict"], tmp / "released.pth")
    store = str(tmp / "store")
    flags = []
    for key, value in overrides_from_released_config(case["config"]).items():
        flags += ["--model-override", f"{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}"]
    assert main(["registry", "import", "released", "--weights", str(tmp / "released.pth"), "--variant",
                 "haltingvt-s-g05-b20", "--store", store, *flags]) == 0
    return store


def _train_micro(steps: int = 6) -> torch.nn.Module:
    """haltingvt-micro after a few Adam steps on seeded clips (the full loss: CE + ponder), so weights and halting
    are no longer at their initialisation."""
    torch.manual_seed(0)
    model = create_model("haltingvt-micro-g05-b10", num_classes=4, img_size=32, halt_center=2.0).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x = torch.rand(4, 3, 8, 32, 32) * 2 - 1
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.logits, torch.arange(4)) + out.ponder_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def micro_store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("micro"))
    model = _train_micro()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": list("abcd"),
                "data_config": MICRO.model_dump(mode="json")}, buffer)
    registry.register_version(store, "micro", files={"model.pt": buffer.getvalue()}, metrics={}, lineage={},
                              created_at="2026-01-01T00:00:00+00:00")
    return store


def _meta_from_onnx(path: str) -> dict:
    import onnx

    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    return json.loads(props["hvt"])


def test_onnx_parity_on_real_clips_released_layout(released_store, clips_dir, tmp_path, capsys):
    out = str(tmp_path / "released.onnx")
    assert main(["export", "--model", "released@v1", "--store", released_store, "--format", "onnx", "--out", out,
                 "--check", clips_dir]) == 0
    text = capsys.readouterr().out
    assert "official mode" in text and "max |logit diff|" in text
    meta = _meta_from_onnx(out)
    assert meta["halted_token_mode"] == "official" and len(meta["classes"]) == 200
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["shape"][1:] == [8, 112, 112, 3]
    # run it with onnxruntime alone on a decoded real clip, batch of 3 (exported with 2): eager within 1e-4
    import onnxruntime as ort

    serving = load_serving_model("released@v1", store=released_store)
    assert serving.mode == "official"  # imported released weights keep their mode unless asked
    decoded = [decode_input(InferInput(id=n, path=f"{clips_dir}/{n.split('/')[-1]}"), serving.data_config).clip[0]
               for n in CLIPS]
    batch = np.stack([*decoded, decoded[0]])
    logits, gflops = ort.InferenceSession(out).run(["logits", "gflops"], {"clips": batch})
    with torch.no_grad():
        x = torch.from_numpy(batch).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
        eager = serving.loaded.network(x)
    assert np.abs(logits - eager.logits.numpy()).max() <= 1e-4
    assert np.allclose(gflops, eager.gflops.numpy(), rtol=1e-6) and (gflops > 0).all()


def test_onnx_and_torch_export_parity_trained_micro(micro_store, clips_dir, tmp_path):
    onnx_result = export_model("micro@v1", store=micro_store, fmt="onnx", out=str(tmp_path / "m.onnx"), check=clips_dir)
    assert onnx_result["halted_token_mode"] == "mask"  # remove's outputs on the fixed-shape path
    assert onnx_result["parity"]["max_abs_logit_diff"] <= 1e-4 and onnx_result["parity"]["clips"] == 3
    assert onnx_result["parity"]["max_abs_gflops_diff"] <= 1e-6
    pt2 = export_model("micro@v1", store=micro_store, fmt="torch-export", out=str(tmp_path / "m.pt2"),
                       halted_token_mode="mask", check=clips_dir)
    assert pt2["parity"]["max_abs_logit_diff"] <= 1e-4
    assert load_serving_model("micro@v1", store=micro_store).loaded.network.config.halting
    # both load and run without this package
    script = (
        "import sys, json, numpy as np, torch, onnxruntime as ort\n"
        f"x = np.random.default_rng(1).integers(0, 256, (5, 8, 32, 32, 3), dtype=np.uint8)\n"
        f"a = ort.InferenceSession({str(tmp_path / 'm.onnx')!r}).run(None, {{'clips': x}})\n"
        "extra = {'hvt.json': ''}\n"
        f"prog = torch.export.load({str(tmp_path / 'm.pt2')!r}, extra_files=extra)\n"
        "b = prog.module()(torch.from_numpy(x))\n"
        "assert not any(m == 'hvt' or m.startswith('hvt.') for m in sys.modules), 'hvt imported'\n"
        "print(json.dumps([float(np.abs(a[0] - b[0].detach().numpy()).max()), json.loads(extra['hvt.json'])['classes']]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    diff, classes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert diff <= 1e-4 and classes == list("abcd")


def test_dense_baseline_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    model = create_model("jointvt-micro", num_classes=3, img_size=32)
    path = tmp_path / "dense.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": ["x", "y", "z"],
                "data_config": MICRO.model_dump(mode="json")}, path)
    result = export_model(str(path), fmt="onnx", out=str(tmp_path / "dense.onnx"))
    assert result["parity"]["max_abs_logit_diff"] <= 1e-4 and result["parity"]["inputs"] == "random"
    assert _meta_from_onnx(str(tmp_path / "dense.onnx"))["classes"] == ["x", "y", "z"]


def test_remove_is_refused_naming_what_to_use(micro_store, tmp_path, capsys):
    lines = {}
    for fmt in ("torch-export", "onnx"):
        capsys.readouterr()
        assert main(["export", "--model", "micro@v1", "--store", micro_store, "--format", fmt, "--out",
                     str(tmp_path / f"r.{fmt}"), "--halted-token-mode", "remove"]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        lines[fmt] = err[0] if err else ""
        assert len(err) == 1 and not captured.out, err[:3]  # torch's partial graph dump is not shown
        assert err[0].startswith(f"hvt export: error: --format {fmt} in 'remove' mode") and "mask" in err[0]
        assert not (tmp_path / f"r.{fmt}").exists()
    first = lines["torch-export"]
    assert "torch.export cannot capture remove's data-dependent token counts" in first
    assert "--halted-token-mode mask" in first and "`hvt infer`" in first


def test_released_weights_in_another_mode_warn(released_store, caplog):
    with caplog.at_level(logging.WARNING):
        serving = load_serving_model("released@v1", store=released_store, halted_token_mode="remove")
    assert serving.mode == "remove" and "outputs change" in caplog.text
