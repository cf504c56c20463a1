#!/usr/bin/env bash
# The control socket (plugin/control.c, tools/replicactl.c) under
# clients that misbehave:
#  1. a second nbdkit given the same replica-control path refuses to
#     start; the first keeps its socket (it used to be taken over, and
#     removed when the second exited);
#  2. forty connected clients that send nothing delay no one: status
#     answers at once (one thread served one client at a time, 5 s each);
#  3. nbdkit stops on SIGTERM while a client polls the socket without a
#     pause (the stop was seen only after 200 ms without any client);
#  4. replicactl --timeout bounds every request: a server that accepts
#     and never answers makes wait-synced --timeout 1 give up within
#     about a second (each request waited 10 s), and "nan" is refused;
#  5. a replicator's channel frames sent in the same write as its
#     "attach" line reach the channel (the line was read 1023 bytes at a
#     time, and what followed it was lost): tests/fakerepl.py sends its
#     HELLO with the line, and status then names its pid as the
#     replicator's (which only a HELLO sets).
source "$SRCDIR/tests/functions.sh"
make_tmpdir
truncate -s 16M "$TMPD/disk.img" "$TMPD/disk2.img"
PY=/usr/bin/python3
CTL=$TMPD/shared.ctl

start_nbdkit "$TMPD/sock" "$TMPD/a.err" file "$TMPD/disk.img" \
    replica-log="$TMPD/a.log" replica-log-size=8M replica-control="$CTL"
A=$NBDKIT_PID

# 1.
expect_fail shared-control "replica-control: $CTL is in use by another process" \
    file "$TMPD/disk2.img" replica-log="$TMPD/b.log" replica-log-size=8M \
    replica-control="$CTL"
[ -S "$CTL" ] || fail "the first nbdkit's control socket is gone"
[ "$(status_field "$CTL" log_path)" = "$TMPD/a.log" ] ||
    fail "the control socket is not the first nbdkit's"

# 2.
$PY - "$CTL" "$TMPD/silent.ready" <<'EOF' &
import socket, sys, time
conns = []
for _ in range(40):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except BlockingIOError:
        pass
    conns.append(s)
open(sys.argv[2], "w").close()
time.sleep(30)
EOF
silent=$!
register_pid $silent
wait_until 5 "the silent clients did not connect" test -e "$TMPD/silent.ready"
t0=$(date +%s%N)
status_field "$CTL" state >/dev/null || fail "status failed behind silent clients"
ms=$((($(date +%s%N) - t0) / 1000000))
echo "status behind 40 silent clients: $ms ms"
[ "$ms" -lt 2000 ] || fail "status took $ms ms behind silent clients"
kill $silent; wait $silent 2>/dev/null || true

# 3.
$PY - "$CTL" <<'EOF' &
import socket, sys
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.sendall(b"status\n")
        s.recv(65536)
        s.close()
    except OSError:
        pass
EOF
poller=$!
register_pid $poller
sleep 1
t0=$(date +%s%N)
kill -TERM $A
for _ in $(seq 1 100); do
    kill -0 $A 2>/dev/null || break
    sleep 0.1
done
ms=$((($(date +%s%N) - t0) / 1000000))
kill $poller; wait $poller 2>/dev/null || true
kill -0 $A 2>/dev/null && { kill -9 $A; fail "nbdkit did not stop in 10 s while a client polled"; }
wait $A 2>/dev/null || true
echo "nbdkit stopped ${ms} ms after SIGTERM under a polling client"
[ ! -e "$CTL" ] || fail "the control socket was left behind"

# 4.
$PY - "$TMPD/mute.ctl" <<'EOF' &
import socket, sys, time
l = socket.socket(socket.AF_UNIX)
l.bind(sys.argv[1])
l.listen(64)
held = []
while True:
    c, _ = l.accept()
    held.append(c)
EOF
mute=$!
register_pid $mute
wait_until 5 "the mute server did not start" test -S "$TMPD/mute.ctl"
t0=$(date +%s%N)
rc=0
"$REPLICACTL" --control "$TMPD/mute.ctl" wait-synced --timeout 1 \
    >"$TMPD/mute.out" 2>&1 || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
cat "$TMPD/mute.out"
echo "wait-synced --timeout 1 against a mute server: rc $rc after $ms ms"
[ $rc -ne 0 ] || fail "wait-synced succeeded against a mute server"
[ "$ms" -lt 3000 ] || fail "wait-synced --timeout 1 took $ms ms"
grep -q "timed out" "$TMPD/mute.out" || fail "no timeout reported"
kill $mute; wait $mute 2>/dev/null || true
rc=0
"$REPLICACTL" --control "$TMPD/mute.ctl" wait-synced --timeout nan \
    2>"$TMPD/nan.err" || rc=$?
[ $rc = 2 ] || fail "--timeout nan: exit $rc, not 2"
grep -q "is not a number of seconds" "$TMPD/nan.err" ||
    fail "--timeout nan: $(cat "$TMPD/nan.err")"
# 5.
truncate -s 16M "$TMPD/disk3.img"
start_nbdkit "$TMPD/sock3" "$TMPD/c.err" file "$TMPD/disk3.img" \
    replica-log="$TMPD/c.log" replica-log-size=8M \
    replica-control="$TMPD/c.ctl" replica-replicator=external \
    replica-peer=nbd://127.0.0.1:1/ replica-insecure=yes
SRCDIR=$SRCDIR REPLICACTL=$REPLICACTL timeout 30 $PY - "$TMPD/c.ctl" <<'EOF' ||
import json, os, subprocess, sys, time
sys.path.insert(0, os.environ["SRCDIR"] + "/tests")
from fakerepl import Chan, frame
ch = Chan(sys.argv[1], first=frame(101, os.getpid(), text=b"nbd://fake"))
ch.wait_for("CONFIG")
for _ in range(50):
    st = json.loads(subprocess.check_output(
        [os.environ["REPLICACTL"], "--control", sys.argv[1], "status",
         "--json"]))
    if st.get("replicator_pid") == os.getpid():
        print("the HELLO sent with the attach line was taken")
        sys.exit(0)
    time.sleep(0.1)
sys.exit("status says replicator_pid %s, not %d" % (st.get("replicator_pid"),
                                                     os.getpid()))
EOF
    fail "the HELLO sent with the attach line was lost"
stop_nbdkit
echo PASS
