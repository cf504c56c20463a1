/* nbd-replica: unit tests of the peer URI and bind-address parse
 * (common/peeraddr.c), shared by the filter and the replicator.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <check.h>

#include "peeraddr.h"
#include "peertls.h"

/* Parse uri with bind; the reason if refused, else NULL.  On success
 * the parse is kept in *a (peer_addr_free it).
 */
static const char *
dial (const char *uri, const char *bind, struct peer_addr *a)
{
  static char why[400];
  struct sockaddr_storage ss;
  socklen_t len;
  int family;

  if (peer_dial_check (uri, bind, a, &ss, &len, &family, why,
                       sizeof why) == -1) {
    peer_addr_free (a);
    return why;
  }
  return NULL;
}

START_TEST (test_defaults_and_decoding)
{
  struct peer_addr a;

  ck_assert_ptr_null (dial ("nbds://al%69ce@peer.example/?tls-psk-file="
                            "/k%20ey", "127.0.0.1", &a));
  ck_assert_str_eq (a.host, "peer.example");
  ck_assert_str_eq (a.port, "10809");
  ck_assert_str_eq (a.user, "alice");
  ck_assert_str_eq (a.uri_psk, "/k ey");
  ck_assert (!a.socket_param);
  peer_addr_free (&a);

  ck_assert_ptr_null (dial ("nbd://[::1]:0/", "::1", &a));
  ck_assert_str_eq (a.host, "::1");
  ck_assert_str_eq (a.port, "10809");       /* 0: libnbd's default */
  peer_addr_free (&a);

  ck_assert_ptr_null (dial ("nbds://:10900", "[::]", &a));
  ck_assert_str_eq (a.host, "localhost");
  ck_assert_str_eq (a.port, "10900");
  peer_addr_free (&a);
}
END_TEST

/* No local address (the replicator dials a TCP peer itself without
 * --bind): any family, nothing to bind, and a numeric peer of either
 * family is fine.
 */
START_TEST (test_no_bind)
{
  struct peer_addr a;
  struct sockaddr_storage ss;
  socklen_t len = 99;
  int family = -1;
  char why[400];

  ck_assert_int_eq (peer_dial_check ("nbds://[2001:db8::1]:10900/", NULL,
                                     &a, &ss, &len, &family, why,
                                     sizeof why), 0);
  ck_assert_str_eq (a.host, "2001:db8::1");
  ck_assert_int_eq (len, 0);
  ck_assert_int_eq (family, AF_UNSPEC);
  peer_addr_free (&a);
  ck_assert_ptr_null (dial ("nbd://192.0.2.1/", NULL, &a));
  peer_addr_free (&a);
  /* Still only TCP peers. */
  ck_assert_ptr_nonnull (dial ("nbds+unix:///?socket=/s", NULL, &a));
  ck_assert_ptr_nonnull (dial ("nbds://h/?socket=/s", NULL, &a));
}
END_TEST

/* What a TLS peer must be given: a PSK (named in full in the query)
 * or certificates; a plaintext URI is not this check's business.
 */
START_TEST (test_tls_check)
{
  char why[512];

  ck_assert_ptr_null (peer_tls_check ("nbds://h/?tls-psk-file=/k", NULL,
                                      NULL, why, sizeof why));
  ck_assert_ptr_null (peer_tls_check ("nbds://h/?a=1;tls-psk-file=/k",
                                      NULL, NULL, why, sizeof why));
  ck_assert_ptr_null (peer_tls_check ("nbds://h/", "/k", NULL, why,
                                      sizeof why));
  ck_assert_ptr_null (peer_tls_check ("nbd://h/", NULL, NULL, why,
                                      sizeof why));
  ck_assert_ptr_nonnull (peer_tls_check ("nbds://h/", NULL, NULL, why,
                                         sizeof why));
  /* Not a PSK parameter: the check applies. */
  ck_assert_ptr_nonnull (peer_tls_check ("nbds://h/?xtls-psk-file=/k",
                                         NULL, NULL, why, sizeof why));
  ck_assert_ptr_nonnull (peer_tls_check ("nbds://h/#tls-psk-file=/k",
                                         NULL, NULL, why, sizeof why));
  /* libnbd splits at the first '&' if there is one: its value of "a"
   * is "1;tls-psk-file=/k", and it has no PSK.
   */
  ck_assert_ptr_nonnull (peer_tls_check ("nbds://h/?a=1;tls-psk-file=/k&b=2",
                                         NULL, NULL, why, sizeof why));
  ck_assert_ptr_null (peer_tls_check ("nbds://h/?a=1&tls-psk-file=/k;b=2",
                                      NULL, NULL, why, sizeof why));
}
END_TEST

/* What the replicator refuses at each start, the filter must refuse
 * at nbdkit's: every case here made the replicator exit while the
 * filter's own check let it through.
 */
START_TEST (test_refused)
{
  static const struct { const char *uri, *bind, *why; } cases[] = {
    { "nbd://127.0.0.1:99999/", "127.0.0.1", "bad port '99999'" },
    { "nbd://127.0.0.1:1x/", "127.0.0.1", "bad port '1x'" },
    { "nbd://127.0.0.1:123456/", "127.0.0.1", "bad port '123456'" },
    { "nbd://[::1]x/", "::1", "'x' after ']'" },
    { "nbd://[::1/", "::1", "unbalanced '['" },
    { "nbd://[fe80::1%25lo]:10809/", "127.0.0.1",
      "127.0.0.1 is an IPv4 address, the peer fe80::1%lo an IPv6 one" },
    { "nbd://192.0.2.1/", "::1", "::1 is an IPv6 address" },
    { "nbd://h/?socket=/s", "127.0.0.1", "socket= parameter" },
    { "nbd+unix:///?socket=/s", "127.0.0.1", "applies to TCP peers" },
    { "nbd://h/", "localhost", "'localhost' is not a numeric" },
  };
  struct peer_addr a;

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    const char *why = dial (cases[i].uri, cases[i].bind, &a);

    ck_assert_msg (why != NULL, "%s from %s was accepted", cases[i].uri,
                   cases[i].bind);
    ck_assert_msg (strstr (why, cases[i].why), "%s: '%s' lacks '%s'",
                   cases[i].uri, why, cases[i].why);
  }
}
END_TEST

/* The user the filter compares with replica-tls-username is the one
 * libnbd sends: percent-decoded.
 */
START_TEST (test_rewrite_decodes_user)
{
  char why[200], *user = NULL, *rw;
  bool plain;

  rw = peer_uri_rewrite ("nbds://al%69ce@h:1/?tls-psk-file=/k", &plain,
                         &user, why, sizeof why);
  ck_assert_ptr_nonnull (rw);
  ck_assert_str_eq (user, "alice");
  ck_assert (!plain);
  free (rw);
  free (user);
}
END_TEST

static Suite *
peeraddr_suite (void)
{
  Suite *s = suite_create ("peeraddr");
  TCase *tc = tcase_create ("parse");

  tcase_add_test (tc, test_defaults_and_decoding);
  tcase_add_test (tc, test_no_bind);
  tcase_add_test (tc, test_tls_check);
  tcase_add_test (tc, test_refused);
  tcase_add_test (tc, test_rewrite_decodes_user);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (peeraddr_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
