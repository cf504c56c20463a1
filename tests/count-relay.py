#!/usr/bin/python3
# nbd-replica: a counting TCP relay, to measure a link from outside the
# product.  Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause,
# see COPYING.
#
#   count-relay.py LISTEN_PORT TARGET_HOST TARGET_PORT COUNTFILE
#
# Listens on 127.0.0.1:LISTEN_PORT (0: a free port, chosen by the
# kernel) and forwards every accepted connection to TARGET_HOST:
# TARGET_PORT, both directions, any number of connections at once (two
# threads per connection; the bytes move with splice(2) through a pipe
# where the kernel allows it, else recv/send).  It counts the TCP
# payload bytes in each direction over all connections: "up" from the
# accepted side to the target, "down" from the target back.  COUNTFILE
# is rewritten atomically (a temporary file renamed over it) as
#
#   {"up": N, "down": N, "connections": N, "port": LISTEN_PORT}
#
# every 0.1 s, and once more at exit (SIGTERM, SIGINT).  COUNTFILE is
# first written, and the line "ready PORT" printed on stdout, once the
# socket listens: a test waits for either before connecting.
#
# With RELAY_HOLD_DOWN=FILE in the environment, bytes from the target
# back to the accepted side are held while FILE exists: each chunk read
# waits there before it is forwarded (tests: a reply the peer sent that
# never arrives, on any connection, until FILE is removed).
#
# The product's own counters are not evidence of what crossed the link:
# this is.  Counted: what the endpoints' TCP stacks carried (TLS records,
# NBD framing and all), not TCP/IP headers.
import errno
import json
import os
import signal
import socket
import sys
import threading
import time

CHUNK = 1 << 20
INTERVAL = 0.1
HOLD_DOWN = os.environ.get("RELAY_HOLD_DOWN")

# RLocks: the SIGTERM handler runs in the main thread, which may hold
# either when the signal arrives, and then writes COUNTFILE.
lock = threading.RLock()         # counts
wlock = threading.RLock()        # COUNTFILE: one writer at a time
counts = {"up": 0, "down": 0, "connections": 0, "port": 0}
countfile = None


def write_counts():
    # Snapshot under the write lock: the last file renamed into place
    # holds the latest counts.
    with wlock:
        with lock:
            data = json.dumps(counts)
        tmp = "%s.tmp.%d" % (countfile, os.getpid())
        with open(tmp, "w") as f:
            f.write(data + "\n")
        os.rename(tmp, countfile)


def add(direction, n):
    with lock:
        counts[direction] += n
    # After the read, before the forward: a chunk read while the switch
    # is on is held too.
    while direction == "down" and HOLD_DOWN and os.path.exists(HOLD_DOWN):
        time.sleep(0.01)


def pump_splice(src, dst, direction):
    """Move bytes src -> dst with splice(2) through a pipe: no copy to
    user space.  Raises OSError(EINVAL) at once if the kernel refuses
    splice for these sockets, before anything was moved."""
    r, w = os.pipe()
    try:
        try:
            import fcntl
            fcntl.fcntl(w, 1031, CHUNK)         # F_SETPIPE_SZ
        except OSError:
            pass
        sfd, dfd = src.fileno(), dst.fileno()
        while True:
            n = os.splice(sfd, w, CHUNK)
            if n == 0:
                return
            add(direction, n)
            left = n
            while left:
                left -= os.splice(r, dfd, left)
    finally:
        os.close(r)
        os.close(w)


def pump_copy(src, dst, direction):
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while True:
        n = src.recv_into(buf)
        if n == 0:
            return
        add(direction, n)
        dst.sendall(view[:n])


def pump(src, dst, direction, done):
    try:
        try:
            pump_splice(src, dst, direction)
        except (AttributeError, OSError) as e:
            # No os.splice, or the kernel refused it before moving
            # anything (EINVAL): copy through user space instead.
            if isinstance(e, OSError) and e.errno != errno.EINVAL:
                raise
            pump_copy(src, dst, direction)
        # EOF: pass the half-close on, keep the other direction going.
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    except OSError:
        # A reset or a broken pipe: end both directions.
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    finally:
        done()


def serve(client, host, port):
    try:
        target = socket.create_connection((host, port))
    except OSError as e:
        print("count-relay: cannot connect to %s:%d: %s" % (host, port, e),
              file=sys.stderr, flush=True)
        client.close()
        return
    for s in (client, target):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    left = [2]
    ll = threading.Lock()

    def done():
        with ll:
            left[0] -= 1
            last = left[0] == 0
        if last:
            client.close()
            target.close()

    for src, dst, d in ((client, target, "up"), (target, client, "down")):
        threading.Thread(target=pump, args=(src, dst, d, done),
                         daemon=True).start()


def writer():
    while True:
        time.sleep(INTERVAL)
        try:
            write_counts()
        except OSError as e:
            print("count-relay: %s: %s" % (countfile, e), file=sys.stderr,
                  flush=True)


def stop(signum, frame):
    raise SystemExit(0)


def main():
    global countfile
    lport, host, tport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    countfile = sys.argv[4]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", lport))
    ls.listen(64)
    counts["port"] = ls.getsockname()[1]
    try:
        write_counts()
        print("ready %d" % counts["port"], flush=True)
        threading.Thread(target=writer, daemon=True).start()
        while True:
            client, _ = ls.accept()
            with lock:
                counts["connections"] += 1
            serve(client, host, tport)
    finally:
        # Exit (SIGTERM): the final counts.  Pump threads are daemons:
        # their connections die with the process.
        write_counts()


if len(sys.argv) != 5:
    sys.exit("usage: count-relay.py LISTEN_PORT TARGET_HOST TARGET_PORT "
             "COUNTFILE")
try:
    main()
except SystemExit as e:
    # Leave at once: a daemon thread may sit in a blocking call.
    sys.stdout.flush()
    os._exit(e.code if isinstance(e.code, int) else 1)
