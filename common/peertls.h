/* nbd-replica: what a link to the peer must be given (peertls.c): its
 * URI, TLS and local address, checked alike by filter and replicator.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_PEERTLS_H
#define REPLICA_PEERTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A local address for replica-bind / --bind: numeric, with %scope. */
#define PEER_BIND_MAX 80

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
 * the URI's user (malloc'd) or NULL.
 */
extern char *peer_uri_rewrite (const char *uri, bool *plain, char **user,
                               char *why, size_t whylen);
/* A replica-bind address (numeric IPv4 or IPv6, "[V6]" too): 0, and
 * the socket address if ss is not NULL; -1 if it is not one.
 */
extern int peer_bind_parse (const char *bind, struct sockaddr_storage *ss,
                            socklen_t *len, int *family);

/* NULL if bind is a usable local address for a link to uri (numeric,
 * and of the family of the peer's address if that is numeric); else
 * why not, in why.
 */
extern const char *peer_bind_check (const char *uri, const char *bind,
                                    char *why, size_t len);

#endif /* REPLICA_PEERTLS_H */
