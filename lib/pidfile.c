/* pidfile.c: signalling a helper named by a pidfile only when it is ours. See
 * pidfile-private.h. */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <linux/nsfs.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pidfile-private.h"
#include "util-private.h"

#define TERM_WAIT_STEPS 40 /* of 50 ms: 2 s */
#define CMDLINE_MAX (256 * 1024)

/* "PID" (as helpers write them) or "PID START" (as hutch_pidfile_format writes them);
 * *ret_start is 0 when there is no start time. */
static pid_t read_pidfile(const char *pidfile, guint64 *ret_start) {
  g_autofree char *text = NULL;
  if (!g_file_get_contents(pidfile, &text, NULL, NULL))
    return 0;
  g_auto(GStrv) fields = g_strsplit(g_strstrip(text), " ", -1);
  guint n = g_strv_length(fields);
  guint64 pid = 0, start = 0;
  if (n < 1 || n > 2 || !g_ascii_string_to_unsigned(fields[0], 10, 2, G_MAXINT32, &pid, NULL) ||
      (n == 2 && !g_ascii_string_to_unsigned(fields[1], 10, 1, G_MAXUINT64, &start, NULL)))
    return 0;
  *ret_start = start;
  return (pid_t)pid;
}

/* The whole of a /proc/PID file (up to max bytes), NUL-terminated; len without the NUL. */
static char *read_at(int procfd, const char *name, gsize max, gsize *ret_len) {
  g_auto(HutchFd) fd = openat(procfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  GString *text = g_string_new(NULL);
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      g_string_free(text, TRUE);
      return NULL;
    }
    if (n == 0 || text->len + (gsize)n > max)
      break;
    g_string_append_len(text, buf, n);
  }
  if (ret_len)
    *ret_len = text->len;
  return g_string_free(text, FALSE);
}

/* Running (neither gone nor a zombie waiting to be reaped); its start time (clock ticks
 * after boot, field 22 of /proc/PID/stat) in *ret_start if not NULL. */
static gboolean alive_at(int procfd, guint64 *ret_start) {
  g_autofree char *stat = read_at(procfd, "stat", 4096, NULL);
  /* the name in parentheses may hold anything, ')' and spaces included: the last ')' */
  const char *end = stat ? strrchr(stat, ')') : NULL;
  if (!end || end[1] != ' ' || end[2] == 'Z' || end[2] == 'X')
    return FALSE;
  if (ret_start) {
    g_auto(GStrv) fields = g_strsplit(end + 2, " ", 21);
    if (g_strv_length(fields) < 21 ||
        !g_ascii_string_to_unsigned(fields[19], 10, 1, G_MAXUINT64, ret_start, NULL))
      return FALSE;
  }
  return TRUE;
}

static gboolean owned_by_us(int procfd) {
  if (geteuid() == 0)
    return TRUE;
  g_autofree char *status = read_at(procfd, "status", 64 * 1024, NULL);
  const char *line = status ? strstr(status, "\nUid:") : NULL;
  guint64 uid = G_MAXUINT64;
  if (line)
    uid = g_ascii_strtoull(line + strlen("\nUid:"), NULL, 10);
  if (uid == getuid())
    return TRUE;
  /* root of a user namespace this user made (virtiofsd): a subordinate uid on the host */
  g_auto(HutchFd) ns = openat(procfd, "ns/user", O_RDONLY | O_CLOEXEC);
  uid_t owner = (uid_t)-1;
  return ns >= 0 && ioctl(ns, NS_GET_OWNER_UID, &owner) == 0 && owner == getuid();
}

/* target equals path, or is path with the " (deleted)" the kernel adds to a removed file. */
static gboolean same_path(const char *target, const char *path) {
  size_t len = strlen(path);
  return strncmp(target, path, len) == 0 &&
         (target[len] == '\0' || strcmp(target + len, " (deleted)") == 0);
}

static char *readlink_at(int dirfd, const char *name) {
  char buf[4096];
  ssize_t n = readlinkat(dirfd, name, buf, sizeof(buf) - 1);
  if (n < 0)
    return NULL;
  buf[n] = '\0';
  return g_strdup(buf);
}

/* target is path, or the file path resolves to now. */
static gboolean same_file(const char *target, const char *path) {
  if (same_path(target, path))
    return TRUE;
  g_autofree char *resolved = realpath(path, NULL);
  return resolved && same_path(target, resolved);
}

static gboolean runs_exe(int procfd, const char *const *exes) {
  if (!exes)
    return TRUE;
  g_autofree char *exe = readlink_at(procfd, "exe");
  if (exe) {
    for (guint i = 0; exes[i]; i++)
      if (same_file(exe, exes[i]))
        return TRUE;
    return FALSE;
  }
  /* Only a process that made itself non-dumpable hides its exe from its own user; root
   * always sees it. */
  if ((errno != EACCES && errno != EPERM) || geteuid() == 0)
    return FALSE;
  g_autofree char *comm = read_at(procfd, "comm", 64, NULL);
  if (!comm)
    return FALSE;
  g_strchomp(comm);
  for (guint i = 0; exes[i]; i++) {
    g_autofree char *base = g_path_get_basename(exes[i]);
    if (strlen(base) > 15)
      base[15] = '\0'; /* TASK_COMM_LEN - 1 */
    if (strcmp(comm, base) == 0)
      return TRUE;
  }
  return FALSE;
}

static gboolean has_comm(int procfd, const char *want) {
  g_autofree char *comm = read_at(procfd, "comm", 64, NULL);
  return comm && strcmp(g_strchomp(comm), want) == 0;
}

static gboolean has_arg(int procfd, const char *want) {
  gsize len = 0;
  g_autofree char *cmdline = read_at(procfd, "cmdline", CMDLINE_MAX, &len);
  if (!cmdline)
    return FALSE;
  for (gsize at = 0; at < len; at += strlen(cmdline + at) + 1)
    if (strcmp(cmdline + at, want) == 0)
      return TRUE;
  return FALSE;
}

/* A /proc/PID directory fd of the process in pidfile if it passes id, else -1. The fd keeps
 * naming that process: reads through it fail once it is gone, whoever gets the pid next.
 * *ret_stale: the pidfile names no process it is known to be of: no pid in it, that pid not
 * running (or a zombie), running with another start time than the one recorded, or, with
 * none recorded, a process that does not pass (a pid reused, as far as we can tell). A
 * running process with the recorded start time is the one the file was written for, whether
 * it passes or not (this one included). */
static int open_verified(const char *pidfile, const HutchHelperId *id, pid_t *ret_pid,
                         gboolean *ret_stale) {
  guint64 recorded_start = 0, start = 0;
  *ret_stale = TRUE;
  pid_t pid = read_pidfile(pidfile, &recorded_start);
  if (pid <= 0)
    return -1;
  g_autofree char *path = g_strdup_printf("/proc/%d", (int)pid);
  g_auto(HutchFd) procfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (procfd < 0 || !alive_at(procfd, &start) || (recorded_start && start != recorded_start))
    return -1;
  *ret_stale = recorded_start == 0;
  if (pid == getpid() || (id->recorded && recorded_start == 0) || !owned_by_us(procfd) ||
      !runs_exe(procfd, id->exes) || (id->comm && !has_comm(procfd, id->comm)) ||
      (id->arg && !has_arg(procfd, id->arg)))
    return -1;
  *ret_pid = pid;
  return g_steal_fd(&procfd);
}

char *hutch_pidfile_format(pid_t pid) {
  g_autofree char *path = g_strdup_printf("/proc/%d", (int)pid);
  g_auto(HutchFd) procfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  guint64 start = 0;
  if (procfd < 0 || !alive_at(procfd, &start))
    return NULL;
  return g_strdup_printf("%d %" G_GUINT64_FORMAT "\n", (int)pid, start);
}

pid_t hutch_pidfile_check(const char *pidfile, const HutchHelperId *id) {
  pid_t pid = 0;
  gboolean stale = FALSE;
  g_auto(HutchFd) procfd = open_verified(pidfile, id, &pid, &stale);
  return procfd >= 0 ? pid : 0;
}

/* Signals the process procfd names, never whoever has its pid now. */
static int signal_at(int procfd, pid_t pid, int sig) {
#ifdef SYS_pidfd_send_signal
  if (syscall(SYS_pidfd_send_signal, procfd, sig, NULL, 0) == 0)
    return 0;
  if (errno != ENOSYS)
    return -1;
#endif
  /* kernels before 5.1: the small window this fd would have closed stays open */
  return alive_at(procfd, NULL) ? kill(pid, sig) : -1;
}

gboolean hutch_pidfile_kill(const char *pidfile, const HutchHelperId *id) {
  pid_t pid = 0;
  gboolean stale = FALSE;
  g_auto(HutchFd) procfd = open_verified(pidfile, id, &pid, &stale);
  gboolean signalled = procfd >= 0 && signal_at(procfd, pid, SIGTERM) == 0;
  if (signalled) {
    for (int i = 0; i < TERM_WAIT_STEPS && alive_at(procfd, NULL); i++)
      g_usleep(50 * 1000);
    if (alive_at(procfd, NULL))
      signal_at(procfd, pid, SIGKILL);
  }
  /* The process the file was written for, refused, keeps it: hutch_supervisor_wait_gone
   * meeting a `start --foreground` supervisor (no hutch-supervise name) must not make it
   * unreachable. */
  if (stale || procfd >= 0)
    g_unlink(pidfile);
  return signalled;
}
