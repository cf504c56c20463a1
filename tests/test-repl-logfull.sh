#!/usr/bin/env bash
# Async mode with replica-log-full=wait and the peer away longer than
# the log can hold: writes go on until the log is full of records the
# peer has not acknowledged, then wait (never overwriting them); when
# the peer is back they are shipped, the waiting writes complete, and
# the volumes are identical.  (The default, replica-log-full=bitmap, is
# test-sync-outage.sh.)
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
truncate -s 64M "$TMPD/pri.img" "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
LOG_SIZE=8M start_primary "$TMPD/pri.img" async replica-log-full=wait
wait_field "$TMPD/pri.ctl" link replicating
kill -9 "$SEC_PID"
wait "$SEC_PID" 2>/dev/null || true

# 24 MiB of writes into an 8 MiB log, each acknowledged write counted.
nbdsh -u "$(pri_uri)" -c '
import os
with open("'$TMPD'/progress", "w") as f:
    for i in range(96):
        h.pwrite(os.urandom(262144), i * 262144)
        f.write("%d\n" % i)
        f.flush()
' &
writer=$!
register_pid $writer
sleep 4
kill -0 $writer 2>/dev/null || fail "24 MiB went into an 8 MiB log with no peer"
done_n=$(wc -l < "$TMPD/progress")
[ "$done_n" -lt 32 ] || fail "$done_n writes of 256 KiB acknowledged in an 8 MiB log"
[ "$(status_field "$TMPD/pri.ctl" log_full_waits)" -gt 0 ] ||
    fail "log_full_waits"
cap=$(status_field "$TMPD/pri.ctl" log_capacity)
[ "$(status_field "$TMPD/pri.ctl" lag_bytes)" -le "$cap" ] ||
    fail "lag_bytes exceeds the log"
[ "$(status_field "$TMPD/pri.ctl" state)" != failed ] || fail "failed"

LOG_SIZE=16M start_secondary "$TMPD/sec.img"
wait $writer || fail "the writes failed"
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 60
same_volumes
echo "$0: ok"
