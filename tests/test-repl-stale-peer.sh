#!/usr/bin/env bash
# A PEER that the replicator computed before it read a RESET is ignored
# (docs/design.md 14, "Stale PEERs").
#
# In sync mode a batch is reported WRITTEN before its fdatasync, so the
# replicator, in a handshake meanwhile, may find a peer holding batch B
# in our log and answer PEER "known at the end of B".  Then B's
# fdatasync fails: B's seqs are burned, the filter rewinds and sends
# RESET, and a new write W2 takes B's space.  Taken as the handshake,
# that PEER would move the acked point to B's burned seq, at an lsn past
# W2: W2 would never be shipped, and the ACK of a later write would
# release W2's writer.  The replicator's part is played by
# tests/fakerepl.py (the real one cannot be held at that point); the
# filter, nbdkit and the client are real.
source "$SRCDIR/tests/functions.sh"
make_tmpdir
use_fault_shim "$TMPD/pri.log"
export TMPD REPLICACTL

truncate -s 64M "$TMPD/pri.img"
start_nbdkit "$TMPD/pri.sock" "$TMPD/pri.err" file "$TMPD/pri.img" \
    replica-log="$TMPD/pri.log" replica-log-size=64M \
    replica-control="$TMPD/pri.ctl" replica-replicator=external \
    replica-mode=async
PRI_PID=$NBDKIT_PID

cat > "$TMPD/race.py" <<'PY'
import json, nbd, os, subprocess, sys, time
sys.path.insert(0, os.environ["SRCDIR"] + "/tests")
from fakerepl import Chan, superblock
tmpd = os.environ["TMPD"]
ctl = tmpd + "/pri.ctl"
PAIRED, KNOWN, SHIP_RESYNC = 0x1, 0x4, 0x2
def rctl(*a):
    return subprocess.check_output([os.environ["REPLICACTL"], "--control",
                                    ctl] + list(a))
def status():
    return json.loads(rctl("status", "--json"))
def peer(ch, seq, epoch, flags, conn_id, lsn):
    sb = superblock(tmpd + "/pri.log")
    ch.send(102, seq, epoch, sb["backing_size"],
            2 | (flags << 8) | (conn_id << 32), lsn, text=sb["uuid"])

h = nbd.NBD()
h.connect_uri("nbd+unix:///?socket=" + tmpd + "/pri.sock")
h.pwrite(b"A" * 4096, 0)

ch = Chan(ctl)
ch.wait_for("CONFIG")
ch.send(101, os.getpid(), text=b"nbd://fake")            # HELLO
conn1 = ch.wait_for("CONNECT")

rctl("set-mode", "sync")
with open(tmpd + "/trigger", "w") as f:
    f.write("EIO fdatasync once\n")
try:
    h.pwrite(b"B" * 4096, 8192)
    sys.exit("the write whose log sync failed succeeded")
except nbd.Error:
    pass
wB = ch.wait_for("WRITTEN")              # before the failed fdatasync
ch.wait_for("RESET")
rew = ch.wait_for("WRITTEN")
sB, eB, lB = wB[1], wB[2], wB[3]
c = h.aio_pwrite(b"C" * 4096, 16384)     # W2, in B's space
w2 = ch.wait_for("WRITTEN", pred=lambda f: f[3] > rew[3])
assert w2[1] > sB and w2[3] >= lB, (w2, wB)
acked0 = status()["acked_seq"]

# The PEER of the first connection, computed before the RESET: the peer
# holds B, found in our log as it was.
peer(ch, sB, eB, PAIRED | KNOWN, conn1[5], lB)
f = ch.recv(2)
while f is not None and f[0] != "SHIP":
    f = ch.recv(2)
if f is not None:
    sys.exit("a stale PEER was taken as the handshake: SHIP %r" % (f[1:6],))
if status()["acked_seq"] != acked0:
    sys.exit("a stale PEER moved the acked point")

# What the replicator does when it reads the RESET: LINKDOWN.  The next
# CONNECT names the same acked point and another connection; the peer's
# seq (burned) is not in our log after that point: it is resynced.
ch.send(103, text=b"local log reset")
conn2 = ch.wait_for("CONNECT", timeout=15)
if conn2[5] == conn1[5] or conn2[1:4] != conn1[1:4]:
    sys.exit("CONNECT %r after the RESET (the first: %r)"
             % (conn2[1:6], conn1[1:6]))
peer(ch, sB, eB, PAIRED, conn2[5], 0)
ship = ch.wait_for("SHIP")
if not ship[4] & SHIP_RESYNC:
    sys.exit("a peer holding a burned batch is not resynced: SHIP %r"
             % (ship[1:6],))
h.poll(500)
if h.aio_command_completed(c):
    sys.exit("W2 was acknowledged, never shipped")
print("stale PEER ignored; after the RESET: CONNECT %r, SHIP %r"
      % (conn2[1:6], ship[1:6]))
PY
/usr/bin/python3 "$TMPD/race.py" || fail "the race"
NBDKIT_PID=$PRI_PID
stop_nbdkit
echo "$0: ok"
