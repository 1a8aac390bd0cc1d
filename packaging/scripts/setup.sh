#!/usr/bin/env bash
# Prepare a machine for a swarmctl node: check it with `swarmctl doctor` and create the
# cluster secret when there is none.
#
#   setup.sh binary [--secret-file FILE] [--data-dir DIR] [--python PYTHON] [--port PORT]
#       for the binary or systemd: the suite's python3 and pytest, glibc, disk, port, secret
#   setup.sh docker [--secret-file FILE] [--port PORT]
#       for packaging/docker: the Docker daemon and compose, disk of Docker's data folder,
#       port, secret (owned by uid 10001, the containers' swarmctl user)
#
# SWARMCTL names the swarmctl to run (default: dist/swarmctl of this checkout, else swarmctl
# on PATH). Exits 0 when the machine is ready, 1 when a check found a problem, 2 on bad usage.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONTAINER_UID=10001

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

mode=${1:-}
case "$mode" in binary | docker) shift ;; *) usage ;; esac

secret_file=
data_dir=
python=python3
port=7400
while [ $# -gt 0 ]; do
    case "$1" in
    --secret-file) secret_file=${2:?--secret-file needs a FILE}; shift 2 ;;
    --data-dir) data_dir=${2:?--data-dir needs a DIR}; shift 2 ;;
    --python) python=${2:?--python needs an interpreter}; shift 2 ;;
    --port) port=${2:?--port needs a PORT}; shift 2 ;;
    -h | --help) usage ;;
    *) printf 'setup.sh: unknown option %s\n' "$1" >&2; usage ;;
    esac
done

if [ -n "${SWARMCTL:-}" ]; then
    swarmctl=$SWARMCTL
elif [ -x "$ROOT/dist/swarmctl" ]; then
    swarmctl=$ROOT/dist/swarmctl
elif command -v swarmctl >/dev/null 2>&1; then
    swarmctl=$(command -v swarmctl)
else
    die "no swarmctl found: build dist/swarmctl with 'make binary', install swarmctl, or set SWARMCTL"
fi
"$swarmctl" --version >/dev/null || die "$swarmctl does not run; rebuild it with 'make binary'"

# create_secret FILE: a new 64-character secret with mode 0600, unless FILE exists.
create_secret() {
    if [ -e "$1" ]; then
        return
    fi
    mkdir -p "$(dirname "$1")"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$1")
    printf 'setup.sh: created the cluster secret %s (mode 0600); copy it to every node\n' "$1"
}

doctor_args=(doctor --port "$port")
if [ "$mode" = binary ]; then
    secret_file=${secret_file:-${SWARMCTL_SECRET_FILE:-/etc/swarmctl/cluster.secret}}
    create_secret "$secret_file"
    doctor_args+=(--python "$python" --secret-file "$secret_file")
    [ -n "$data_dir" ] && doctor_args+=(--data-dir "$data_dir")
    exec "$swarmctl" "${doctor_args[@]}"
fi

# docker
command -v docker >/dev/null 2>&1 || die "docker not found; install Docker Engine (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker daemon does not respond; start it (systemctl start docker) or set DOCKER_HOST"
docker compose version >/dev/null 2>&1 || die "docker compose (v2) not found; install the compose plugin (Debian: docker-compose-plugin from Docker's repository)"
secret_file=${secret_file:-$ROOT/packaging/docker/cluster.secret}
create_secret "$secret_file"
if [ "$(stat -c %u "$secret_file")" != "$CONTAINER_UID" ]; then
    if [ "$(id -u)" = 0 ]; then
        chown "$CONTAINER_UID:$CONTAINER_UID" "$secret_file"
        printf 'setup.sh: %s now belongs to uid %s, the swarmctl user in the containers\n' "$secret_file" "$CONTAINER_UID"
    else
        die "$secret_file must belong to uid $CONTAINER_UID, the swarmctl user in the containers: run sudo chown $CONTAINER_UID:$CONTAINER_UID $secret_file"
    fi
fi
# The suites run inside the executor image, so the host's Python does not matter here.
doctor_args+=(--skip python --data-dir "$(docker info --format '{{.DockerRootDir}}')")
if [ "$(id -u)" = 0 ]; then
    doctor_args+=(--secret-file "$secret_file")
else
    doctor_args+=(--skip secret)  # owned by the container user, so this user cannot read it
fi
exec "$swarmctl" "${doctor_args[@]}"
