#!/usr/bin/env bash
# A torn WRAP near the ring's end (tests/tornwrap-log.c: batch [A, WRAP,
# B], the WRAP's sector never written): recovery replays A and stops at
# the WRAP; its new head and checkpoint fall on the ring's start, where
# B (never acknowledged) still lies intact.  Recovery clears the header
# there (plugin/recovery.c clear_new_head), so that B is not applied at
# this start nor at a later one that finds nothing written over it.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

"$TORNWRAP_LOG" "$TMPD/replica.log" || fail "tornwrap-log"
truncate -s 1M "$TMPD/disk.img"

start_standalone ()
{
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" file "$TMPD/disk.img" \
        replica-log="$TMPD/replica.log" replica-control="$TMPD/ctl"
}

# check_disk WHEN: A replayed, B nowhere.
check_disk ()
{
    nbdsh -u "$(uri_of "$TMPD/sock")" -c '
assert h.pread(6000, 0) == b"A" * 6000, "A was not replayed"
assert h.pread(4096, 65536) == bytes(4096), "B, after a torn WRAP, was applied"
' || fail "$1"
}

start_standalone
[ "$(status_field "$TMPD/ctl" replayed_records)" = 1 ] ||
    fail "replayed $(status_field "$TMPD/ctl" replayed_records) records, not 1"
check_disk "first start"
# A crash with nothing written: nothing covers B's header but the clearing.
kill_nbdkit_hard
start_standalone
check_disk "second start"
[ "$(status_field "$TMPD/ctl" replayed_records)" = 0 ] ||
    fail "the second start replayed a record"
stop_nbdkit
echo "$0: ok"
