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
#     passes the repaired spot; everything is replicated; identical.
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
write_blocks 0 16 65
kill -9 "$(replicator_pid)" "$PRI_PID"
wait "$PRI_PID" 2>/dev/null || true

"$REPLICACTL" log-dump "$TMPD/pri.log" > "$TMPD/dump.txt"
ring_off=$(awk '$1 == "ring_offset" { print $2 }' "$TMPD/dump.txt")
ring_size=$(awk '$1 == "ring_size" { print $2 }' "$TMPD/dump.txt")
# The last record that is not the first of its batch (its start is not
# on a 4 KiB boundary): the valid log then ends inside a block.
last_lsn=$(awk '/^records after the checkpoint:/ { on = 1; getline; next }
                on && NF == 8 && $2 % 4096 { l = $2 } END { print l }' \
               "$TMPD/dump.txt")
[ -n "$last_lsn" ] ||
    { cat "$TMPD/dump.txt"; fail "no batch of several records in the log"; }
# One payload byte of that record: its CRC no longer matches.
printf 'X' | dd of="$TMPD/pri.log" bs=1 conv=notrunc status=none \
    seek=$(( ring_off + last_lsn % ring_size + 64 + 100 ))

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
kill -9 "$(replicator_pid)" "$PRI_PID"
wait "$PRI_PID" 2>/dev/null || true
LOG_SIZE=16M start_primary "$TMPD/pri.img" async
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
wait_field "$TMPD/pri.ctl" link replicating
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30 ||
    fail "replication did not resume after the second crash"
same_volumes
sec_nbdsh -c 'assert h.pread(4096, 27 * 8192) == bytes([68]) * 4096' ||
    fail "the last writes did not reach the secondary"
echo "$0: ok"
