/* pidfile-private.h: signalling a helper process named by a pidfile, only when it is the one
 * hutch started.
 *
 * A pid read from a file is a guess: the helper may have exited long ago and its pid been
 * reused by any other process, or the file may name another VM's helper. So before any
 * signal the process is checked against what hutch knows of the helper it started: who runs
 * it, which binary, and something only this instance's helper has: the start time hutch
 * recorded next to the pid when it started the helper (no other process, and no other VM's
 * helper, has that pid with that start time), or for a helper that writes its own pidfile
 * (passt), an argument on its command line. The process is held through a /proc/PID
 * directory fd from before the check until the last signal, which the kernel delivers to that
 * very process (pidfd_send_signal) even if it exits and its pid is reused meanwhile. */
#pragma once

#include <sys/types.h>

#include "hutch.h"

/* What identifies a helper. Every check that is set must pass; set exes or comm, and arg or
 * recorded, so that neither another program nor another VM's helper passes. A start time in
 * the pidfile is always checked.
 *
 * Whose process: when hutch runs as a user, the process's real uid is the user's, or it runs
 * in a user namespace the user owns (virtiofsd is root of its own namespace, a subordinate
 * uid on the host). As root there is no uid check (passt drops to nobody), but /proc/PID/exe
 * is always readable, so the binary is always checked. */
typedef struct {
  /* The binaries the helper may run (absolute, symlinks resolved; NULL-terminated), matched
   * against /proc/PID/exe (a binary replaced by a package upgrade since, shown as
   * "PATH (deleted)", matches PATH). A process that forbids reading its exe (passt makes
   * itself non-dumpable) is matched by its name (/proc/PID/comm, the first 15 bytes of the
   * binary's file name) instead. NULL: any binary. */
  const char *const *exes;
  /* /proc/PID/comm must be this (a name the helper gives itself with PR_SET_NAME), or NULL */
  const char *comm;
  /* one of the arguments on its command line is exactly this, or NULL */
  const char *arg;
  /* the pidfile was written from hutch_pidfile_format: a pidfile without a start time does not
   * pass */
  gboolean recorded;
} HutchHelperId;

/* The text of a pidfile for the running process pid: "PID START\n", START its start time
 * (field 22 of /proc/PID/stat). NULL when pid does not run. */
char *hutch_pidfile_format(pid_t pid);

/* The pid in pidfile when that process runs (not a zombie) and passes id; else 0. */
pid_t hutch_pidfile_check(const char *pidfile, const HutchHelperId *id);

/* Stops the process in pidfile if it passes id: SIGTERM, up to 2 s for it to exit, then
 * SIGKILL. A process that does not pass is never signalled. Removes pidfile unless it names,
 * with the start time recorded in it, a running process that does not pass: that is the
 * process the file was written for (a `start --foreground` supervisor is not named
 * hutch-supervise), and keeps it. (Without a start time, a process that does not pass is
 * taken for a reused pid.) Returns TRUE when a process was signalled. */
gboolean hutch_pidfile_kill(const char *pidfile, const HutchHelperId *id);
