/* nbd-replica: what a TLS link to the peer must be given (peertls.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_PEERTLS_H
#define REPLICA_PEERTLS_H

#include <stddef.h>

/* NULL if uri (the peer's) with this PSK file or certificates directory
 * (either may be NULL; the URI's tls-psk-file= and tls-certificates=
 * count too) lets libnbd check who answers; else why not, in why.  A
 * plaintext URI passes (refused elsewhere without --insecure).
 */
extern const char *peer_tls_check (const char *uri, const char *psk_file,
                                   const char *cert_dir, char *why,
                                   size_t len);

#endif /* REPLICA_PEERTLS_H */
