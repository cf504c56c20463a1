#!/usr/bin/env bash
# An initial sync runs in place on the secondary (its disk holds no
# image of the volume), and re-sent blocks are logged there as headers
# only (ELIDED, docs/design.md 21.4): their data goes to the disk alone.
# The pass is held back by replica-resync-rate so that it lasts.
# The secondary's backing flushes take 2 s each (tests/faultinject.so,
# "slow fdatasync" on its disk file), so its checkpoint, which flushes
# first, lags the records it passes: elided records are still after it
# when the test strikes.
#  Round "kill": mid-pass, the secondary holds most of the re-sent bytes
#  as elided records (its log took a small fraction of them); SIGKILL
#  it with elided records after its checkpoint (replicactl log-replay
#  refuses that log: the data is not in it), restart it: replay
#  skips them (the disk is marked inconsistent) and the primary's new
#  pass makes the volumes byte-identical (with no client writes, it
#  re-sends every block from its first read).  Then no elided record is
#  left after the consistent secondary's checkpoint (SIGKILL right after
#  the pass, the flushes still slow).
#  Round "failover": mid-pass, the primary dies and the secondary is
#  promoted with --force.  Its log must then hold no elided record after
#  the checkpoint (promote flushed the disk and moved the checkpoint
#  past them): after a SIGKILL the promoted node restarts, and serves the
#  image it served before the kill.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
requires cmp --version
make_tmpdir
make_psk
use_fault_shim "$TMPD/sec.img"
SIZE=$((64 * 1024 * 1024))
RATE=replica-resync-rate=4M     # the pass lasts about 16 s

# elided_after_checkpoint LOG: elided records replay would meet.
elided_after_checkpoint ()
{
    "$REPLICACTL" log-dump "$1" | awk '$7 == "elided"' | wc -l
}

# mid_pass: the pass runs in place and has elided at least 8 MiB.
mid_pass ()
{
    local i e=0
    for i in $(seq 300); do
        e=$(status_field "$TMPD/sec.ctl" elided_bytes)
        [ "$(status_field "$TMPD/sec.ctl" resync)" = in-place ] &&
            [ "$e" -ge $((8 << 20)) ] && break
        sleep 0.1
    done
    [ "$e" -ge $((8 << 20)) ] || {
        "$REPLICACTL" --control "$TMPD/sec.ctl" status >&2
        fail "$round: no in-place pass with elided records after 30 s"
    }
    [ "$(status_field "$TMPD/pri.ctl" sync_phase)" = initial-sync ] ||
        fail "$round: the pass ended too soon to be interrupted"
    # The log took headers, not the re-sent data.
    local logged
    logged=$(status_field "$TMPD/sec.ctl" bytes_appended)
    [ $((logged * 16)) -lt "$e" ] ||
        fail "$round: the secondary logged $logged bytes for $e bytes" \
             "of re-sent blocks"
    echo "$round: $e bytes re-sent in place, $logged bytes logged" >&2
}

for round in kill failover; do
    echo "round $round" >&2
    rm -f "$TMPD"/*.log "$TMPD"/*.img "$TMPD"/*.copy
    head -c $SIZE /dev/urandom > "$TMPD/pri.img"
    truncate -s $SIZE "$TMPD/sec.img"
    echo "slow fdatasync" > "$TMPD/trigger"
    start_secondary "$TMPD/sec.img"
    start_primary "$TMPD/pri.img" async $RATE
    mid_pass
    if [ $round = kill ]; then
        kill -9 $SEC_PID
        wait $SEC_PID 2>/dev/null || true
        n=$(elided_after_checkpoint "$TMPD/sec.log")
        echo "kill: $n elided records after the checkpoint" >&2
        [ "$n" -gt 0 ] ||
            fail "kill: no elided record after the checkpoint: replay" \
                 "would not meet one"
        # The offline replay cannot rebuild an image from such a log.
        truncate -s $SIZE "$TMPD/replay.img"
        if "$REPLICACTL" log-replay "$TMPD/sec.log" "$TMPD/replay.img" \
               2> "$TMPD/replay.err"; then
            fail "kill: log-replay applied a log with elided records"
        fi
        grep -q "holds no data" "$TMPD/replay.err" ||
            { cat "$TMPD/replay.err" >&2; fail "kill: log-replay: no reason"; }
        rm -f "$TMPD/replay.img"
        start_secondary "$TMPD/sec.img"
        "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 120 ||
            fail "kill: not synced after the restart"
        [ "$(status_field "$TMPD/sec.ctl" resync)" = none ] ||
            fail "kill: the secondary's resync did not end"
        # No client writes: every re-sent block came from the walk's
        # own read, none was read again.
        sent=$(status_field "$TMPD/pri.ctl" sync_sent_bytes)
        reused=$(status_field "$TMPD/pri.ctl" sync_reused_bytes)
        [ "$sent" -gt 0 ] && [ "$reused" = "$sent" ] ||
            fail "kill: the pass after the restart sent $sent bytes," \
                 "$reused of them from its first read"
        # Where the walk waited: counted in ms, for this pass only, so
        # no more than the test has run.
        waited=0
        for w in read sums throttle finisher; do
            v=$(status_field "$TMPD/pri.ctl" "sync_wait_${w}_ms")
            [[ $v =~ ^[0-9]+$ ]] || fail "kill: sync_wait_${w}_ms is '$v'"
            waited=$((waited + v))
        done
        [ "$waited" -le $((SECONDS * 1000)) ] ||
            fail "kill: the walk waited $waited ms in a test of $SECONDS s"
        # The end of the pass moved the checkpoint past every elided
        # record before it said the disk is consistent (the lagging
        # checkpointer alone would not have).
        kill -9 $SEC_PID
        wait $SEC_PID 2>/dev/null || true
        n=$(elided_after_checkpoint "$TMPD/sec.log")
        [ "$n" = 0 ] ||
            fail "kill: $n elided records after the checkpoint of a" \
                 "consistent secondary"
        rm -f "$TMPD/trigger"
        start_secondary "$TMPD/sec.img"
        same_volumes
        NBDKIT_PID=$PRI_PID
        stop_nbdkit
        NBDKIT_PID=$SEC_PID
        stop_nbdkit
        continue
    fi
    replicator_pid >/dev/null
    kill -9 "$REPL_PID" $PRI_PID
    wait $PRI_PID 2>/dev/null || true
    "$REPLICACTL" --control "$TMPD/sec.ctl" promote 2>"$TMPD/promote.err" &&
        fail "promote without --force during an in-place sync"
    grep -q "being resynced" "$TMPD/promote.err" ||
        fail "promote refused for another reason: $(cat "$TMPD/promote.err")"
    "$REPLICACTL" --control "$TMPD/sec.ctl" promote --force ||
        fail "promote --force"
    rm -f "$TMPD/trigger"
    nbdcopy "$(sec_uri)" "$TMPD/before.copy"
    kill -9 $SEC_PID
    wait $SEC_PID 2>/dev/null || true
    n=$(elided_after_checkpoint "$TMPD/sec.log")
    [ "$n" = 0 ] ||
        fail "failover: $n elided records after the promoted log's checkpoint"
    start_nbdkit "$TMPD/p2.sock" "$TMPD/p2.err" file "$TMPD/sec.img" \
        replica-log="$TMPD/sec.log" replica-control="$TMPD/p2.ctl"
    nbdcopy "$(uri_of "$TMPD/p2.sock")" "$TMPD/after.copy"
    cmp "$TMPD/before.copy" "$TMPD/after.copy" ||
        fail "failover: the restarted node serves another image"
    stop_nbdkit
done
echo "$0: ok"
