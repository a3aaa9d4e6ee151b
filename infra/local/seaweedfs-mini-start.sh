#!/usr/bin/env bash
# A single-node SeaweedFS (`weed mini`: master, volume server, filer and S3 gateway in
# one process) on 127.0.0.1 only, started the way the tests start it (tests/support/servers.py).
#
# Usage: infra/local/seaweedfs-mini-start.sh [DATA_DIR]
#   DATA_DIR  default ./.runarchive/seaweedfs-mini; all state, logs, the PID, the keys
# Environment (first start only; later starts reuse DATA_DIR/mini.env):
#   PORT_BASE  default 8333: S3 PORT_BASE, master +1, volume +2, filer +3, admin +4;
#              each also uses its port + 10000 for gRPC
#   BUCKET     default runarchive (created if missing)
#   PREFIX     default agents (the prefix printed in RUNARCHIVE_URL)
# Environment (any start):
#   WEED       the weed binary (default .venv/bin/weed, then weed on PATH)
# Stop: infra/local/seaweedfs-mini-stop.sh [DATA_DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

DATA_DIR="$(abspath "${1:-$PWD/.runarchive/seaweedfs-mini}")"
WEED_BIN="$(find_weed)"
READY_TIMEOUT=${READY_TIMEOUT:-60}

first_start=0
if [[ ! -f "$DATA_DIR/mini.env" ]]; then
  base=${PORT_BASE:-8333}
  if ! [[ "$base" =~ ^[0-9]+$ ]] || ((base < 1024 || base + 4 + GRPC_OFFSET > 65535)); then
    die "PORT_BASE must be a number from 1024 to $((65535 - 4 - GRPC_OFFSET))"
  fi
  cat >"$DATA_DIR/mini.env" <<END
PORT_BASE=$base
BUCKET=${BUCKET:-runarchive}
PREFIX=${PREFIX:-agents}
END
  first_start=1
fi
# shellcheck disable=SC1091
source "$DATA_DIR/mini.env"
S3_PORT=$PORT_BASE
MASTER_PORT=$((PORT_BASE + 1))
VOLUME_PORT=$((PORT_BASE + 2))
FILER_PORT=$((PORT_BASE + 3))
ADMIN_PORT=$((PORT_BASE + 4))

if ((first_start)) || ! pid_of "$DATA_DIR" mini >/dev/null; then
  for port in "$S3_PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT" "$ADMIN_PORT"; do
    if ! port_free "$port" || ! port_free $((port + GRPC_OFFSET)); then
      die "port $port or $((port + GRPC_OFFSET)) on $LOCALHOST is in use (set PORT_BASE for a new DATA_DIR)"
    fi
  done
fi
ensure_credentials "$DATA_DIR"
mkdir -p "$DATA_DIR/data"

echo "SeaweedFS (weed mini) in $DATA_DIR ($WEED_BIN)"
# -volume.max: each bucket is a collection with volumes of its own; the default (free
# disk / 1 GiB) is soon exhausted. Volumes are sparse files: a high limit costs nothing.
launch "$DATA_DIR" mini mini \
  -dir="$DATA_DIR/data" -ip="$LOCALHOST" -ip.bind="$LOCALHOST" \
  -master.telemetry=false -admin.ui=false -webdav=false \
  -s3.port="$S3_PORT" -s3.port.grpc=$((S3_PORT + GRPC_OFFSET)) \
  -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.port="$MASTER_PORT" -master.port.grpc=$((MASTER_PORT + GRPC_OFFSET)) \
  -volume.port="$VOLUME_PORT" -volume.port.grpc=$((VOLUME_PORT + GRPC_OFFSET)) \
  -filer.port="$FILER_PORT" -filer.port.grpc=$((FILER_PORT + GRPC_OFFSET)) \
  -admin.port="$ADMIN_PORT" -admin.port.grpc=$((ADMIN_PORT + GRPC_OFFSET)) \
  -volume.preStopSeconds=0 -volume.max=2000 \
  -s3.config="$DATA_DIR/s3-identities.json" \
  -s3.localSocket="$DATA_DIR/s3.sock" -filer.localSocket="$DATA_DIR/filer.sock"

wait_until "weed mini" \
  "check_alive '$DATA_DIR' mini && http_answers $S3_PORT / && http_answers $FILER_PORT /" \
  "$READY_TIMEOUT"
wait_until "write path" "filer_roundtrip $FILER_PORT" "$READY_TIMEOUT"
create_bucket "$MASTER_PORT" "$FILER_PORT" "$BUCKET"

endpoint="http://$LOCALHOST:$S3_PORT"
cat >"$DATA_DIR/env" <<END
export RUNARCHIVE_URL=s3://$BUCKET/$PREFIX
export RUNARCHIVE_ENDPOINT_URL=$endpoint
export RUNARCHIVE_ADDRESSING_STYLE=path
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
END
chmod 600 "$DATA_DIR/env"

cat <<END

Ready: S3 endpoint $endpoint, bucket '$BUCKET' (signatures checked).

To use it (also in $DATA_DIR/env, for: source $DATA_DIR/env):
  export RUNARCHIVE_URL=s3://$BUCKET/$PREFIX
  export RUNARCHIVE_ENDPOINT_URL=$endpoint
  export RUNARCHIVE_ADDRESSING_STYLE=path
  export AWS_ACCESS_KEY_ID=$ACCESS_KEY
  export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
  export AWS_REGION=us-east-1

Stop: $here/seaweedfs-mini-stop.sh $DATA_DIR
END
