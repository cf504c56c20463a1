/* nbd-replicator: command line.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * Everything that can be checked without the network is checked here,
 * before the daemon starts: a bad option is one line naming it, and
 * exit 1.  The peer URI always opens the secondary's replication export
 * (WIRE_EXPORT_NAME): a URI naming another export is refused rather
 * than silently redirected, and plaintext schemes need --insecure
 * (fail closed).
 */
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <getopt.h>
#include <unistd.h>
#include <sys/stat.h>

#include "peertls.h"
#include "replicator.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

static void
usage (FILE *fp)
{
  fprintf (fp,
"usage: " PROG " --control SOCKET --peer URI [OPTIONS]\n"
"Ships the replica filter's log records to the secondary.\n"
"\n"
"  --control SOCKET         the filter's control socket (replica-control=)\n"
"  --peer URI               the secondary: nbds://[USER@]HOST[:PORT]/ or\n"
"                           nbds+unix://[USER@]/?socket=PATH; the export\n"
"                           is always " WIRE_EXPORT_NAME "\n"
"  --tls-psk FILE           TLS pre-shared key file (with --tls-username)\n"
"  --tls-username NAME      TLS PSK username\n"
"  --tls-certificates DIR   TLS X.509 certificates directory\n"
"  --insecure               allow plaintext nbd:// and nbd+unix:// URIs\n"
"  --bind ADDR              connect to a TCP peer from this local IPv4\n"
"                           or IPv6 address (with TLS: PSK only)\n"
"  --compress lz4|none      compress batches with LZ4 (default: none)\n"
"  --debug                  verbose messages on stderr\n"
"  --help                   this help\n"
"  --version                print the version\n");
}

static void __attribute__ ((noreturn, format (printf, 1, 2)))
die (const char *fmt, ...)
{
  va_list ap;
  char line[1024];

  va_start (ap, fmt);
  vsnprintf (line, sizeof line, fmt, ap);
  va_end (ap);
  fprintf (stderr, PROG ": %s\n", line);
  exit (EXIT_FAILURE);
}


void
options_parse (struct options *o, int argc, char **argv)
{
  enum { O_CONTROL = 256, O_PEER, O_PSK, O_USER, O_CERTS, O_INSECURE,
         O_COMPRESS, O_DEBUG, O_HELP, O_VERSION, O_BIND };
  static const struct option longopts[] = {
    { "control", required_argument, NULL, O_CONTROL },
    { "peer", required_argument, NULL, O_PEER },
    { "tls-psk", required_argument, NULL, O_PSK },
    { "tls-username", required_argument, NULL, O_USER },
    { "tls-certificates", required_argument, NULL, O_CERTS },
    { "insecure", no_argument, NULL, O_INSECURE },
    { "bind", required_argument, NULL, O_BIND },
    { "compress", required_argument, NULL, O_COMPRESS },
    { "debug", no_argument, NULL, O_DEBUG },
    { "help", no_argument, NULL, O_HELP },
    { "version", no_argument, NULL, O_VERSION },
    { NULL },
  };
  char why[8192];
  char *uri_user;
  struct stat st;
  int c;

  memset (o, 0, sizeof *o);
  opterr = 0;                   /* our own one-line messages */
  while ((c = getopt_long (argc, argv, ":", longopts, NULL)) != -1) {
    switch (c) {
    case O_CONTROL: o->control = optarg; break;
    case O_PEER: o->peer_uri = optarg; break;
    case O_PSK: o->tls_psk = optarg; break;
    case O_USER: o->tls_username = optarg; break;
    case O_CERTS: o->tls_certificates = optarg; break;
    case O_INSECURE: o->insecure = true; break;
    case O_BIND: o->bind = optarg; break;
    case O_COMPRESS:
      if (strcmp (optarg, "lz4") == 0)
        o->compress = true;
      else if (strcmp (optarg, "none") == 0)
        o->compress = false;
      else
        die ("--compress: unknown method '%s' (lz4 or none)", optarg);
      break;
    case O_DEBUG: debug_flag = true; break;
    case O_HELP: usage (stdout); exit (EXIT_SUCCESS);
    case O_VERSION:
      printf ("%s %s\n", PROG, PACKAGE_VERSION);
      exit (EXIT_SUCCESS);
    case ':':
      die ("%s: missing argument (see --help)", argv[optind - 1]);
    default:
      if (optopt >= O_CONTROL)
        die ("%s: takes no argument (see --help)", argv[optind - 1]);
      die ("unknown option '%s' (see --help)", argv[optind - 1]);
    }
  }
  if (optind < argc)
    die ("unexpected argument '%s' (see --help)", argv[optind]);
  if (!o->control)
    die ("--control SOCKET is required (see --help)");
  if (!o->peer_uri)
    die ("--peer URI is required (see --help)");

  o->peer_uri_rw = peer_uri_rewrite (o->peer_uri, &o->peer_plain,
                                     &uri_user, why, sizeof why);
  if (!o->peer_uri_rw)
    die ("--peer: %s", why);
  if (o->peer_plain && !o->insecure)
    die ("--peer: %s is a plaintext URI: use nbds:// or nbds+unix://, "
         "or add --insecure", o->peer_uri);
  /* A TCP URI's host and port, as dial.c and libnbd read them. */
  if (strncmp (o->peer_uri, "nbd://", 6) == 0 ||
      strncmp (o->peer_uri, "nbds://", 7) == 0) {
    struct peer_addr a;
    int r = peer_addr_parse (o->peer_uri, &a, why, sizeof why);

    peer_addr_free (&a);
    if (r == -1)
      die ("--peer: %s", why);
  }
  if (uri_user && o->tls_username && strcmp (uri_user, o->tls_username) != 0)
    die ("--tls-username: '%s' conflicts with user '%s' in --peer",
         o->tls_username, uri_user);
  free (uri_user);

  if (o->tls_psk && access (o->tls_psk, R_OK) == -1)
    die ("--tls-psk: cannot read %s: %m", o->tls_psk);
  if (o->tls_psk && stat (o->tls_psk, &st) == 0 && !S_ISREG (st.st_mode))
    die ("--tls-psk: %s is not a regular file", o->tls_psk);
  if (o->tls_certificates) {
    if (stat (o->tls_certificates, &st) == -1)
      die ("--tls-certificates: %s: %m", o->tls_certificates);
    if (!S_ISDIR (st.st_mode))
      die ("--tls-certificates: %s is not a directory", o->tls_certificates);
  }
  if (o->tls_psk && o->tls_certificates)
    die ("--tls-psk and --tls-certificates are mutually exclusive");
  if (peer_tls_check (o->peer_uri, o->tls_psk, o->tls_certificates, why,
                      sizeof why))
    die ("--peer: %s", why);
  if ((o->tls_psk || o->tls_certificates || o->tls_username) &&
      o->peer_plain)
    die ("--peer: %s is a plaintext URI, but TLS options were given",
         o->peer_uri);
  /* Only the form of ADDR: whether it is an address of this host is
   * seen at each connect (it may come later, say a floating address),
   * and reported as the link's error.
   */
  if (dial_setup (o, why, sizeof why) == -1)
    die ("%s", why);
}

void
options_free (struct options *o)
{
  free (o->peer_uri_rw);
  dial_options_free (o);
}
