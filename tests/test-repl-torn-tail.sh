#!/usr/bin/env bash
# A primary with a peer keeps the records its peer has not acknowledged
# across a crash; if the crash tore the log's last record, recovery
# makes the torn bytes passable (the last good record absorbs them), so
# the records written after the restart are still reachable: by the
# replicator, which ships them, and by the next recovery.
#
#  1. a pair (async); the secondary goes away; 16 concurrent writes
#     accumulate in the primary's log; SIGKILL the primary; damage the
#     last record that shares a batch with the one before it (as a torn
#     write would), so the valid log ends inside a 4 KiB block;
#  2. restart both: replication resumes and ships the new writes;
#  3. SIGKILL the primary again mid-stream and restart: its recovery
#     passes the repaired spot; everything is replicated; identical;
#  4. the same torn tail with the dirty bitmap on (the peer away longer
#     than the log): the reconnection's resync starts at our durable
#     point, the last good record, so the replicator must be told the
#     position after the bridge, not the one before it (it read the
#     torn record there and dropped the link, again and again).
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
truncate -s 32M "$TMPD/pri.img" "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
wait_field "$TMPD/pri.ctl" link replicating
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true

write_blocks () {   # write_blocks FIRST COUNT BYTE, all in flight at once
    nbdsh -u "$(pri_uri)" -c "
cmds = [h.aio_pwrite(bytes([$3]) * 4096, i * 8192)
        for i in range($1, $1 + $2)]
while h.aio_in_flight() > 0:
    h.poll(-1)"
}
# tear_tail: the last record after the checkpoint that is not the first
# of its batch (its start is not on a 4 KiB boundary; the valid log then
# ends inside a block) gets one payload byte changed: its CRC no longer
# matches.  Returns 1 if there is none.
tear_tail ()
{
    local ring_off ring_size last_lsn
    "$REPLICACTL" log-dump "$TMPD/pri.log" > "$TMPD/dump.txt"
    ring_off=$(awk '$1 == "ring_offset" { print $2 }' "$TMPD/dump.txt")
    ring_size=$(awk '$1 == "ring_size" { print $2 }' "$TMPD/dump.txt")
    last_lsn=$(awk '/^records after the checkpoint:/ { on = 1; getline; next }
                    on && NF == 8 && $2 % 4096 { l = $2 } END { print l }' \
                   "$TMPD/dump.txt")
    [ -n "$last_lsn" ] || return 1
    printf 'X' | dd of="$TMPD/pri.log" bs=1 conv=notrunc status=none \
        seek=$(( ring_off + last_lsn % ring_size + 64 + 100 ))
}

write_blocks 0 16 65
replicator_pid >/dev/null
kill -9 "$REPL_PID" "$PRI_PID"
wait "$PRI_PID" 2>/dev/null || true
tear_tail ||
    { cat "$TMPD/dump.txt"; fail "no batch of several records in the log"; }

LOG_SIZE=16M start_primary "$TMPD/pri.img" async
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" link replicating
write_blocks 0 16 66            # the lost records' blocks are rewritten
write_blocks 16 6 67
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "replication did not resume after the torn tail"
same_volumes

# Again, with the secondary away: the next recovery must read past the
# repaired spot to replay and ship these.
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
write_blocks 22 6 68
replicator_pid >/dev/null
kill -9 "$REPL_PID" "$PRI_PID"
wait "$PRI_PID" 2>/dev/null || true
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" link replicating
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "replication did not resume after the second crash"
same_volumes
sec_nbdsh -c 'assert h.pread(4096, 27 * 8192) == bytes([68]) * 4096' ||
    fail "the last writes did not reach the secondary"

# 4: the peer away longer than the 16 MiB log: the bitmap takes over.
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true
nbdsh -u "$(pri_uri)" -c '
for i in range(20):
    h.pwrite(bytes([70 + i]) * 1048576, (i % 16) << 20)'
wait_field "$TMPD/pri.ctl" bitmap tracking
# A batch of several records, then the crash; a checkpoint may pass
# them first (they are not kept for the peer now): then again.
for try in 1 2 3 4 5; do
    write_blocks 0 16 $((90 + try))
    replicator_pid >/dev/null
    kill -9 "$REPL_PID" "$PRI_PID"
    wait "$PRI_PID" 2>/dev/null || true
    tear_tail && break
    [ $try = 5 ] &&
        { cat "$TMPD/dump.txt"; fail "4: no batch of several records"; }
    LOG_SIZE=16M start_primary "$TMPD/pri.img" async
done
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
[ "$(status_field "$TMPD/pri.ctl" bitmap)" = tracking ] ||
    fail "4: the bitmap is off after the crash"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "4: the bitmap resync after the torn tail did not end:" \
         "$(grep 'local log unreadable' "$TMPD/pri.err" | tail -1)"
grep -q 'resync of the peer starts: .*dirty bitmap' "$TMPD/pri.err" ||
    fail "4: the resync was not the bitmap's"
same_volumes
echo "$0: ok"
