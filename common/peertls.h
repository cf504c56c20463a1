/* nbd-replica: what a link to the peer must be given (peertls.c): its
 * URI, TLS and local address, checked alike by filter and replicator.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_PEERTLS_H
#define REPLICA_PEERTLS_H

#include <stdbool.h>
#include <stddef.h>

/* NULL if uri (the peer's) with this PSK file or certificates directory
 * (either may be NULL; the URI's tls-psk-file= and tls-certificates=
 * count too) lets libnbd check who answers; else why not, in why.  A
 * plaintext URI passes (refused elsewhere without --insecure).
 */
extern const char *peer_tls_check (const char *uri, const char *psk_file,
                                   const char *cert_dir, char *why,
                                   size_t len);

/* The peer URI with its path replaced by "/" WIRE_EXPORT_NAME (the
 * replicator always opens the replication export): a URI naming another
 * export is refused (NULL, why).  *plain: a plaintext scheme; *user:
 * the URI's user (decoded, malloc'd) or NULL.
 */
extern char *peer_uri_rewrite (const char *uri, bool *plain, char **user,
                               char *why, size_t whylen);

#endif /* REPLICA_PEERTLS_H */
