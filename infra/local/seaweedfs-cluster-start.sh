#!/usr/bin/env bash
# A multi-node SeaweedFS on this machine, on 127.0.0.1 only:
#   1 master (-defaultReplication=001: every volume has one extra copy on another
#   volume server of the same rack), 2 volume servers (same data center and rack),
#   1 filer, 2 S3 gateways on two ports (both in front of the one filer).
#
# Usage: infra/local/seaweedfs-cluster-start.sh [DATA_DIR]
#   DATA_DIR  default ./.runarchive/seaweedfs-cluster; all state, logs, PIDs, keys
# Environment (first start only; later starts reuse DATA_DIR/cluster.env):
#   PORT_BASE  default 8340: master PORT_BASE, filer +1, S3 gateways +2 and +3, volume
#              server N at +3+N (8344, 8345, ...); each also uses its port + 10000 (gRPC)
#   BUCKET     default runarchive (created if missing)
#   PREFIX     default agents (the prefix printed in RUNARCHIVE_URL)
# Environment (any start):
#   VOLUMES    the volume servers to run, by number; default "1 2" (remembered). E.g.
#              after volume server 1 died for good: VOLUMES="2 3" adds server 3, and
#              the master grows new replicated volumes on 2 and 3
#   WEED       the weed binary (default .venv/bin/weed, then weed on PATH)
#
# Running it again starts only the components that are not running (e.g. a volume
# server that was killed) and waits until the whole cluster is ready again.
# With replication 001 a write needs two live volume servers: while one of two is down
# reads keep working (from the copy) but writes wait; run 3 to keep writing.
# Stop: infra/local/seaweedfs-cluster-stop.sh [DATA_DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

DATA_DIR="$(abspath "${1:-$PWD/.runarchive/seaweedfs-cluster}")"
WEED_BIN="$(find_weed)"
READY_TIMEOUT=${READY_TIMEOUT:-60}

if [[ ! -f "$DATA_DIR/cluster.env" ]]; then
  base=${PORT_BASE:-8340}
  if ! [[ "$base" =~ ^[0-9]+$ ]] || ((base < 1024 || base + 3 + GRPC_OFFSET > 65535)); then
    die "PORT_BASE must be a number from 1024 to $((65535 - 3 - GRPC_OFFSET))"
  fi
  cat >"$DATA_DIR/cluster.env" <<EOF
PORT_BASE=$base
BUCKET=${BUCKET:-runarchive}
PREFIX=${PREFIX:-agents}
VOLUMES="${VOLUMES:-1 2}"
EOF
  first_start=1
else
  first_start=0
fi
volumes_env=${VOLUMES:-}
# shellcheck disable=SC1091
source "$DATA_DIR/cluster.env"
if [[ -n "$volumes_env" && "$volumes_env" != "$VOLUMES" ]]; then
  VOLUMES=$volumes_env
  sed -i "s/^VOLUMES=.*/VOLUMES=\"$VOLUMES\"/" "$DATA_DIR/cluster.env"
fi
MASTER_PORT=$PORT_BASE
FILER_PORT=$((PORT_BASE + 1))
S3A_PORT=$((PORT_BASE + 2))
S3B_PORT=$((PORT_BASE + 3))
volume_port() { echo $((PORT_BASE + 3 + $1)); }
read -r -a volumes <<<"$VOLUMES"
((${#volumes[@]} >= 2)) || die "VOLUMES must name at least two volume servers (replication 001)"
for n in "${volumes[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]?$ ]] || die "VOLUMES: '$n' is not a volume server number (1-99)"
  ((PORT_BASE + 3 + n + GRPC_OFFSET <= 65535)) || die "volume server $n: port out of range"
done

# Before launching anything new: its ports must be free.
to_check=()
if ((first_start)); then
  to_check+=("$MASTER_PORT" "$FILER_PORT" "$S3A_PORT" "$S3B_PORT")
fi
for n in "${volumes[@]}"; do
  pid_of "$DATA_DIR" "volume$n" >/dev/null || to_check+=("$(volume_port "$n")")
done
for port in "${to_check[@]}"; do
  if ! port_free "$port" || ! port_free $((port + GRPC_OFFSET)); then
    die "port $port or $((port + GRPC_OFFSET)) on $LOCALHOST is in use (set PORT_BASE for a new DATA_DIR)"
  fi
done

ensure_credentials "$DATA_DIR"
mkdir -p "$DATA_DIR/master" "$DATA_DIR/filer"

echo "SeaweedFS cluster in $DATA_DIR ($WEED_BIN)"

launch "$DATA_DIR" master master \
  -ip="$LOCALHOST" -ip.bind="$LOCALHOST" \
  -port="$MASTER_PORT" -port.grpc=$((MASTER_PORT + GRPC_OFFSET)) \
  -mdir="$DATA_DIR/master" -peers=none -telemetry=false \
  -defaultReplication=001 -volumeSizeLimitMB=1024
wait_until "master" "check_alive '$DATA_DIR' master && http_get $MASTER_PORT /cluster/status | grep -q '\"IsLeader\":true'" "$READY_TIMEOUT"

vnames=()
for n in "${volumes[@]}"; do
  port=$(volume_port "$n")
  vnames+=("volume$n")
  mkdir -p "$DATA_DIR/volume$n"
  # -max: each bucket is a collection with volumes of its own; the default (8) is
  # soon exhausted. Volumes are sparse files, so a high limit costs nothing.
  launch "$DATA_DIR" "volume$n" volume \
    -ip="$LOCALHOST" -ip.bind="$LOCALHOST" \
    -port="$port" -port.grpc=$((port + GRPC_OFFSET)) \
    -dir="$DATA_DIR/volume$n" -max=2000 -master="$LOCALHOST:$MASTER_PORT" \
    -dataCenter=dc1 -rack=rack1 -preStopSeconds=0
done
# Every volume server registered with the master.
volumes_registered() {
  local status n
  status=$(http_get "$MASTER_PORT" /dir/status)
  for n in "${volumes[@]}"; do
    grep -q "\"Url\":\"$LOCALHOST:$(volume_port "$n")\"" <<<"$status" || return 1
  done
}
# shellcheck disable=SC2016 # evaluated by wait_until
wait_until "volume servers" 'check_alive "$DATA_DIR" "${vnames[@]}" && volumes_registered' \
  "$READY_TIMEOUT"

launch "$DATA_DIR" filer filer \
  -ip="$LOCALHOST" -ip.bind="$LOCALHOST" \
  -port="$FILER_PORT" -port.grpc=$((FILER_PORT + GRPC_OFFSET)) \
  -master="$LOCALHOST:$MASTER_PORT" -defaultStoreDir="$DATA_DIR/filer" \
  -localSocket="$DATA_DIR/filer.sock"
wait_until "filer" "check_alive '$DATA_DIR' filer && http_answers $FILER_PORT /" "$READY_TIMEOUT"

for gw in A B; do
  port_var="S3${gw}_PORT"
  port=${!port_var}
  name="s3${gw,,}"
  launch "$DATA_DIR" "$name" s3 \
    -ip="$LOCALHOST" -ip.bind="$LOCALHOST" \
    -port="$port" -port.grpc=$((port + GRPC_OFFSET)) \
    -port.iceberg=0 -port.lance=0 \
    -filer="$LOCALHOST:$FILER_PORT" -config="$DATA_DIR/s3-identities.json" \
    -localSocket="$DATA_DIR/$name.sock"
done
wait_until "S3 gateways" \
  "check_alive '$DATA_DIR' s3a s3b && http_answers $S3A_PORT / && http_answers $S3B_PORT /" \
  "$READY_TIMEOUT"

# A replicated write and read through the filer proves master, both volume servers
# and filer work together (an S3 request from bash would need SigV4 signing).
wait_until "replicated write" "filer_roundtrip $FILER_PORT" "$READY_TIMEOUT"
create_bucket "$MASTER_PORT" "$FILER_PORT" "$BUCKET"

endpoint_a="http://$LOCALHOST:$S3A_PORT"
endpoint_b="http://$LOCALHOST:$S3B_PORT"
cat >"$DATA_DIR/env" <<EOF
export RUNARCHIVE_URL=s3://$BUCKET/$PREFIX
export RUNARCHIVE_ENDPOINT_URL=$endpoint_a
export RUNARCHIVE_ADDRESSING_STYLE=path
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
EOF
chmod 600 "$DATA_DIR/env"

cat <<EOF

Ready: master http://$LOCALHOST:$MASTER_PORT, volume servers$(for n in "${volumes[@]}"; do printf ' :%s' "$(volume_port "$n")"; done)
(replication 001), filer http://$LOCALHOST:$FILER_PORT, bucket '$BUCKET'.
S3 gateways (either one; both see the same bucket):
  $endpoint_a
  $endpoint_b

To use it (also in $DATA_DIR/env, for: source $DATA_DIR/env):
  export RUNARCHIVE_URL=s3://$BUCKET/$PREFIX
  export RUNARCHIVE_ENDPOINT_URL=$endpoint_a    # or $endpoint_b
  export RUNARCHIVE_ADDRESSING_STYLE=path
  export AWS_ACCESS_KEY_ID=$ACCESS_KEY
  export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
  export AWS_REGION=us-east-1

Stop: $here/seaweedfs-cluster-stop.sh $DATA_DIR
EOF
