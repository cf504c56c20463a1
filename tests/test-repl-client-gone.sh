#!/usr/bin/env bash
# Clients that disconnect while their sync writes wait for a frozen
# peer: when the peer resumes, the primary must go on serving (nbdkit
# 1.32 aborts when many replies race to a connection its client
# closed; the filter stops waiting for a client that is gone).  The
# writes are still replicated: the volumes end identical.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
make_tmpdir
make_psk
truncate -s 32M "$TMPD/pri.img" "$TMPD/sec.img"
LOG_SIZE=16M start_secondary "$TMPD/sec.img"
LOG_SIZE=16M start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating
for round in 1 2 3; do
    kill -STOP "$SEC_PID"
    for c in 1 2 3 4; do
        /usr/bin/python3 -c "
import nbd
h = nbd.NBD()
h.connect_uri('$(pri_uri)')
for i in range(16):
    h.aio_pwrite(bytes([$round * 16 + $c]) * 4096, ($c * 16 + i) * 4096)
h.poll(0)
"                               # exits with its 16 writes in flight
    done
    sleep 0.5
    kill -CONT "$SEC_PID"
    sleep 1
    kill -0 "$PRI_PID" 2>/dev/null || {
        grep -i assert "$TMPD/pri.err" >&2; fail "round $round: the primary died"; }
done
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"Z" * 4096, 0)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
echo "$0: ok"
