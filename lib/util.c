/* util.c: errors, sizes, files and directories shared by libhutch's modules. */
#include "config.h"

#include <signal.h>

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libssh2.h>

#include "util-private.h"

static void quiet_libvirt_error_handler(void *user_data, virErrorPtr err) {
  /* libvirt prints every error to stderr by default; the CLI prints errors itself, once. */
}

void hutch_init(void) {
  static gsize initialised = 0;
  if (g_once_init_enter(&initialised)) {
    virInitialize();
    virSetErrorFunc(NULL, quiet_libvirt_error_handler);
    libssh2_init(0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    g_once_init_leave(&initialised, 1);
  }
}

const char *hutch_version(void) {
  return HUTCH_VERSION;
}

void hutch_set_libvirt_error(GError **error, const char *fmt, ...) {
  /* virGetLastError is thread-local and overwritten by the next call: copy it first. */
  virErrorPtr last = virGetLastError();
  g_autofree char *message = g_strdup(last && last->message ? last->message
                                                             : "unknown libvirt error");
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *context = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_LIBVIRT, "%s: %s", context, message);
}

gboolean hutch_parse_size(const char *text, guint64 *ret_bytes) {
  static const struct {
    const char *suffix;
    guint shift;
  } units[] = {
      {"", 0},     {"B", 0},    {"K", 10},   {"KiB", 10}, {"M", 20},
      {"MiB", 20}, {"G", 30},   {"GiB", 30}, {"T", 40},   {"TiB", 40},
  };
  if (!text || !g_ascii_isdigit(text[0]))
    return FALSE;
  char *end = NULL;
  errno = 0;
  guint64 number = g_ascii_strtoull(text, &end, 10);
  if (errno != 0 || number == 0)
    return FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS(units); i++) {
    if (strcmp(end, units[i].suffix) != 0)
      continue;
    if (units[i].shift && number > (G_MAXUINT64 >> units[i].shift))
      return FALSE;
    *ret_bytes = number << units[i].shift;
    return TRUE;
  }
  return FALSE;
}

char *hutch_format_size(guint64 bytes) {
  static const char *names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  guint unit = 0;
  while (unit < G_N_ELEMENTS(names) - 1 && bytes != 0 && bytes % 1024 == 0) {
    bytes /= 1024;
    unit++;
  }
  return g_strdup_printf("%" G_GUINT64_FORMAT "%s", bytes, names[unit]);
}

gboolean hutch_write_file(const char *path, const void *data, gsize len, int mode,
                          GError **error) {
  g_autofree char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
  int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0) {
    int saved = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "writing %s: %s", path,
                g_strerror(saved));
    return FALSE;
  }
  const char *p = data;
  gsize left = len;
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int saved = errno;
      close(fd);
      g_unlink(tmp);
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "writing %s: %s",
                  path, g_strerror(saved));
      return FALSE;
    }
    p += n;
    left -= (gsize)n;
  }
  if (fchmod(fd, mode) < 0 || fsync(fd) < 0 || close(fd) < 0 || g_rename(tmp, path) < 0) {
    int saved = errno;
    g_unlink(tmp);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "writing %s: %s", path,
                g_strerror(saved));
    return FALSE;
  }
  return TRUE;
}

char *hutch_read_file_part(const char *path, gsize max, gboolean from_end, gsize *ret_len,
                           GError **error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    int saved = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "reading %s: %s", path,
                g_strerror(saved));
    return NULL;
  }
  if (from_end && S_ISREG(st.st_mode) && (guint64)st.st_size > max)
    lseek(fd, st.st_size - (off_t)max, SEEK_SET);
  /* a regular file's size is known: no bigger buffer than that (it may grow meanwhile) */
  if (S_ISREG(st.st_mode) && (guint64)st.st_size < max)
    max = (gsize)st.st_size;
  char *data = g_malloc(max + 1);
  gsize len = 0;
  while (len < max) {
    ssize_t n = read(fd, data + len, max - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int saved = errno;
      close(fd);
      g_free(data);
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "reading %s: %s", path,
                  g_strerror(saved));
      return NULL;
    }
    if (n == 0)
      break;
    len += (gsize)n;
  }
  close(fd);
  data[len] = '\0';
  *ret_len = len;
  return data;
}

gboolean hutch_mkdir(const char *dir, int mode, GError **error) {
  if (g_mkdir_with_parents(dir, mode) < 0 || g_chmod(dir, mode) < 0) {
    int saved = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "creating %s: %s", dir,
                g_strerror(saved));
    return FALSE;
  }
  return TRUE;
}

gboolean hutch_rmtree(const char *path, GError **error) {
  if (!path || !*path || strcmp(path, "/") == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "refusing to remove '%s'",
                path ? path : "");
    return FALSE;
  }
  GStatBuf st;
  if (g_lstat(path, &st) < 0)
    return errno == ENOENT ? TRUE : (g_set_error(error, G_FILE_ERROR,
                                                 g_file_error_from_errno(errno),
                                                 "removing %s: %s", path,
                                                 g_strerror(errno)),
                                     FALSE);
  if (S_ISDIR(st.st_mode)) {
    g_autoptr(GDir) dir = g_dir_open(path, 0, error);
    if (!dir)
      return FALSE;
    const char *entry;
    while ((entry = g_dir_read_name(dir))) {
      g_autofree char *child = g_build_filename(path, entry, NULL);
      if (!hutch_rmtree(child, error))
        return FALSE;
    }
    if (g_rmdir(path) < 0) {
      g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "removing %s: %s",
                  path, g_strerror(errno));
      return FALSE;
    }
    return TRUE;
  }
  if (g_unlink(path) < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "removing %s: %s", path,
                g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

char *hutch_expand_tilde(const char *path, const char *home) {
  if (path[0] == '~' && (path[1] == '\0' || path[1] == '/'))
    return g_strconcat(home, path + 1, NULL);
  return g_strdup(path);
}

void hutch_unblock_signals(void) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

void hutch_fd_close(HutchFd fd) {
  if (fd >= 0) {
    int saved = errno;
    close(fd);
    errno = saved;
  }
}

int hutch_keep_only_fds(int *fds, unsigned n) {
  /* above every target first, so that no dup2 below overwrites a descriptor still to move */
  int floor = 3 + (int)n;
  for (unsigned i = 0; i < n; i++) {
    if (fds[i] < floor && (fds[i] = fcntl(fds[i], F_DUPFD, floor)) < 0)
      return -1;
  }
  for (unsigned i = 0; i < n; i++) {
    if (dup2(fds[i], 3 + (int)i) < 0)
      return -1;
    fds[i] = 3 + (int)i;
  }
#ifdef SYS_close_range
  if (syscall(SYS_close_range, (unsigned)floor, ~0u, 0u) == 0)
    return 0;
#endif
  /* a kernel before 5.9: every descriptor up to the limit */
  struct rlimit nofile;
  long last = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY
                  ? (long)nofile.rlim_cur
                  : 65536;
  for (long fd = floor; fd < last; fd++)
    close((int)fd);
  return 0;
}

double hutch_now(void) {
  return g_get_monotonic_time() / 1e6;
}

char *hutch_data_dir(void) {
  return g_build_filename(g_get_user_data_dir(), "hutch", NULL);
}

char *hutch_cache_dir(void) {
  return g_build_filename(g_get_user_cache_dir(), "hutch", NULL);
}

char *hutch_config_dir(void) {
  return g_build_filename(g_get_user_config_dir(), "hutch", NULL);
}
