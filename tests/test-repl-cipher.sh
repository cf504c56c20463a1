#!/usr/bin/env bash
# The replicator's TLS session uses AES-GCM on a CPU with AES
# instructions (GnuTLS's NORMAL priority would pick CHACHA20-POLY1305
# here, several times slower: replicator/tlsprefs.c), keeps its process
# name through the exec that sets this up, and leaves an administrator's
# GnuTLS priority file alone.
source "$SRCDIR/tests/functions.sh"
source "$SRCDIR/tests/repl-functions.sh"
requires_env grep -qw aes /proc/cpuinfo
requires_env grep -qw pclmulqdq /proc/cpuinfo
requires_env test ! -e /etc/gnutls/config
make_tmpdir
make_psk
truncate -s 64M "$TMPD/pri.img" "$TMPD/sec.img"
export LOG_SIZE=16M
start_secondary "$TMPD/sec.img"

# replicator_env PID NAME: the value of NAME in its environment.
replicator_env ()
{
    tr '\0' '\n' </proc/"$1"/environ | sed -n "s/^$2=//p"
}

LIBNBD_DEBUG=1 start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"A" * 65536, 0)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
replicator_pid >/dev/null
rp=$REPL_PID
[ "$(cat /proc/"$rp"/comm)" = nbd-replicator ] ||
    fail "the replicator is called '$(cat /proc/"$rp"/comm)'"
grep -q 'connection is using TLS: cipher AES-[0-9]*-GCM' "$TMPD/pri.err" ||
    fail "not AES-GCM: $(grep 'using TLS' "$TMPD/pri.err")"
case $(replicator_env "$rp" GNUTLS_SYSTEM_PRIORITY_FILE) in
    /proc/self/fd/*) ;;
    *) fail "the replicator did not set its priority file" ;;
esac
NBDKIT_PID=$PRI_PID
stop_nbdkit

# An administrator's priority file wins (here /dev/null: GnuTLS's
# defaults): the replicator changes nothing.
GNUTLS_SYSTEM_PRIORITY_FILE=/dev/null start_primary "$TMPD/pri.img" sync
wait_field "$TMPD/pri.ctl" link replicating
replicator_pid >/dev/null
rp=$REPL_PID
[ "$(replicator_env "$rp" GNUTLS_SYSTEM_PRIORITY_FILE)" = /dev/null ] ||
    fail "the administrator's priority file was replaced"
[ -z "$(replicator_env "$rp" NBD_REPLICATOR_TLS_OVERRIDE)" ] ||
    fail "the override was applied over the administrator's file"
nbdsh -u "$(pri_uri)" -c 'h.pwrite(b"B" * 65536, 0)'
"$REPLICACTL" --control "$TMPD/pri.ctl" wait-synced --timeout 30
same_volumes
echo "$0: ok"
