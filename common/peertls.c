/* nbd-replica: what a TLS link to the peer must be given for libnbd to
 * check who answers.  Shared by the filter (refused at startup) and the
 * replicator (refused when it starts on its own).
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * libnbd 1.14 checks a server's X.509 certificate only against a host
 * name (a TCP URI: nbds+unix and nbds+vsock have none) and only with a
 * CA file it found (DIR/ca-cert.pem); its fallback to the system's CA
 * list checks nothing, and that is what it takes with neither a PSK nor
 * certificates unless its default directory (/etc/pki/libnbd,
 * ~/.pki/libnbd) exists: we ask for the directory to be named.  An impostor answering there would be adopted and sent the
 * pair secret and the whole volume.  So a TLS peer needs a PSK, or
 * certificates with DIR/ca-cert.pem over nbds://HOST.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>

#include "peeraddr.h"
#include "peertls.h"
#include "wire.h"

/* The value of key=VALUE in the URI's query, copied into buf; NULL if
 * absent.  Split as libnbd 1.14 splits it (lib/uri.c): at the next '&'
 * of the rest if there is one, else at the next ';'; no fragment.  The
 * whole name must match: "xtls-psk-file=" is no PSK.  (What libnbd
 * would not read as a PSK must not pass for one here: it would then
 * connect without one, and check no certificate.)
 */
static const char *
query_value (const char *uri, const char *key, char *buf, size_t len)
{
  const char *q = strchr (uri, '?');
  size_t klen = strlen (key);
  char *query, *p, *end;
  const char *found = NULL;

  if (!q || !(query = strndup (q + 1, strcspn (q + 1, "#"))))
    return NULL;
  for (p = query; *p && !found; p = *end ? end + 1 : end) {
    if (!(end = strchr (p, '&')) && !(end = strchr (p, ';')))
      end = p + strlen (p);
    if ((size_t) (end - p) > klen && strncmp (p, key, klen) == 0 &&
        p[klen] == '=') {
      size_t n = end - (p + klen + 1);
      if (n >= len)
        n = len - 1;
      memcpy (buf, p + klen + 1, n);
      buf[n] = '\0';
      found = buf;
    }
  }
  free (query);
  return found;
}

const char *
peer_tls_check (const char *uri, const char *psk_file, const char *cert_dir,
                char *why, size_t len)
{
  char uri_certs[4096], uri_psk[4096], ca[4200];
  const char *host;
  size_t hlen;

  if (strncmp (uri, "nbds", 4) != 0)
    return NULL;                /* plaintext: not this check's business */
  if (psk_file || query_value (uri, "tls-psk-file", uri_psk, sizeof uri_psk))
    return NULL;
  if (!cert_dir)
    cert_dir = query_value (uri, "tls-certificates", uri_certs,
                            sizeof uri_certs);
  if (!cert_dir) {
    snprintf (why, len, "%s: a TLS peer needs a PSK or X.509 certificates, "
              "named explicitly (without its default directory libnbd "
              "checks no certificate)", uri);
    return why;
  }
  if (strncmp (uri, "nbds://", 7) != 0) {
    snprintf (why, len, "%s: X.509 needs a TCP peer, nbds://HOST:PORT/ "
              "(libnbd 1.14 checks a certificate only against a host "
              "name), or use a PSK", uri);
    return why;
  }
  host = uri + 7;
  if (strchr (host, '@') && strchr (host, '@') < host + strcspn (host, "/?"))
    host = strchr (host, '@') + 1;
  hlen = strcspn (host, ":/?");
  if (hlen == 0) {
    snprintf (why, len, "%s: X.509 needs the peer's host name in the URI "
              "(its certificate is checked against it)", uri);
    return why;
  }
  snprintf (ca, sizeof ca, "%s/ca-cert.pem", cert_dir);
  if (access (ca, R_OK) == -1) {
    snprintf (why, len, "%s: cannot read %s: without it libnbd would not "
              "check the peer's certificate", cert_dir, ca);
    return why;
  }
  return NULL;
}

/* Split scheme://authority[/path][?query][#fragment] and put
 * "/" WIRE_EXPORT_NAME as the path.  The export name must not be
 * chosen by the URI: an empty path or "/" (or the replication export
 * itself) is accepted, anything else refused.
 */
char *
peer_uri_rewrite (const char *uri, bool *plain, char **user,
                  char *why, size_t whylen)
{
  static const struct { const char *scheme; bool plain; } schemes[] = {
    { "nbds", false }, { "nbds+unix", false }, { "nbds+vsock", false },
    { "nbd", true }, { "nbd+unix", true }, { "nbd+vsock", true },
  };
  const char *sep = strstr (uri, "://");
  const char *auth, *path, *rest;
  size_t slen, alen, plen;
  size_t i;
  char *out;

  *user = NULL;
  if (!sep) {
    snprintf (why, whylen, "not an NBD URI (scheme://...): %s", uri);
    return NULL;
  }
  slen = sep - uri;
  for (i = 0; i < sizeof schemes / sizeof schemes[0]; ++i)
    if (strlen (schemes[i].scheme) == slen &&
        strncmp (uri, schemes[i].scheme, slen) == 0)
      break;
  if (i == sizeof schemes / sizeof schemes[0]) {
    snprintf (why, whylen, "unknown URI scheme '%.*s' (nbds://, "
              "nbds+unix://)", (int) slen, uri);
    return NULL;
  }
  *plain = schemes[i].plain;

  auth = sep + 3;
  alen = strcspn (auth, "/?#");
  path = auth + alen;
  plen = *path == '/' ? strcspn (path, "?#") : 0;
  rest = path + plen;
  if (plen > 1 &&
      !(plen == 1 + strlen (WIRE_EXPORT_NAME) &&
        strncmp (path + 1, WIRE_EXPORT_NAME, plen - 1) == 0)) {
    snprintf (why, whylen, "the URI names export '%.*s': leave the path "
              "empty, the replicator always opens " WIRE_EXPORT_NAME,
              (int) (plen - 1), path + 1);
    return NULL;
  }
  {
    const char *at = memchr (auth, '@', alen);
    if (at)
      *user = peer_pct_decode (auth, at - auth);   /* as libnbd reads it */
  }
  if (asprintf (&out, "%.*s/" WIRE_EXPORT_NAME "%s",
                (int) (path - uri), uri, rest) == -1) {
    free (*user);
    *user = NULL;
    snprintf (why, whylen, "asprintf: %m");
    return NULL;
  }
  return out;
}
