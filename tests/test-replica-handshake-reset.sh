#!/usr/bin/env bash
# Regression (review of the per-connection flush): nbdkit 1.32 skips a
# filter's .finalize when the handshake fails after .prepare (client
# resets the connection right after NBD_OPT_GO), and the filter freed a
# connection still on its list: the next connection wrote into freed
# memory (seen under ASan/valgrind).  Here: resets between real
# writers, then the data and nbdkit are checked.  The ASan build of the
# suite is what turns the old bug into a failure.  (nbdkit's own
# multi-conn filter has the same bug, so it is not used here.)
source "$SRCDIR/tests/functions.sh"
requires qemu-io --version
make_tmpdir
truncate -s 32M "$TMPD/disk.img"
uri=$(uri_of "$TMPD/sock")
start_nbdkit "$TMPD/sock" "$TMPD/nbdkit.err" \
    file "$TMPD/disk.img" replica-log="$TMPD/log" replica-log-size=8M

cat > "$TMPD/reset.py" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
hello = s.recv(18)
assert hello[:8] == b"NBDMAGIC", hello
s.sendall(struct.pack(">I", 3))                # fixed newstyle, no zeroes
data = struct.pack(">I", 0) + struct.pack(">H", 0)   # export "", no infos
s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)  # OPT_GO
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()                                      # reset, no reply read
PY
for i in $(seq 1 5); do
    /usr/bin/python3 "$TMPD/reset.py" "$TMPD/sock"
    qemu-io -f raw -c "write -P $i $((i * 64))k 64k" "$uri" >/dev/null ||
        fail "write $i"
done
sleep 1.2        # let a checkpoint walk the connection list
for i in $(seq 1 5); do
    qemu-io -f raw -c "read -P $i $((i * 64))k 64k" "$uri" \
        >"$TMPD/read" || fail "read $i"
    ! grep -q "verification failed" "$TMPD/read" || fail "data $i"
done
kill -0 $NBDKIT_PID || fail "nbdkit died"
stop_nbdkit
echo "$0: OK"
