/* nbd-replica: start nbd-replicator, and restart it if it dies.
 * Copyright (C) 2026 the nbd-replica authors.  BSD-3-Clause, see COPYING.
 *
 * After nbdkit has forked, a monitor thread forks and execs the
 * replicator with the replica-* settings as options, waits for it, and
 * starts it again one second after it exits (a crash, a kill), until
 * nbdkit shuts down; a replicator that keeps exiting with an error
 * right after its start (it refused its settings, or cannot be run) is
 * restarted after 2, 4, ... up to 60 s.  The child gets SIGTERM if the
 * monitor thread (so nbdkit) dies: PR_SET_PDEATHSIG is tied to the
 * thread that forked.  At nbdkit's exit it gets SIGTERM, and SIGKILL
 * if it has not exited 10 s later.
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
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <nbdkit-filter.h>

#include "replica.h"
#include "repl.h"

#ifndef REPLICA_SBINDIR
#define REPLICA_SBINDIR "/usr/local/sbin"
#endif

#define RESTART_DELAY_SEC     1
#define RESTART_DELAY_MAX_SEC 60
#define QUICK_EXIT_SEC        10  /* an exit this soon after a start... */
#define STOP_GRACE_SEC        10  /* SIGTERM, then SIGKILL this much later */

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

/* In the child, before exec (async-signal-safe calls only): nothing of
 * nbdkit's but stderr.  Every handler back to the default before the
 * signals are unblocked: a SIGTERM from spawn_stop (or PDEATHSIG) sent
 * between fork and exec would otherwise run nbdkit's quit handler here,
 * and the replicator would start without ever seeing it.  Ignored
 * signals stay ignored across the exec (nohup's SIGHUP), but SIGPIPE,
 * which nbdkit ignores for itself.  stdin and
 * stdout from /dev/null: with nbdkit -s they are the client's socket.
 */
static void
child_setup (long max_fd)
{
  struct sigaction dfl, cur;
  sigset_t none;
  int null_fd;

  memset (&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) {
    if (sigaction (s, NULL, &cur) == -1)
      continue;                 /* glibc's own, SIGKILL, SIGSTOP */
    if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN &&
        s != SIGPIPE)
      continue;
    sigaction (s, &dfl, NULL);
  }
  null_fd = open ("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    dup2 (null_fd, 0);
    dup2 (null_fd, 1);
  }
  if (close_range (3, ~0U, 0) == -1)
    for (long fd = 3; fd < max_fd; ++fd)
      close (fd);
  sigemptyset (&none);
  pthread_sigmask (SIG_SETMASK, &none, NULL);
}

/* Runs in the monitor thread, so PDEATHSIG follows nbdkit's lifetime. */
static pid_t
start_child (void)
{
  sigset_t all, old;
  pid_t pid, parent = getpid ();
  struct rlimit rl;
  long max_fd = 1L << 20;       /* only if close_range fails */

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t) max_fd)
    max_fd = rl.rlim_cur;
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  pid = fork ();
  if (pid == 0) {
    prctl (PR_SET_PDEATHSIG, SIGTERM);
    /* nbdkit died before the prctl (PDEATHSIG would never come).  Not
     * "getppid () == 1": nbdkit may be pid 1 itself, in a container.
     */
    if (getppid () != parent)
      _exit (1);
    child_setup (max_fd);
    execv (S.path, S.argv);
    _exit (127);
  }
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  return pid;
}

/* Wait for pid to exit without reaping it, so that S.pid names it (and
 * no other process, after a wraparound) until S.pid is cleared; then
 * reap it.  The exit status, or -1 on an error.
 */
static int
wait_child (pid_t pid)
{
  siginfo_t si;
  int status = -1;

  while (waitid (P_PID, pid, &si, WEXITED | WNOWAIT) == -1) {
    if (errno != EINTR) {
      nbdkit_error ("replica: waitid (%d): %m", (int) pid);
      break;
    }
  }
  pthread_mutex_lock (&S.lock);
  S.pid = 0;
  pthread_cond_broadcast (&S.cond);     /* spawn_stop waits for this */
  pthread_mutex_unlock (&S.lock);
  while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
    ;
  return status;
}

static time_t
mono_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec;
}

/* How long to wait before the next start, after a child that ran from
 * started and ended with status: a replicator killed (a crash, an
 * admin's kill) or one that ran a while is restarted after a second; one
 * that exits with an error right away refuses what it was given, and
 * would do so again: wait twice as long each time.
 */
static unsigned
next_delay (unsigned delay, time_t started, int status)
{
  bool refused = status == -1 ||
    (WIFEXITED (status) && WEXITSTATUS (status) != 0);

  if (!refused || mono_now () - started >= QUICK_EXIT_SEC)
    return RESTART_DELAY_SEC;
  return delay * 2 > RESTART_DELAY_MAX_SEC ? RESTART_DELAY_MAX_SEC
    : delay * 2;
}

static void
report_exit (pid_t pid, int status, unsigned delay)
{
  if (status == -1)
    nbdkit_error ("replica: nbd-replicator (pid %d) ended; restarting it in "
                  "%u s", (int) pid, delay);
  else if (WIFEXITED (status) && WEXITSTATUS (status) == 127)
    nbdkit_error ("replica: %s could not be run (see replica-replicator=); "
                  "retrying in %u s", S.path, delay);
  else
    nbdkit_error ("replica: nbd-replicator (pid %d) %s %d; restarting it "
                  "in %u s", (int) pid,
                  WIFSIGNALED (status) ? "was killed by signal"
                  : "exited with status",
                  WIFSIGNALED (status) ? WTERMSIG (status)
                  : WEXITSTATUS (status), delay);
}

static void *
monitor_thread (void *arg)
{
  unsigned delay = RESTART_DELAY_SEC;

  pthread_mutex_lock (&S.lock);
  while (!S.stopping) {
    pid_t pid = start_child ();
    time_t started = mono_now ();

    if (pid == -1) {
      delay = next_delay (delay, started, -1);
      nbdkit_error ("replica: cannot start %s: %m (retrying in %u s)",
                    S.path, delay);
    }
    else {
      int status;

      S.pid = pid;
      nbdkit_debug ("replica: started %s (pid %d)", S.path, (int) pid);
      pthread_mutex_unlock (&S.lock);
      status = wait_child (pid);
      pthread_mutex_lock (&S.lock);
      if (S.stopping)
        break;
      delay = next_delay (delay, started, status);
      report_exit (pid, status, delay);
      S.restarts++;
    }
    {
      struct timespec ts;
      clock_gettime (CLOCK_MONOTONIC, &ts);
      ts.tv_sec += delay;
      while (!S.stopping &&
             pthread_cond_timedwait (&S.cond, &S.lock, &ts) == 0)
        ;
    }
  }
  pthread_mutex_unlock (&S.lock);
  return NULL;
}

int
spawn_start (struct replica *r)
{
  pthread_condattr_t attr;
  int e;

  /* Timed waits on the monotonic clock. */
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_destroy (&S.cond);
  pthread_cond_init (&S.cond, &attr);
  pthread_condattr_destroy (&attr);

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
  if (S.pid > 0) {
    struct timespec ts;

    kill (S.pid, SIGTERM);
    clock_gettime (CLOCK_MONOTONIC, &ts);
    ts.tv_sec += STOP_GRACE_SEC;
    while (S.pid > 0 &&
           pthread_cond_timedwait (&S.cond, &S.lock, &ts) == 0)
      ;
    if (S.pid > 0) {
      nbdkit_error ("replica: nbd-replicator (pid %d) did not exit %d s "
                    "after SIGTERM: killing it", (int) S.pid,
                    STOP_GRACE_SEC);
      kill (S.pid, SIGKILL);
    }
  }
  pthread_cond_broadcast (&S.cond);
  pthread_mutex_unlock (&S.lock);
  pthread_join (S.thread, NULL);
  S.running = false;
  free (S.path);
}
