#!/usr/bin/env bash
# nbd-replica: the backing fails a write after its record is durable.
#
# nbdkit's error filter, below ours, fails every backing pwrite while
# a trigger file exists.  Policy (plugin/replica.c append_and_apply):
# the record is durable, so the write is acknowledged; the volume goes
# to state "failed" (status: fault set, backing_errors >= 1) and every
# later read and write returns EIO, and is not journaled.  After a
# SIGKILL and a restart without the fault, replay applies the failed
# write: it reads back, and the rejected later write is absent.  Same
# after an orderly stop (SIGTERM) of a failed volume.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
requires nbdkit --filter=error null --dump-plugin
make_tmpdir

truncate -s 64M "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" --filter=error \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=16M \
        error-pwrite-rate=100% error-pwrite-file="$TMPD/trigger" error=EIO
}
start

cat > "$TMPD/phase1.py" <<'EOF'
import nbd, errno, sys
uri, trigger = sys.argv[1], sys.argv[2]
A, B, C = b"A" * 65536, b"B" * 65536, b"C" * 4096
h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(A, 0)                      # before the fault: normal
assert h.pread(len(A), 0) == A
open(trigger, "w").close()
h.pwrite(B, 1 << 20)                # durable in the log: acknowledged
def must_eio(what, f):
    try:
        f()
    except nbd.Error as e:
        if e.errnum != errno.EIO:     # .errno is the name here
            sys.exit("%s failed with %s, expected EIO" % (what, e))
    else:
        sys.exit("%s succeeded on a failed volume" % what)
must_eio("pwrite", lambda: h.pwrite(C, 2 << 20))
must_eio("pread", lambda: h.pread(4096, 0))
must_eio("pread of the failed write", lambda: h.pread(4096, 1 << 20))
must_eio("zero", lambda: h.zero(4096, 0))
must_eio("flush", lambda: h.flush())
# A new connection is refused I/O as well.
h2 = nbd.NBD()
h2.connect_uri(uri)
must_eio("pread on a new connection", lambda: h2.pread(512, 0))
must_eio("pwrite on a new connection", lambda: h2.pwrite(C, 3 << 20))
EOF
/usr/bin/python3 "$TMPD/phase1.py" "$uri" "$TMPD/trigger" ||
    fail "I/O behaviour with a failing backing"

[ "$(status_field "$ctl" state)" = failed ] || fail "state is not failed"
fault=$(status_field "$ctl" fault)
echo "fault: $fault"
[ "$fault" != null ] || fail "status fault is null"
case "$fault" in *"backing write failed at offset 1048576"*) ;;
    *) fail "status fault does not name the failed write" ;; esac
[ "$(status_field "$ctl" backing_errors)" -ge 1 ] || fail "backing_errors"
grep -q 'volume failed' "$TMPD/nbdkit.err" || fail "no error logged by nbdkit"
# The rejected writes were not journaled.
[ "$(status_field "$ctl" records_appended)" = 2 ] ||
    fail "records_appended = $(status_field "$ctl" records_appended), expected 2"

rm "$TMPD/trigger"
kill_nbdkit_hard
start
[ "$(status_field "$ctl" state)" = standalone ] || fail "state after restart"
replayed=$(status_field "$ctl" replayed_records)
[ "$replayed" -ge 1 ] || fail "nothing replayed"
nbdsh -u "$uri" -c '
assert h.pread(65536, 0) == b"A" * 65536, "write before the fault lost"
assert h.pread(65536, 1 << 20) == b"B" * 65536, "failed write not replayed"
assert h.pread(4096, 2 << 20) == bytes(4096), "a rejected write was applied"
assert h.pread(4096, 3 << 20) == bytes(4096), "a rejected write was applied"
h.pwrite(b"D" * 4096, 4 << 20)
assert h.pread(4096, 4 << 20) == b"D" * 4096
' || fail "data after restart"

# Again, but this time an orderly stop (SIGTERM) of the failed volume:
# it must not checkpoint past the record the backing failed on.
touch "$TMPD/trigger"
nbdsh -u "$uri" -c 'h.pwrite(b"E" * 8192, 5 << 20)' ||
    fail "the second failing write was not acknowledged"
[ "$(status_field "$ctl" state)" = failed ] || fail "state is not failed (2)"
rm "$TMPD/trigger"
stop_nbdkit
start
[ "$(status_field "$ctl" replayed_records)" -ge 1 ] ||
    fail "nothing replayed after an orderly stop of a failed volume"
nbdsh -u "$uri" -c '
assert h.pread(8192, 5 << 20) == b"E" * 8192, "failed write lost"
assert h.pread(4096, 4 << 20) == b"D" * 4096
' || fail "data after an orderly stop of a failed volume"
stop_nbdkit
if grep -E 'Sanitizer|runtime error' "$TMPD/nbdkit.err"; then
    fail "sanitizer report in nbdkit's output"
fi
cmp -n 65536 -i $((1 << 20)):0 "$TMPD/disk.img" <(head -c 65536 /dev/zero | tr '\0' B) ||
    fail "the failed write is not on the backing file"
echo "$0: OK"
