#!/usr/bin/env bash
# nbd-replica: the log device fails and the failed append cannot be
# contained: nbdkit exits without replying.
#
# tests/faultinject.c fails every fdatasync of the log file.  The failed
# append cannot even be invalidated durably (recovery zeroes the batch's
# first block and syncs: that sync fails too), so its records might
# still be replayed: the client must not be told the write failed.
# nbdkit exits at once, as a crash would (docs/design.md 5.4): the
# client sees the connection drop, with no reply.  After a restart on a
# healthy device every acknowledged write is present, and the
# unanswered write is either absent or complete, never torn.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

use_fault_shim "$TMPD/log"
export REPLICACTL TMPD

truncate -s 64M "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
ctl="$TMPD/log.ctl"
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=16M
}
start

cat > "$TMPD/fence.py" <<'EOF'
import errno, nbd, os, sys
uri, trigger = sys.argv[1], os.environ["REPLICA_FAULT_TRIGGER"]
M = 1 << 20
h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"A" * 65536, 0)
with open(trigger, "w") as f:
    f.write("EIO fdatasync\n")
try:
    h.pwrite(b"F" * 65536, M)
except nbd.Error as e:
    # No reply: the server went away.  An EIO reply would be a lie
    # (the records may be replayed), so it must not be that.
    if e.errnum == errno.EIO:
        sys.exit("the write was answered EIO: %s" % e)
    print("no reply, as expected: %s" % e)
else:
    sys.exit("the write succeeded on a log that cannot sync")
EOF
/usr/bin/python3 "$TMPD/fence.py" "$uri" || fail "behaviour of an uncontainable log failure"
rm -f "$REPLICA_FAULT_TRIGGER"
for i in $(seq 1 100); do
    kill -0 $NBDKIT_PID 2>/dev/null || break
    sleep 0.1
done
if kill -0 $NBDKIT_PID 2>/dev/null; then
    fail "nbdkit is still running"
fi
status=0
wait $NBDKIT_PID || status=$?
[ "$status" -ne 0 ] || fail "nbdkit exited with status 0"
grep -q "could not be invalidated" "$TMPD/nbdkit.err" ||
    { cat "$TMPD/nbdkit.err"; fail "no error message"; }

start
[ "$(status_field "$ctl" state)" = standalone ] || fail "state after restart"
nbdsh -u "$uri" -c '
assert h.pread(65536, 0) == b"A" * 65536, "acknowledged write lost"
f = h.pread(65536, 1 << 20)
assert f in (bytes(65536), b"F" * 65536), "failed write is torn"
h.pwrite(b"H" * 4096, 3 << 20)
assert h.pread(4096, 3 << 20) == b"H" * 4096
' || fail "data after restart"
[ "$(status_field "$ctl" log_fenced)" = false ] || fail "log_fenced after restart"
stop_nbdkit
echo "$0: OK"
