#!/usr/bin/env bash
# nbd-replica: more data than the log holds.
#
# An 8M log (a ring of about 7M) and 64M of random data copied into a
# 64M disk by nbdcopy (several connections, many requests in flight):
# the copy completes and the data is identical, through the filter and
# on the backing.  The log never overwrites records that are not yet
# applied and checkpointed; the writers wait for space instead (status
# log_full_waits): status must show at least one checkpoint per ring's
# worth of appended bytes.  A SIGKILL right after the copy and a restart
# (replay of whatever is after the checkpoint) must still give identical
# data.  (The data check alone cannot see an overwrite: every write is
# applied to the backing before it is acknowledged, and the backing file
# keeps it across a SIGKILL.)
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
requires nbdcopy --version
make_tmpdir

size=$((64 * 1024 * 1024))
head -c $size /dev/urandom > "$TMPD/src.img"
truncate -s $size "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=8M
}
start

# Default nbdcopy: 4 connections, 64 requests in flight, 256K requests;
# then larger requests (2M: two records each) on top, with one
# connection, over a quarter of the disk.
timeout 60 nbdcopy "$TMPD/src.img" "$uri" || fail "nbdcopy into the export"
head -c $((16 * 1024 * 1024)) /dev/urandom > "$TMPD/src2.img"
timeout 60 nbdcopy --request-size=$((2 * 1024 * 1024)) --connections=1 \
    "$TMPD/src2.img" "$uri" || fail "nbdcopy with 2M requests"
dd if="$TMPD/src2.img" of="$TMPD/src.img" conv=notrunc status=none

nbdcopy "$uri" "$TMPD/back.img"
cmp "$TMPD/src.img" "$TMPD/back.img" || fail "data read back differs"

appended=$(status_field "$ctl" bytes_appended)
capacity=$(status_field "$ctl" log_capacity)
waits=$(status_field "$ctl" log_full_waits)
echo "appended $appended bytes through a ring of $capacity;" \
    "log_full_waits $waits; checkpoints $(status_field "$ctl" checkpoints)"
[ "$appended" -gt $((capacity * 8)) ] || fail "the log did not wrap 8 times"
# Only a checkpoint frees space, at most a whole ring each time: passing
# N rings' worth of records through the log takes at least N-1 of them.
ckpts=$(status_field "$ctl" checkpoints)
[ $(( (ckpts + 1) * capacity )) -ge "$appended" ] ||
    fail "$appended bytes went through a $capacity-byte ring with only" \
         "$ckpts checkpoints: unapplied records were overwritten"
[ "$(status_field "$ctl" log_used)" -le "$capacity" ] || fail "log_used > capacity"
[ "$(status_field "$ctl" log_errors)" = 0 ] || fail "log errors"
[ "$(status_field "$ctl" state)" = standalone ] || fail "state"

kill_nbdkit_hard
cmp "$TMPD/src.img" "$TMPD/disk.img" || fail "the backing differs before replay"
"$REPLICACTL" log-dump "$TMPD/log" | tail -1
start
echo "restart replayed $(status_field "$ctl" replayed_records) records"
nbdcopy "$uri" "$TMPD/back2.img"
cmp "$TMPD/src.img" "$TMPD/back2.img" || fail "data differs after replay"
stop_nbdkit
cmp "$TMPD/src.img" "$TMPD/disk.img" || fail "the backing differs"
echo "$0: OK"
