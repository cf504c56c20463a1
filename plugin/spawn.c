/* nbd-replica: start nbd-replicator, and restart it if it dies.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * After nbdkit has forked, a monitor thread forks and execs the
 * replicator with the replica-* settings as options, waits for it, and
 * starts it again one second after it exits (a crash, a kill), until
 * nbdkit shuts down.  The child gets SIGTERM if the monitor thread (so
 * nbdkit) dies: PR_SET_PDEATHSIG is tied to the thread that forked.
 * Replication state lives in the filter and the two logs, so a restarted
 * replicator simply reconnects and resumes at the peer's durable seq.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <dlfcn.h>
#include <libgen.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"

#ifndef REPLICA_SBINDIR
#define REPLICA_SBINDIR "/usr/local/sbin"
#endif

#define RESTART_DELAY_SEC 1

extern int replica_debug_verbose;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t thread;
  bool running, stopping;
  pid_t pid;
  char *path;
  char *argv[24];
  uint64_t restarts;
} S = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

/* replica-replicator=PATH, else beside the filter in the build tree
 * (build/plugin/ -> build/replicator/), else the installed one.
 */
static char *
find_replicator (void)
{
  Dl_info info;
  char *p;

  if (repl_cfg.replicator)
    return strdup (repl_cfg.replicator);
  if (dladdr ((void *) find_replicator, &info) && info.dli_fname) {
    char *copy = strdup (info.dli_fname);
    if (copy && asprintf (&p, "%s/../replicator/nbd-replicator",
                          dirname (copy)) != -1) {
      free (copy);
      if (access (p, X_OK) == 0)
        return p;
      free (p);
    }
    else
      free (copy);
  }
  return strdup (REPLICA_SBINDIR "/nbd-replicator");
}

static void
build_argv (struct replica *r)
{
  int n = 0;

  S.argv[n++] = S.path;
  S.argv[n++] = (char *) "--control";
  S.argv[n++] = r->control_path;
  S.argv[n++] = (char *) "--peer";
  S.argv[n++] = repl_cfg.peer;
  if (repl_cfg.tls_psk) {
    S.argv[n++] = (char *) "--tls-psk";
    S.argv[n++] = repl_cfg.tls_psk;
  }
  if (repl_cfg.tls_username) {
    S.argv[n++] = (char *) "--tls-username";
    S.argv[n++] = repl_cfg.tls_username;
  }
  if (repl_cfg.tls_certificates) {
    S.argv[n++] = (char *) "--tls-certificates";
    S.argv[n++] = repl_cfg.tls_certificates;
  }
  if (repl_cfg.insecure)
    S.argv[n++] = (char *) "--insecure";
  if (repl_cfg.compress) {
    S.argv[n++] = (char *) "--compress";
    S.argv[n++] = (char *) "lz4";
  }
  if (repl_cfg.bind) {
    S.argv[n++] = (char *) "--bind";
    S.argv[n++] = repl_cfg.bind;
  }
  if (replica_debug_verbose)
    S.argv[n++] = (char *) "--debug";
  S.argv[n] = NULL;
}

/* Runs in the monitor thread, so PDEATHSIG follows nbdkit's lifetime. */
static pid_t
start_child (void)
{
  sigset_t all, old;
  pid_t pid;

  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  pid = fork ();
  if (pid == 0) {
    /* Only async-signal-safe calls until exec. */
    sigset_t none;
    sigemptyset (&none);
    signal (SIGPIPE, SIG_DFL);
    prctl (PR_SET_PDEATHSIG, SIGTERM);
    if (getppid () == 1)
      _exit (1);
    close_range (3, ~0U, 0);
    pthread_sigmask (SIG_SETMASK, &none, NULL);
    execv (S.path, S.argv);
    _exit (127);
  }
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  return pid;
}

static void *
monitor_thread (void *arg)
{
  pthread_mutex_lock (&S.lock);
  while (!S.stopping) {
    pid_t pid;
    int status;

    pid = start_child ();
    if (pid == -1) {
      nbdkit_error ("replica: cannot start %s: %m", S.path);
    }
    else {
      S.pid = pid;
      nbdkit_debug ("replica: started %s (pid %d)", S.path, (int) pid);
      pthread_mutex_unlock (&S.lock);
      while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
        ;
      pthread_mutex_lock (&S.lock);
      S.pid = 0;
      if (S.stopping)
        break;
      if (WIFEXITED (status) && WEXITSTATUS (status) == 127)
        nbdkit_error ("replica: %s could not be run (see replica-"
                      "replicator=); retrying", S.path);
      else
        nbdkit_error ("replica: nbd-replicator (pid %d) %s %d; restarting "
                      "it", (int) pid,
                      WIFSIGNALED (status) ? "was killed by signal"
                      : "exited with status",
                      WIFSIGNALED (status) ? WTERMSIG (status)
                      : WEXITSTATUS (status));
      S.restarts++;
    }
    {
      struct timespec ts;
      clock_gettime (CLOCK_REALTIME, &ts);
      ts.tv_sec += RESTART_DELAY_SEC;
      if (!S.stopping)
        pthread_cond_timedwait (&S.cond, &S.lock, &ts);
    }
  }
  pthread_mutex_unlock (&S.lock);
  return NULL;
}

int
spawn_start (struct replica *r)
{
  int e;

  S.path = find_replicator ();
  if (!S.path) {
    nbdkit_error ("replica: strdup: %m");
    return -1;
  }
  build_argv (r);
  e = pthread_create (&S.thread, NULL, monitor_thread, NULL);
  if (e) {
    errno = e;
    nbdkit_error ("replica: pthread_create: %m");
    return -1;
  }
  S.running = true;
  return 0;
}

void
spawn_stop (void)
{
  if (!S.running)
    return;
  pthread_mutex_lock (&S.lock);
  S.stopping = true;
  if (S.pid > 0)
    kill (S.pid, SIGTERM);
  pthread_cond_broadcast (&S.cond);
  pthread_mutex_unlock (&S.lock);
  pthread_join (S.thread, NULL);
  S.running = false;
  free (S.path);
}
