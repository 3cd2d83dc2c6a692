"""The image's smoke check: does the stack work for the user the image runs as?

    python infra/check_image.py --user ray --torch 2.13.0 --ray 2.60.0 --cuda cu128

``infra/Dockerfile`` runs it as its last step, after ``USER ray``, so the build fails when the runtime user cannot
import the stack (an interpreter or package under a folder it cannot read, as ``/root`` is), when torch or Ray is
not the pinned version, when torch's CUDA is not the base image's, or when there is no working C compiler
(inductor and Triton need one for ``--compile``). One line per check, ``ok`` or ``FAIL`` and why; exit code 1
when any check failed. Standard library only until the imports it checks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# What a Ray node of this project imports: the model and training stack, the decoders, Ray Train / Data, boto3
# (the cluster launcher's AWS provider, on the head), the Ray job's entry point and the Prefect flows.
MODULES = ("torch", "decord", "av", "ray.train", "ray.data", "boto3", "hvt.train.job", "pipelines.train")
FORBIDDEN_PREFIX = "/root"


class CheckFailed(Exception):
    """One check did not hold; the message says what was found."""


def check_user(expected: str) -> str:
    """The process runs as ``expected`` and not as root: the point of running the check after ``USER``."""
    uid = os.geteuid()
    name = pwd.getpwuid(uid).pw_name
    if uid == 0 or name != expected:
        raise CheckFailed(f"running as {name} (uid {uid}), expected {expected} and not root")
    return f"{name} (uid {uid})"


def _under_forbidden(path: str) -> bool:
    real = os.path.realpath(path)
    return real == FORBIDDEN_PREFIX or real.startswith(FORBIDDEN_PREFIX + "/")


def check_interpreter() -> str:
    """The interpreter (through any symlink) and its prefix are outside /root and readable."""
    for label, path in (("python", sys.executable), ("prefix", sys.prefix)):
        if _under_forbidden(path) or not os.access(os.path.realpath(path), os.R_OK):
            raise CheckFailed(f"{label} {path} -> {os.path.realpath(path)} is under /root or unreadable")
    return os.path.realpath(sys.executable)


def check_import(name: str) -> str:
    """``name`` imports, and its file is not under /root."""
    module = importlib.import_module(name)
    location = getattr(module, "__file__", None) or "?"
    if location != "?" and _under_forbidden(location):
        raise CheckFailed(f"{name} comes from {location}, under /root")
    return location


def _base_version(version: str) -> str:
    return version.split("+", 1)[0]  # 2.13.0+cu128 -> 2.13.0


def check_torch_version(expected: str) -> str:
    import torch

    if _base_version(torch.__version__) != expected:
        raise CheckFailed(f"torch {torch.__version__}, expected {expected}")
    return torch.__version__


def check_ray_version(expected: str) -> str:
    import ray

    if ray.__version__ != expected:
        raise CheckFailed(f"ray {ray.__version__}, expected {expected}")
    return ray.__version__


def cuda_tag_to_version(tag: str) -> str | None:
    """``cu128`` -> ``12.8``, ``cu130`` -> ``13.0``; ``none`` -> None (a CPU build)."""
    if tag == "none":
        return None
    digits = tag.removeprefix("cu")
    if not digits.isdigit() or len(digits) < 2:
        raise ValueError(f"not a CUDA tag like cu128: {tag!r}")
    return f"{digits[:-1]}.{digits[-1]}"


def check_cuda(tag: str) -> str:
    """torch's CUDA is the tag's, and so is the base image's toolkit (``CUDA_VERSION``, set by NVIDIA's images)."""
    import torch

    expected = cuda_tag_to_version(tag)
    if torch.version.cuda != expected and not (
        expected and torch.version.cuda and torch.version.cuda.startswith(expected + ".")
    ):
        raise CheckFailed(f"torch is built for CUDA {torch.version.cuda}, the image is for {expected}")
    base = os.environ.get("CUDA_VERSION")
    if expected and base and not (base == expected or base.startswith(expected + ".")):
        raise CheckFailed(f"base image CUDA_VERSION={base}, torch's CUDA {torch.version.cuda}")
    return f"torch CUDA {torch.version.cuda}, base image CUDA_VERSION={base or 'unset'}"


def check_compiler() -> str:
    """gcc and g++ are on PATH and gcc builds and runs a program (what Triton and inductor do at run time)."""
    missing = [cc for cc in ("gcc", "g++") if shutil.which(cc) is None]
    if missing:
        raise CheckFailed(f"not on PATH: {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "probe.c"
        source.write_text("int main(void) { return 0; }\n")
        binary = Path(folder) / "probe"
        subprocess.run(["gcc", str(source), "-o", str(binary)], check=True, capture_output=True, timeout=60)
        subprocess.run([str(binary)], check=True, timeout=10)
    return shutil.which("gcc") or "gcc"


# decord 0.6.0's wheel file is named py3-none-manylinux2010_x86_64 but its WHEEL metadata still says
# cp36-cp36m, so `pip check` reports it on every Python since 3.7 although it imports and works (checked above).
KNOWN_PIP_CHECK_NOISE = ("decord 0.6.0 is not supported on this platform",)


def check_pip() -> str:
    """``pip check``: every installed package's requirements are met (no half-resolved install)."""
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    problems = [line for line in lines if line.strip() not in KNOWN_PIP_CHECK_NOISE]
    if done.returncode != 0 and problems:
        raise CheckFailed("; ".join(problems))
    return "clean" if done.returncode == 0 else f"clean but for the known: {'; '.join(lines)}"


def run_checks(checks: list[tuple[str, Callable[[], str]]]) -> int:
    """Run every check (a failure does not stop the others); print one line each; return the failure count."""
    failures = 0
    for label, check in checks:
        try:
            print(f"ok    {label}: {check()}")
        except Exception as err:  # noqa: BLE001 - every failure becomes one reported line
            failures += 1
            print(f"FAIL  {label}: {type(err).__name__}: {err}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", required=True, help="the user the image runs as")
    parser.add_argument("--torch", required=True, help="the pinned torch version, e.g. 2.13.0")
    parser.add_argument("--ray", required=True, help="the pinned Ray version, e.g. 2.60.0")
    parser.add_argument("--cuda", required=True, help="the image's CUDA tag, e.g. cu128 (none: a CPU build)")
    parser.add_argument("--skip", action="append", default=[], help="skip a check by label (a dev machine)")
    args = parser.parse_args(argv)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("user", lambda: check_user(args.user)),
        ("interpreter", check_interpreter),
        *[(f"import {name}", lambda name=name: check_import(name)) for name in MODULES],
        ("torch version", lambda: check_torch_version(args.torch)),
        ("ray version", lambda: check_ray_version(args.ray)),
        ("cuda", lambda: check_cuda(args.cuda)),
        ("c compiler", check_compiler),
        ("pip check", check_pip),
    ]
    checks = [(label, check) for label, check in checks if label not in args.skip]
    failures = run_checks(checks)
    print(f"check_image: {len(checks) - failures} ok, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
