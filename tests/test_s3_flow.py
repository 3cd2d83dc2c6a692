"""The whole `train-haltingvt` flow with an s3:// store on a real SeaweedFS server (signatures checked).

Shards, Ray Train's run storage (checkpoints), the registry and the report all live in the bucket. The
credentials reach the flow only through a Prefect Secret block (they are removed from the environment before
the flow starts), and a grep over every object in the bucket, the captured output, the flow run's logs, the
report artifact and Ray's session logs must not find the secret.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import s3fs
from s3server import seaweedfs_server

from hvt import registry
from pipelines.demo import demo_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

MODEL = demo_config("/unused").model.name  # what the demo and the local deployment train
BLOCK = "hvt-test-s3-credentials"


def _grep_tree(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and needle in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue
    return hits


def test_train_flow_on_s3_store_keeps_credentials_out_of_everything(tmp_path: Path, capfd) -> None:
    import ray
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        LogFilter,
        LogFilterFlowRunId,
    )

    from pipelines.demo import demo_config
    from pipelines.params import SyntheticSource
    from pipelines.train import train_haltingvt

    # the flow starts its own Ray, whose workers take the block's credentials from the environment it sets: not
    # one that another module left running (tests/conftest.py: shared_ray)
    ray.shutdown()
    with seaweedfs_server(tmp_path) as s3:
        secret, key = s3.secret.encode(), s3.key.encode()
        Secret(value={"aws_access_key_id": s3.key, "aws_secret_access_key": s3.secret}).save(BLOCK, overwrite=True)
        # from here on only the block holds the credentials; the endpoint and region stay in the environment
        os.environ.pop("AWS_ACCESS_KEY_ID")
        os.environ.pop("AWS_SECRET_ACCESS_KEY")
        s3fs.S3FileSystem.clear_instance_cache()

        store = f"s3://{s3.bucket}/store"
        config = demo_config(store, epochs=1)
        source = SyntheticSource(classes=3, per_class=6, seed=1, frames=16, width=64, height=64)
        session_dir = None
        try:
            state = train_haltingvt(config=config, synthetic=source, credentials_block=BLOCK, return_state=True)
            if ray.is_initialized():
                session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
        finally:
            ray.shutdown()
        assert state.is_completed(), state.message
        summary = state.result()
        flow_run_id = state.state_details.flow_run_id

        # everything is in the bucket: dataset, Ray Train checkpoints, registry, report
        assert summary["registry"]["path"] == f"{store}/registry/{MODEL}/v1"
        assert summary["run_path"].startswith(f"{store}/runs/")
        versions = registry.list_versions(store, MODEL)
        assert [v.version for v in versions] == ["v1"] and registry.get_alias(store, MODEL) == "v1"
        fs = s3fs.S3FileSystem()  # the flow put the block's credentials into this process's environment
        fs.invalidate_cache()
        objects = fs.find(f"{s3.bucket}/store")
        run_dir = f"{s3.bucket}/store/runs/{summary['run']}/"
        assert any(o.startswith(run_dir) and "/checkpoint_" in o for o in objects), "no checkpoint in the bucket"
        assert any(o.endswith("/manifest.json") for o in objects)
        payload = registry.load_checkpoint(versions[0])  # sha256-verified read from S3
        assert len(payload["classes"]) == 3

        # the secret is nowhere: not in any stored object, logs, artifacts or Ray's session logs
        leaked = [o for o in objects if secret in fs.cat_file(o) or key in fs.cat_file(o)]
        assert not leaked, f"credentials found in stored objects: {leaked}"
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            # other tests in this session write the same key: ask for this flow run's artifact only
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"report-{MODEL}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        assert len(artifacts) == 1, f"expected one report artifact from flow run {flow_run_id}: {artifacts}"
        assert "evaluation on synthetic-motion/" in artifacts[0].data
        assert all(s3.secret not in (a.data or "") for a in artifacts)
        assert all(s3.secret not in log.message for log in logs)
        out, err = capfd.readouterr()
        assert s3.secret not in out and s3.secret not in err
        assert session_dir is not None and (session_dir / "logs").is_dir()
        assert not _grep_tree(session_dir / "logs", secret)
        assert s3.secret not in (tmp_path / "seaweedfs.log").read_text(errors="replace")
