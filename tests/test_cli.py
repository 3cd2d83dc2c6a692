"""The `hvt` command line: stages listed, clear errors for bad input."""

from __future__ import annotations

import subprocess
import sys


def _hvt(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvt.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_stages():
    proc = _hvt("--help")
    assert proc.returncode == 0
    for stage in ("synth", "shard", "train", "evaluate", "registry", "flops"):
        assert stage in proc.stdout


def test_bad_store_url_is_a_one_line_error(tmp_path):
    proc = _hvt("registry", "list", "--store", "nope://bucket")
    assert proc.returncode == 2
    assert "unknown protocol 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_without_dataset_says_what_to_do(tmp_path):
    proc = _hvt("train", "--store", str(tmp_path), "--dataset", "absent", timeout=300)
    assert proc.returncode == 2
    assert "no dataset 'absent'" in proc.stderr and "hvt shard" in proc.stderr


def test_empty_registry_lists_nothing(tmp_path):
    proc = _hvt("registry", "list", "--store", str(tmp_path), "--json")
    assert proc.returncode == 0
    assert '"versions": []' in proc.stdout


def test_a_reader_that_stops_early_is_not_an_error():
    """`hvt models | head -1`: the pipe's reader is gone before the output is written; the command ends quietly
    (exit 0), not with the 'store is unavailable' error that a broken pipe, an OSError, used to be reported as."""
    proc = subprocess.Popen([sys.executable, "-m", "hvt.cli", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before anything is written
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and not err.strip(), err.decode(errors="replace")[-500:]
