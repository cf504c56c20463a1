/* nbd-replica: a TCP peer's address as the replicator dials it itself
 * (replica-bind / --bind), parsed once for the filter and the
 * replicator (peeraddr.c).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#ifndef REPLICA_PEERADDR_H
#define REPLICA_PEERADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A local address for replica-bind / --bind: numeric, with %scope. */
#define PEER_BIND_MAX 80

/* The authority and query of nbd://... or nbds://..., as libnbd reads
 * them: percent-decoded, libnbd's defaults filled in.
 */
struct peer_addr {
  char *host;                   /* "localhost" if the URI names none */
  char *port;                   /* "10809" if none (or 0) */
  char *user;                   /* [USER@], or NULL */
  char *uri_psk;                /* tls-psk-file=, or NULL */
  bool socket_param;            /* socket= (not a TCP peer after all) */
};

/* Parse a TCP URI (nbd:// or nbds://) into a (zeroed first): 0, or -1
 * with why (a malformed host or port).  peer_addr_free in both cases.
 */
extern int peer_addr_parse (const char *uri, struct peer_addr *a,
                            char *why, size_t whylen);
extern void peer_addr_free (struct peer_addr *a);

/* Percent-decode n bytes of s (as libnbd's URI parser does); malloc'd,
 * NULL if out of memory.
 */
extern char *peer_pct_decode (const char *s, size_t n);

/* A replica-bind address (numeric IPv4 or IPv6, "[V6]" too): 0, and
 * the socket address (port 0) if ss is not NULL; -1 if it is not one.
 */
extern int peer_bind_parse (const char *bind, struct sockaddr_storage *ss,
                            socklen_t *len, int *family);

/* What a connection from bind to uri needs, checked: uri a TCP URI
 * whose host and port parse, without socket=; bind numeric, and of the
 * family of the peer's address if that is numeric (a name is resolved
 * at each connect).  0 with *a filled (peer_addr_free it) and, if ss is
 * not NULL, the local address; -1 with why (no option name in it).
 * bind NULL: no local address (*sslen 0, *family AF_UNSPEC).
 */
extern int peer_dial_check (const char *uri, const char *bind,
                            struct peer_addr *a,
                            struct sockaddr_storage *ss, socklen_t *sslen,
                            int *family, char *why, size_t whylen);

#endif /* REPLICA_PEERADDR_H */
