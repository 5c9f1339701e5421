#!/usr/bin/env bash
# Services the sandbox tests need: bubblewrap, and a Docker daemon of our own.
# Sourced by .ci/run:   source .ci/sandbox-services.sh; trap sandbox_services_stop EXIT; sandbox_services_start
# Run by `make test`:   bash .ci/sandbox-services.sh bubblewrap      (install bwrap if missing and we can)
#                       bash .ci/sandbox-services.sh run CMD ARGS... (start, run CMD, stop; exit with CMD's status)
# - installs bubblewrap and docker.io with apt when missing;
# - starts dockerd with its own --data-root/--exec-root/unix socket, --bridge=none --iptables=false
#   (the sandbox uses network "none" only), unless a daemon already answers;
# - builds the sandbox image with `docker import` from a minimal root filesystem when missing;
# - exports DOCKER_HOST for the tests; sandbox_services_stop stops only the daemon started here.

SANDBOX_DOCKERD_DIR=""
SANDBOX_DOCKERD_PID=""

# bubblewrap alone (what `make test` sets up): nothing to do when bwrap is there; otherwise
# install it with apt-get when we are root and apt-get exists, else say why not. Never fails:
# what is still missing is reported by the sandbox tests (one line at the end of the pytest run).
sandbox_install_bubblewrap() {
    command -v bwrap >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "sandbox setup: bubblewrap is not installed and we are not root: local sandbox tests will be skipped" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "sandbox setup: bubblewrap is not installed and there is no apt-get: local sandbox tests will be skipped" >&2
        return 0
    fi
    echo "sandbox setup: installing bubblewrap (apt-get)"
    local log
    log="$(mktemp /tmp/align-setup-apt.XXXXXX)"
    if { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; } >"$log" 2>&1 \
            && command -v bwrap >/dev/null 2>&1; then
        echo "sandbox setup: $(bwrap --version) installed"
    else
        echo "sandbox setup: apt-get install bubblewrap failed; local sandbox tests will be skipped. Last lines:" >&2
        tail -n 5 "$log" >&2
    fi
    rm -f "$log"
    return 0
}

sandbox_services_start() {
    local missing=()
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "sandbox services: installing ${missing[*]}"
        if ! { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }; then
            echo "sandbox services: apt-get install ${missing[*]} failed; the sandbox tests will report it" >&2
        fi
    fi
    if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
        echo "sandbox services: using the Docker daemon at $DOCKER_HOST"
    elif command -v dockerd >/dev/null 2>&1; then
        SANDBOX_DOCKERD_DIR="$(mktemp -d /tmp/align-ci-dockerd.XXXXXX)"
        dockerd --data-root "$SANDBOX_DOCKERD_DIR/data" --exec-root "$SANDBOX_DOCKERD_DIR/exec" \
            --pidfile "$SANDBOX_DOCKERD_DIR/dockerd.pid" -H "unix://$SANDBOX_DOCKERD_DIR/docker.sock" \
            --bridge=none --iptables=false >"$SANDBOX_DOCKERD_DIR/dockerd.log" 2>&1 &
        SANDBOX_DOCKERD_PID=$!
        export DOCKER_HOST="unix://$SANDBOX_DOCKERD_DIR/docker.sock"
        local i
        for i in $(seq 1 60); do
            docker version >/dev/null 2>&1 && break
            sleep 0.5
        done
        if docker version >/dev/null 2>&1; then
            echo "sandbox services: dockerd (pid $SANDBOX_DOCKERD_PID) answers at $DOCKER_HOST"
        else
            echo "sandbox services: dockerd did not come up; last log lines:" >&2
            tail -n 20 "$SANDBOX_DOCKERD_DIR/dockerd.log" >&2 || true
        fi
    fi
    if docker version >/dev/null 2>&1; then
        local tag rootfs
        tag="$(python3 -m sandbox.docker_image --tag)" || tag=""
        if [ -n "$tag" ] && ! docker image inspect "$tag" >/dev/null 2>&1; then
            rootfs="$(mktemp -d /tmp/align-ci-rootfs.XXXXXX)"
            if python3 -m sandbox.docker_image --rootfs "$rootfs" >/dev/null \
                    && tar -C "$rootfs" -c . | docker import - "$tag" >/dev/null; then
                echo "sandbox services: imported image $tag"
            else
                echo "sandbox services: could not build $tag (the docker backend builds it on first use)" >&2
            fi
            rm -rf "$rootfs"
        fi
    fi
}

sandbox_services_stop() {
    if [ -n "$SANDBOX_DOCKERD_PID" ] && kill -0 "$SANDBOX_DOCKERD_PID" 2>/dev/null; then
        # containers of ours are removed by the tests; remove any survivor before the daemon goes
        docker ps -aq --filter label=align-sandbox 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
        kill -TERM "$SANDBOX_DOCKERD_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 40); do
            kill -0 "$SANDBOX_DOCKERD_PID" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$SANDBOX_DOCKERD_PID" 2>/dev/null || true
        wait "$SANDBOX_DOCKERD_PID" 2>/dev/null || true
    fi
    if [ -n "$SANDBOX_DOCKERD_DIR" ]; then
        grep " $SANDBOX_DOCKERD_DIR/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "$SANDBOX_DOCKERD_DIR" 2>/dev/null || true
    fi
    SANDBOX_DOCKERD_PID=""
    SANDBOX_DOCKERD_DIR=""
}

# Executed rather than sourced: `bubblewrap` or `run CMD ARGS...`.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        bubblewrap)
            sandbox_install_bubblewrap
            ;;
        run)
            shift
            [ $# -gt 0 ] || { echo "usage: $0 run CMD [ARGS...]" >&2; exit 2; }
            # the daemon started here is stopped however CMD ends: failure, Ctrl-C (the terminal signals
            # CMD too), SIGTERM or SIGHUP (taken once the foreground CMD has ended)
            trap sandbox_services_stop EXIT
            trap 'exit 130' INT
            trap 'exit 143' TERM
            trap 'exit 129' HUP
            sandbox_services_start
            "$@"
            exit $?
            ;;
        *)
            echo "usage: $0 bubblewrap | run CMD [ARGS...]   (or source it: see the top of this file)" >&2
            exit 2
            ;;
    esac
fi
