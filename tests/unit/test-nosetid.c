/* test-nosetid.c: under the filter virtiofsd runs with, no call puts a set-user-ID or
 * set-group-ID bit on a file, and ordinary modes still work. Each case runs in a child that
 * installs the filter (the calling process must stay unfiltered). */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nosetid-private.h"
#include "util-private.h"

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

typedef struct {
  char *dir;
  char *file; /* dir/file, mode 0644 */
} Fixture;

static void fixture_set_up(Fixture *f, gconstpointer data) {
  f->dir = g_dir_make_tmp("hutch-nosetid-XXXXXX", NULL);
  g_assert_nonnull(f->dir);
  f->file = g_build_filename(f->dir, "file", NULL);
  g_assert_true(g_file_set_contents(f->file, "#!/bin/sh\n", -1, NULL));
  g_assert_cmpint(g_chmod(f->file, 0644), ==, 0);
}

static void fixture_tear_down(Fixture *f, gconstpointer data) {
  hutch_rmtree(f->dir, NULL);
  g_free(f->dir);
  g_free(f->file);
}

/* What one call did in the filtered child: its result and errno. */
typedef struct {
  long result;
  long err; /* long: no padding, whose bytes would go through the pipe uninitialised */
} Outcome;

typedef long (*Call)(const Fixture *f);

/* Runs call in a child under the filter. */
static Outcome filtered(const Fixture *f, Call call) {
  int pipe_fds[2];
  g_assert_cmpint(pipe(pipe_fds), ==, 0);
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    close(pipe_fds[0]);
    Outcome o = {.result = -2, .err = 0};
    if (hutch_nosetid_install() == 0) {
      errno = 0;
      o.result = call(f);
      o.err = errno;
    } else {
      o.err = errno;
    }
    ssize_t n = write(pipe_fds[1], &o, sizeof(o));
    _exit(n == sizeof(o) ? 0 : 1);
  }
  close(pipe_fds[1]);
  Outcome o = {0};
  g_assert_cmpint(read(pipe_fds[0], &o, sizeof(o)), ==, sizeof(o));
  close(pipe_fds[0]);
  int status = 0;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  g_assert_cmpint(o.result, !=, -2); /* the filter was installed */
  return o;
}

static void assert_refused(const Fixture *f, Call call, int err) {
  Outcome o = filtered(f, call);
  g_assert_cmpint(o.result, ==, -1);
  g_assert_cmpint(o.err, ==, err);
}

static void assert_allowed(const Fixture *f, Call call) {
  Outcome o = filtered(f, call);
  if (o.result < 0)
    g_error("refused: %s", g_strerror(o.err));
}

static mode_t mode_of(const char *path) {
  struct stat st;
  g_assert_cmpint(lstat(path, &st), ==, 0);
  return st.st_mode & 07777;
}

static char *in_dir(const Fixture *f, const char *name) {
  return g_build_filename(f->dir, name, NULL);
}

/* ---- the calls ------------------------------------------------------------------------ */

static long chmod_4755(const Fixture *f) {
  return chmod(f->file, 04755);
}
static long chmod_2755(const Fixture *f) {
  return chmod(f->file, 02755);
}
static long chmod_0755(const Fixture *f) {
  return chmod(f->file, 0755);
}
static long chmod_1755(const Fixture *f) {
  return chmod(f->file, 01755); /* sticky: harmless, allowed */
}
static long fchmod_4755(const Fixture *f) {
  int fd = open(f->file, O_RDONLY);
  return fd < 0 ? -3 : fchmod(fd, 04755);
}
static long fchmod_0600(const Fixture *f) {
  int fd = open(f->file, O_RDONLY);
  return fd < 0 ? -3 : fchmod(fd, 0600);
}
static long fchmodat_4755(const Fixture *f) {
  return fchmodat(AT_FDCWD, f->file, 04755, 0);
}
/* what the C virtiofsd does for a setattr without an open file */
static long proc_self_fd_4755(const Fixture *f) {
  int fd = open(f->file, O_PATH);
  int proc = open("/proc/self/fd", O_PATH | O_DIRECTORY);
  if (fd < 0 || proc < 0)
    return -3;
  char name[16];
  snprintf(name, sizeof(name), "%d", fd);
  return fchmodat(proc, name, 04755, 0);
}
static long proc_self_fd_0644(const Fixture *f) {
  int fd = open(f->file, O_PATH);
  int proc = open("/proc/self/fd", O_PATH | O_DIRECTORY);
  if (fd < 0 || proc < 0)
    return -3;
  char name[16];
  snprintf(name, sizeof(name), "%d", fd);
  return fchmodat(proc, name, 0644, 0);
}
static long fchmodat2_4755(const Fixture *f) {
  return syscall(SYS_fchmodat2, AT_FDCWD, f->file, 04755, 0);
}
static long open_creat_4755(const Fixture *f) {
  g_autofree char *path = in_dir(f, "new-suid");
  return open(path, O_CREAT | O_WRONLY | O_EXCL, 04755);
}
static long openat_creat_2755(const Fixture *f) {
  g_autofree char *path = in_dir(f, "new-sgid");
  return openat(AT_FDCWD, path, O_CREAT | O_WRONLY, 02755);
}
static long open_creat_0755(const Fixture *f) {
  g_autofree char *path = in_dir(f, "new-plain");
  return open(path, O_CREAT | O_WRONLY | O_EXCL, 0755);
}
static long openat_tmpfile_4755(const Fixture *f) {
  return openat(AT_FDCWD, f->dir, O_TMPFILE | O_WRONLY, 04755);
}
/* without O_CREAT the kernel ignores the mode, and so does the filter */
static long openat_read_stray_mode(const Fixture *f) {
  return syscall(SYS_openat, AT_FDCWD, f->file, O_RDONLY, 04755);
}
static long creat_4755(const Fixture *f) {
  g_autofree char *path = in_dir(f, "creat-suid");
  return creat(path, 04755);
}
static long mknod_4755(const Fixture *f) {
  g_autofree char *path = in_dir(f, "mknod-suid");
  return mknod(path, S_IFREG | 04755, 0);
}
static long mknodat_2755(const Fixture *f) {
  g_autofree char *path = in_dir(f, "mknodat-sgid");
  return mknodat(AT_FDCWD, path, S_IFREG | 02755, 0);
}
static long mknodat_0644(const Fixture *f) {
  g_autofree char *path = in_dir(f, "mknodat-plain");
  return mknodat(AT_FDCWD, path, S_IFREG | 0644, 0);
}
static long mkdir_2755(const Fixture *f) {
  /* the kernel keeps no set-ID bit of mkdir's mode: allowed, and the directory has none */
  g_autofree char *path = in_dir(f, "dir");
  return mkdir(path, 02755);
}
static long openat2_any(const Fixture *f) {
  struct {
    unsigned long long flags, mode, resolve;
  } how = {.flags = O_RDONLY};
  return syscall(SYS_openat2, AT_FDCWD, f->file, &how, sizeof(how));
}

/* ---- the tests ------------------------------------------------------------------------ */

static void test_chmod(Fixture *f, gconstpointer data) {
  assert_refused(f, chmod_4755, EPERM);
  assert_refused(f, chmod_2755, EPERM);
  assert_refused(f, fchmod_4755, EPERM);
  assert_refused(f, fchmodat_4755, EPERM);
  assert_refused(f, proc_self_fd_4755, EPERM);
  /* a kernel before 6.6 has no fchmodat2: ENOSYS from the kernel, EPERM from the filter */
  Outcome o = filtered(f, fchmodat2_4755);
  g_assert_cmpint(o.result, ==, -1);
  g_assert_true(o.err == EPERM || o.err == ENOSYS);
  g_assert_cmpint(mode_of(f->file), ==, 0644);

  assert_allowed(f, chmod_0755);
  g_assert_cmpint(mode_of(f->file), ==, 0755);
  assert_allowed(f, proc_self_fd_0644);
  g_assert_cmpint(mode_of(f->file), ==, 0644);
  assert_allowed(f, fchmod_0600);
  g_assert_cmpint(mode_of(f->file), ==, 0600);
  assert_allowed(f, chmod_1755);
  g_assert_cmpint(mode_of(f->file), ==, 01755);
}

static void test_create(Fixture *f, gconstpointer data) {
  const char *refused[] = {"new-suid", "new-sgid", "creat-suid", "mknod-suid", "mknodat-sgid"};
  assert_refused(f, open_creat_4755, EPERM);
  assert_refused(f, openat_creat_2755, EPERM);
  assert_refused(f, openat_tmpfile_4755, EPERM);
  assert_refused(f, creat_4755, EPERM);
  assert_refused(f, mknod_4755, EPERM);
  assert_refused(f, mknodat_2755, EPERM);
  for (guint i = 0; i < G_N_ELEMENTS(refused); i++) {
    g_autofree char *path = in_dir(f, refused[i]);
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
  }

  assert_allowed(f, open_creat_0755);
  assert_allowed(f, openat_read_stray_mode);
  assert_allowed(f, mknodat_0644);
  g_autofree char *plain = in_dir(f, "new-plain");
  g_assert_cmpint(mode_of(plain) & 06000, ==, 0);
  assert_allowed(f, mkdir_2755);
  g_autofree char *dir = in_dir(f, "dir");
  g_assert_cmpint(mode_of(dir) & 06000, ==, 0);
}

static void test_openat2(Fixture *f, gconstpointer data) {
  /* its mode is out of the filter's sight: it does not exist, as on kernels before 5.6 */
  assert_refused(f, openat2_any, ENOSYS);
}

/* The filter holds across exec, as for virtiofsd: chmod(1) cannot set the bit either. */
static void test_exec(Fixture *f, gconstpointer data) {
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDERR_FILENO);
    if (hutch_nosetid_install() == 0)
      execl("/bin/chmod", "chmod", "u+s", f->file, (char *)NULL);
    _exit(127);
  }
  int status = 0;
  g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
  g_assert_true(WIFEXITED(status));
  g_assert_cmpint(WEXITSTATUS(status), ==, 1); /* chmod's own failure, not 127 */
  g_assert_cmpint(mode_of(f->file), ==, 0644);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_set_up, fn, fixture_tear_down)
  ADD("/nosetid/chmod", test_chmod);
  ADD("/nosetid/create", test_create);
  ADD("/nosetid/openat2", test_openat2);
  ADD("/nosetid/exec", test_exec);
  return g_test_run();
}
