#!/bin/sh
# Start or check the swarmctl node of this container. The image's CMD and HEALTHCHECK call it.
#
#   swarmctl-node [up] [OPTIONS]   start the node of $SWARMCTL_ROLE (coordinator or executor);
#                                  OPTIONS are added to `swarmctl up`
#   swarmctl-node health           exit 0 if the node is healthy, 1 if not
#
# Settings, from the environment:
#   SWARMCTL_ROLE        coordinator or executor (each image sets its own)
#   SWARMCTL_LISTEN      coordinator: HOST:PORT to listen on (default 0.0.0.0:7400)
#   SWARMCTL_ADVERTISE   coordinator: the IP address executors reach it at, for gossip
#                        (default: the first address `hostname -i` prints)
#   SWARMCTL_PEERS       coordinator: HOST:PORT of every coordinator-eligible node, this one
#                        included, to elect a leader among them (default: a single coordinator)
#   SWARMCTL_JOIN        executor: the coordinators' HOST:PORT[,HOST:PORT...] (required)
#   SWARMCTL_EXECUTOR_ID executor: its id (default: the container's hostname, which stays the
#                        same across restarts of one container)
#   SWARMCTL_UNIQUE_ID   executor: when 1, a random suffix is added to the default id, for
#                        replicas that share one hostname (host networking)
#   SWARMCTL_SECRET_FILE the cluster secret file, read by swarmctl itself
set -eu

DATA_DIR=/var/lib/swarmctl
ID_FILE=/tmp/swarmctl-executor.id

executor_id() {
    if [ -n "${SWARMCTL_EXECUTOR_ID:-}" ]; then
        echo "$SWARMCTL_EXECUTOR_ID"
    elif [ "${SWARMCTL_UNIQUE_ID:-0}" = 1 ]; then
        echo "$(hostname)-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    else
        hostname
    fi
}

up() {
    case "${SWARMCTL_ROLE:?set SWARMCTL_ROLE to coordinator or executor}" in
    coordinator)
        advertise=${SWARMCTL_ADVERTISE:-$(hostname -i | cut -d' ' -f1)}
        if [ -n "${SWARMCTL_PEERS:-}" ]; then
            set -- --peers "$SWARMCTL_PEERS" "$@"
        fi
        exec swarmctl up --role coordinator --listen "${SWARMCTL_LISTEN:-0.0.0.0:7400}" \
            --advertise "$advertise" --data-dir "$DATA_DIR" "$@"
        ;;
    executor)
        id=$(executor_id)
        # The health check reads the id from here, since a random suffix differs per start.
        echo "$id" > "$ID_FILE"
        exec swarmctl up --role executor --join "${SWARMCTL_JOIN:?set SWARMCTL_JOIN to the coordinator HOST:PORT}" \
            --id "$id" --data-dir "$DATA_DIR" "$@"
        ;;
    *)
        echo "swarmctl-node: SWARMCTL_ROLE '$SWARMCTL_ROLE' is invalid: use coordinator or executor" >&2
        exit 2
        ;;
    esac
}

health() {
    case "$SWARMCTL_ROLE" in
    coordinator)
        # A coordinator that listens on every address accepts connections on loopback too.
        listen=${SWARMCTL_LISTEN:-0.0.0.0:7400}
        port=${listen##*:}
        host=${listen%:*}
        case "$host" in 0.0.0.0 | "[::]" | "") host=127.0.0.1 ;; esac
        exec swarmctl status --local --address "$host:$port" --timeout 5s
        ;;
    executor)
        exec swarmctl status --local --address "$SWARMCTL_JOIN" --executor "$(cat "$ID_FILE")" --timeout 5s
        ;;
    *)
        echo "swarmctl-node: SWARMCTL_ROLE '${SWARMCTL_ROLE:-}' is invalid: use coordinator or executor" >&2
        exit 1
        ;;
    esac
}

case "${1:-up}" in
health) health ;;
up) [ $# -gt 0 ] && shift; up "$@" ;;
*) up "$@" ;;
esac
