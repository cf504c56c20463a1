#!/usr/bin/env bash
# nbd-replica: the log device fails (EIO, ENOSPC) under a running volume.
#
# tests/faultinject.c (LD_PRELOAD into nbdkit) fails the log file's
# pwritev or fdatasync while a trigger file exists.  A write whose
# append fails is failed to the client with that errno and is not
# applied; status counts it (log_errors, log_error); once the fault is
# gone, writes succeed again without a restart.  After SIGKILL and a
# restart, every acknowledged write is present and no failed one is,
# including writes whose bytes did reach the log file ("written": the
# device reported an error after the transfer; "fdatasync": the data
# was written but the sync failed) - recovery must make those records
# unreachable.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
source "$SRCDIR/tests/functions.sh"
make_tmpdir

use_fault_shim "$TMPD/log"
export REPLICACTL TMPD

size=$((64 * 1024 * 1024))
head -c $size /dev/urandom > "$TMPD/start.img"
cp "$TMPD/start.img" "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
start () {
    start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
        file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=16M
}
start

cat > "$TMPD/faults.py" <<'EOF'
import errno, json, nbd, os, subprocess, sys
tmpd, uri = os.environ["TMPD"], sys.argv[1]
trigger = os.environ["REPLICA_FAULT_TRIGGER"]
M = 1 << 20
img = open(tmpd + "/start.img", "rb").read()

def status():
    out = subprocess.check_output([os.environ["REPLICACTL"], "--control",
                                   tmpd + "/log.ctl", "status", "--json"])
    return json.loads(out)

def arm(spec):
    with open(trigger, "w") as f:
        f.write(spec + "\n")

def disarm():
    if os.path.exists(trigger):
        os.unlink(trigger)

def block(tag, n):
    return (tag.encode() * n)[:n]

h = nbd.NBD()
h.connect_uri(uri)
acked, failed = [], []          # (offset, data)

def ok_write(tag, off, n=65536):
    d = block(tag, n)
    h.pwrite(d, off)
    acked.append((off, d))

def failing_write(tag, off, n, want, spec, retries=1):
    for attempt in range(retries):
        arm(spec)
        d = block(tag, n)
        try:
            h.pwrite(d, off)
        except nbd.Error as e:
            if e.errnum != want:          # (e.errno is the name here)
                sys.exit("%s: failed with %s, expected %s"
                         % (spec, e, errno.errorcode[want]))
            failed.append((off, n))
            # Not applied: the old data is still there.
            if h.pread(n, off) != img[off:off + n]:
                sys.exit("%s: the failed write was applied" % spec)
            return
        finally:
            if "once" not in spec:
                disarm()
        # Only possible with "once": something else (the checkpointer's
        # superblock sync) consumed the fault first.  Retry elsewhere.
        acked.append((off, d))
        off += 8 * M
    sys.exit("%s: the write succeeded" % spec)

ok_write("A", 0)
ok_write("B", 40 * M, 1 << 20)
errors = 0
for tag, off, n, want, spec in [
        ("X", 1 * M, 65536, errno.EIO, "EIO"),
        ("Y", 3 * M, 4096, errno.ENOSPC, "ENOSPC"),
        # Reaches the log file, then fails; bigger than the next write,
        # so part of it stays in the ring behind that write.
        ("Z", 5 * M, 600000, errno.EIO, "EIO written"),
        # pwritev fine, fdatasync fails (once: recovery can sync again).
        ("W", 7 * M, 300000, errno.EIO, "EIO fdatasync once"),
        # The same as the very last request before the kill: nothing
        # overwrites its record, recovery's zeroing alone must hide it.
        ("V", 30 * M, 200000, errno.EIO, "EIO fdatasync once")]:
    failing_write(tag, off, n, want, spec, retries=3 if "once" in spec else 1)
    errors += 1
    st = status()
    if st["log_errors"] != errors:
        sys.exit("%s: log_errors = %d, expected %d" % (spec, st["log_errors"], errors))
    if st["log_error"] != os.strerror(want):
        sys.exit("%s: log_error = %r" % (spec, st["log_error"]))
    if st["state"] != "standalone" or st["log_fenced"]:
        sys.exit("%s: state %s, log_fenced %s after a transient log error"
                 % (spec, st["state"], st["log_fenced"]))
    for o, d in acked:
        if h.pread(len(d), o) != d:
            sys.exit("%s: acknowledged data at %d reads back wrong" % (spec, o))
    # The fault is gone: writes work again, without a restart.
    if tag != "V":
        ok_write(tag.lower(), off + M)
with open(tmpd + "/expect.txt", "w") as f:
    for o, d in acked:
        f.write("ok %d %d %s\n" % (o, len(d), d[:1].decode()))
    for o, n in failed:
        f.write("failed %d %d\n" % (o, n))
print("acknowledged %d writes, %d failed as expected; status: %s"
      % (len(acked), len(failed), {k: status()[k] for k in
         ("log_errors", "log_error", "head_seq", "epoch")}))
EOF

cat > "$TMPD/check.py" <<'EOF'
import nbd, os, sys
tmpd, uri = os.environ["TMPD"], sys.argv[1]
img = open(tmpd + "/start.img", "rb").read()
h = nbd.NBD()
h.connect_uri(uri)
bad = 0
for line in open(tmpd + "/expect.txt"):
    f = line.split()
    o, n = int(f[1]), int(f[2])
    got = h.pread(n, o)
    if f[0] == "ok" and got != (f[3].encode() * n)[:n]:
        print("acknowledged write at %d lost after restart" % o); bad += 1
    if f[0] == "failed" and got != img[o:o + n]:
        print("failed write at %d is present after restart" % o); bad += 1
sys.exit(1 if bad else 0)
EOF

/usr/bin/python3 "$TMPD/faults.py" "$uri" || fail "log fault handling"
rm -f "$TMPD/trigger"
kill_nbdkit_hard
"$REPLICACTL" log-dump "$TMPD/log" | tail -1
start
echo "restart replayed $(status_field "$TMPD/log.ctl" replayed_records) records"
/usr/bin/python3 "$TMPD/check.py" "$uri" || fail "data after restart"
stop_nbdkit
if grep -E 'Sanitizer|runtime error' "$TMPD/nbdkit.err"; then
    fail "sanitizer report in nbdkit's output"
fi
echo "$0: OK"
