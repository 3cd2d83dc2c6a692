"""Store credentials come from the environment (AWS_* as s3fs reads them) or from a Prefect ``Secret`` block.

A block keeps the secret out of deployment parameters and work-pool variables, which the Prefect UI shows.
Its value is JSON: ``{"aws_access_key_id": "...", "aws_secret_access_key": "...", "aws_session_token": "..."}``
(the token is optional). The values go into this flow-run process's environment, where s3fs and the local
Ray workers (started after this) find them; they are never logged, returned or written anywhere.
"""

from __future__ import annotations

import json
import os

from prefect import get_run_logger

_ENV_NAMES = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}


def apply_store_credentials(block_name: str | None) -> None:
    """Load the ``Secret`` block ``block_name`` (if given) into the AWS_* environment of this process."""
    if not block_name:
        return
    from prefect.blocks.system import Secret

    value = Secret.load(block_name).get()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict) or not {"aws_access_key_id", "aws_secret_access_key"} <= set(value):
        raise ValueError(
            f"Secret block {block_name!r} must hold JSON with aws_access_key_id and aws_secret_access_key "
            "(and optionally aws_session_token)"
        )
    for key, env_name in _ENV_NAMES.items():
        if value.get(key):
            os.environ[env_name] = str(value[key])
    _forget_cached_s3_clients()
    get_run_logger().info("store credentials loaded from Secret block %r", block_name)


def _forget_cached_s3_clients() -> None:
    # s3fs caches filesystem instances (with the credentials they were created with) per process
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()
