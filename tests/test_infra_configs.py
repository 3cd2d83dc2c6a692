"""prefect.yaml and infra/ are parsed and checked against the code they drive (no servers, no docker)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile_reader as dockerfile
import pytest
import yaml

from hvt.config import TrainConfig
from hvt.model import list_models

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"


def _prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(REPO / entrypoint))


def test_prefect_yaml_has_every_deployment_on_an_existing_flow():
    deployments = _prefect_yaml()["deployments"]
    names = {(_flow(d["entrypoint"]).name, d["name"]) for d in deployments}
    assert names == {
        ("train-haltingvt", "local"),
        ("train-haltingvt", "nightly"),
        ("train-haltingvt", "cluster"),
        ("shard-dataset", "local"),
        ("evaluate-haltingvt", "local"),
        ("infer-haltingvt", "local"),
        ("sweep-haltingvt", "local"),
    }
    assert all(d["work_pool"]["name"] == "hvt-local" for d in deployments)
    assert "pull" not in _prefect_yaml()  # prefect deploy records the checkout; see the comment in the file


@pytest.mark.parametrize("index", range(6))
def test_deployment_parameters_validate_against_the_flow(index):
    deployment = _prefect_yaml()["deployments"][index]
    flow = _flow(deployment["entrypoint"])
    params = deployment.get("parameters", {})
    if flow.name == "shard-dataset":
        assert "config" not in params  # annotations and videos are given at run time
    else:
        validated = flow.validate_parameters(params)
        if "config" in validated:
            config = validated["config"]
            if flow.name == "sweep-haltingvt":  # a SweepConfig: its trials start from its base TrainConfig
                assert config.points(), "the sweep deployment searches no point"
                config = config.base
            assert isinstance(config, TrainConfig)
            assert config.store == ""  # "" = the worker's $HVT_STORE, else ./hvt-store
            assert config.model.name in list_models()


def test_nightly_is_scheduled_and_only_retrains_on_new_data():
    from prefect.client.schemas.schedules import CronSchedule

    (nightly,) = [d for d in _prefect_yaml()["deployments"] if d["name"] == "nightly"]
    (schedule,) = nightly["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises on a bad cron
    assert schedule["active"] is True
    assert nightly["parameters"]["only_if_new_data"] is True
    assert "synthetic" not in nightly["parameters"]  # nightly never invents data


def test_cluster_deployment_targets_gpu_workers_through_the_jobs_api():
    from pipelines.cluster import ClusterSpec

    (cluster,) = [d for d in _prefect_yaml()["deployments"] if d["name"] == "cluster"]
    spec = ClusterSpec.model_validate(cluster["parameters"]["cluster"])
    assert spec.address.startswith("http")
    config = TrainConfig.model_validate(cluster["parameters"]["config"])
    assert config.scaling.use_gpu and config.scaling.num_workers >= 2
    # the paper's setting: fine-tuned from ImageNet DeiT-S with the paper's recipe
    from hvt.config import OptimConfig

    assert config.model.pretrained and "deit_small" in config.model.pretrained
    assert config.optim.model_dump() == OptimConfig.paper_finetune().model_dump()


PAPER_CONFIG = REPO / "configs/paper-haltingvt-s-g05-b20.json"


def _deployment(name: str, entrypoint: str) -> dict:
    (found,) = [d for d in _prefect_yaml()["deployments"] if d["name"] == name and d["entrypoint"].startswith(entrypoint)]
    return found


def test_rayjob_cluster_deployment_and_the_paper_config_file_are_one_config():
    """infra/k8s/rayjob.yaml holds configs/paper-haltingvt-s-g05-b20.json verbatim; the `cluster` deployment
    trains the same config (its YAML may leave defaults out)."""
    docs = {d["kind"]: d for d in yaml.safe_load_all((INFRA / "k8s/rayjob.yaml").read_text())}
    in_rayjob = json.loads(docs["ConfigMap"]["data"]["train-config.json"])
    from_file = json.loads(PAPER_CONFIG.read_text())
    assert in_rayjob == from_file
    cluster = _deployment("cluster", "pipelines/train.py")["parameters"]["config"]
    assert TrainConfig.model_validate(cluster).model_dump(mode="json") == from_file


def test_every_deployment_evaluates_what_the_training_deployments_register():
    """`evaluate-haltingvt/local` with its defaults, run after `local` or `nightly` with theirs, finds the model
    they registered, on the dataset they trained on; both are what `make demo` trains (configs/demo.json)."""
    demo = json.loads((REPO / "configs/demo.json").read_text())
    trained = {(TrainConfig.model_validate(_deployment(name, "pipelines/train.py")["parameters"]["config"])
                .resolved_registry_name(),
                TrainConfig.model_validate(_deployment(name, "pipelines/train.py")["parameters"]["config"]).dataset_name)
               for name in ("local", "nightly")}
    assert trained == {(demo["model"]["name"], demo["dataset_name"])}
    evaluate = _deployment("local", "pipelines/evaluate.py")["parameters"]
    assert {(evaluate["model"], evaluate["dataset_name"])} == trained
    flow = _flow("pipelines/evaluate.py:evaluate_haltingvt")
    assert flow.validate_parameters(evaluate)["ref"] == "champion"


def test_prefect_yaml_creates_the_work_pool_as_make_deploy_does():
    """The commands in prefect.yaml's header create the pool with the Makefile's base job template."""
    makefile = (REPO / "Makefile").read_text()
    template = re.search(r"--base-job-template (\S+)", makefile).group(1)
    assert (REPO / template).is_file()
    header = [line for line in (REPO / "prefect.yaml").read_text().splitlines() if "work-pool create" in line]
    assert header and all(f"--base-job-template {template}" in line for line in header)


def test_local_deployment_config_is_cpu_sized():
    (local,) = [d for d in _prefect_yaml()["deployments"] if d["name"] == "local"
                and d["entrypoint"].startswith("pipelines/train.py")]
    config = TrainConfig.model_validate(local["parameters"]["config"])
    assert not config.scaling.use_gpu
    assert config.scaling.num_workers * config.scaling.cpus_per_worker <= 2  # fits the 2-core demo machine
    assert config.data.crop_size <= 112 and config.model.overrides.get("img_size") == config.data.crop_size


def test_local_deployment_runs_what_make_demo_runs():
    """`prefect deployment run train-haltingvt/local` and `make demo` train the same thing."""
    from pipelines.demo import demo_config, demo_source

    (local,) = [
        d for d in _prefect_yaml()["deployments"]
        if d["name"] == "local" and d["entrypoint"].startswith("pipelines/train.py")
    ]
    from_yaml = TrainConfig.model_validate(local["parameters"]["config"])
    assert from_yaml.fingerprint() == demo_config("unused").fingerprint()
    assert local["parameters"]["synthetic"] == demo_source().model_dump()


def test_work_pool_template_is_a_process_template_without_secrets():
    template = json.loads((INFRA / "prefect/process-work-pool.json").read_text())
    assert set(template["job_configuration"]) >= {"command", "env", "working_dir"}
    env_defaults = template["variables"]["properties"]["env"]["default"]
    assert not any("SECRET" in k or "KEY" in k for k in env_defaults)


def test_ray_cluster_launcher_yaml():
    cluster = yaml.safe_load((INFRA / "ray/gpu-cluster.yaml").read_text())
    nodes = cluster["available_node_types"]
    assert cluster["head_node_type"] in nodes
    gpu = [n for n in nodes.values() if n.get("resources", {}).get("GPU", 0) > 0]
    cpu_only = [name for name, n in nodes.items() if name != cluster["head_node_type"]
                and n.get("resources", {}).get("GPU", 0) == 0]
    assert gpu and cpu_only, "needs GPU training workers and CPU-only decode workers"
    total_max = 0
    for name, node in nodes.items():
        if name == cluster["head_node_type"]:
            continue
        assert 0 <= node["min_workers"] <= node["max_workers"], name
        total_max += node["max_workers"]
    assert cluster["max_workers"] <= total_max
    assert cluster["idle_timeout_minutes"] > 0
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host" in head_start and "--head" in head_start  # the Jobs API lives on the dashboard
    text = (INFRA / "ray/gpu-cluster.yaml").read_text()
    assert not re.search(r"(?i)aws_secret|secret_access_key", text)


def test_kuberay_rayjob_manifest_runs_our_entrypoint_with_a_valid_config():
    docs = list(yaml.safe_load_all((INFRA / "k8s/rayjob.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    job, config_map = kinds["RayJob"], kinds["ConfigMap"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m hvt.train.job --config-file /etc/hvt/")
    assert spec["shutdownAfterJobFinishes"] is True
    config = TrainConfig.model_validate_json(config_map["data"]["train-config.json"])
    assert config.store == "" and config.scaling.use_gpu  # "": the job's $HVT_STORE, an s3:// store
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    assert env["HVT_STORE"].startswith("s3://")
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert any(v["configMap"]["name"] == config_map["metadata"]["name"] for v in head["volumes"])
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    limits = [c["resources"]["limits"] for g in groups.values() for c in g["template"]["spec"]["containers"]]
    assert any("nvidia.com/gpu" in lim for lim in limits) and any("nvidia.com/gpu" not in lim for lim in limits)
    for group in [cluster["headGroupSpec"], *groups.values()]:
        for container in group["template"]["spec"]["containers"]:
            assert {"secretRef": {"name": "hvt-s3-credentials"}} in container.get("envFrom", [])


# --- infra/Dockerfile, read as the builder reads it (tests/dockerfile.py); no docker needed -------------------

DOCKERFILE = INFRA / "Dockerfile"
RAY_IMAGE = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d+)-(?P<cuda>cu\d+)$")
# commands that put a Python interpreter, environment or packages on disk
PYTHON_INSTALLERS = re.compile(r"\b(pip3?|uv|conda|mamba|micromamba|virtualenv)\b|\bpython3?(\.\d+)? -m (pip|venv)\b")


def _pyproject_pin(package: str) -> str:
    """The exact version pyproject.toml pins ``package`` to (``==``), or fail."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        if dep.name == package:
            (spec,) = dep.specifier
            assert spec.operator == "==", f"pyproject.toml does not pin {package} exactly: {dep}"
            return spec.version
    raise AssertionError(f"{package} is not a dependency in pyproject.toml")


def _tested_torch_version() -> str:
    """The torch `make test` runs: the Makefile's CPU pin (machines without a GPU, CI included)."""
    pins = set(re.findall(r"\btorch==(\d+\.\d+\.\d+)\b", (REPO / "Makefile").read_text()))
    assert len(pins) == 1, f"expected one exact torch pin in the Makefile, found {sorted(pins)}"
    return pins.pop()


def _dockerfile(text: str | None = None) -> list[dockerfile.Instruction]:
    return dockerfile.parse(DOCKERFILE.read_text() if text is None else text)


def _base(instructions: list[dockerfile.Instruction]) -> re.Match[str]:
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 1, "one stage expected: the runtime image is the only stage"
    match = RAY_IMAGE.match(froms[0].args.split()[0])
    assert match, f"line {froms[0].line}: base {froms[0].args!r} is not rayproject/ray:<ray>-py<XY>-cu<XYZ>"
    return match


def _runs(instructions: list[dockerfile.Instruction]) -> list[dockerfile.Instruction]:
    return [i for i in instructions if i.keyword == "RUN"]


def _installs_python(run: dockerfile.Instruction) -> bool:
    return bool(PYTHON_INSTALLERS.search(run.args))


def _smoke_check(instructions: list[dockerfile.Instruction]) -> dockerfile.Instruction:
    checks = [r for r in _runs(instructions) if "infra/check_image.py" in r.args]
    assert len(checks) == 1, "the Dockerfile must run infra/check_image.py once"
    return checks[0]


def _pip_installs(run: dockerfile.Instruction) -> list[list[str]]:
    """The arguments after `pip install` of each pip command in a RUN (commands split at && ; |)."""
    commands: list[list[str]] = [[]]
    for word in run.words():
        if word in {"&&", ";", "||", "|"}:
            commands.append([])
        else:
            commands[-1].append(word)
    return [cmd[cmd.index("install") + 1:] for cmd in commands
            if len(cmd) > 1 and re.fullmatch(r"pip3?", cmd[0]) and "install" in cmd]


def _flag(run: dockerfile.Instruction, flag: str) -> list[str]:
    words = run.words()
    return [words[k + 1] for k, word in enumerate(words[:-1]) if word == flag]


def test_dockerfile_builds_on_rays_image_of_the_pinned_ray_and_python_311():
    base = _base(_dockerfile())
    assert base["ray"] == _pyproject_pin("ray"), "the image's Ray must be the Ray the project pins and tests"
    assert base["py"] == "311", "Python 3.11 is the version the project is tested on"


def test_dockerfile_runs_as_ray_and_nothing_it_needs_is_under_root():
    """The runtime user installs every Python package itself; no path under /root is on any instruction."""
    instructions = _dockerfile()
    user = dockerfile.final_user(instructions)
    assert user == "ray", f"the image must run as Ray's own user `ray`, not {user!r}"
    for ins in instructions:
        assert not re.search(r"(^|[\s=:\"'])/root(/|\b)", ins.args), (
            f"line {ins.line}: {ins.keyword} names /root, which the runtime user cannot read: {ins.raw_args}"
        )
        assert "uv python install" not in ins.args, f"line {ins.line}: an interpreter outside Ray's image Python"
    for run in _runs(instructions):
        if _installs_python(run):
            assert run.user == user, (
                f"line {run.line}: installs Python things as {run.user!r}, not as the runtime user {user!r}: "
                f"{run.raw_args[:100]}"
            )
    for ins in instructions:
        if ins.keyword == "COPY" and ins.user == user:
            # COPY ignores USER: without --chown the files are root's, and `pip install .` builds in them
            assert "--chown=" in ins.args, f"line {ins.line}: COPY without --chown leaves root-owned files"


def test_dockerfile_pins_torch_to_the_tested_version_from_the_base_images_cuda_index():
    instructions = _dockerfile()
    cuda = _base(instructions)["cuda"]
    tested = _tested_torch_version()
    torch_runs = [r for r in _runs(instructions) if re.search(r"\btorch\b", r.args) and _installs_python(r)]
    assert torch_runs, "torch is never installed"
    first = torch_runs[0]
    requirements = [w for cmd in _pip_installs(first) for w in cmd if re.match(r"torch\b", w)]
    assert requirements == [f"torch=={tested}"], (
        f"line {first.line}: pip must install torch=={tested} (the tested version), found {requirements}"
    )
    assert _flag(first, "--index-url") == [f"https://download.pytorch.org/whl/{cuda}"], (
        f"line {first.line}: torch must come from PyTorch's {cuda} index (the base image's CUDA)"
    )
    constraint_files = {
        target for run in _runs(instructions) if f"torch=={tested}" in run.words()
        for target in re.findall(r">\s*(\S+)", run.args)
    }
    assert constraint_files, f"no constraints file pins torch=={tested} for the installs after torch"
    project = [r for r in _runs(instructions) if _installs_python(r) and re.search(r"\binstall\b.*\s\.(\s|$)", r.args)]
    assert project, "the project is never installed"
    for run in project:
        assert run.line > first.line, f"line {run.line}: the project is installed before torch"
        constraints = set(_flag(run, "-c") + _flag(run, "--constraint"))
        assert constraints & constraint_files, f"line {run.line}: nothing stops pip from moving torch"


def test_dockerfile_installs_a_c_compiler_for_inductor_and_triton():
    instructions = _dockerfile()
    apt = [r for r in _runs(instructions) if "apt-get install" in r.args]
    assert any(set(r.words()) & {"build-essential", "gcc"} for r in apt), "no C compiler is installed"
    for run in apt:
        assert run.user == "root", f"line {run.line}: apt-get needs root, runs as {run.user!r}"
    assert "c compiler" not in _flag(_smoke_check(instructions), "--skip")


def test_dockerfile_installs_boto3_where_the_launchers_autoscaler_runs():
    instructions = _dockerfile()
    user = dockerfile.final_user(instructions)
    boto = [r for r in _runs(instructions) if _installs_python(r) and re.search(r"\bboto3\b", r.args)]
    assert boto and all(r.user == user for r in boto), "boto3 must be installed (as the runtime user)"
    check_image = _check_image_module()
    assert "boto3" in check_image.MODULES and "import boto3" not in _flag(_smoke_check(instructions), "--skip")
    # the launcher's autoscaler runs on the head, inside the image from `docker.image` (no other head image)
    cluster = yaml.safe_load((INFRA / "ray/gpu-cluster.yaml").read_text())
    head_image = cluster["docker"].get("head_image", cluster["docker"]["image"])
    assert head_image == cluster["docker"]["image"] and head_image.startswith("ghcr.io/haltingvt/haltingvt:")
    assert "--autoscaling-config" in " ".join(cluster["head_start_ray_commands"])
    assert not cluster.get("head_setup_commands"), "the head must need nothing beyond the image"


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_dockerfile_stops_clearly_off_x86_64_before_installing_decord(machine, tmp_path):
    """The architecture check, run by bash (Ray's images set SHELL to bash) with `uname -m` answering ``machine``:
    x86_64 passes; anything else stops the build with a message naming decord, before any pip install."""
    instructions = _dockerfile()
    arch = [r for r in _runs(instructions) if "uname -m" in r.args]
    assert len(arch) == 1, "one architecture check expected: decord 0.6.0 has x86_64 wheels only"
    first_pip = next(r for r in _runs(instructions) if _installs_python(r))
    assert arch[0].line < first_pip.line, "the architecture check must come before the first install"
    fake = tmp_path / "uname"
    fake.write_text(f"#!/bin/sh\necho {machine}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", arch[0].args], env=env, capture_output=True, text=True, timeout=30)
    if machine == "x86_64":
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode != 0 and "decord" in done.stderr and machine in done.stderr, done


def test_dockerfile_smoke_check_runs_last_as_the_runtime_user_with_the_pins():
    instructions = _dockerfile()
    user = dockerfile.final_user(instructions)
    check = _smoke_check(instructions)
    assert check.user == user == "ray", (
        f"line {check.line}: the smoke check runs as {check.user!r} and the image as {user!r}; both must be 'ray'"
    )
    after = [i for i in instructions if i.line > check.line and i.keyword in {"RUN", "COPY", "ADD", "USER"}]
    assert not after, f"line {after[0].line if after else 0}: the image changes after its smoke check"
    assert _flag(check, "--user") == [user]
    assert _flag(check, "--torch") == [_tested_torch_version()]
    assert _flag(check, "--ray") == [_pyproject_pin("ray")]
    assert _flag(check, "--cuda") == [_base(instructions)["cuda"]]
    assert not _flag(check, "--skip"), "the image's smoke check skips nothing"
    modules = set(_check_image_module().MODULES)
    assert modules >= {"torch", "decord", "av", "ray.train", "ray.data", "hvt.train.job", "boto3"}


def _check_image_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_image", INFRA / "check_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_image_script_runs_here_and_rejects_what_it_should():
    """The smoke check itself works: here (root, CPU torch, maybe no boto3) it passes what applies and fails the
    user check as root, so it cannot pass when a build runs it before `USER`."""
    # this venv's interpreter may live under /root (a dev machine, not the image); `pip check` judges this venv,
    # not the image, so it runs in the build only
    skips = ["--skip", "interpreter", "--skip", "pip check"]
    try:
        import boto3  # noqa: F401
    except ImportError:
        skips += ["--skip", "import boto3"]
    if shutil.which("gcc") is None or shutil.which("g++") is None:
        skips += ["--skip", "c compiler"]
    if os.geteuid() != 0:
        skips += ["--skip", "user"]
    done = subprocess.run(
        [sys.executable, str(INFRA / "check_image.py"), "--user", "ray", "--torch", _tested_torch_version(),
         "--ray", _pyproject_pin("ray"), "--cuda", "none", *skips],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    if os.geteuid() == 0:
        assert failed == ["FAIL  user: CheckFailed: running as root (uid 0), expected ray and not root"], done.stdout
        assert done.returncode == 1
    else:
        assert not failed and done.returncode == 0, done.stdout + done.stderr
    for name in ("torch", "decord", "av", "ray.train", "ray.data", "hvt.train.job"):
        assert any(line.startswith(f"ok    import {name}:") for line in lines), done.stdout
    wrong = subprocess.run(
        [sys.executable, str(INFRA / "check_image.py"), "--user", "ray", "--torch", "0.0.1", "--ray", "0.0.1",
         "--cuda", "cu128", *skips, "--skip", "import pipelines.train", "--skip", "c compiler"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert wrong.returncode == 1
    for label in ("torch version", "ray version", "cuda"):
        assert any(line.startswith(f"FAIL  {label}:") for line in wrong.stdout.splitlines()), wrong.stdout


# --- Ray pods and nodes: /dev/shm, node types, one image and one Ray version ---------------------------------

def _k8s_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(quantity))
    assert match, f"not a Kubernetes quantity: {quantity!r}"
    return float(match[1]) * units.get(match[2] or "", 1)


def _ray_object_store_bytes(memory: float, shm: float) -> float:
    """The object store Ray sizes for a node (ray._private.utils.resolve_object_store_memory, no override):
    a share of its memory, capped at 95% of /dev/shm but never below REQUIRE_SHM_SIZE_THRESHOLD."""
    from ray._private import ray_constants as rc

    cap = min(rc.DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES, max(rc.REQUIRE_SHM_SIZE_THRESHOLD, int(shm * 0.95)))
    return min(memory * rc.DEFAULT_OBJECT_STORE_MEMORY_PROPORTION, cap)


def _rayjob() -> tuple[dict, dict]:
    docs = {d["kind"]: d for d in yaml.safe_load_all((INFRA / "k8s/rayjob.yaml").read_text())}
    return docs["RayJob"], docs["ConfigMap"]


def _ray_pod_groups(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}


def test_every_kuberay_pod_has_a_memory_backed_dev_shm_that_holds_rays_object_store():
    job, _ = _rayjob()
    for name, group in _ray_pod_groups(job).items():
        pod = group["template"]["spec"]
        shm_volumes = {v["name"]: v for v in pod.get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"}
        assert shm_volumes, f"{name}: no memory-backed emptyDir volume (Ray's object store would go to /tmp)"
        for container in pod["containers"]:
            mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
            assert mounts and mounts[0]["name"] in shm_volumes, f"{name}/{container['name']}: no /dev/shm mount"
            volume = shm_volumes[mounts[0]["name"]]["emptyDir"]
            assert "sizeLimit" in volume, f"{name}: /dev/shm without sizeLimit may take the node's memory"
            shm = _k8s_bytes(volume["sizeLimit"])
            memory = _k8s_bytes(container["resources"]["limits"]["memory"])
            store = _ray_object_store_bytes(memory, shm)
            assert shm >= store, f"{name}: /dev/shm {shm / 2**30:.1f} GiB < Ray's object store {store / 2**30:.1f} GiB"
            assert shm < memory, f"{name}: /dev/shm counts against the memory limit; it cannot take all of it"


def test_images_and_ray_versions_agree_across_infra():
    ray_pin = _pyproject_pin("ray")
    cuda = _base(_dockerfile())["cuda"]
    cluster = yaml.safe_load((INFRA / "ray/gpu-cluster.yaml").read_text())
    image = cluster["docker"]["image"]
    tag = image.rsplit(":", 1)[1]
    assert f"ray{ray_pin}" in tag and "py311" in tag and tag.endswith(cuda), (
        f"image tag {tag!r} must name the Ray ({ray_pin}), Python and CUDA ({cuda}) of infra/Dockerfile"
    )
    job, _ = _rayjob()
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_pin
    for name, group in _ray_pod_groups(job).items():
        for container in group["template"]["spec"]["containers"]:
            assert container["image"] == image, f"{name}: {container['image']} != the launcher's {image}"


def test_decode_nodes_carry_one_decode_unit_per_cpu():
    """`decode` = the node's CPUs in both layouts, so a decode task reserving N CPUs fits where N `decode` do."""
    cluster = yaml.safe_load((INFRA / "ray/gpu-cluster.yaml").read_text())
    decode_types = {n: t for n, t in cluster["available_node_types"].items() if "decode" in t.get("resources", {})}
    assert decode_types, "the launcher has no node type with the `decode` resource"
    for name, node in decode_types.items():
        assert node["resources"]["decode"] == node["resources"]["CPU"], name
        assert node["resources"].get("GPU", 0) == 0, f"{name}: decode nodes are CPU-only"
    job, _ = _rayjob()
    groups = _ray_pod_groups(job)
    decode_groups = {n: g for n, g in groups.items() if "decode" in g.get("rayStartParams", {}).get("resources", "")}
    assert decode_groups, "the RayJob has no worker group with the `decode` resource"
    for name, group in decode_groups.items():
        resources = json.loads(json.loads(group["rayStartParams"]["resources"]))
        (container,) = group["template"]["spec"]["containers"]
        assert resources["decode"] == int(_k8s_bytes(container["resources"]["limits"]["cpu"])), name


def test_launcher_starts_a_gpu_node_and_a_decode_node_with_the_cluster():
    """min_workers >= 1: a GPU node exists when a job starts (no wait on the autoscaler), and a decode node exists
    so that decode_on "auto" sees one; /dev/shm big enough that Ray keeps its object store there."""
    from ray._private import ray_constants as rc

    cluster = yaml.safe_load((INFRA / "ray/gpu-cluster.yaml").read_text())
    nodes = cluster["available_node_types"]
    gpu = {n: t for n, t in nodes.items() if t.get("resources", {}).get("GPU", 0) > 0}
    decode = {n: t for n, t in nodes.items() if "decode" in t.get("resources", {})}
    assert gpu and all(t["min_workers"] >= 1 for t in gpu.values()), "no GPU node starts with the cluster"
    assert decode and all(t["min_workers"] >= 1 for t in decode.values()), "no decode node starts with the cluster"
    assert sum(t["min_workers"] for n, t in nodes.items() if n != cluster["head_node_type"]) <= cluster["max_workers"]
    shm = [o for o in cluster["docker"]["run_options"] if o.startswith("--shm-size=")]
    assert shm, "docker's default /dev/shm (64 MB) sends Ray's object store to /tmp"
    size = _k8s_bytes(shm[0].split("=", 1)[1].rstrip("bB").upper().replace("I", "i"))
    # at or above Ray's threshold the store is capped at 95% of /dev/shm, so it always fits whatever the memory
    assert size >= rc.REQUIRE_SHM_SIZE_THRESHOLD, f"--shm-size {shm[0]} is below Ray's 10 GB threshold"


def test_dev_stack_script_is_valid_bash_and_binds_to_loopback():
    script = INFRA / "dev-stack.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    assert "0.0.0.0" not in text
    assert "pkill" not in text and "killall" not in text and "ray stop" not in text
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True, timeout=60)
