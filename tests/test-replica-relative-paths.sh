#!/usr/bin/env bash
# Relative paths, with nbdkit in the background (no -f: it forks and
# changes to /).  The filter makes every path parameter absolute when
# it reads it (nbdkit_absolute_path), since files are opened after the
# fork: the replicator reads the PSK file, the dirty bitmap opens the
# log again.  A primary started from its directory with relative
# replica-log, replica-control and replica-tls-psk must replicate, then,
# restarted without its peer (standalone tracking: the bitmap), start
# and track.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
SIZE=$((16 * 1024 * 1024))
truncate -s $SIZE "$TMPD/pri.img" "$TMPD/sec.img"
start_secondary "$TMPD/sec.img"

# daemon_primary [ARGS...]: from $TMPD, relative paths, in the
# background; sets PRI_PID (from its pid file).
daemon_primary ()
{
    local i
    rm -f "$TMPD/pri.pid" "$TMPD/pri.sock"
    (cd "$TMPD" &&
        run_nbdkit --log=stderr -P "$TMPD/pri.pid" -U "$TMPD/pri.sock" \
            --filter="$FILTER" file pri.img replica-log=pri.log \
            replica-log-size=16M replica-control=pri.ctl "$@" \
            2>>"$TMPD/pri.err") || { cat "$TMPD/pri.err"; fail "nbdkit"; }
    for i in $(seq 100); do
        [ -s "$TMPD/pri.pid" ] && break
        sleep 0.1
    done
    PRI_PID=$(cat "$TMPD/pri.pid" 2>/dev/null) || fail "no pid file"
    register_pid "$PRI_PID"
    for i in $(seq 100); do
        [ -S "$TMPD/pri.ctl" ] && return 0
        kill -0 "$PRI_PID" 2>/dev/null ||
            { cat "$TMPD/pri.err"; fail "the primary exited"; }
        sleep 0.1
    done
    cat "$TMPD/pri.err"
    fail "no control socket at $TMPD/pri.ctl"
}

# stop_daemon: SIGTERM the primary (not our child) and wait for it.
stop_daemon ()
{
    local i
    kill -TERM "$PRI_PID"
    for i in $(seq 100); do
        kill -0 "$PRI_PID" 2>/dev/null || return 0
        sleep 0.1
    done
    fail "the primary did not exit on SIGTERM"
}

daemon_primary replica-mode=async replica-tls-psk=keys.psk \
    replica-peer="nbds+unix://replica@/?socket=$TMPD/sec.sock"
wait_field "$TMPD/pri.ctl" link replicating 30
replicator_pid >/dev/null     # (registered for the cleanup)
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60 ||
    fail "not synced"
stop_daemon

# Without its peer now: it replicated, so it tracks its writes.
daemon_primary
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "the standalone primary does not track its writes"
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"x" * 4096, 8192)' ||
    fail "a write to the standalone primary"
[ "$(status_field "$TMPD/pri.ctl" bitmap_dirty_bytes)" -gt 0 ] ||
    fail "the write was not tracked"
stop_daemon
NBDKIT_PID=$SEC_PID
stop_nbdkit
echo "$0: ok"
