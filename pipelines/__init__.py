"""Prefect flows over the hvt library: thin orchestration, no model or data logic."""

import os

# The embedded default starts Prefect's temporary API server in a subprocess; on a busy 2-core machine it can
# take longer than Prefect's default 20 s to answer. These must be set before prefect is first imported.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
