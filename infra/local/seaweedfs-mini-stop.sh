#!/usr/bin/env bash
# Stop the `weed mini` started by seaweedfs-mini-start.sh, by the PID in
# DATA_DIR/pids/mini.pid (SIGTERM; SIGKILL after STOP_TIMEOUT seconds, default 15).
# The data stays in DATA_DIR; start again to resume, or delete DATA_DIR.
#
# Usage: infra/local/seaweedfs-mini-stop.sh [DATA_DIR]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

DATA_DIR="${1:-$PWD/.runarchive/seaweedfs-mini}"
[[ -d "$DATA_DIR/pids" ]] || die "no weed mini in $DATA_DIR (no pids/ directory)"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"

echo "Stopping weed mini in $DATA_DIR"
stop_components "$DATA_DIR" mini
if [[ -f "$DATA_DIR/mini.env" ]]; then
  # shellcheck disable=SC1091
  source "$DATA_DIR/mini.env"
  remove_stale_sockets "s3:$PORT_BASE" "master:$((PORT_BASE + 1))" \
    "volume:$((PORT_BASE + 2))" "filer:$((PORT_BASE + 3))" "admin:$((PORT_BASE + 4))"
fi
