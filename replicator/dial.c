/* nbd-replicator: our own TCP connections to the peer: from a chosen
 * local address (--bind), and an address at a time.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * libnbd 1.14 connects TCP sockets itself, cannot bind them to a local
 * address, and gives the whole connect one deadline (ours,
 * CONNECT_TIMEOUT_MS): a peer name whose first address drops packets
 * (an IPv6 address without a route that works, on a dual-stack name)
 * would take all of it, every time, and the link would never come up.
 * So we make the connection and hand the socket to libnbd
 * (nbd_aio_connect_socket), giving the handle the settings
 * nbd_aio_connect_uri would have taken from the URI: the export name
 * (always WIRE_EXPORT_NAME), TLS, the user and the tls-psk-file of the
 * query (peer.c, configure).  With --bind always; without it for a TCP
 * peer with a PSK or in plaintext.
 *
 * One thing cannot be given: libnbd checks a server certificate only
 * against the host name it connected to itself, and a handle that got
 * its socket has none, so it would accept any certificate.  With TLS,
 * --bind therefore needs a PSK (which authenticates both ends); X.509
 * is refused at startup rather than silently left unchecked, and
 * without --bind an X.509 peer is left to libnbd's own connect.
 *
 * The connect is nonblocking, driven by the main loop like libnbd's
 * own: dial_start binds and connects to the first address of the
 * peer's host (of the local address's family), dial_step goes on once
 * poll says the socket is writable, trying the next address on
 * failure, and so does dial_expired after DIAL_ADDR_TIMEOUT_MS without
 * an answer (an address that drops packets would otherwise take the
 * whole connect's time, and the next connect would try it first
 * again).  The host is resolved at every connect, as libnbd does (a
 * blocking getaddrinfo, as in libnbd's own nbd_aio_connect_tcp).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "replicator.h"

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

/* Without --bind: a TCP peer (no socket= in its URI) whose
 * authentication does not need libnbd's own connect.
 */
static void
dial_setup_auto (struct options *o)
{
  char reason[400];

  if (peer_dial_check (o->peer_uri, NULL, &o->dial.peer, &o->dial.local,
                       &o->dial.local_len, &o->dial.family, reason,
                       sizeof reason) == -1) {
    peer_addr_free (&o->dial.peer);
    return;                     /* not TCP: libnbd's connect */
  }
  if (!o->peer_plain && !o->tls_psk && !o->dial.peer.uri_psk) {
    peer_addr_free (&o->dial.peer);
    return;                     /* X.509: libnbd checks the host name */
  }
  o->dial.on = true;
}

int
dial_setup (struct options *o, char *why, size_t whylen)
{
  char reason[400];

  if (!o->bind) {
    dial_setup_auto (o);
    return 0;
  }
  if (peer_dial_check (o->peer_uri, o->bind, &o->dial.peer, &o->dial.local,
                       &o->dial.local_len, &o->dial.family, reason,
                       sizeof reason) == -1) {
    snprintf (why, whylen, "--bind: %s", reason);
    return -1;
  }
  if (!o->peer_plain && !o->tls_psk && !o->dial.peer.uri_psk) {
    snprintf (why, whylen, "--bind with TLS needs a PSK (--tls-psk or "
              "tls-psk-file in the URI): on a socket it did not connect "
              "itself, libnbd 1.14 cannot check the server's X.509 "
              "certificate");
    return -1;
  }
  o->dial.on = true;
  return 0;
}

/* " from ADDR" with --bind, else "". */
static const char *
from (const struct options *o, char *buf, size_t len)
{
  if (!o->bind)
    return "";
  snprintf (buf, len, " from %.*s", DIAL_HOST_MAX, o->bind);
  return buf;
}

void
dial_options_free (struct options *o)
{
  peer_addr_free (&o->dial.peer);
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
    char host[DIAL_HOST_MAX], fbuf[DIAL_HOST_MAX + 8];

    d->next = a->ai_next;
    if (getnameinfo (a->ai_addr, a->ai_addrlen, host, sizeof host, NULL, 0,
                     NI_NUMERICHOST) != 0)
      snprintf (host, sizeof host, "?");
    snprintf (d->target, sizeof d->target, "%s port %s", host,
              o->dial.peer.port);

    d->fd = socket (a->ai_family, a->ai_socktype | SOCK_NONBLOCK |
                    SOCK_CLOEXEC, a->ai_protocol);
    if (d->fd == -1) {
      /* (An address family this kernel lacks: the next one, as libnbd.) */
      snprintf (d->last_err, sizeof d->last_err, "socket for %s: %m",
                d->target);
      continue;
    }
    /* As libnbd does on the sockets it connects itself: a request's
     * header and payload, or a small reply, never wait for the peer's
     * delayed ACK (Nagle).
     */
    if (setsockopt (d->fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 },
                    sizeof (int)) == -1) {
      snprintf (why, whylen, "setsockopt TCP_NODELAY: %m");
      close (d->fd);
      d->fd = -1;
      return -1;
    }
    /* A bind failure is the same for every address: give up. */
    if (o->dial.local_len > 0 &&
        bind (d->fd, (const struct sockaddr *) &o->dial.local,
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
    if (errno == EINPROGRESS) {
      d->deadline_ms = now_ms () + DIAL_ADDR_TIMEOUT_MS;
      return 0;
    }
    snprintf (d->last_err, sizeof d->last_err, "connect to %s%s: %m",
              d->target, from (o, fbuf, sizeof fbuf));
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
  /* (No AI_ADDRCONFIG, as libnbd: it would hide "localhost" in a
   * network namespace with only its loopback up.)
   */
  hints.ai_flags = AI_NUMERICSERV;
  err = getaddrinfo (o->dial.peer.host, o->dial.peer.port, &hints, &d->ai);
  if (err != 0) {
    d->ai = NULL;
    snprintf (why, whylen, "getaddrinfo: host %s port %s: %s%s",
              o->dial.peer.host, o->dial.peer.port,
              err == EAI_SYSTEM ? strerror (errno) : gai_strerror (err),
              o->bind && (err == EAI_NONAME || err == EAI_ADDRFAMILY ||
                          err == EAI_NODATA)
              ? o->dial.family == AF_INET6 ? " (no IPv6 address to reach "
              "from the --bind address)" : " (no IPv4 address to reach "
              "from the --bind address)" : "");
    return -1;
  }
  d->next = d->ai;
  snprintf (d->last_err, sizeof d->last_err, "%.*s: no address",
            DIAL_HOST_MAX, o->dial.peer.host);
  return try_next (d, o, why, whylen);
}

int
dial_step (struct dial *d, const struct options *o, char *why,
           size_t whylen)
{
  int soerr = 0;
  socklen_t len = sizeof soerr;
  char fbuf[DIAL_HOST_MAX + 8];

  if (getsockopt (d->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
    soerr = errno;
  if (soerr == 0)
    return 1;
  if (soerr == EINPROGRESS || soerr == EALREADY)
    return 0;
  snprintf (d->last_err, sizeof d->last_err, "connect to %s%s: %s",
            d->target, from (o, fbuf, sizeof fbuf), strerror (soerr));
  close (d->fd);
  d->fd = -1;
  return try_next (d, o, why, whylen);
}

int
dial_expired (struct dial *d, const struct options *o, char *why,
              size_t whylen)
{
  char fbuf[DIAL_HOST_MAX + 8];

  snprintf (d->last_err, sizeof d->last_err, "connect to %s%s timed out",
            d->target, from (o, fbuf, sizeof fbuf));
  if (d->next)
    msg ("%s; trying the next address", d->last_err);
  if (d->fd >= 0)
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
