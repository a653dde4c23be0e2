/* hostpath.c: the one path walker: host paths opened one component at a time relative to
 * directory descriptors, following only root's symbolic links. See hostpath-private.h.
 *
 * Every step below a descriptor opens a single name (no '/') with O_NOFOLLOW, and every
 * descriptor we go on from is the one we checked (fstat on it, never a second lookup by
 * name). That is what openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) would give us for those
 * steps, so we do not use it: a single name opened with O_NOFOLLOW cannot escape its
 * directory, and the user's own paths need a per-component walk anyway, to follow root's
 * links (/home -> var/home) and no others. */
#define _GNU_SOURCE /* O_PATH */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h> /* renameat */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostpath-private.h"

gboolean hutch_hostpath_name_is_safe(const char *name, gsize len) {
  if (!name || len == 0)
    return FALSE;
  if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
    return FALSE;
  return memchr(name, '/', len) == NULL && memchr(name, '\0', len) == NULL;
}

#define DISPLAY_MAX 64

char *hutch_hostpath_name_display(const char *name, gsize len) {
  GString *out = g_string_new(NULL);
  for (gsize i = 0; i < len && i < DISPLAY_MAX; i++) {
    guchar c = (guchar)name[i];
    if (c >= 0x20 && c < 0x7f && c != '\\')
      g_string_append_c(out, (char)c);
    else
      g_string_append_printf(out, "\\x%02x", c);
  }
  if (len > DISPLAY_MAX)
    g_string_append(out, "...");
  return g_string_free(out, FALSE);
}

gboolean hutch_hostpath_link_is_trusted(const struct stat *st, uid_t euid) {
  return S_ISLNK(st->st_mode) && st->st_uid == 0 && euid != 0;
}

void hutch_hostpath_refuse_link(GError **error, const char *verb, const char *shown, uid_t euid) {
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
              "refusing to %s the symbolic link %s (%s): name the real path", verb, shown,
              euid != 0 ? "not owned by root; a guest could have planted it through a share"
                        : "hutch runs as root, so a guest could have planted even a root-owned "
                          "link through a share");
}

static void set_errno_error(GError **error, int saved_errno, const char *shown) {
  g_set_error(error, HUTCH_ERROR,
              saved_errno == ENOENT ? HUTCH_ERROR_NOT_FOUND : HUTCH_ERROR_FAILED, "%s: %s", shown,
              g_strerror(saved_errno));
}

/* ---- Walking a path the user named ---------------------------------------------------- */

static char *read_link(int link_fd, const char *shown, GError **error) {
  g_autofree char *target = g_malloc(PATH_MAX);
  /* An O_PATH descriptor of the link itself and "": the link we checked, not a new lookup. */
  ssize_t n = readlinkat(link_fd, "", target, PATH_MAX);
  if (n < 0 || n >= PATH_MAX) {
    set_errno_error(error, n < 0 ? errno : ENAMETOOLONG, shown);
    return NULL;
  }
  target[n] = '\0';
  return g_steal_pointer(&target);
}

/* The last component, not a link: entry is its O_PATH descriptor, st its fstat. */
static int open_final(int dirfd, const char *name, HutchFd *entry, const struct stat *st, int flags,
                      const char *shown, GError **error) {
  if ((flags & O_DIRECTORY) && !S_ISDIR(st->st_mode)) {
    set_errno_error(error, ENOTDIR, shown);
    return -1;
  }
  if (flags & O_PATH) {
    int fd = *entry;
    *entry = -1;
    return fd;
  }
  if (!S_ISDIR(st->st_mode) && !S_ISREG(st->st_mode)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "%s: not a regular file or directory",
                shown);
    return -1;
  }
  g_auto(HutchFd) fd = openat(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  struct stat now;
  if (fd < 0 || fstat(fd, &now) < 0) {
    set_errno_error(error, errno, shown);
    return -1;
  }
  if (now.st_dev != st->st_dev || now.st_ino != st->st_ino) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s changed while hutch was opening it",
                shown);
    return -1;
  }
  if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
    set_errno_error(error, errno, shown);
    return -1;
  }
  int ret = fd;
  fd = -1;
  return ret;
}

/* Resolves path from dirfd (absolute paths from "/"), opening the last component with flags.
 * where is the path walked so far, for messages: components are appended as they are
 * walked, and a followed link's target takes the link's place. */
static int walk(int dirfd, const char *path, int flags, uid_t euid, guint *links, GString *where,
                GError **error) {
  g_auto(HutchFd) cur = -1;
  if (path[0] == '/') {
    cur = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    g_string_assign(where, "/");
  } else if (dirfd == AT_FDCWD) {
    cur = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  } else {
    cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  }
  if (cur < 0) {
    set_errno_error(error, errno, where->len ? where->str : ".");
    return -1;
  }
  if (!*path) {
    set_errno_error(error, ENOENT, "\"\"");
    return -1;
  }
  g_auto(GStrv) split = g_strsplit(path, "/", -1);
  g_autoptr(GPtrArray) parts = g_ptr_array_new();
  for (guint i = 0; split[i]; i++)
    if (*split[i])
      g_ptr_array_add(parts, split[i]);
  if (parts->len == 0) /* "/" */
    g_ptr_array_add(parts, ".");
  if (g_str_has_suffix(path, "/"))
    flags |= O_DIRECTORY;

  for (guint i = 0; i < parts->len; i++) {
    const char *name = parts->pdata[i];
    gboolean last = i + 1 == parts->len;
    gsize where_len = where->len;
    if (where->len && where->str[where->len - 1] != '/')
      g_string_append_c(where, '/');
    g_string_append(where, name);

    g_auto(HutchFd) entry = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (entry < 0 || fstat(entry, &st) < 0) {
      set_errno_error(error, errno, where->str);
      return -1;
    }
    if (S_ISLNK(st.st_mode)) {
      if (!hutch_hostpath_link_is_trusted(&st, euid)) {
        hutch_hostpath_refuse_link(error, "follow", where->str, euid);
        return -1;
      }
      if (++*links > HUTCH_HOSTPATH_MAX_LINKS) {
        set_errno_error(error, ELOOP, where->str);
        return -1;
      }
      g_autofree char *target = read_link(entry, where->str, error);
      if (!target)
        return -1;
      g_string_truncate(where, where_len);
      g_auto(HutchFd) next =
          walk(cur, target, last ? flags : O_PATH | O_DIRECTORY, euid, links, where, error);
      if (next < 0)
        return -1;
      hutch_fd_close(cur);
      cur = next;
      next = -1;
      continue;
    }
    if (last)
      return open_final(cur, name, &entry, &st, flags, where->str, error);
    if (!S_ISDIR(st.st_mode)) {
      set_errno_error(error, ENOTDIR, where->str);
      return -1;
    }
    hutch_fd_close(cur);
    cur = entry;
    entry = -1;
  }
  /* The last component was a link: its target, opened with flags, is cur. */
  int ret = cur;
  cur = -1;
  return ret;
}

int hutch_hostpath_open_as(const char *path, int flags, uid_t euid, GError **error) {
  g_return_val_if_fail(path != NULL, -1);
  g_return_val_if_fail((flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) == 0, -1);
  guint links = 0;
  g_autoptr(GString) where = g_string_new(NULL);
  return walk(AT_FDCWD, path, flags, euid, &links, where, error);
}

int hutch_hostpath_open(const char *path, int flags, GError **error) {
  return hutch_hostpath_open_as(path, flags, geteuid(), error);
}

int hutch_hostpath_open_parent(const char *path, char **ret_name, GError **error) {
  g_return_val_if_fail(path != NULL, -1);
  gsize len = strlen(path);
  while (len > 1 && path[len - 1] == '/')
    len--;
  g_autofree char *trimmed = g_strndup(path, len);
  if (len == 0) {
    set_errno_error(error, ENOENT, "\"\"");
    return -1;
  }
  if (strcmp(trimmed, "/") == 0) {
    *ret_name = g_strdup(".");
    return hutch_hostpath_open("/", O_PATH | O_DIRECTORY, error);
  }
  const char *slash = strrchr(trimmed, '/');
  g_autofree char *dir = !slash             ? g_strdup(".")
                         : slash == trimmed ? g_strdup("/")
                                            : g_strndup(trimmed, slash - trimmed);
  int fd = hutch_hostpath_open(dir, O_PATH | O_DIRECTORY, error);
  if (fd >= 0)
    *ret_name = g_strdup(slash ? slash + 1 : trimmed);
  return fd;
}

/* ---- One name below a directory descriptor -------------------------------------------- */

/* Why opening name failed with saved_errno: a link where there should be none is named as
 * such (O_NOFOLLOW gives ELOOP, or ENOTDIR with O_DIRECTORY, and mkdirat EEXIST). */
static void set_child_error(GError **error, int dirfd, const char *name, int saved_errno,
                            const char *verb, const char *shown) {
  struct stat st;
  if ((saved_errno == ELOOP || saved_errno == ENOTDIR || saved_errno == EEXIST) &&
      fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "refusing to %s through the symbolic link %s", verb, shown);
    return;
  }
  if (saved_errno == ENXIO) {
    /* What opening a FIFO without a reader or a socket gives, with O_NONBLOCK. */
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: not a regular file", shown);
    return;
  }
  set_errno_error(error, saved_errno, shown);
}

/* The callers validate names first; this keeps a slip from becoming a path. */
static gboolean check_name(const char *name, const char *shown, GError **error) {
  if (hutch_hostpath_name_is_safe(name, strlen(name)))
    return TRUE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: an invalid file name", shown);
  return FALSE;
}

/* Opens name below dirfd with flags (O_NOFOLLOW and O_CLOEXEC added) and checks that it is
 * of type (S_IFREG or S_IFDIR), and, with expected, the same file. */
static int open_child(int dirfd, const char *name, int flags, mode_t type,
                      const struct stat *expected, const char *verb, const char *shown,
                      GError **error) {
  if (!check_name(name, shown, error))
    return -1;
  g_auto(HutchFd) fd = openat(dirfd, name, flags | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
  if (fd < 0) {
    set_child_error(error, dirfd, name, errno, verb, shown);
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    set_errno_error(error, errno, shown);
    return -1;
  }
  if ((st.st_mode & S_IFMT) != type) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: not a %s", shown,
                type == S_IFDIR ? "directory" : "regular file");
    return -1;
  }
  if (expected && (st.st_dev != expected->st_dev || st.st_ino != expected->st_ino)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s changed while hutch was copying it",
                shown);
    return -1;
  }
  if ((flags & O_NONBLOCK) && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
    set_errno_error(error, errno, shown);
    return -1;
  }
  int ret = fd;
  fd = -1;
  return ret;
}

int hutch_hostpath_open_child_dir(int dirfd, const char *name, const struct stat *expected,
                                  const char *shown, GError **error) {
  return open_child(dirfd, name, O_RDONLY | O_DIRECTORY, S_IFDIR, expected, "read", shown, error);
}

int hutch_hostpath_make_child_dir(int dirfd, const char *name, mode_t mode, gboolean *ret_created,
                                  const char *shown, GError **error) {
  if (!check_name(name, shown, error))
    return -1;
  gboolean created = mkdirat(dirfd, name, mode) == 0;
  if (!created && errno != EEXIST) {
    set_child_error(error, dirfd, name, errno, "write", shown);
    return -1;
  }
  if (ret_created)
    *ret_created = created;
  return open_child(dirfd, name, O_RDONLY | O_DIRECTORY, S_IFDIR, NULL, "write", shown, error);
}

int hutch_hostpath_open_child_file(int dirfd, const char *name, const struct stat *expected,
                                   const char *shown, GError **error) {
  return open_child(dirfd, name, O_RDONLY | O_NONBLOCK, S_IFREG, expected, "read", shown, error);
}

/* ---- A file written whole or not at all ------------------------------------------------ */

/* Bytes of the final name kept in the temporary one: ".NAME.hutch-XXXXXX" stays within
 * NAME_MAX (255) for any name. */
#define TEMP_NAME_PREFIX_MAX 200
#define TEMP_NAME_ATTEMPTS 100

gboolean hutch_hostpath_new_file_begin(int dirfd, const char *name, const char *shown,
                                       HutchHostpathNewFile *ret_file, GError **error) {
  if (!check_name(name, shown, error))
    return FALSE;
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                  "refusing to write through the symbolic link %s", shown);
      return FALSE;
    }
    if (!S_ISREG(st.st_mode)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: not a regular file", shown);
      return FALSE;
    }
  } else if (errno != ENOENT) {
    set_errno_error(error, errno, shown);
    return FALSE;
  }
  g_auto(HutchFd) dir = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
  if (dir < 0) {
    set_errno_error(error, errno, shown);
    return FALSE;
  }
  static const char letters[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  for (guint attempt = 0; attempt < TEMP_NAME_ATTEMPTS; attempt++) {
    char suffix[7];
    for (gsize i = 0; i < sizeof suffix - 1; i++)
      suffix[i] = letters[g_random_int_range(0, (gint32)sizeof letters - 1)];
    suffix[sizeof suffix - 1] = '\0';
    g_autofree char *temp = g_strdup_printf(".%.*s.hutch-%s", TEMP_NAME_PREFIX_MAX, name, suffix);
    /* O_EXCL: made here, never an existing file or the target of a link */
    int fd =
        openat(dir, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
    if (fd >= 0) {
      *ret_file = (HutchHostpathNewFile){
          .fd = fd,
          .dirfd = g_steal_fd(&dir),
          .name = g_strdup(name),
          .temp = g_steal_pointer(&temp),
      };
      return TRUE;
    }
    if (errno != EEXIST) {
      set_errno_error(error, errno, shown);
      return FALSE;
    }
  }
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
              "%s: no free temporary name beside it after %d attempts", shown, TEMP_NAME_ATTEMPTS);
  return FALSE;
}

gboolean hutch_hostpath_new_file_commit(HutchHostpathNewFile *file, const char *shown,
                                        GError **error) {
  int fd = file->fd;
  file->fd = -1;
  if (close(fd) < 0) {
    set_errno_error(error, errno, shown);
    g_prefix_error(error, "writing ");
    hutch_hostpath_new_file_abort(file);
    return FALSE;
  }
  if (renameat(file->dirfd, file->temp, file->dirfd, file->name) < 0) {
    set_errno_error(error, errno, shown);
    hutch_hostpath_new_file_abort(file);
    return FALSE;
  }
  g_clear_pointer(&file->temp, g_free);
  hutch_hostpath_new_file_abort(file);
  return TRUE;
}

void hutch_hostpath_new_file_abort(HutchHostpathNewFile *file) {
  int saved = errno;
  if (file->fd >= 0)
    close(file->fd);
  if (file->temp && file->dirfd >= 0)
    unlinkat(file->dirfd, file->temp, 0);
  if (file->dirfd >= 0)
    close(file->dirfd);
  g_clear_pointer(&file->name, g_free);
  g_clear_pointer(&file->temp, g_free);
  *file = (HutchHostpathNewFile)HUTCH_HOSTPATH_NEW_FILE_INIT;
  errno = saved;
}
