# nbd-replica: sourced by tools/bench and tools/bench-qos.
# Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
#
# tls_like_replicator DIR: give every process of a benchmark the TLS
# ciphers nbd-replicator chooses for itself (replicator/tlsprefs.c):
# where it would disable CHACHA20-POLY1305 (a CPU with AES and PCLMUL
# instructions, no /etc/gnutls/config, no GNUTLS_SYSTEM_PRIORITY_FILE),
# export GNUTLS_SYSTEM_PRIORITY_FILE naming the same override in DIR,
# so that nbdcopy and nbdinfo baselines negotiate the replicator's
# cipher (and the replicator, finding the variable set, uses the same
# file).  Sets TLS_PRIORITY_NOTE for the reports.
tls_like_replicator ()
{
    if [ -n "${GNUTLS_SYSTEM_PRIORITY_FILE:-}" ]; then
        TLS_PRIORITY_NOTE="GNUTLS_SYSTEM_PRIORITY_FILE=$GNUTLS_SYSTEM_PRIORITY_FILE (given)"
    elif [ -e /etc/gnutls/config ] || ! grep -qw aes /proc/cpuinfo ||
             ! grep -qw pclmulqdq /proc/cpuinfo; then
        TLS_PRIORITY_NOTE="GnuTLS defaults (the replicator keeps them here)"
    else
        printf '[overrides]\ntls-disabled-cipher = CHACHA20-POLY1305\n' \
               >"$1/gnutls-like-replicator.conf"
        export GNUTLS_SYSTEM_PRIORITY_FILE="$1/gnutls-like-replicator.conf"
        TLS_PRIORITY_NOTE="CHACHA20-POLY1305 disabled for every process, as nbd-replicator does on this CPU"
    fi
    export TLS_PRIORITY_NOTE
}
