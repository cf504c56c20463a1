# nbd-replica: shared helpers for the integration tests (sourced).
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
#
# Environment (set by tests/meson.build):
#   FILTER      build/plugin/nbdkit-replica-filter.so
#   REPLICACTL  build/tools/replicactl
#   SRCDIR      the source tree, BUILDDIR the build tree
#   NBDKIT_PRELOAD  sanitizer runtime to preload into nbdkit only (ASan build)
#
# Every process a test starts is registered by PID and killed on exit.

set -e
set -o pipefail
# nbdsh runs the first python3 on PATH: it must be Debian's, which has
# the nbd module.
export PATH=/usr/bin:$PATH

_cleanup_fns=()
_pids=()

cleanup_fn () { _cleanup_fns+=("$*"); }

_run_cleanup ()
{
    local status=$?
    local p fn
    set +e
    for p in "${_pids[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    for p in "${_pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    for fn in "${_cleanup_fns[@]}"; do
        eval "$fn"
    done
    exit $status
}
trap _run_cleanup EXIT INT TERM

declare -A _errlogs             # nbdkit's PID -> its stderr log
# register_pid PID: kill it (SIGKILL) when the test ends.
register_pid () { _pids+=("$1"); }

fail () { echo "$0: FAIL: $*" >&2; exit 1; }

# skip WHY: this test cannot run here: exit 77 (meson's SKIP), or fail
# with REPLICA_TESTS_STRICT=1 (tools/test sets it: there everything a
# test needs is installed, and a skip would hide a failure).
skip ()
{
    [ "${REPLICA_TESTS_STRICT:-0}" != 1 ] || fail "cannot run here: $*"
    echo "$0: test skipped: $*"
    exit 77
}

requires ()
{
    "$@" >/dev/null 2>&1 || skip "prerequisite is missing: $*"
}

# requires_env COMMAND...: a condition of the machine itself (its CPU,
# its configuration) that installing packages cannot meet: a skip even
# under REPLICA_TESTS_STRICT.
requires_env ()
{
    if ! "$@" >/dev/null 2>&1; then
        echo "$0: test skipped: this machine lacks: $*"
        exit 77
    fi
}

# A private scratch directory, removed at exit.
make_tmpdir ()
{
    TMPD=$(mktemp -d /tmp/replica-test.XXXXXX)
    cleanup_fn "rm -rf '$TMPD'"
}

# run_nbdkit ARGS...: nbdkit in the foreground with the sanitizer runtime
# preloaded when the filter is sanitized.  Use for tests expecting a
# startup failure (check "$?" and the output yourself).
run_nbdkit ()
{
    if [ -n "$NBDKIT_PRELOAD" ]; then
        LD_PRELOAD="$NBDKIT_PRELOAD" nbdkit "$@"
    else
        nbdkit "$@"
    fi
}

# spawn_nbdkit ERRLOG COMMAND...: COMMAND (nbdkit -f ..., or a command
# that execs it: "ip netns exec NS nbdkit ...") in the background with
# the sanitizer runtime preloaded, stderr appended to ERRLOG; registered
# for the cleanup; sets NBDKIT_PID.  exec: $! is nbdkit itself, not a
# subshell running it (killing the subshell would leave nbdkit running,
# still holding the log).
spawn_nbdkit ()
{
    local errlog=$1
    shift
    (
        if [ -n "$NBDKIT_PRELOAD" ]; then
            export LD_PRELOAD="$NBDKIT_PRELOAD"
        fi
        exec "$@"
    ) 2>>"$errlog" &
    NBDKIT_PID=$!
    register_pid $NBDKIT_PID
    _errlogs[$NBDKIT_PID]=$errlog
}

# wait_until SECONDS WHY COMMAND...: until COMMAND succeeds (tried every
# 0.1 s), else fail with WHY.  While $WATCH_PID is set, fail at once
# (with its log) if that process exits meanwhile.
wait_until ()
{
    local secs=$1 why=$2 i
    shift 2
    for i in $(seq 1 $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        if [ -n "${WATCH_PID:-}" ] && ! kill -0 "$WATCH_PID" 2>/dev/null; then
            cat "${_errlogs[$WATCH_PID]:-/dev/null}" >&2
            fail "nbdkit exited during startup"
        fi
        sleep 0.1
    done
    [ -z "${WATCH_PID:-}" ] || cat "${_errlogs[$WATCH_PID]:-/dev/null}" >&2
    fail "$why"
}

_answers () { [ -S "$1" ] && "$REPLICACTL" --control "$1" status; }
_serves () { [ -S "$1" ] && nbdinfo --size "$2"; }

# wait_control CTL [SECONDS]: until the nbdkit spawned last answers
# status on its control socket CTL (30 s at most).
wait_control ()
{
    WATCH_PID=$NBDKIT_PID wait_until "${2:-30}" \
        "nbdkit did not answer on $1 within ${2:-30} s" _answers "$1"
}

# start_nbdkit SOCKET LOGFILE ARGS...: start nbdkit -f serving unix SOCKET
# in the background with the replica filter, stderr to LOGFILE; wait until
# the socket accepts (at READY_URI if set: a TLS server); sets NBDKIT_PID.
start_nbdkit ()
{
    local sock=$1 errlog=$2
    shift 2
    rm -f "$sock"
    spawn_nbdkit "$errlog" nbdkit -f -U "$sock" --filter="$FILTER" "$@"
    WATCH_PID=$NBDKIT_PID wait_until 30 "nbdkit did not start within 30 s" \
        _serves "$sock" "${READY_URI:-nbd+unix:///?socket=$sock}"
}

# kill_nbdkit_hard: SIGKILL the nbdkit started last and wait for it.
kill_nbdkit_hard ()
{
    kill -9 $NBDKIT_PID 2>/dev/null || true
    wait $NBDKIT_PID 2>/dev/null || true
}

# stop_nbdkit: orderly stop (SIGTERM), fail if it does not exit, or if
# it exits with a non-zero status (in the ASan suite: a sanitizer report,
# leaks at exit included; its log's end is shown).  Status 127: not a
# child of this shell any more (already waited for), nothing to check.
stop_nbdkit ()
{
    kill -TERM $NBDKIT_PID
    local i rc=0
    for i in $(seq 1 100); do
        if ! kill -0 $NBDKIT_PID 2>/dev/null; then
            wait $NBDKIT_PID 2>/dev/null || rc=$?
            if [ $rc != 0 ] && [ $rc != 127 ]; then
                tail -40 "${_errlogs[$NBDKIT_PID]:-/dev/null}" >&2
                fail "nbdkit exited with status $rc on SIGTERM"
            fi
            return 0
        fi
        sleep 0.1
    done
    fail "nbdkit did not exit on SIGTERM"
}

# expect_fail NAME REGEX NBDKIT-ARGS...: nbdkit -f (in the background so
# a hang is caught: 20 s) must exit non-zero and print an error line
# matching the extended REGEX.
expect_fail ()
{
    local name=$1 re=$2 out="$TMPD/$1.out" pid rc
    shift 2
    rm -f "$TMPD/sock.err"
    run_nbdkit -f -U "$TMPD/sock.err" --filter="$FILTER" "$@" \
        >"$out" 2>&1 &
    pid=$!
    register_pid $pid
    for _ in $(seq 1 200); do
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 $pid 2>/dev/null; then
        cat "$out"
        fail "$name: nbdkit is still running after 20 s"
    fi
    rc=0
    wait $pid || rc=$?
    [ $rc -ne 0 ] || { cat "$out"; fail "$name: nbdkit exited with status 0"; }
    if ! grep -E 'error' "$out" | grep -qE -- "$re"; then
        cat "$out"
        fail "$name: no error line matching /$re/"
    fi
    echo "$name: exit $rc: $(grep -E 'error' "$out" | grep -E -- "$re" | head -1)"
}

# free_port: a TCP port of 127.0.0.1 that was free a moment ago.
free_port ()
{
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

uri_of () { echo "nbd+unix:///?socket=$1"; }

# status_field CONTROL KEY: one value from replicactl status --json,
# as JSON spells it (true, false, null; strings bare).
status_field ()
{
    "$REPLICACTL" --control "$1" status --json |
        /usr/bin/python3 -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(v if isinstance(v, str) else json.dumps(v))' "$2"
}

# use_fault_shim FILE: preload tests/faultinject.so into nbdkit (after
# the sanitizer runtime, which must stay first), aimed at FILE, armed
# while $TMPD/trigger exists (its content: the errno name and options,
# see tests/faultinject.c).
use_fault_shim ()
{
    local shim="$BUILDDIR/tests/faultinject.so"
    [ -f "$shim" ] || fail "$shim is not built"
    export NBDKIT_PRELOAD="${NBDKIT_PRELOAD:+$NBDKIT_PRELOAD }$shim"
    export REPLICA_FAULT_TRIGGER="$TMPD/trigger"
    REPLICA_FAULT_PATH="$(realpath "$1")"
    export REPLICA_FAULT_PATH
}
