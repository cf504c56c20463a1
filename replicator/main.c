/* nbd-replicator: ships the replica filter's log to the secondary.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 *   nbd-replicator --control SOCKET --peer URI [--tls-psk FILE]
 *                  [--tls-username NAME] [--tls-certificates DIR]
 *                  [--insecure] [--bind ADDR] [--compress lz4|none]
 *                  [--debug]
 *
 * The main loop: attach to the filter's control socket (retrying with
 * a backoff from 0.1 s doubling to 2 s: the socket comes and goes with
 * nbdkit), then poll the channel and the peer's libnbd socket, at most
 * POLL_TIMEOUT_MS at a time so that timers (connect timeout, STATS)
 * run.  A broken channel drops the peer and the log and attaches
 * again, unless our parent (the filter, which started us with
 * PR_SET_PDEATHSIG) is gone.  SIGTERM and SIGINT end the loop; exit 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <poll.h>
#include <unistd.h>

#include "replicator.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

static volatile sig_atomic_t quit;

static void
on_signal (int sig)
{
  quit = sig;
}

static void
set_signals (void)
{
  struct sigaction sa;

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;    /* no SA_RESTART: poll returns EINTR */
  sigemptyset (&sa.sa_mask);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  sa.sa_handler = SIG_IGN;      /* a closed channel is seen as EPIPE */
  sigaction (SIGPIPE, &sa, NULL);
}

int
main (int argc, char **argv)
{
  struct options o;
  struct repl r;
  pid_t ppid = getppid ();
  uint64_t backoff = BACKOFF_MIN_MS, next_try = 0;
  char last_err[256] = "";
  bool announced = false;        /* "attached" said for this session */
  int status = EXIT_SUCCESS;

  tls_prefer_aes (argv);        /* first: it may execute us again */
  options_parse (&o, argc, argv);
  set_signals ();
  memset (&r, 0, sizeof r);
  r.opt = &o;
  chanc_init (&r.ch);
  peer_init (&r.peer);
  dbg ("control %s, peer %s (export " WIRE_EXPORT_NAME ")%s%s%s%s",
       o.control, o.peer_uri, o.insecure ? ", insecure" : "",
       o.compress ? ", lz4" : "", o.bind ? ", from " : "",
       o.bind ? o.bind : "");
  if (tls_aes_preferred ())
    dbg ("TLS: AES-GCM preferred (CHACHA20-POLY1305 disabled: this CPU has "
         "AES instructions and GnuTLS has no configuration here)");

  while (!quit) {
    struct pollfd fds[2];
    struct nbd_handle *polled;
    uint64_t now = now_ms ();
    int timeout = POLL_TIMEOUT_MS;

    if (r.ch.fd == -1 && now >= next_try) {
      char err[256];

      if (chanc_connect (&r.ch, o.control, err, sizeof err) == 0) {
        dbg ("connected to %s", o.control);
        announced = false;
        session_attached (&r);
      }
      else {
        /* Report each new reason once, not every retry. */
        if (strcmp (err, last_err) != 0) {
          msg ("cannot attach to the control socket: %s (retrying)", err);
          snprintf (last_err, sizeof last_err, "%s", err);
        }
        next_try = now + backoff;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        /* Its nbdkit is gone (the PDEATHSIG lost): stop retrying. */
        if (ppid != 1 && getppid () != ppid) {
          msg ("the filter exited");
          break;
        }
      }
    }
    if (r.ch.fd == -1) {
      uint64_t wait = next_try > now ? next_try - now : 0;
      if (wait < (uint64_t) timeout)
        timeout = wait;
    }

    fds[0].fd = r.ch.fd;
    fds[0].events = POLLIN | (r.ch.out_len ? POLLOUT : 0);
    fds[0].revents = 0;
    fds[1].fd = peer_pollfd (&r, &fds[1].events);
    fds[1].revents = 0;
    polled = r.peer.h;
    if (poll (fds, 2, timeout) == -1 && errno != EINTR) {
      msg ("poll: %m");
      status = EXIT_FAILURE;
      break;
    }
    if (quit)
      break;

    /* The peer first: the channel's frames may replace the handle. */
    if (fds[1].fd >= 0 && fds[1].revents && r.peer.h == polled)
      peer_notify (&r, fds[1].revents);
    if (r.ch.fd >= 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
      chanc_read (&r.ch, session_frame, &r);
    if (r.ch.got_frame && !announced) {
      msg ("attached to %s", o.control);
      announced = true;
      last_err[0] = '\0';
      backoff = BACKOFF_MIN_MS;
    }
    peer_progress (&r);
    session_tick (&r);
    chanc_flush (&r.ch);

    if (r.ch.broken) {
      /* A session that got going is reported and retried at once; an
       * attach refused again and again (a filter without a peer) is
       * reported once per reason and retried with the backoff.
       */
      if (r.ch.got_frame)
        msg ("channel lost: %s", r.ch.why);
      else if (strcmp (r.ch.why, last_err) != 0) {
        msg ("channel lost: %s (retrying)", r.ch.why);
        snprintf (last_err, sizeof last_err, "%s", r.ch.why);
      }
      next_try = now_ms () + backoff;
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
      session_detach (&r);
      if (ppid != 1 && getppid () != ppid) {
        msg ("the filter exited");
        break;
      }
    }
  }

  dbg ("exiting%s", quit ? " on a signal" : "");
  session_detach (&r);
  options_free (&o);
  return status;
}
