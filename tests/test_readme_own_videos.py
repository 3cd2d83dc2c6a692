"""The README's "Train on your own videos" section, run as written.

The CSV block (after ``<!-- own-videos:<file name> -->``) and the command block (after
``<!-- own-videos:commands -->``) are taken from README.md literally. Only where things live changes: relative
paths (the CSV, the videos folder, the store, the browse output) are placed under a scratch folder, as if the
commands ran there, and the videos folder is filled with real clips from ``../shared/realdata``, one per CSV
row. Each command runs in-process through ``hvt.cli.main``. The test fails when the README's CSV or commands
stop working: a flag renamed, a split the trainer no longer accepts, a default that no longer trains.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Real clips to stand in for the README's videos, in CSV row order (all 10 s H.264, readable by decord).
CLIPS = (
    "videos/kinetics/ask-anything__yoga.mp4",
    "videos/kinetics/ask-anything__playing_guitar.mp4",
    "videos/kinetics/uniformer__Tw2yXa6CzWE.mp4",
    "videos/kinetics/ask-anything__hitting_baseball.mp4",
    "videos/kinetics/mmaction2__demo_demo.mp4",
    "videos/kinetics/tiny-ucf101__abseiling_k400.mp4",
)


def own_videos_section(readme: str) -> tuple[str, str, list[list[str]]]:
    """(CSV file name, CSV text, command lines as argv lists after `hvt`) from the README's marked blocks."""
    csv_match = re.search(r"<!-- own-videos:(?!commands)(\S+) -->\s*```[^\n]*\n(.*?)```", readme, re.S)
    cmd_match = re.search(r"<!-- own-videos:commands -->\s*```[^\n]*\n(.*?)```", readme, re.S)
    assert csv_match and cmd_match, "README.md lost its own-videos blocks (<!-- own-videos:... --> markers)"
    commands = []
    for line in cmd_match.group(1).replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line:
            continue
        argv = shlex.split(line)
        assert argv[0].endswith("hvt"), f"README own-videos command does not start with hvt: {line!r}"
        commands.append(argv[1:])
    return csv_match.group(1), csv_match.group(2), commands


def _relocate(argv: list[str], scratch: Path) -> list[str]:
    """Relative paths (``./x``, ``x.csv``) placed under ``scratch``; everything else as written."""
    out = []
    for arg in argv:
        if arg.startswith("./"):
            arg = str(scratch / arg[2:])
        elif not arg.startswith("-") and arg.endswith(".csv") and "/" not in arg:
            arg = str(scratch / arg)
        out.append(arg)
    return out


def test_readme_section_is_extracted() -> None:
    name, text, commands = own_videos_section((ROOT / "README.md").read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {r["split"] for r in rows} >= {"train", "val"}, "the README's CSV must have both a train and a val split"
    assert [c[0] for c in commands] == ["shard", "browse", "train", "predict"]
    assert any(name in c for c in commands[0]), f"hvt shard does not read the CSV the README saves ({name})"


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_readme_own_videos_commands_work(realdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        shared_ray) -> None:
    from hvt.cli import main

    name, text, commands = own_videos_section((ROOT / "README.md").read_text(encoding="utf-8"))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) <= len(CLIPS)
    (tmp_path / name).write_text(text, encoding="utf-8")
    shard_argv = _relocate(commands[0], tmp_path)
    videos = Path(shard_argv[shard_argv.index("--videos") + 1])
    for row, clip in zip(rows, CLIPS[: len(rows)], strict=True):
        target = videos / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(realdata / clip)

    outputs: dict[str, str] = {}
    for argv in commands:  # `hvt train` runs on the test process's Ray (tests/conftest.py: shared_ray)
        argv = _relocate(argv, tmp_path)
        code = main(argv)
        out = capsys.readouterr().out
        outputs[argv[0]] = out
        assert code == 0, f"`hvt {' '.join(argv)}` exited {code}:\n{out}"

    with capsys.disabled():  # shown with `pytest -s`: what the README's commands printed
        for command, out in outputs.items():
            print(f"--- hvt {command}\n{out}")
    counts = re.search(r"entries: (\d+)\s+sharded: (\d+)\s+quarantined: (\d+)", outputs["shard"])
    assert counts, outputs["shard"]
    assert counts.groups() == (str(len(rows)), str(len(rows)), "0"), outputs["shard"]

    browse_out = Path(_relocate(commands[1], tmp_path)[commands[1].index("--out") + 1])
    assert list(browse_out.glob("*.png")), f"hvt browse wrote no contact sheet:\n{outputs['browse']}"

    registered = re.search(r"registered (\S+) (v\d+) at (\S+)", outputs["train"])
    assert registered, f"hvt train registered no model:\n{outputs['train']}"
    assert Path(registered.group(3), "model.pt").exists()

    labels = {r["label"] for r in rows}
    ranked = re.findall(r"^\s+\d\. (.+?)\s+\d+\.\d%$", outputs["predict"], re.M)
    assert 1 <= len(ranked) <= 5 and set(ranked) <= labels, outputs["predict"]
    assert re.search(r"GFLOPs spent on this clip", outputs["predict"]), outputs["predict"]
