#!/usr/bin/env bash
# SIGKILL during a resync.  The resync is a staged one (the peer was
# away while the log filled: a pass over the dirty bitmap's chunks, held
# back by replica-resync-rate so that it lasts), with a stamped write
# storm running throughout.  Round "replicator": its replicator is
# killed mid-pass (the filter restarts it); round "primary": the
# primary's nbdkit and replicator are killed mid-pass and restarted;
# both must end byte-identical.  Round "failover": the primary dies
# mid-pass and the secondary is promoted with --force: its staged
# resync is rolled back, and tests/stamp.py finds it crash-consistent.
# Round "failover-restarts": the same, but the primary also restarts
# during the outage (the staged records are in a newer epoch than the
# secondary's last applied one), and the secondary is SIGKILLed and
# restarted twice before the promote, its primary away: the first
# restart discards the staged set, and the second must not replay it.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
BLOCKS=16384                    # 64 MiB volume
STAMP="/usr/bin/python3 $SRCDIR/tests/stamp.py"
export LOG_SIZE=16M             # the primary's: it fills while the peer
SEC_LOG=256M                    # is away; the secondary stages in its own
# Slow enough to be caught in the middle: 2 MiB/s of re-sent blocks.
RATE=replica-resync-rate=2M

# resync_under_way: the peer was away while the storm filled the log;
# it is back, and a staged pass runs.
resync_under_way ()
{
    kill -9 $SEC_PID
    wait $SEC_PID 2>/dev/null || true
    wait_field "$TMPD/pri.ctl" bitmap tracking 60
    if [ $round = failover-restarts ]; then
        # The primary restarts meanwhile: what the peer will stage is
        # in a newer epoch than what it applied, as after any restart.
        replicator_pid >/dev/null
        kill -9 "$REPL_PID" $PRI_PID
        wait $PRI_PID 2>/dev/null || true
        wait $writer || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
        start_primary "$TMPD/pri.img" async $RATE
        $STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp.log" --depth 16 \
            --seconds 6 --resume 1 >> "$TMPD/stamp.out" 2>&1 &
        writer=$!
        register_pid $writer
        sleep 1
    fi
    LOG_SIZE=$SEC_LOG start_secondary "$TMPD/sec.img"
    for i in $(seq 300); do
        [ "$(status_field "$TMPD/sec.ctl" resync)" = staged ] && break
        sleep 0.1
    done
    if [ "$(status_field "$TMPD/sec.ctl" resync)" != staged ]; then
        "$REPLICACTL" --control "$TMPD/pri.ctl" status >&2
        grep -hE "replica: |replicator" "$TMPD/pri.err" "$TMPD/sec.err" >&2
        fail "$round: no staged resync on the secondary after 30 s"
    fi
    sleep 0.5
    [ "$(status_field "$TMPD/pri.ctl" sync_phase)" = resync ] ||
        fail "$round: the resync ended too soon to be interrupted"
}

for round in replicator primary failover failover-restarts; do
    echo "round $round" >&2
    rm -f "$TMPD"/*.log "$TMPD"/*.img "$TMPD/stamp.log"
    truncate -s $((BLOCKS * 4096)) "$TMPD/pri.img" "$TMPD/sec.img"
    LOG_SIZE=$SEC_LOG start_secondary "$TMPD/sec.img"
    start_primary "$TMPD/pri.img" async $RATE
    "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
    # Only the primary's kill may end the writes with an error.
    strict=0
    [ $round = replicator ] && strict=1
    $STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp.log" --depth 16 \
        --seconds 8 --strict $strict > "$TMPD/stamp.out" 2>&1 &
    writer=$!
    register_pid $writer
    resync_under_way
    case $round in
    replicator)
        replicator_pid >/dev/null
        kill -9 "$REPL_PID"
        ;;
    primary|failover*)
        [ "$(status_field "$TMPD/sec.ctl" resync)" = staged ] ||
            fail "$round: the resync is not staged any more"
        replicator_pid >/dev/null
        rpid=$REPL_PID
        kill -9 $rpid $PRI_PID
        wait $PRI_PID 2>/dev/null || true
        ;;
    esac
    if [ $round = failover ] || [ $round = failover-restarts ]; then
        wait $writer || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
        if [ $round = failover-restarts ]; then
            for k in 1 2; do
                kill -9 $SEC_PID
                wait $SEC_PID 2>/dev/null || true
                LOG_SIZE=$SEC_LOG start_secondary "$TMPD/sec.img"
            done
            [ "$(status_field "$TMPD/sec.ctl" resync)" = pending ] ||
                fail "$round: the restarted secondary's resync is not pending"
        fi
        "$REPLICACTL" --control "$TMPD/sec.ctl" promote 2>"$TMPD/promote.err" &&
            fail "promote without --force during a resync"
        grep -q "being resynced" "$TMPD/promote.err" ||
            fail "promote refused for another reason: $(cat "$TMPD/promote.err")"
        "$REPLICACTL" --control "$TMPD/sec.ctl" promote --force ||
            fail "promote --force"
        $STAMP check "$(sec_uri)" $BLOCKS "$TMPD/stamp.log" --mode async ||
            fail "failover during a resync: the secondary is not consistent"
        NBDKIT_PID=$SEC_PID
        stop_nbdkit
        continue
    fi
    if [ $round = primary ]; then
        start_primary "$TMPD/pri.img" async
        # (the killed storm's connection is gone: a new short storm)
        wait $writer || true
        $STAMP write "$(pri_uri)" $BLOCKS "$TMPD/stamp2.log" --depth 16 \
            --seconds 3 > "$TMPD/stamp.out" 2>&1 &
        writer=$!
        register_pid $writer
    fi
    wait $writer || { cat "$TMPD/stamp.out"; fail "the writer failed"; }
    # Not capped any more for the primary round (restarted without it);
    # the replicator round keeps the cap: the rest of the pass at 2 MiB/s.
    "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 120 ||
        fail "$round: not synced after the kill"
    same_volumes
    NBDKIT_PID=$PRI_PID
    stop_nbdkit
    NBDKIT_PID=$SEC_PID
    stop_nbdkit
done
echo "$0: ok"
