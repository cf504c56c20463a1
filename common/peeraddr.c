/* nbd-replica: a TCP peer's URI and the local address to dial it from.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * With replica-bind the replicator makes the TCP connection itself
 * (libnbd 1.14 cannot bind a local address), so it parses what libnbd
 * would have parsed: the host, port and user of the URI, and its
 * tls-psk-file.  The filter runs the same parse at nbdkit's start, so
 * that whatever the replicator would refuse at each of its starts (the
 * filter restarting it for ever) is refused once, with the reason.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <netdb.h>
#include <sys/socket.h>

#include "peeraddr.h"

#define NBD_DEFAULT_PORT "10809"

static int
hexval (int c)
{
  return isdigit (c) ? c - '0' : tolower (c) - 'a' + 10;
}

char *
peer_pct_decode (const char *s, size_t n)
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

/* The query parameters libnbd acts on for TCP: socket= (the caller
 * refuses it) and tls-psk-file= (kept).
 */
static int
parse_query (struct peer_addr *a, const char *q, size_t qlen)
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

      if (nlen == 6 && strncmp (q, "socket", 6) == 0)
        a->socket_param = true;
      if (nlen == 12 && strncmp (q, "tls-psk-file", 12) == 0) {
        free (a->uri_psk);
        a->uri_psk = peer_pct_decode (eq + 1, q + len - (eq + 1));
        if (!a->uri_psk)
          return -1;
      }
    }
    q += len + (q + len < end);
  }
  return 0;
}

/* The port after the host, if any: digits, at most 65535; 0 means the
 * default, as in libnbd.
 */
static int
parse_port (struct peer_addr *a, const char *p, size_t plen,
            char *why, size_t whylen)
{
  if (plen == 0)
    return 0;
  if (strspn (p, "0123456789") < plen || plen > 5 ||
      strtoul (p, NULL, 10) > 65535) {
    snprintf (why, whylen, "bad port '%.*s' in the peer URI", (int) plen, p);
    return -1;
  }
  if (strtoul (p, NULL, 10) == 0)
    return 0;
  a->port = strndup (p, plen);
  if (!a->port) {
    snprintf (why, whylen, "malloc: %m");
    return -1;
  }
  return 0;
}

/* [USER@]HOST[:PORT] or [USER@][V6ADDR][:PORT]. */
static int
parse_authority (struct peer_addr *a, const char *auth, size_t alen,
                 char *why, size_t whylen)
{
  const char *at = memchr (auth, '@', alen);
  const char *host, *colon = NULL, *end = auth + alen;
  size_t hlen;

  if (at) {
    if (!(a->user = peer_pct_decode (auth, at - auth)))
      goto nomem;
    auth = at + 1;
  }
  if (*auth == '[') {
    const char *rb = memchr (auth, ']', end - auth);

    if (!rb) {
      snprintf (why, whylen, "unbalanced '[' in the peer URI's host");
      return -1;
    }
    host = auth + 1;
    hlen = rb - host;
    if (rb + 1 < end) {
      if (rb[1] != ':') {
        snprintf (why, whylen, "'%c' after ']' in the peer URI (expected "
                  "':PORT')", rb[1]);
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
  a->host = hlen ? peer_pct_decode (host, hlen) : strdup ("localhost");
  if (!a->host)
    goto nomem;
  if (colon && parse_port (a, colon + 1, end - (colon + 1), why,
                           whylen) == -1)
    return -1;
  if (!a->port && !(a->port = strdup (NBD_DEFAULT_PORT)))
    goto nomem;
  return 0;

 nomem:
  snprintf (why, whylen, "malloc: %m");
  return -1;
}

int
peer_addr_parse (const char *uri, struct peer_addr *a, char *why,
                 size_t whylen)
{
  const char *sep = strstr (uri, "://"), *auth, *q;
  size_t alen;

  memset (a, 0, sizeof *a);
  if (why && whylen)
    why[0] = '\0';
  if (!sep || (strncmp (uri, "nbd://", 6) != 0 &&
               strncmp (uri, "nbds://", 7) != 0)) {
    snprintf (why, whylen, "%s is not a TCP peer (nbds://HOST:PORT/)", uri);
    return -1;
  }
  auth = sep + 3;
  alen = strcspn (auth, "/?#");
  if (parse_authority (a, auth, alen, why, whylen) == -1)
    return -1;
  q = auth + strcspn (auth, "?#");
  if (*q == '?' && parse_query (a, q + 1, strcspn (q + 1, "#")) == -1) {
    snprintf (why, whylen, "malloc: %m");
    return -1;
  }
  return 0;
}

void
peer_addr_free (struct peer_addr *a)
{
  free (a->host);
  free (a->port);
  free (a->user);
  free (a->uri_psk);
  memset (a, 0, sizeof *a);
}

int
peer_bind_parse (const char *bind, struct sockaddr_storage *ss,
                 socklen_t *len, int *family)
{
  struct addrinfo hints, *ai;
  char addr[PEER_BIND_MAX];
  size_t n = strlen (bind);

  /* Numeric, port 0 (any).  "[V6ADDR]" too. */
  if (n >= sizeof addr)
    return -1;
  if (n >= 2 && bind[0] == '[' && bind[n - 1] == ']')
    snprintf (addr, sizeof addr, "%.*s", (int) n - 2, bind + 1);
  else
    snprintf (addr, sizeof addr, "%s", bind);
  memset (&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  if (getaddrinfo (addr, "0", &hints, &ai) != 0)
    return -1;
  if (ss) {
    memcpy (ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    *family = ai->ai_family;
  }
  freeaddrinfo (ai);
  return 0;
}

/* The family of host if it is a numeric address, else AF_UNSPEC. */
static int
numeric_family (const char *host)
{
  struct addrinfo hints, *ai;
  int family;

  memset (&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  if (getaddrinfo (host, NULL, &hints, &ai) != 0)
    return AF_UNSPEC;
  family = ai->ai_family;
  freeaddrinfo (ai);
  return family;
}

int
peer_dial_check (const char *uri, const char *bind, struct peer_addr *a,
                 struct sockaddr_storage *ss, socklen_t *sslen, int *family,
                 char *why, size_t whylen)
{
  struct sockaddr_storage local;
  socklen_t local_len;
  int local_family, peer_family;

  memset (a, 0, sizeof *a);
  if (strncmp (uri, "nbd://", 6) != 0 && strncmp (uri, "nbds://", 7) != 0) {
    snprintf (why, whylen, "applies to TCP peers (nbds://HOST:PORT/ or, "
              "with --insecure, nbd://HOST:PORT/), not %s", uri);
    return -1;
  }
  if (!bind) {
    /* No local address: any family, the kernel's choice of source. */
    memset (&local, 0, sizeof local);
    local_len = 0;
    local_family = AF_UNSPEC;
  }
  else if (peer_bind_parse (bind, &local, &local_len, &local_family) == -1) {
    snprintf (why, whylen, "'%s' is not a numeric IPv4 or IPv6 address",
              bind);
    return -1;
  }
  if (peer_addr_parse (uri, a, why, whylen) == -1)
    return -1;
  if (a->socket_param) {
    snprintf (why, whylen, "applies to TCP peers: the URI has a socket= "
              "parameter");
    return -1;
  }
  /* A numeric peer address of the other family can never be reached. */
  peer_family = numeric_family (a->host);
  if (bind && peer_family != AF_UNSPEC && peer_family != local_family) {
    snprintf (why, whylen, "%s is an %s address, the peer %s an %s one",
              bind, local_family == AF_INET ? "IPv4" : "IPv6", a->host,
              peer_family == AF_INET ? "IPv4" : "IPv6");
    return -1;
  }
  if (ss) {
    *ss = local;
    *sslen = local_len;
    *family = local_family;
  }
  return 0;
}
