"""prefect.yaml and infra/ are parsed and checked against the code they drive (no servers, no docker)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

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
    }
    assert all(d["work_pool"]["name"] == "hvt-local" for d in deployments)
    assert "pull" not in _prefect_yaml()  # prefect deploy records the checkout; see the comment in the file


@pytest.mark.parametrize("index", range(5))
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
    assert config.store.startswith("s3://") and config.scaling.use_gpu
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


def test_dockerfile_is_cuda_based_and_installs_the_project():
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+", text, re.M)
    assert "pip install" in text and "COPY hvt" in text and "COPY pipelines" in text
    assert "import hvt.train.job" in text  # the build fails if the job entrypoint does not import


def test_dev_stack_script_is_valid_bash_and_binds_to_loopback():
    script = INFRA / "dev-stack.sh"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    assert "0.0.0.0" not in text
    assert "pkill" not in text and "killall" not in text and "ray stop" not in text
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True, timeout=60)
