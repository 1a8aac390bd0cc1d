#!/usr/bin/env bash
# Deploy swarmctl nodes from the binary dist/swarmctl (make binary).
#
#   deploy.sh docker [--executors N] [--slots N] [--port PORT] [--secret-file FILE]
#                    [--suite-python IMAGE] [--no-build]
#       builds the images and starts packaging/docker/docker-compose.yml, waits until every
#       container is healthy, then checks the coordinator with swarmctl status
#   deploy.sh systemd coordinator [--listen HOST:PORT] [--secret-file FILE]
#   deploy.sh systemd executor --join HOST:PORT [--id ID] [--secret-file FILE]
#       installs the binary as /usr/local/bin/swarmctl, the swarmctl user, the secret as
#       /etc/swarmctl/cluster.secret and the unit of packaging/systemd, then starts it
#
# Both run setup.sh first, except with DESTDIR. SWARMCTL_BINARY names another binary to
# install and run. SWARMCTL_COMPOSE_OVERRIDE (docker) adds a compose file on top of the
# project's. DESTDIR (systemd) writes the files under that folder only, creates no user and
# starts nothing, for building a package or for a look at the result.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BINARY=${SWARMCTL_BINARY:-$ROOT/dist/swarmctl}
STATUS_ATTEMPTS=30

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}
log() { printf 'deploy.sh: %s\n' "$*"; }
die() { printf 'deploy.sh: error: %s\n' "$*" >&2; exit 1; }

[ -x "$BINARY" ] || die "$BINARY not found; build it with: make binary"

# wait_for_status ARGS...: retry swarmctl status until it exits 0 or STATUS_ATTEMPTS run out.
# The caller sets SWARMCTL_SECRET_FILE, with which the client proves it belongs to the cluster.
wait_for_status() {
    for _ in $(seq 1 "$STATUS_ATTEMPTS"); do
        if "$BINARY" status --local --timeout 2s "$@" 2>/dev/null; then
            return 0
        fi
        sleep 1
    done
    "$BINARY" status --local "$@"
}

deploy_docker() {
    local executors=2 slots=2 port=7400 secret_file=$ROOT/packaging/docker/cluster.secret
    local suite_python=python:3.12-slim-bookworm build=--build
    while [ $# -gt 0 ]; do
        case "$1" in
        --executors) executors=${2:?--executors needs N}; shift 2 ;;
        --slots) slots=${2:?--slots needs N}; shift 2 ;;
        --port) port=${2:?--port needs PORT}; shift 2 ;;
        --secret-file) secret_file=${2:?--secret-file needs FILE}; shift 2 ;;
        --suite-python) suite_python=${2:?--suite-python needs IMAGE}; shift 2 ;;
        --no-build) build=--no-build; shift ;;
        *) printf 'deploy.sh: unknown option %s\n' "$1" >&2; usage ;;
        esac
    done
    SWARMCTL="$BINARY" "$ROOT/packaging/scripts/setup.sh" docker --secret-file "$secret_file" --port "$port"

    local files=(-f "$ROOT/packaging/docker/docker-compose.yml")
    [ -n "${SWARMCTL_COMPOSE_OVERRIDE:-}" ] && files+=(-f "$SWARMCTL_COMPOSE_OVERRIDE")
    # The three coordinators are published on PORT, PORT+1 and PORT+2.
    local port_2=$((port + 1)) port_3=$((port + 2))
    log "starting three coordinators and $executors executors"
    SWARMCTL_SECRET_FILE_HOST=$secret_file SWARMCTL_EXECUTORS=$executors SWARMCTL_SLOTS=$slots \
        SWARMCTL_PORT=$port SWARMCTL_PORT_2=$port_2 SWARMCTL_PORT_3=$port_3 SUITE_PYTHON_IMAGE=$suite_python \
        docker compose "${files[@]}" up --detach "$build" --wait --wait-timeout 180
    SWARMCTL_SECRET_FILE=$secret_file wait_for_status --address "127.0.0.1:$port,127.0.0.1:$port_2,127.0.0.1:$port_3"
    log "submit runs with: SWARMCTL_SECRET_FILE=$secret_file swarmctl run SUITE --cluster 127.0.0.1:$port,127.0.0.1:$port_2,127.0.0.1:$port_3"
}

deploy_systemd() {
    local role=${1:-}
    case "$role" in coordinator | executor) shift ;; *) usage ;; esac
    local listen=127.0.0.1:7400 join='' node_id='' secret_file=''
    while [ $# -gt 0 ]; do
        case "$1" in
        --listen) listen=${2:?--listen needs HOST:PORT}; shift 2 ;;
        --join) join=${2:?--join needs HOST:PORT}; shift 2 ;;
        --id) node_id=${2:?--id needs ID}; shift 2 ;;
        --secret-file) secret_file=${2:?--secret-file needs FILE}; shift 2 ;;
        *) printf 'deploy.sh: unknown option %s\n' "$1" >&2; usage ;;
        esac
    done
    [ "$role" = executor ] && [ -z "$join" ] && die "an executor needs --join HOST:PORT with the coordinator's address"
    local destdir=${DESTDIR:-}
    [ -n "$destdir" ] || [ "$(id -u)" = 0 ] || die "run as root to install system files, or set DESTDIR"

    local secret_target=$destdir/etc/swarmctl/cluster.secret
    if [ -z "$secret_file" ]; then
        [ "$role" = coordinator ] || die "an executor needs --secret-file with the coordinator's cluster secret"
        secret_file=$secret_target
        [ -e "$secret_file" ] || log "creating a new cluster secret; copy $secret_target to every executor"
    fi
    # A DESTDIR install is checked on the machine it ends up on, not here.
    if [ -z "$destdir" ]; then
        SWARMCTL="$BINARY" "$ROOT/packaging/scripts/setup.sh" binary --secret-file "$secret_file" \
            --data-dir /var/lib/swarmctl --port "${listen##*:}"
    fi

    install -D -m 0755 "$BINARY" "$destdir/usr/local/bin/swarmctl"
    install -d -m 0750 "$destdir/etc/swarmctl"
    if [ ! -e "$secret_target" ]; then
        if [ -e "$secret_file" ]; then
            install -m 0600 "$secret_file" "$secret_target"
        else
            (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$secret_target")
        fi
    fi

    local unit=swarmctl-$role.service
    local exec_start
    if [ "$role" = coordinator ]; then
        exec_start="/usr/local/bin/swarmctl up --role coordinator --listen $listen --data-dir /var/lib/swarmctl/coordinator"
    else
        exec_start="/usr/local/bin/swarmctl up --role executor --join $join${node_id:+ --id $node_id} --data-dir /var/lib/swarmctl/executor --drain-timeout 60s"
    fi
    install -d "$destdir/etc/systemd/system"
    sed "s|^ExecStart=.*|ExecStart=$exec_start|" "$ROOT/packaging/systemd/$unit" >"$destdir/etc/systemd/system/$unit"
    log "installed $destdir/etc/systemd/system/$unit"

    if [ -n "$destdir" ]; then
        log "DESTDIR is set: no user created, nothing started"
        return
    fi
    id -u swarmctl >/dev/null 2>&1 || useradd --system --home-dir /var/lib/swarmctl --shell /usr/sbin/nologin swarmctl
    chown root:swarmctl /etc/swarmctl
    chown swarmctl:swarmctl "$secret_target"
    chmod 0600 "$secret_target"
    systemctl daemon-reload
    systemctl enable --now "$unit"
    export SWARMCTL_SECRET_FILE=$secret_target
    if [ "$role" = coordinator ]; then
        wait_for_status --address "$listen"
    else
        # An executor serves no port: its health is that its coordinator lists it.
        if [ -n "$node_id" ]; then
            wait_for_status --address "$join" --executor "$node_id"
        else
            wait_for_status --address "$join"
        fi
    fi
}

case "${1:-}" in
docker) shift; deploy_docker "$@" ;;
systemd) shift; deploy_systemd "$@" ;;
*) usage ;;
esac
