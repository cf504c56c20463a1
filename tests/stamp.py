#!/usr/bin/python3
# nbd-replica: the stamped-write checker of the replication tests.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
#
#   stamp.py write URI BLOCKS LOG [--depth N] [--seconds S] [--resume 1]
#                                 [--strict 1]
#       Keeps N 4 KiB writes in flight (one NBD connection, libnbd's
#       asynchronous API) to random blocks, never two at once to the same
#       block.  Each block written carries a stamp (block, write id, the
#       logical clock at submission) and a filler derived from it.  LOG
#       gets a line when a write is submitted ("S clock id block") and
#       when it is acknowledged ("A clock id block"), flushed at once; the
#       clock counts events.  Stops at the time limit or when the server
#       goes away (a kill), exit 0 either way.  --resume 1 appends to
#       LOG, its write ids and clock going on from the last ones there,
#       so that one check covers several writer runs on one volume.
#       --strict 1: the server must stay up and serve every write (its
#       replicator or peer may come and go): a write that fails, or the
#       connection lost, is printed and the exit status is 3.
#
#   stamp.py check URI BLOCKS LOG --mode sync|async
#       Reads every block of a (promoted) copy and checks it:
#        - every non-zero block holds an intact stamp of a write that was
#          submitted (nothing invented, nothing torn);
#        - sync: every block holds its last acknowledged write or a later
#          one (no acknowledged write lost);
#        - async (and sync): the copy is crash-consistent: with cut = the
#          latest submission visible anywhere, every block holds the last
#          write to it acknowledged before the cut, or a later one (a
#          write acknowledged before another was submitted is never
#          missing when that other one is present).
#       Exit 1 with the first few violations on stderr.
import hashlib
import os
import random
import struct
import sys
import time

import nbd

BS = 4096
MAGIC = b"STMP"
HDR = struct.Struct("<4sQQQ")           # magic, block, write id, clock


def payload(block, wid, clock):
    hdr = HDR.pack(MAGIC, block, wid, clock)
    fill = hashlib.blake2b(hdr, digest_size=64).digest()
    return hdr + (fill * (BS // len(fill)))[: BS - len(hdr)]


def connect(uri):
    h = nbd.NBD()
    h.set_uri_allow_local_file(True)
    h.connect_uri(uri)
    return h


def write(uri, blocks, log, depth, seconds, resume, strict):
    h = connect(uri)
    clock = wid = 0
    if resume and os.path.exists(log):
        submits, acks = load(log)
        for w, (c, _) in list(submits.items()) + list(acks.items()):
            wid, clock = max(wid, w), max(clock, c)
    out = open(log, "a" if resume else "w", buffering=1)
    if resume and out.tell() > 0:
        out.write("\n")                # end a line a kill may have cut
    busy = {}                           # block -> write id in flight
    deadline = time.monotonic() + seconds
    dead = False
    failure = None

    def done(block, w, err):
        nonlocal clock, dead, failure
        del busy[block]
        if err.value != 0:
            dead = True
            failure = failure or "write %d to block %d failed: %s" % (
                w, block, os.strerror(err.value))
            return 1
        clock += 1
        out.write("A %d %d %d\n" % (clock, w, block))
        return 1

    try:
        while not dead and time.monotonic() < deadline:
            while len(busy) < depth:
                block = random.randrange(blocks)
                if block in busy:
                    continue
                wid += 1
                clock += 1
                out.write("S %d %d %d\n" % (clock, wid, block))
                buf = payload(block, wid, clock)
                busy[block] = buf       # kept alive until completion
                h.aio_pwrite(buf, block * BS,
                             completion=lambda err, b=block, w=wid:
                             done(b, w, err))
            h.poll(1000)
        # Time is up: let the writes in flight finish, then disconnect
        # cleanly (a server killed meanwhile ends this too).
        while busy and not dead:
            h.poll(1000)
        if not dead:
            h.shutdown()
    except nbd.Error as e:
        failure = failure or "the connection: %s" % e  # server gone
    out.close()
    print("stamp: %d writes submitted" % wid)
    if strict and failure:
        print("stamp: FAIL: %s" % failure, file=sys.stderr)
        sys.exit(3)


def load(log):
    submits, acks = {}, {}
    with open(log) as f:
        for line in f:
            p = line.split()
            if len(p) != 4:
                continue                # a line cut by the end
            kind, clock, wid, block = p[0], int(p[1]), int(p[2]), int(p[3])
            (submits if kind == "S" else acks)[wid] = (clock, block)
    return submits, acks


def check(uri, blocks, log, mode):
    submits, acks = load(log)
    h = connect(uri)
    seen = {}                           # block -> submit clock visible
    errors = []
    zero = bytes(BS)
    for b0 in range(0, blocks, 256):
        n = min(256, blocks - b0)
        data = h.pread(n * BS, b0 * BS)
        for i in range(n):
            blk = data[i * BS:(i + 1) * BS]
            block = b0 + i
            if blk == zero:
                continue
            magic, sblock, wid, clock = HDR.unpack_from(blk)
            if magic != MAGIC or sblock != block or \
               blk != payload(sblock, wid, clock):
                errors.append("block %d: not an intact stamp" % block)
            elif submits.get(wid) != (clock, block):
                errors.append("block %d: write %d was never submitted"
                              % (block, wid))
            else:
                seen[block] = clock
    # Per block: the last write acknowledged (sync), or acknowledged
    # before the cut (crash consistency).
    cut = max(seen.values(), default=0)
    last_acked, last_before_cut = {}, {}
    for wid, (aclock, block) in acks.items():
        sclock = submits[wid][0]
        if sclock > last_acked.get(block, 0):
            last_acked[block] = sclock
        if aclock < cut and sclock > last_before_cut.get(block, 0):
            last_before_cut[block] = sclock
    rules = [("acknowledged write lost", last_acked)] if mode == "sync" else []
    rules.append(("not crash-consistent: write acknowledged before the cut "
                  "missing", last_before_cut))
    for what, need in rules:
        for block, sclock in sorted(need.items()):
            if seen.get(block, 0) < sclock:
                errors.append("block %d: %s (needs the write submitted at "
                              "clock %d, holds %s)" % (block, what, sclock,
                                                       seen.get(block)))
    print("stamp: %d writes submitted, %d acknowledged, %d blocks hold "
          "stamps, cut at clock %d" % (len(submits), len(acks), len(seen),
                                       cut))
    if errors:
        for e in errors[:10]:
            print("stamp: FAIL: " + e, file=sys.stderr)
        print("stamp: %d violations" % len(errors), file=sys.stderr)
        sys.exit(1)


def main():
    a = sys.argv[1:]
    opts = {}
    while len(a) > 2 and a[-2].startswith("--"):
        opts[a[-2][2:]] = a[-1]
        a = a[:-2]
    if len(a) != 4 or a[0] not in ("write", "check"):
        sys.exit(__doc__ or "usage: see the top of stamp.py")
    uri, blocks, log = a[1], int(a[2]), a[3]
    if a[0] == "write":
        write(uri, blocks, log, int(opts.get("depth", 16)),
              float(opts.get("seconds", 3600)), opts.get("resume") == "1",
              opts.get("strict") == "1")
    else:
        check(uri, blocks, log, opts.get("mode", "sync"))


main()
