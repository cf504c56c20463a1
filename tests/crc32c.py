# nbd-replica: CRC-32C (Castagnoli, reflected) as common/logfmt.c and
# common/chan.c compute it, for tests that write log superblocks or
# channel frames in Python.  Copyright (C) 2026 the nbd-replica authors.
# BSD-3-Clause, see COPYING.

def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t

_T = _table()

def crc32c(b, crc=0):
    crc ^= 0xffffffff
    for x in b:
        crc = _T[(crc ^ x) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff
