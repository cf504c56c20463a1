/* nbd-replicator: TCP connections from a chosen local address (--bind).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * libnbd 1.14 connects TCP sockets itself and cannot bind them to a
 * local address, so with --bind we make the connection and hand the
 * socket to libnbd (nbd_aio_connect_socket), giving the handle the
 * settings nbd_aio_connect_uri would have taken from the URI: the
 * export name (always WIRE_EXPORT_NAME), TLS, the user and the
 * tls-psk-file of the query (peer.c, configure).
 *
 * One thing cannot be given: libnbd checks a server certificate only
 * against the host name it connected to itself, and a handle that got
 * its socket has none, so it would accept any certificate.  With TLS,
 * --bind therefore needs a PSK (which authenticates both ends); X.509
 * is refused at startup rather than silently left unchecked.
 *
 * The connect is nonblocking, driven by the main loop like libnbd's
 * own: dial_start binds and connects to the first address of the
 * peer's host (of the local address's family), dial_step goes on once
 * poll says the socket is writable, trying the next address on
 * failure.  The host is resolved at every connect, as libnbd does (a
 * blocking getaddrinfo, as in libnbd's own nbd_aio_connect_tcp).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <errno.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>

#include "peertls.h"
#include "replicator.h"

#define NBD_DEFAULT_PORT "10809"

void
dial_init (struct dial *d)
{
  memset (d, 0, sizeof *d);
  d->fd = -1;
}

void
dial_free (struct dial *d)
{
  if (d->fd >= 0)
    close (d->fd);
  if (d->ai)
    freeaddrinfo (d->ai);
  dial_init (d);
}

static int
hexval (int c)
{
  return isdigit (c) ? c - '0' : tolower (c) - 'a' + 10;
}

/* Percent-decode n bytes of s (as libnbd's URI parser does); NULL if
 * out of memory.
 */
static char *
pct_decode (const char *s, size_t n)
{
  char *out = malloc (n + 1), *o = out;

  if (!out)
    return NULL;
  for (size_t i = 0; i < n; ++i) {
    if (s[i] == '%' && i + 2 < n && isxdigit ((unsigned char) s[i + 1]) &&
        isxdigit ((unsigned char) s[i + 2])) {
      *o++ = hexval ((unsigned char) s[i + 1]) * 16 +
        hexval ((unsigned char) s[i + 2]);
      i += 2;
    }
    else
      *o++ = s[i];
  }
  *o = '\0';
  return out;
}

/* The query parameters libnbd acts on: socket= (refused: not TCP) and
 * tls-psk-file= (kept); tls-certificates= means X.509 (refused by the
 * caller unless a PSK is also given, which libnbd prefers).
 */
static int
parse_query (struct options *o, const char *q, size_t qlen,
             char *why, size_t whylen)
{
  const char *end = q + qlen;

  while (q < end) {
    size_t len = strcspn (q, "&;");
    const char *eq;

    if (q + len > end)
      len = end - q;
    eq = memchr (q, '=', len);
    if (eq) {
      size_t nlen = eq - q;

      if (nlen == 6 && strncmp (q, "socket", 6) == 0) {
        snprintf (why, whylen, "--bind applies to TCP peers: the URI has "
                  "a socket= parameter");
        return -1;
      }
      if (nlen == 12 && strncmp (q, "tls-psk-file", 12) == 0) {
        free (o->dial.uri_psk);
        o->dial.uri_psk = pct_decode (eq + 1, q + len - (eq + 1));
        if (!o->dial.uri_psk) {
          snprintf (why, whylen, "malloc: %m");
          return -1;
        }
      }
    }
    q += len + (q + len < end);
  }
  return 0;
}

/* Host and port of the authority [USER@]HOST[:PORT] or
 * [USER@][V6ADDR][:PORT]; libnbd's defaults: localhost, 10809.
 */
static int
parse_authority (struct options *o, const char *auth, size_t alen,
                 char *why, size_t whylen)
{
  const char *at = memchr (auth, '@', alen);
  const char *host, *colon = NULL, *end = auth + alen;
  size_t hlen;

  if (at) {
    o->dial.user = pct_decode (auth, at - auth);
    if (!o->dial.user)
      goto nomem;
    auth = at + 1;
  }
  if (*auth == '[') {
    const char *rb = memchr (auth, ']', end - auth);

    if (!rb) {
      snprintf (why, whylen, "--peer: unbalanced '[' in the host");
      return -1;
    }
    host = auth + 1;
    hlen = rb - host;
    if (rb + 1 < end) {
      if (rb[1] != ':') {
        snprintf (why, whylen, "--peer: '%c' after ']' (expected ':PORT')",
                  rb[1]);
        return -1;
      }
      colon = rb + 1;
    }
  }
  else {
    host = auth;
    colon = memchr (auth, ':', end - auth);
    hlen = (colon ? colon : end) - host;
  }
  o->dial.host = hlen ? pct_decode (host, hlen) : strdup ("localhost");
  if (colon && colon + 1 < end) {
    size_t plen = end - (colon + 1);

    if (strspn (colon + 1, "0123456789") < plen || plen > 5 ||
        strtoul (colon + 1, NULL, 10) > 65535) {
      snprintf (why, whylen, "--peer: bad port '%.*s'", (int) plen,
                colon + 1);
      return -1;
    }
    o->dial.port = strndup (colon + 1, plen);
    /* libnbd takes port 0 as the default. */
    if (o->dial.port && strtoul (o->dial.port, NULL, 10) == 0) {
      free (o->dial.port);
      o->dial.port = NULL;
    }
  }
  if (!o->dial.port)
    o->dial.port = strdup (NBD_DEFAULT_PORT);
  if (!o->dial.host || !o->dial.port)
    goto nomem;
  return 0;

 nomem:
  snprintf (why, whylen, "malloc: %m");
  return -1;
}

int
dial_setup (struct options *o, char *why, size_t whylen)
{
  const char *uri = o->peer_uri;
  const char *auth, *q;
  size_t alen;
  struct addrinfo hints, *ai;

  if (strncmp (uri, "nbd://", 6) != 0 && strncmp (uri, "nbds://", 7) != 0) {
    snprintf (why, whylen, "--bind applies to TCP peers (nbds://HOST/ or, "
              "with --insecure, nbd://HOST/), not %s", uri);
    return -1;
  }

  /* The local address: numeric, port 0 (any). */
  if (peer_bind_parse (o->bind, &o->dial.local, &o->dial.local_len,
                       &o->dial.family) == -1) {
    snprintf (why, whylen, "--bind: '%.*s' is not a numeric IPv4 or IPv6 "
              "address", DIAL_HOST_MAX, o->bind);
    return -1;
  }

  auth = strstr (uri, "://") + 3;
  alen = strcspn (auth, "/?#");
  if (parse_authority (o, auth, alen, why, whylen) == -1)
    return -1;
  q = auth + strcspn (auth, "?#");
  if (*q == '?' &&
      parse_query (o, q + 1, strcspn (q + 1, "#"), why, whylen) == -1)
    return -1;

  /* A numeric peer address of the other family can never be reached
   * (a name is resolved at each connect: its error is the link's).
   */
  memset (&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  if (getaddrinfo (o->dial.host, o->dial.port, &hints, &ai) == 0) {
    int family = ai->ai_family;

    freeaddrinfo (ai);
    if (family != o->dial.family) {
      snprintf (why, whylen, "--bind: %.*s is an %s address, the peer "
                "%.*s an %s one", DIAL_HOST_MAX, o->bind,
                o->dial.family == AF_INET ? "IPv4" : "IPv6",
                DIAL_HOST_MAX, o->dial.host,
                family == AF_INET ? "IPv4" : "IPv6");
      return -1;
    }
  }

  if (!o->peer_plain && !o->tls_psk && !o->dial.uri_psk) {
    snprintf (why, whylen, "--bind with TLS needs a PSK (--tls-psk or "
              "tls-psk-file in the URI): on a socket it did not connect "
              "itself, libnbd 1.14 cannot check the server's X.509 "
              "certificate");
    return -1;
  }
  return 0;
}

void
dial_options_free (struct options *o)
{
  free (o->dial.host);
  free (o->dial.port);
  free (o->dial.user);
  free (o->dial.uri_psk);
}

/* Bind and connect a new socket to d->next; move on to the next
 * address if that fails at once.  0: in progress, 1: connected, -1:
 * failed (why).
 */
static int
try_next (struct dial *d, const struct options *o, char *why, size_t whylen)
{
  while (d->next) {
    struct addrinfo *a = d->next;
    char host[DIAL_HOST_MAX];

    d->next = a->ai_next;
    if (getnameinfo (a->ai_addr, a->ai_addrlen, host, sizeof host, NULL, 0,
                     NI_NUMERICHOST) != 0)
      snprintf (host, sizeof host, "?");
    snprintf (d->target, sizeof d->target, "%s port %s", host,
              o->dial.port);

    d->fd = socket (a->ai_family, a->ai_socktype | SOCK_NONBLOCK |
                    SOCK_CLOEXEC, a->ai_protocol);
    if (d->fd == -1) {
      snprintf (why, whylen, "socket: %m");
      return -1;
    }
    /* A bind failure is the same for every address: give up. */
    if (bind (d->fd, (const struct sockaddr *) &o->dial.local,
              o->dial.local_len) == -1) {
      snprintf (why, whylen, "bind to %s: %m%s", o->bind,
                errno == EADDRNOTAVAIL ? " (not an address of this host)"
                : "");
      close (d->fd);
      d->fd = -1;
      return -1;
    }
    if (connect (d->fd, a->ai_addr, a->ai_addrlen) == 0)
      return 1;
    if (errno == EINPROGRESS)
      return 0;
    snprintf (d->last_err, sizeof d->last_err, "connect to %s from %.*s: %m",
              d->target, DIAL_HOST_MAX, o->bind);
    close (d->fd);
    d->fd = -1;
  }
  snprintf (why, whylen, "%s", d->last_err);
  return -1;
}

int
dial_start (struct dial *d, const struct options *o, char *why,
            size_t whylen)
{
  struct addrinfo hints;
  int err;

  dial_free (d);
  memset (&hints, 0, sizeof hints);
  hints.ai_family = o->dial.family;     /* what the local address can reach */
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  err = getaddrinfo (o->dial.host, o->dial.port, &hints, &d->ai);
  if (err != 0) {
    d->ai = NULL;
    snprintf (why, whylen, "getaddrinfo: host %s port %s: %s%s",
              o->dial.host, o->dial.port,
              err == EAI_SYSTEM ? strerror (errno) : gai_strerror (err),
              err == EAI_NONAME || err == EAI_ADDRFAMILY || err == EAI_NODATA
              ? o->dial.family == AF_INET6 ? " (no IPv6 address to reach "
              "from the --bind address)" : " (no IPv4 address to reach "
              "from the --bind address)" : "");
    return -1;
  }
  d->next = d->ai;
  snprintf (d->last_err, sizeof d->last_err, "%.*s: no address",
            DIAL_HOST_MAX, o->dial.host);
  return try_next (d, o, why, whylen);
}

int
dial_step (struct dial *d, const struct options *o, char *why,
           size_t whylen)
{
  int soerr = 0;
  socklen_t len = sizeof soerr;

  if (getsockopt (d->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
    soerr = errno;
  if (soerr == 0)
    return 1;
  if (soerr == EINPROGRESS || soerr == EALREADY)
    return 0;
  snprintf (d->last_err, sizeof d->last_err, "connect to %s from %.*s: %s",
            d->target, DIAL_HOST_MAX, o->bind, strerror (soerr));
  close (d->fd);
  d->fd = -1;
  return try_next (d, o, why, whylen);
}

/* The connected socket, now the caller's. */
int
dial_take (struct dial *d)
{
  int fd = d->fd;

  d->fd = -1;
  return fd;
}
