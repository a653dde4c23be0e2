/* test-pidfile.c: a pid read from a file is signalled only when it is the helper hutch
 * started. The "helpers" are children of the test: /bin/sleep run with an instance-specific
 * argv[0], and forks that name themselves. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pidfile-private.h"
#include "util-private.h"

typedef struct {
  char *dir;
  char *sleep; /* /bin/sleep, symlinks resolved */
} Fixture;

static void fixture_set_up(Fixture *f, gconstpointer data) {
  f->dir = g_dir_make_tmp("hutch-pidfile-XXXXXX", NULL);
  g_assert_nonnull(f->dir);
  f->sleep = realpath("/bin/sleep", NULL);
  g_assert_nonnull(f->sleep);
}

static void fixture_tear_down(Fixture *f, gconstpointer data) {
  hutch_rmtree(f->dir, NULL);
  g_free(f->dir);
  free(f->sleep);
}

static char *path_in(Fixture *f, const char *name) {
  return g_build_filename(f->dir, name, NULL);
}

/* A child outlives no failed assertion of the test. */
static void die_with_parent(gpointer data) {
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
}

/* /bin/sleep 30 with the given argv[0]. */
static pid_t spawn_sleep(Fixture *f, const char *argv0) {
  const char *argv[] = {f->sleep, argv0, "30", NULL};
  GPid pid = 0;
  g_autoptr(GError) error = NULL;
  g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                              G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_FILE_AND_ARGV_ZERO,
                              die_with_parent, NULL, &pid, &error));
  g_assert_no_error(error);
  return pid;
}

static void write_pidfile(const char *pidfile, pid_t pid) {
  g_autofree char *text = g_strdup_printf("%d\n", (int)pid);
  g_assert_true(hutch_write_file(pidfile, text, strlen(text), 0600, NULL));
}

static void assert_text_is(const char *path, const char *want) {
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, want);
}

/* Still running and not signalled: reaps nothing. */
static void assert_running(pid_t pid) {
  int status = 0;
  g_assert_cmpint(waitpid(pid, &status, WNOHANG), ==, 0);
}

static void assert_terminated(pid_t pid) {
  int status = 0;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  g_assert_true(WIFSIGNALED(status));
  g_assert_cmpint(WTERMSIG(status), ==, SIGTERM);
}

static void finish(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

/* A live process that is not the helper: another program. */
static void test_other_program(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "passt.pid");
  pid_t child = spawn_sleep(f, pidfile);
  write_pidfile(pidfile, child);
  const char *exes[] = {"/usr/bin/passt", "/usr/bin/passt.avx2", NULL};
  HutchHelperId id = {.exes = exes, .arg = pidfile};
  g_assert_cmpint(hutch_pidfile_check(pidfile, &id), ==, 0);
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  assert_running(child);
  finish(child);
}

/* The right program, but another VM's (its argument names another pidfile). */
static void test_other_instance(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "passt.pid");
  g_autofree char *other = path_in(f, "other-vm-passt.pid");
  pid_t child = spawn_sleep(f, other);
  write_pidfile(pidfile, child);
  const char *exes[] = {f->sleep, NULL};
  HutchHelperId id = {.exes = exes, .arg = pidfile};
  g_assert_cmpint(hutch_pidfile_check(pidfile, &id), ==, 0);
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  assert_running(child);
  /* a prefix of an argument is not the argument */
  g_autofree char *longer = g_strconcat(pidfile, "x", NULL);
  pid_t child2 = spawn_sleep(f, longer);
  write_pidfile(pidfile, child2);
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  assert_running(child2);
  finish(child);
  finish(child2);
}

/* The genuine helper: the right binary with the instance's argument. */
static void test_genuine(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "passt.pid");
  pid_t child = spawn_sleep(f, pidfile);
  write_pidfile(pidfile, child);
  /* the binary by a path with a symlink in it matches too */
  const char *exes[] = {"/nonexistent", "/bin/sleep", NULL};
  HutchHelperId id = {.exes = exes, .arg = pidfile};
  g_assert_cmpint(hutch_pidfile_check(pidfile, &id), ==, child);
  g_assert_true(hutch_pidfile_kill(pidfile, &id));
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  assert_terminated(child);
}

/* A helper whose pidfile hutch wrote: told apart by the start time recorded with the pid. */
static void test_recorded(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "virtiofs-0.pid");
  const char *exes[] = {f->sleep, NULL};
  HutchHelperId id = {.exes = exes, .recorded = TRUE};
  pid_t child = spawn_sleep(f, "sleep");

  /* no start time: not enough */
  write_pidfile(pidfile, child);
  g_assert_cmpint(hutch_pidfile_check(pidfile, &id), ==, 0);
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  assert_running(child);

  /* the pid with another start time: an earlier process that had the pid */
  g_autofree char *text = hutch_pidfile_format(child);
  g_assert_nonnull(text);
  guint64 pid = 0, start = 0;
  g_assert_cmpint(sscanf(text, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &pid, &start), ==, 2);
  g_assert_cmpuint(pid, ==, (guint64)child);
  g_autofree char *earlier = g_strdup_printf("%d %" G_GUINT64_FORMAT "\n", (int)child, start - 1);
  g_assert_true(hutch_write_file(pidfile, earlier, strlen(earlier), 0600, NULL));
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  assert_running(child);
  /* without `recorded` a start time that is there is checked all the same */
  HutchHelperId plain = {.exes = exes};
  g_assert_true(hutch_write_file(pidfile, earlier, strlen(earlier), 0600, NULL));
  g_assert_false(hutch_pidfile_kill(pidfile, &plain));
  assert_running(child);

  /* the genuine one */
  g_assert_true(hutch_write_file(pidfile, text, strlen(text), 0600, NULL));
  g_assert_cmpint(hutch_pidfile_check(pidfile, &id), ==, child);
  g_assert_true(hutch_pidfile_kill(pidfile, &id));
  assert_terminated(child);
  /* and a process that is gone has no pidfile text */
  g_assert_null(hutch_pidfile_format(child));
}

/* A fork that names itself (PR_SET_NAME) and may hide its exe (non-dumpable, as passt). */
static pid_t fork_named(const char *name, gboolean dumpable) {
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    die_with_parent(NULL);
    prctl(PR_SET_NAME, name, 0, 0, 0);
    if (!dumpable)
      prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    for (;;)
      pause();
  }
  /* until the child has named itself */
  g_autofree char *comm_path = g_strdup_printf("/proc/%d/comm", (int)pid);
  for (int i = 0; i < 200; i++) {
    g_autofree char *comm = NULL;
    if (g_file_get_contents(comm_path, &comm, NULL, NULL) && strcmp(g_strchomp(comm), name) == 0)
      break;
    g_usleep(10 * 1000);
  }
  return pid;
}

static void test_comm(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "forward-8080.pid");
  HutchHelperId id = {.comm = "hutch-forward"};
  pid_t sleeper = spawn_sleep(f, "sleep");
  write_pidfile(pidfile, sleeper);
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  assert_running(sleeper);
  finish(sleeper);

  pid_t child = fork_named("hutch-forward", TRUE);
  write_pidfile(pidfile, child);
  g_assert_true(hutch_pidfile_kill(pidfile, &id));
  assert_terminated(child);
}

/* passt makes itself non-dumpable: its own user cannot read its exe, only its name (root
 * always reads the exe). Either way the wrong binary is refused. */
static void test_not_dumpable(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "x.pid");
  /* the binary of a fork of this test as the kernel sees it (under valgrind, not the test
   * program): read from a dumpable fork, which /proc/self/exe is not */
  pid_t probe = fork_named("probe", TRUE);
  g_autofree char *probe_exe = g_strdup_printf("/proc/%d/exe", (int)probe);
  g_autofree char *self = realpath(probe_exe, NULL);
  kill(probe, SIGKILL);
  waitpid(probe, NULL, 0);
  g_assert_nonnull(self);
  g_autofree char *base = g_path_get_basename(self);
  if (strlen(base) > 15)
    base[15] = '\0';
  pid_t child = fork_named(base, FALSE);
  write_pidfile(pidfile, child);
  const char *wrong[] = {f->sleep, NULL};
  HutchHelperId wrong_id = {.exes = wrong};
  g_assert_cmpint(hutch_pidfile_check(pidfile, &wrong_id), ==, 0);
  const char *right[] = {self, NULL};
  HutchHelperId right_id = {.exes = right};
  g_assert_cmpint(hutch_pidfile_check(pidfile, &right_id), ==, child);
  g_assert_true(hutch_pidfile_kill(pidfile, &right_id));
  assert_terminated(child);
}

/* Pidfiles that name nothing we may signal. */
/* Until pid has exited and is not reaped yet (a zombie), at most 2 s. */
static void wait_zombie(GPid pid) {
  g_autofree char *stat_path = g_strdup_printf("/proc/%d/stat", (int)pid);
  for (int i = 0; i < 200; i++) {
    g_autofree char *stat = NULL;
    g_assert_true(g_file_get_contents(stat_path, &stat, NULL, NULL));
    if (strstr(stat, ") Z "))
      break;
    g_usleep(10 * 1000);
  }
}

static void test_bad_pidfiles(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "x.pid");
  HutchHelperId any = {0};
  const char *texts[] = {"", "abc", "0", "1", "-5", "12abc", "99999999999", NULL};
  for (guint i = 0; texts[i]; i++) {
    g_assert_true(hutch_write_file(pidfile, texts[i], strlen(texts[i]), 0600, NULL));
    g_assert_cmpint(hutch_pidfile_check(pidfile, &any), ==, 0);
  }
  /* never this process itself, even when it would pass */
  write_pidfile(pidfile, getpid());
  g_assert_cmpint(hutch_pidfile_check(pidfile, &any), ==, 0);
  g_assert_false(hutch_pidfile_kill(pidfile, &any));
  /* a missing pidfile */
  g_assert_false(hutch_pidfile_kill(pidfile, &any));

  /* a zombie (exited, not reaped) is not running */
  g_autofree char *argv0 = path_in(f, "zombie");
  const char *argv[] = {"/bin/true", argv0, NULL};
  GPid zombie = 0;
  g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                              G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_FILE_AND_ARGV_ZERO, NULL, NULL,
                              &zombie, NULL));
  wait_zombie(zombie);
  write_pidfile(pidfile, zombie);
  HutchHelperId zombie_id = {.arg = argv0};
  g_assert_cmpint(hutch_pidfile_check(pidfile, &zombie_id), ==, 0);
  waitpid(zombie, NULL, 0);

  /* as a user: another user's process (init's) is never ours */
  if (geteuid() != 0) {
    write_pidfile(pidfile, 1);
    g_assert_cmpint(hutch_pidfile_check(pidfile, &any), ==, 0);
  }
}

/* A pidfile goes with its process: when that is the one signalled, or no longer runs. One
 * that names, with its recorded start time, a running process refused is kept: it is that
 * process's own (a `start --foreground` supervisor runs as hutch, not hutch-supervise, and
 * hutch_supervisor_wait_gone must not take its pidfile). */
static void test_kept_while_refused(Fixture *f, gconstpointer data) {
  g_autofree char *pidfile = path_in(f, "supervisor.pid");
  HutchHelperId id = {.comm = "hutch-supervise", .recorded = TRUE};
  pid_t child = fork_named("hutch", TRUE);
  g_autofree char *text = hutch_pidfile_format(child);
  g_assert_nonnull(text);
  g_assert_true(hutch_write_file(pidfile, text, strlen(text), 0600, NULL));
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  assert_running(child);
  assert_text_is(pidfile, text);
  /* so is this very process's, which is never signalled */
  g_autofree char *own = hutch_pidfile_format(getpid());
  g_assert_true(hutch_write_file(pidfile, own, strlen(own), 0600, NULL));
  g_assert_false(hutch_pidfile_kill(pidfile, &(HutchHelperId){0}));
  assert_text_is(pidfile, own);

  /* without a start time, a process refused is taken for a reused pid */
  write_pidfile(pidfile, child);
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  /* the pid with another start time: its process is gone, the pid reused */
  guint64 pid = 0, start = 0;
  g_assert_cmpint(sscanf(text, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, &pid, &start), ==, 2);
  g_autofree char *earlier = g_strdup_printf("%d %" G_GUINT64_FORMAT "\n", (int)child, start - 1);
  g_assert_true(hutch_write_file(pidfile, earlier, strlen(earlier), 0600, NULL));
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  assert_running(child);
  /* a zombie, and a process reaped */
  g_assert_true(hutch_write_file(pidfile, text, strlen(text), 0600, NULL));
  kill(child, SIGKILL);
  wait_zombie(child);
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  g_assert_cmpint(waitpid(child, NULL, 0), ==, child);
  g_assert_true(hutch_write_file(pidfile, text, strlen(text), 0600, NULL));
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  /* no pid at all */
  g_assert_true(hutch_write_file(pidfile, "abc", 3, 0600, NULL));
  g_assert_false(hutch_pidfile_kill(pidfile, &id));
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
}

/* A helper that runs on without exec keeps the descriptors it names, moved to 3, 4, ..., and
 * none of the others its parent had (wherever they were: low, high, the kept ones' old
 * numbers). Checked in a child, which reports through its exit status. */
static int keep_only_child(void) {
  int a[2], b[2];
  if (pipe(a) < 0 || pipe(b) < 0)
    return 10;
  int high = fcntl(a[0], F_DUPFD, 700);
  int kept_write = fcntl(b[1], F_DUPFD, 900);
  if (high < 0 || kept_write < 0)
    return 11;
  struct stat want_read, want_write;
  if (fstat(a[0], &want_read) < 0 || fstat(b[1], &want_write) < 0)
    return 12;
  int fds[] = {a[0], kept_write};
  if (hutch_keep_only_fds(fds, 2) < 0 || fds[0] != 3 || fds[1] != 4)
    return 13;
  struct stat got_read, got_write;
  if (fstat(3, &got_read) < 0 || fstat(4, &got_write) < 0 || got_read.st_ino != want_read.st_ino ||
      got_write.st_ino != want_write.st_ino)
    return 14;
  /* 0-2, 3, 4 and the directory being read; nothing else below the open-file limit (above
   * it, valgrind keeps descriptors of its own, out of the program's reach) */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) < 0)
    return 16;
  DIR *dir = opendir("/proc/self/fd");
  if (!dir)
    return 15;
  struct dirent *d;
  int others = 0;
  while ((d = readdir(dir))) {
    int fd = atoi(d->d_name);
    if (d->d_name[0] != '.' && fd > 4 && fd != dirfd(dir) && (rlim_t)fd < nofile.rlim_cur)
      others++;
  }
  closedir(dir);
  return others == 0 ? 0 : 20 + MIN(others, 9);
}

static void test_keep_only_fds(Fixture *f, gconstpointer data) {
  (void)f;
  (void)data;
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0)
    _exit(keep_only_child());
  int status = 0;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_set_up, fn, fixture_tear_down)
  ADD("/pidfile/other-program", test_other_program);
  ADD("/pidfile/other-instance", test_other_instance);
  ADD("/pidfile/genuine", test_genuine);
  ADD("/pidfile/recorded", test_recorded);
  ADD("/pidfile/comm", test_comm);
  ADD("/pidfile/not-dumpable", test_not_dumpable);
  ADD("/pidfile/bad-pidfiles", test_bad_pidfiles);
  ADD("/pidfile/kept-while-refused", test_kept_while_refused);
  ADD("/pidfile/keep-only-fds", test_keep_only_fds);
  return g_test_run();
}
