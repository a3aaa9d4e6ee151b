#!/usr/bin/env bash
# Stop the multi-node SeaweedFS started by seaweedfs-cluster-start.sh, by the PIDs in
# DATA_DIR/pids: S3 gateways, filer, volume servers, master (SIGTERM; SIGKILL after
# STOP_TIMEOUT seconds, default 15). The data stays in DATA_DIR; start again to resume,
# or delete DATA_DIR to start from scratch.
#
# Usage: infra/local/seaweedfs-cluster-stop.sh [DATA_DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

DATA_DIR="${1:-$PWD/.runarchive/seaweedfs-cluster}"
[[ -d "$DATA_DIR/pids" ]] || die "no cluster in $DATA_DIR (no pids/ directory)"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"

volumes=()
for file in "$DATA_DIR"/pids/volume*.pid; do
  [[ -e "$file" ]] && volumes+=("$(basename "$file" .pid)")
done
echo "Stopping the SeaweedFS cluster in $DATA_DIR"
stop_components "$DATA_DIR" s3a s3b filer "${volumes[@]}" master

# SIGKILLed components leave their gRPC unix sockets in /tmp.
if [[ -f "$DATA_DIR/cluster.env" ]]; then
  # shellcheck disable=SC1091
  source "$DATA_DIR/cluster.env"
  sockets=("master:$PORT_BASE" "filer:$((PORT_BASE + 1))")
  for n in ${VOLUMES:-}; do
    sockets+=("volume:$((PORT_BASE + 3 + n))")
  done
  remove_stale_sockets "${sockets[@]}"
fi
