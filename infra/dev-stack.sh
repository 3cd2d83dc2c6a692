#!/usr/bin/env bash
# Local dev stack for the cloud path on one machine: SeaweedFS (S3), a Prefect server, a Ray head with the Jobs API.
# Everything binds to 127.0.0.1 and is stopped by the process-group ids this script recorded (never by name).
#
#   infra/dev-stack.sh up        # start all three, print the environment to use
#   eval "$(infra/dev-stack.sh env)"
#   infra/dev-stack.sh status
#   infra/dev-stack.sh down
#
# State (data, logs, pids, the generated S3 credentials in s3.env, mode 600) lives in $HVT_DEV_STACK_DIR
# (default /tmp/hvt-dev-stack). Ports: HVT_S3_PORT (8333), HVT_PREFECT_PORT (4200), HVT_RAY_PORT (6389),
# HVT_RAY_DASHBOARD_PORT (8265). Needs the project venv (make venv): weed, prefect and ray come from it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_BIN="${HVT_VENV_BIN:-$REPO/.venv/bin}"
STATE="${HVT_DEV_STACK_DIR:-/tmp/hvt-dev-stack}"
S3_PORT="${HVT_S3_PORT:-8333}"
PREFECT_PORT="${HVT_PREFECT_PORT:-4200}"
RAY_PORT="${HVT_RAY_PORT:-6389}"
RAY_DASHBOARD_PORT="${HVT_RAY_DASHBOARD_PORT:-8265}"
BUCKET="${HVT_S3_BUCKET:-hvt}"

export PREFECT_SERVER_ANALYTICS_ENABLED=false RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"

die() { echo "dev-stack: $*" >&2; exit 1; }

wait_http() {  # url timeout_s name: any HTTP answer (even 403) means the server is up
  "$VENV_BIN/python" - "$1" "$2" "$3" <<'PY'
import sys, time, urllib.error, urllib.request
url, timeout, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(url, timeout=2)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(f"dev-stack: {name} did not answer at {url} within {timeout:.0f}s")
PY
}

running() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

start() {  # name command...: own session (setsid), so `down` can stop the whole process group
  local name=$1; shift
  if running "$name"; then echo "$name already running (pid $(cat "$STATE/$name.pid"))"; return; fi
  setsid "$@" >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/$name.pid"
}

credentials() {
  if [[ ! -f "$STATE/s3.env" ]]; then
    umask 077
    local key secret
    key="hvt-$("$VENV_BIN/python" -c 'import secrets; print(secrets.token_hex(6))')"
    secret="$("$VENV_BIN/python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
    printf 'export AWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY=%s\n' "$key" "$secret" >"$STATE/s3.env"
  fi
  # shellcheck disable=SC1091
  source "$STATE/s3.env"
}

print_env() {
  cat <<ENV
source $STATE/s3.env
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_DEFAULT_REGION=us-east-1
export HVT_STORE=s3://$BUCKET/store
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export RAY_ADDRESS=http://127.0.0.1:$RAY_DASHBOARD_PORT   # Jobs API; the cluster deployment's cluster.address
export RAY_AUTH_MODE=$RAY_AUTH_MODE
ENV
}

up() {
  [[ -x "$VENV_BIN/prefect" ]] || die "no venv at $VENV_BIN: run 'make venv' first"
  mkdir -p "$STATE/seaweedfs" "$STATE/prefect-home" "$STATE/ray"
  credentials
  start seaweedfs "$VENV_BIN/weed" mini -dir="$STATE/seaweedfs" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$S3_PORT" -webdav=false -admin.ui=false -bucket="$BUCKET"
  PREFECT_HOME="$STATE/prefect-home" start prefect "$VENV_BIN/prefect" server start --host 127.0.0.1 \
    --port "$PREFECT_PORT"
  # --block keeps `ray start` in the foreground of its own session: stopping its group stops the head
  PATH="$VENV_BIN:$PATH" start ray "$VENV_BIN/ray" start --head --block --node-ip-address=127.0.0.1 \
    --port="$RAY_PORT" --dashboard-host=127.0.0.1 --dashboard-port="$RAY_DASHBOARD_PORT" \
    --include-dashboard=true --temp-dir="$STATE/ray" --disable-usage-stats
  wait_http "http://127.0.0.1:$S3_PORT" 60 SeaweedFS
  wait_http "http://127.0.0.1:$PREFECT_PORT/api/health" 120 "Prefect server"
  wait_http "http://127.0.0.1:$RAY_DASHBOARD_PORT/api/version" 120 "Ray Jobs API"
  echo "dev stack up (state in $STATE). Use it with:"
  echo
  print_env
}

down() {
  local name pgid
  for name in ray prefect seaweedfs; do
    if running "$name"; then
      pgid=$(cat "$STATE/$name.pid")
      kill -INT -- "-$pgid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pgid" 2>/dev/null || break; sleep 0.5; done
      kill -TERM -- "-$pgid" 2>/dev/null || true
      sleep 1
      kill -KILL -- "-$pgid" 2>/dev/null || true
      echo "stopped $name (process group $pgid)"
    fi
    rm -f "$STATE/$name.pid"
  done
}

status() {
  local name
  for name in seaweedfs prefect ray; do
    if running "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"), log $STATE/$name.log)"
    else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
