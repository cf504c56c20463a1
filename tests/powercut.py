#!/usr/bin/python3
# nbd-replica: the power cut of tests/powercut.c, applied after a SIGKILL.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
#
#   powercut.py UNDO DIR all
#       Takes back every write to a file under DIR that no completed
#       fdatasync/fsync of that file covered, newest first: each file is
#       as it was at its last completed sync.
#   powercut.py UNDO DIR random SEED
#       For each 4 KiB page such writes touched, keeps a random prefix of
#       them (none, some or all) and takes back the rest: the disk wrote
#       back some pages and not others, in any order, as a power cut may
#       leave it.  Sizes are left as they are.
#
# The process that wrote must be dead.  Prints "unsynced N writes
# (B bytes) in F files, P pages taken back, K synced writes kept"; UNDO
# is renamed UNDO.done (a new process starts a new record).  Exit 1 on a malformed record or
# records of two processes.
import os
import random
import struct
import sys

PAGE = 4096
W = struct.Struct("<8Q")        # pid seq dev ino off len old_size n_old
S = struct.Struct("<4Q")        # pid seq dev ino


def read_records(path):
    """The records; a last one cut short by the kill is dropped (the shim
    appends a write's record before it makes the write, and a sync's
    after the sync: neither happened as far as anyone was told)."""
    writes, syncs = [], {}
    pids = set()
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        t = data[pos:pos + 1]
        pos += 1
        if t == b"W":
            if pos + W.size > len(data):
                break
            pid, seq, dev, ino, off, ln, osize, nold = W.unpack_from(data, pos)
            pos += W.size
            old = data[pos:pos + nold]
            if len(old) != nold:
                break
            pos += nold
            writes.append((seq, (dev, ino), off, ln, osize, old))
        elif t == b"S":
            if pos + S.size > len(data):
                break
            pid, seq, dev, ino = S.unpack_from(data, pos)
            pos += S.size
            key = (dev, ino)
            syncs[key] = max(syncs.get(key, 0), seq)
        else:
            sys.exit("powercut.py: bad record type %r at %d" % (t, pos - 1))
        pids.add(pid)
    if len(pids) > 1:
        sys.exit("powercut.py: records of several processes: %s" %
                 sorted(pids))
    return writes, syncs


def files_by_inode(top):
    found = {}
    for d, _, names in os.walk(top):
        for n in names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            found[(st.st_dev, st.st_ino)] = p
    return found


def revert_all(fd, ws):
    pages = set()
    for seq, _, off, ln, osize, old in reversed(ws):
        os.pwrite(fd, old, off)
        pages.update(range(off // PAGE, (off + ln + PAGE - 1) // PAGE))
    first_size = ws[0][4]
    if os.fstat(fd).st_size > first_size:
        os.ftruncate(fd, first_size)
    return len(pages)


def revert_random(fd, ws, rng):
    pages = {}
    for i, (seq, _, off, ln, osize, old) in enumerate(ws):
        for p in range(off // PAGE, (off + ln + PAGE - 1) // PAGE):
            pages.setdefault(p, []).append(i)
    taken = 0
    for p in sorted(pages):
        lst = pages[p]
        keep = rng.randint(0, len(lst))
        taken += keep < len(lst)
        for i in reversed(lst[keep:]):
            seq, _, off, ln, osize, old = ws[i]
            lo, hi = max(off, p * PAGE), min(off + len(old), (p + 1) * PAGE)
            if lo < hi:
                os.pwrite(fd, old[lo - off:hi - off], lo)
    return taken


def main():
    undo, top, mode = sys.argv[1:4]
    rng = random.Random(sys.argv[4]) if mode == "random" else None
    if mode not in ("all", "random"):
        sys.exit("powercut.py: mode all or random")
    if not os.path.exists(undo):
        sys.exit("powercut.py: no %s: the shim recorded nothing" % undo)
    writes, syncs = read_records(undo)
    inodes = files_by_inode(top)
    unsynced, kept = {}, 0
    for w in writes:
        if w[0] < syncs.get(w[1], 0):
            kept += 1
        else:
            unsynced.setdefault(w[1], []).append(w)
    nbytes = taken = 0
    for key, ws in unsynced.items():
        path = inodes.get(key)
        if path is None:
            sys.exit("powercut.py: a written file is gone from %s" % top)
        ws.sort(key=lambda w: w[0])
        nbytes += sum(w[3] for w in ws)
        fd = os.open(path, os.O_RDWR)
        try:
            if mode == "all":
                taken += revert_all(fd, ws)
            else:
                taken += revert_random(fd, ws, rng)
        finally:
            os.close(fd)
    n = sum(len(ws) for ws in unsynced.values())
    print("unsynced %d writes (%d bytes) in %d files, %d pages taken back, "
          "%d synced writes kept" % (n, nbytes, len(unsynced), taken, kept))
    os.rename(undo, undo + ".done")


main()
