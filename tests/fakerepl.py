# nbd-replica: a stand-in for nbd-replicator on the filter's channel
# (common/chan.h), for tests that need an interleaving of frames the real
# one can produce but not on demand (test-repl-stale-peer.sh: a PEER
# computed before a RESET reached it).  It attaches to the control
# socket of a filter started with replica-replicator=external and sends
# the frames it is told to.  Copyright (C) 2026 the nbd-replica authors.
# BSD-3-Clause, see COPYING.
import socket, struct, sys, time, select

from crc32c import crc32c

VERSION = 2

HDR = struct.Struct('<IHHQQQQQII')
MAGIC = 0x48435052
NAMES = {1: 'CONFIG', 2: 'WRITTEN', 3: 'CONNECT', 4: 'DISCONNECT', 5: 'SHIP',
         6: 'TELL', 7: 'RESET', 8: 'SUMS_REQ'}

def frame(typ, a=0, b=0, c=0, d=0, e=0, text=b''):
    h = HDR.pack(MAGIC, VERSION, typ, a, b, c, d, e, len(text), 0)
    crc = crc32c(h + text)
    return HDR.pack(MAGIC, VERSION, typ, a, b, c, d, e, len(text), crc) + text

class Chan:
    # first: frames sent in the same write as the attach line.
    def __init__(self, path, first=b''):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.sendall(b'attach\n' + first)
        self.buf = b''
        self.log = []
    def send(self, typ, a=0, b=0, c=0, d=0, e=0, text=b''):
        self.s.sendall(frame(typ, a, b, c, d, e, text))
    def recv(self, timeout):
        end = time.time() + timeout
        while True:
            if len(self.buf) >= 56:
                m, v, typ, a, b, c, d, e, n, crc = HDR.unpack(self.buf[:56])
                assert m == MAGIC and v == VERSION, self.buf[:64]
                if len(self.buf) >= 56 + n:
                    text = self.buf[56:56 + n]
                    self.buf = self.buf[56 + n:]
                    f = (NAMES.get(typ, typ), a, b, c, d, e, text)
                    print('filter ->', f[:6], text[:60], file=sys.stderr)
                    self.log.append(f)
                    return f
            left = end - time.time()
            if left <= 0:
                return None
            r, _, _ = select.select([self.s], [], [], left)
            if r:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise SystemExit('channel closed')
                self.buf += chunk
    def wait_for(self, name, timeout=10, pred=lambda f: True):
        end = time.time() + timeout
        while time.time() < end:
            f = self.recv(end - time.time())
            if f and f[0] == name and pred(f):
                return f
        raise SystemExit('no %s frame' % name)

# The log's superblock (common/logfmt.c): the slot of the higher
# generation; its volume UUID and backing size.
def superblock(path):
    with open(path, 'rb') as f:
        s = f.read(8192)
    best = None
    for slot in (s[:4096], s[4096:]):
        gen = struct.unpack_from('<Q', slot, 16)[0]
        if best is None or gen > best[0]:
            best = (gen, slot)
    slot = best[1]
    return {'uuid': slot[24:40], 'backing_size': struct.unpack_from('<Q', slot, 48)[0]}
