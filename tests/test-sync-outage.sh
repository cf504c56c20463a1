#!/usr/bin/env bash
# A peer away longer than the log can hold: the primary keeps serving
# (its writes are tracked in the dirty bitmap instead of waiting for
# log space), and when the peer is back, a resync of the bitmap's
# blocks only (not the whole volume) brings it back, while writes keep
# running throughout; the volumes end byte-identical.  Then the same
# with the peer SIGKILLed in the middle of that resync: it resumes.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires /usr/bin/python3 -c 'import nbd'
make_tmpdir
make_psk
size=256M
truncate -s $size "$TMPD/pri.img" "$TMPD/sec.img"
export LOG_SIZE=16M


start_secondary "$TMPD/sec.img"
start_primary "$TMPD/pri.img" async
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60

for round in plain kill; do
    # The outage: the secondary dies; writes continue, far beyond the
    # 16 MiB log.
    kill -9 $SEC_PID
    wait $SEC_PID 2>/dev/null || true
    rm -f "$TMPD/written"
    start_writer
    for i in $(seq 1 600); do
        [ "$(written)" -ge $((64 << 20)) ] && break
        kill -0 $WRITER_PID 2>/dev/null || fail "the writer died"
        sleep 0.1
    done
    [ "$(written)" -ge $((64 << 20)) ] ||
        fail "$round: writes stalled at $(written) bytes with the peer away"
    [ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
        fail "$round: bitmap is '$(status_field "$TMPD/pri.ctl" bitmap)'"
    dirty=$(status_field "$TMPD/pri.ctl" bitmap_dirty_bytes)
    [ "$dirty" -gt 0 ] && [ "$dirty" -le $((64 << 20)) ] ||
        fail "$round: $dirty dirty bytes, expected some of the first 64 MiB"
    passes=$(status_field "$TMPD/pri.ctl" sync_passes)

    # The peer comes back; writes still running.
    start_secondary "$TMPD/sec.img"
    if [ $round = kill ]; then
        # SIGKILL it again in the middle of the resync, then restart.
        wait_field "$TMPD/pri.ctl" sync_phase resync
        sleep 0.3
        kill -9 $SEC_PID
        wait $SEC_PID 2>/dev/null || true
        [ "$(status_field "$TMPD/pri.ctl" sync_passes)" = "$passes" ] ||
            fail "$round: the resync ended before the kill"
        start_secondary "$TMPD/sec.img"
    fi
    wait_field "$TMPD/pri.ctl" sync_passes $((passes + 1)) 120
    total=$(status_field "$TMPD/pri.ctl" sync_total_bytes)
    [ "$total" -le $((64 << 20)) ] ||
        fail "$round: the resync covered $total bytes, not only the bitmap's"
    wait_field "$TMPD/pri.ctl" bitmap off 10
    stop_writer
    "$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
    same_volumes
done

# The bitmap survives an orderly restart of the primary (nbdkit must
# stop cleanly with it on, the last checkpoint flushing it) and still
# drives the resync: of its blocks only.
kill -9 $SEC_PID
wait $SEC_PID 2>/dev/null || true
rm -f "$TMPD/written"
start_writer
for i in $(seq 1 600); do
    [ "$(written)" -ge $((64 << 20)) ] && break
    sleep 0.1
done
stop_writer
wait_field "$TMPD/pri.ctl" bitmap tracking
dirty=$(status_field "$TMPD/pri.ctl" bitmap_dirty_bytes)
NBDKIT_PID=$PRI_PID
kill -TERM $PRI_PID
wait $PRI_PID || fail "the primary did not exit cleanly with the bitmap on"
start_primary "$TMPD/pri.img" async
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "the bitmap was lost by a restart"
[ "$(status_field "$TMPD/pri.ctl" bitmap_dirty_bytes)" -ge "$dirty" ] ||
    fail "the restarted bitmap marks less than before"
start_secondary "$TMPD/sec.img"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
# The bitmap's base and span outlive the restart: the peer (a prefix
# of the records the log freed) gets the bitmap's blocks, not a full
# comparison.
total=$(status_field "$TMPD/pri.ctl" sync_total_bytes)
[ "$total" -le $((64 << 20)) ] ||
    fail "after a restart the resync covered $total bytes, not the bitmap's"
same_volumes
echo "$0: ok"
