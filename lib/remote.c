/* remote.c: hutch against another host (-c qemu+ssh://[USER@]HOST[:PORT]/session).
 *
 * hutch runs on that host too, as USER, and each verb runs there: this side parses the URI,
 * reads what only it can read (a profile file, the files `cp` sends or receives) and runs
 * `ssh [USER@]HOST -- hutch -c qemu:///session VERB ARGS...` with OpenSSH (the user's keys,
 * agent, ~/.ssh/config and known_hosts, as `virsh -c qemu+ssh://` uses them). So every VM
 * there is that host's session VM with every guarantee a local one has: passt with
 * --no-map-gw and the egress policy, virtiofsd in its user namespace, the supervisor, the
 * broker.
 *
 * Why not libvirt's own remote driver with storage volumes and helpers libvirt starts: the
 * passt libvirt 11.3 starts takes no --no-map-gw (qemu_passt.c passes only --one-off,
 * --socket, --mac-addr, --mtu, --interface, --log-file, --address, --netmask and the ports;
 * measured in the Debian 13 lane), so a guest would reach every service on the remote host's
 * loopback through its gateway's address, and it knows no egress policy or broker
 * (docs/architecture.md). */
#include "config.h"

#include <archive.h>
#include <dirent.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest-private.h"
#include "hostpath-private.h"
#include "remote-private.h"
#include "client-private.h" /* hutch_write_all */
#include "util-private.h"

/* as deep as hutch cp goes (lib/ssh.c) */
#define REMOTE_TAR_MAX_DEPTH 128
/* the far side's program when $HUTCH_REMOTE_PROGRAM does not name one */
#define REMOTE_DEFAULT_PROGRAM "hutch"

struct _HutchRemote {
  char *user; /* or NULL: ssh's own choice */
  char *host;
  int port;      /* or -1: ssh's own choice */
  char *keyfile; /* ?keyfile=, or NULL */
  char *far_uri; /* the far side's libvirt: qemu:///session or qemu:///system */
  char *program; /* hutch there */
};

gboolean hutch_remote_uri_is_remote(const char *uri) {
  return uri && g_ascii_strncasecmp(uri, "qemu+ssh://", strlen("qemu+ssh://")) == 0;
}

/* A host or user name that ssh cannot take for an option and that a shell or ssh_config
 * token reads as itself. */
static gboolean remote_word_is_plain(const char *word, const char *extra) {
  if (!word || !*word || word[0] == '-')
    return FALSE;
  for (const char *c = word; *c; c++)
    if (!g_ascii_isalnum(*c) && !strchr(extra, *c))
      return FALSE;
  return TRUE;
}

HutchRemote *hutch_remote_new(const char *uri, GError **error) {
  if (!hutch_remote_uri_is_remote(uri)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "'%s' is not a qemu+ssh:// URI", uri);
    return NULL;
  }
  g_autoptr(GError) parse_error = NULL;
  g_autoptr(GUri) parsed = g_uri_parse(uri, G_URI_FLAGS_NONE, &parse_error);
  if (!parsed) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "-c %s: %s", uri, parse_error->message);
    return NULL;
  }
  g_autoptr(HutchRemote) remote = g_new0(HutchRemote, 1);
  const char *user = g_uri_get_user(parsed);
  const char *host = g_uri_get_host(parsed);
  const char *path = g_uri_get_path(parsed);
  if (!remote_word_is_plain(host, ".-_:")) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "-c %s: name a host: qemu+ssh://[USER@]HOST[:PORT]/session (letters, digits, "
                "'.', '-', '_' or an IPv6 address in brackets)",
                uri);
    return NULL;
  }
  if (user && !remote_word_is_plain(user, "._-")) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "-c %s: a user name of letters, digits, '.', '_' and '-' (not first)", uri);
    return NULL;
  }
  if (g_uri_get_password(parsed) || g_uri_get_fragment(parsed)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "-c %s: no password or fragment in the URI (ssh asks, or uses your keys)", uri);
    return NULL;
  }
  if (strcmp(path, "/session") == 0 || strcmp(path, "/session/") == 0) {
    remote->far_uri = g_strdup("qemu:///session");
  } else if (strcmp(path, "/system") == 0 || strcmp(path, "/system/") == 0) {
    remote->far_uri = g_strdup("qemu:///system");
  } else {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "-c %s: the path must be /session or /system (the remote host's libvirt "
                "daemon)",
                uri);
    return NULL;
  }
  const char *query = g_uri_get_query(parsed);
  if (query) {
    g_autoptr(GHashTable) params =
        g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, &parse_error);
    if (!params) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "-c %s: %s", uri, parse_error->message);
      return NULL;
    }
    GHashTableIter iter;
    gpointer key, value;
    g_hash_table_iter_init(&iter, params);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
      if (strcmp(key, "keyfile") == 0 && *(const char *)value) {
        remote->keyfile = g_strdup(value);
        continue;
      }
      /* no_verify and the like: hutch never turns ssh's host key check off */
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "-c %s: hutch takes no URI parameter '%s' (only keyfile=PATH; ssh's own "
                  "settings go in ~/.ssh/config)",
                  uri, (const char *)key);
      return NULL;
    }
  }
  remote->user = g_strdup(user);
  remote->host = g_strdup(host);
  remote->port = g_uri_get_port(parsed);
  if (remote->port == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "-c %s: port 0 is no port", uri);
    return NULL;
  }
  const char *program = g_getenv("HUTCH_REMOTE_PROGRAM");
  remote->program = g_strdup(program && *program ? program : REMOTE_DEFAULT_PROGRAM);
  return g_steal_pointer(&remote);
}

void hutch_remote_free(HutchRemote *remote) {
  if (!remote)
    return;
  g_free(remote->user);
  g_free(remote->host);
  g_free(remote->keyfile);
  g_free(remote->far_uri);
  g_free(remote->program);
  g_free(remote);
}

const char *hutch_remote_host(const HutchRemote *remote) {
  return remote->host;
}

char *hutch_remote_command_line(const char *const *words) {
  g_autoptr(GString) line = g_string_new(NULL);
  for (guint i = 0; words && words[i]; i++) {
    g_autofree char *quoted = g_shell_quote(words[i]);
    if (i > 0)
      g_string_append_c(line, ' ');
    g_string_append(line, quoted);
  }
  return g_string_free(g_steal_pointer(&line), FALSE);
}

char *hutch_remote_hutch_line(const HutchRemote *remote, const char *const *args) {
  g_autoptr(GPtrArray) words = g_ptr_array_new();
  g_ptr_array_add(words, remote->program);
  g_ptr_array_add(words, (char *)"-c");
  g_ptr_array_add(words, remote->far_uri);
  for (guint i = 0; args && args[i]; i++)
    g_ptr_array_add(words, (char *)args[i]);
  g_ptr_array_add(words, NULL);
  return hutch_remote_command_line((const char *const *)words->pdata);
}

GStrv hutch_remote_ssh_argv(const HutchRemote *remote, gboolean tty, gboolean no_stdin,
                            const char *command_line) {
  g_autoptr(GStrvBuilder) argv = g_strv_builder_new();
  /* no escape character: a byte of the data (cp, shell -- CMD < file) is never one */
  g_strv_builder_add_many(argv, "ssh", "-e", "none", tty ? "-t" : "-T", NULL);
  /* a verb that reads nothing leaves our standard input to the next command of a script
   * (`while read f; do hutch -c URI cp ...; done <list`) */
  if (no_stdin)
    g_strv_builder_add(argv, "-n");
  if (remote->port > 0) {
    g_autofree char *port = g_strdup_printf("%d", remote->port);
    g_strv_builder_add_many(argv, "-p", port, NULL);
  }
  if (remote->keyfile)
    g_strv_builder_add_many(argv, "-i", remote->keyfile, NULL);
  g_autofree char *target =
      remote->user ? g_strdup_printf("%s@%s", remote->user, remote->host) : g_strdup(remote->host);
  g_strv_builder_add_many(argv, "--", target, command_line, NULL);
  return g_strv_builder_end(argv);
}

/* ssh's end: the far command's exit status, or -1 with error when ssh itself failed (255:
 * it prints why on stderr) or died. */
static int remote_wait(const HutchRemote *remote, GPid pid, GError **error) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "waiting for ssh: %s", g_strerror(errno));
      return -1;
    }
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 255)
    return WEXITSTATUS(status);
  if (WIFEXITED(status))
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH,
                "ssh to %s failed (exit 255; ssh said why above)", remote->host);
  else
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "ssh to %s was killed by signal %d",
                remote->host, WTERMSIG(status));
  return -1;
}

/* Starts ssh with command_line; *in_fd / *out_fd (when not NULL) get pipes to its stdin and
 * from its stdout, else its stdout is ours, and its stdin ours only when use_stdin. */
static gboolean remote_spawn(const HutchRemote *remote, const char *command_line, gboolean tty,
                             gboolean use_stdin, GPid *pid, int *in_fd, int *out_fd,
                             GError **error) {
  g_auto(GStrv) argv = hutch_remote_ssh_argv(remote, tty, !in_fd && !use_stdin, command_line);
  GSpawnFlags flags = G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD;
  if (!in_fd)
    flags |= G_SPAWN_CHILD_INHERITS_STDIN;
  /* the pipe to ssh may close before all is written: an error to report, not a signal */
  signal(SIGPIPE, SIG_IGN);
  g_autoptr(GError) spawn_error = NULL;
  if (!g_spawn_async_with_pipes(NULL, argv, NULL, flags, NULL, NULL, pid, in_fd, out_fd, NULL,
                                &spawn_error)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "running ssh (OpenSSH's client): %s",
                spawn_error->message);
    return FALSE;
  }
  return TRUE;
}

int hutch_remote_run(HutchRemote *remote, const char *const *args, GBytes *input,
                     gboolean use_stdin, gboolean tty, GError **error) {
  g_autofree char *line = hutch_remote_hutch_line(remote, args);
  GPid pid;
  int in_fd = -1;
  if (!remote_spawn(remote, line, tty, use_stdin, &pid, input ? &in_fd : NULL, NULL, error))
    return -1;
  g_autoptr(GError) write_error = NULL;
  if (input) {
    gsize len = 0;
    const char *data = g_bytes_get_data(input, &len);
    if (!hutch_write_all(in_fd, data, len, &write_error))
      g_prefix_error(&write_error, "sending to ssh: ");
    close(in_fd);
  }
  int status = remote_wait(remote, pid, error);
  if (status == 0 && write_error) {
    g_propagate_error(error, g_steal_pointer(&write_error));
    return -1;
  }
  return status;
}

/* ---- cp: a tar stream through ssh, written and read with hutch cp's own walker --------- */

/* HUTCH_ERROR_SSH: the stream itself (the pipe to or from ssh) failed, which the far side's
 * failure explains when it failed too. */
static void set_archive_error(GError **error, struct archive *a, const char *what) {
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "%s: %s", what,
              archive_error_string(a) ? archive_error_string(a) : "failed");
}

static gboolean tar_add(struct archive *a, int fd, const struct stat *st, const char *name,
                        const char *shown, guint depth, GError **error);

static gboolean tar_add_dir(struct archive *a, int fd, const char *name, const char *shown,
                            guint depth, GError **error) {
  if (depth > REMOTE_TAR_MAX_DEPTH) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "%s: more than %d directory levels (refusing to copy deeper)", shown,
                REMOTE_TAR_MAX_DEPTH);
    return FALSE;
  }
  int dup_fd = dup(fd);
  DIR *dir = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
  if (!dir) {
    if (dup_fd >= 0)
      close(dup_fd);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "reading %s: %s", shown, g_strerror(errno));
    return FALSE;
  }
  gboolean ok = TRUE;
  struct dirent *entry;
  errno = 0;
  while (ok && (entry = readdir(dir))) {
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
      continue;
    g_autofree char *child_shown = g_build_filename(shown, entry->d_name, NULL);
    g_autofree char *child_name = g_strconcat(name, "/", entry->d_name, NULL);
    struct stat st;
    if (fstatat(fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "reading %s: %s", child_shown,
                  g_strerror(errno));
      ok = FALSE;
      break;
    }
    /* as hutch cp: links and special files are skipped */
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
      continue;
    g_auto(HutchFd) child =
        S_ISDIR(st.st_mode)
            ? hutch_hostpath_open_child_dir(fd, entry->d_name, &st, child_shown, error)
            : hutch_hostpath_open_child_file(fd, entry->d_name, &st, child_shown, error);
    ok = child >= 0 && tar_add(a, child, &st, child_name, child_shown, depth + 1, error);
    errno = 0;
  }
  if (ok && errno != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "reading %s: %s", shown, g_strerror(errno));
    ok = FALSE;
  }
  closedir(dir);
  return ok;
}

static gboolean tar_add(struct archive *a, int fd, const struct stat *st, const char *name,
                        const char *shown, guint depth, GError **error) {
  g_autoptr(GError) unused = NULL;
  struct archive_entry *entry = archive_entry_new();
  archive_entry_set_pathname(entry, name);
  archive_entry_set_filetype(entry, S_ISDIR(st->st_mode) ? AE_IFDIR : AE_IFREG);
  archive_entry_set_perm(entry, st->st_mode & 0777);
  archive_entry_set_mtime(entry, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
  archive_entry_set_size(entry, S_ISREG(st->st_mode) ? st->st_size : 0);
  /* ARCHIVE_WARN: a name not translated to UTF-8 (hutch runs in the C locale), written as
   * its bytes all the same (hdrcharset=BINARY), as GNU tar writes and reads it */
  int written = archive_write_header(a, entry);
  gboolean ok = written == ARCHIVE_OK || written == ARCHIVE_WARN;
  archive_entry_free(entry);
  if (!ok) {
    set_archive_error(error, a, shown);
    return FALSE;
  }
  if (S_ISDIR(st->st_mode))
    return tar_add_dir(a, fd, name, shown, depth, error);
  /* exactly the size the header said: a file that grows or shrinks meanwhile is an error */
  char buf[65536];
  off_t left = st->st_size;
  while (left > 0) {
    ssize_t n = read(fd, buf, MIN((off_t)sizeof buf, left));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "reading %s: %s", shown,
                  n < 0 ? g_strerror(errno) : "it shrank while hutch copied it");
      return FALSE;
    }
    if (archive_write_data(a, buf, (size_t)n) != n) {
      set_archive_error(error, a, shown);
      return FALSE;
    }
    left -= n;
  }
  return TRUE;
}

gboolean hutch_remote_tar_write(int out_fd, const char *src, gboolean recursive, char **ret_base,
                                GError **error) {
  g_auto(HutchFd) fd = hutch_hostpath_open(src, O_RDONLY, error);
  struct stat st;
  if (fd < 0)
    return FALSE;
  if (fstat(fd, &st) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: %s", src, g_strerror(errno));
    return FALSE;
  }
  if (S_ISDIR(st.st_mode) && !recursive) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "uploading %s: it is a directory (copy it recursively)", src);
    return FALSE;
  }
  g_autofree char *canonical = g_canonicalize_filename(src, NULL);
  g_autofree char *base = g_path_get_basename(canonical);
  if (!hutch_hostpath_name_is_safe(base, strlen(base))) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "%s has no name to copy it as", src);
    return FALSE;
  }
  struct archive *a = archive_write_new();
  gboolean ok = archive_write_set_format_pax_restricted(a) == ARCHIVE_OK &&
                archive_write_set_options(a, "hdrcharset=BINARY") == ARCHIVE_OK &&
                archive_write_set_bytes_in_last_block(a, 1) == ARCHIVE_OK &&
                archive_write_open_fd(a, out_fd) == ARCHIVE_OK;
  if (!ok)
    set_archive_error(error, a, "writing the copy's stream");
  else
    ok = tar_add(a, fd, &st, base, src, 0, error);
  if (ok && archive_write_close(a) != ARCHIVE_OK) {
    set_archive_error(error, a, "sending the copy");
    ok = FALSE;
  }
  /* a stream cut short stays cut short: freed whole, it would be padded and ended, and the
   * far side would copy the part that came into the VM */
  if (!ok)
    archive_write_fail(a);
  archive_write_free(a);
  if (ok && ret_base)
    *ret_base = g_steal_pointer(&base);
  return ok;
}

/* Where the stream's entries go: target (a directory descriptor) and the name its first
 * component takes there. */
typedef struct {
  HutchFd target;
  char *first;  /* base itself, or dst's own name (a copy under a new name) */
  mode_t umask; /* the process's */
} ExtractPlace;

static gboolean extract_place(const char *base, const char *dst, ExtractPlace *place,
                              GError **error) {
  g_autofree char *name = NULL;
  g_auto(HutchFd) parent = hutch_hostpath_open_parent(dst, &name, error);
  if (parent < 0)
    return FALSE;
  gboolean want_dir = g_str_has_suffix(dst, "/");
  struct stat st;
  gboolean exists = TRUE;
  if (!hutch_hostpath_name_is_safe(name, strlen(name))) {
    exists = TRUE; /* "/", "." or "..": a directory the walk opens */
  } else if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno != ENOENT) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: %s", dst, g_strerror(errno));
      return FALSE;
    }
    exists = FALSE;
  } else if (!S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
    if (want_dir) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s is not a directory", dst);
      return FALSE;
    }
    /* an existing file: replaced under its name (hutch_hostpath_create_child_file) */
    place->target = g_steal_fd(&parent);
    place->first = g_steal_pointer(&name);
    return TRUE;
  }
  if (!exists && want_dir) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND, "%s: no such directory", dst);
    return FALSE;
  }
  if (!exists) {
    place->target = g_steal_fd(&parent);
    place->first = g_steal_pointer(&name);
    return TRUE;
  }
  /* a directory (through a link only when root owns it): the copy goes in, as base */
  place->target = hutch_hostpath_open(dst, O_RDONLY | O_DIRECTORY, error);
  if (place->target < 0)
    return FALSE;
  place->first = g_strdup(base);
  return TRUE;
}

/* One entry of the stream: its directories made (or used) one name at a time below the
 * target, then the entry itself. */
static gboolean extract_entry(struct archive *a, struct archive_entry *entry, const char *base,
                              const ExtractPlace *place, const char *dst, GError **error) {
  /* as hutch cp's downloads: the guest's mode, through the user's umask */
  mode_t mode = archive_entry_perm(entry) & 0777 & ~place->umask;
  const char *path = archive_entry_pathname(entry);
  mode_t type = archive_entry_filetype(entry);
  g_autofree char *shown = hutch_hostpath_name_display(path ? path : "", path ? strlen(path) : 0);
  g_auto(GStrv) parts = path ? g_strsplit(path, "/", -1) : NULL;
  guint n = parts ? g_strv_length(parts) : 0;
  /* "base/dir/" ends in an empty part */
  if (n > 1 && !*parts[n - 1])
    n--;
  if (n == 0 || strcmp(parts[0], base) != 0 || (type != AE_IFDIR && type != AE_IFREG) ||
      archive_entry_hardlink(entry)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "the remote host sent '%s' (type %o) in a copy of %s: refused", shown,
                (unsigned)type, base);
    return FALSE;
  }
  g_auto(HutchFd) dir = dup(place->target);
  g_autofree char *so_far = g_strdup(dst);
  for (guint i = 0; i < n; i++) {
    const char *part = i == 0 ? place->first : parts[i];
    if (!hutch_hostpath_name_is_safe(part, strlen(part))) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                  "the remote host sent the name '%s' in a copy: refused", shown);
      return FALSE;
    }
    g_autofree char *next_shown = g_build_filename(so_far, part, NULL);
    g_free(so_far);
    so_far = g_steal_pointer(&next_shown);
    if (i + 1 < n || type == AE_IFDIR) {
      gboolean created = FALSE;
      g_auto(HutchFd) child =
          hutch_hostpath_make_child_dir(dir, part, 0700, &created, so_far, error);
      if (child < 0)
        return FALSE;
      if (i + 1 == n && created && fchmod(child, mode) < 0) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: %s", so_far, g_strerror(errno));
        return FALSE;
      }
      hutch_fd_close(dir);
      dir = g_steal_fd(&child);
      continue;
    }
    /* a new file renamed over the name once whole: never written into an existing file
     * (a hard link to one outside), the old one kept when the copy fails */
    g_auto(HutchHostpathNewFile) file = HUTCH_HOSTPATH_NEW_FILE_INIT;
    if (!hutch_hostpath_new_file_begin(dir, part, so_far, &file, error))
      return FALSE;
    const void *block;
    size_t size;
    la_int64_t offset;
    int r;
    while ((r = archive_read_data_block(a, &block, &size, &offset)) == ARCHIVE_OK) {
      if (pwrite(file.fd, block, size, offset) != (ssize_t)size) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing %s: %s", so_far,
                    g_strerror(errno));
        return FALSE;
      }
    }
    if (r != ARCHIVE_EOF) {
      set_archive_error(error, a, so_far);
      return FALSE;
    }
    /* a hole at the end has no block: the size the entry says */
    if (ftruncate(file.fd, archive_entry_size(entry)) < 0 || fchmod(file.fd, mode) < 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: %s", so_far, g_strerror(errno));
      return FALSE;
    }
    if (!hutch_hostpath_new_file_commit(&file, so_far, error))
      return FALSE;
  }
  return TRUE;
}

gboolean hutch_remote_tar_extract(int in_fd, const char *base, const char *dst, GError **error) {
  ExtractPlace place = {.target = -1};
  if (!extract_place(base, dst, &place, error))
    return FALSE;
  place.umask = umask(0);
  umask(place.umask);
  struct archive *a = archive_read_new();
  gboolean ok = archive_read_support_format_tar(a) == ARCHIVE_OK &&
                archive_read_open_fd(a, in_fd, 65536) == ARCHIVE_OK;
  if (!ok)
    set_archive_error(error, a, "reading the copy's stream");
  guint entries = 0;
  struct archive_entry *entry;
  int r = ARCHIVE_OK;
  /* ARCHIVE_WARN: a name not translated from its charset, taken as its bytes */
  while (ok && ((r = archive_read_next_header(a, &entry)) == ARCHIVE_OK || r == ARCHIVE_WARN)) {
    ok = extract_entry(a, entry, base, &place, dst, error);
    entries++;
  }
  if (ok && r != ARCHIVE_EOF) {
    set_archive_error(error, a, "reading the copy's stream");
    ok = FALSE;
  }
  if (ok && entries == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "the copy of %s came back empty", base);
    ok = FALSE;
  }
  archive_read_free(a);
  hutch_fd_close(place.target);
  g_free(place.first);
  return ok;
}

/* The far side of an upload: the stream unpacked into a directory of its own, then hutch cp
 * from there; the directory goes whatever happens (made writable first: tar keeps a
 * directory's 0555). $1 hutch, $2 its URI, $3 quiet flag or "--", $4 the name, $5
 * NAME:PATH. */
static const char upload_script[] =
    "d=$(mktemp -d) || exit 1; trap 'chmod -R u+rwX \"$d\"; rm -rf \"$d\"' EXIT; "
    "tar -x --no-same-owner -C \"$d\" -f - || exit 1; "
    "\"$1\" -c \"$2\" $3 cp -r -- \"$d/$4\" \"$5\"";
/* The far side of a download: hutch cp into a directory of its own (its output on stderr),
 * then that copy as a tar stream on stdout, made readable first (a guest's mode 000 would
 * stop tar). $4 the name the copy gets, $5 NAME:PATH; %s: "-r " or nothing. */
static const char download_script[] =
    "d=$(mktemp -d) || exit 1; trap 'chmod -R u+rwX \"$d\"; rm -rf \"$d\"' EXIT; "
    "\"$1\" -c \"$2\" $3 cp %s-- \"$5\" \"$d/$4\" >&2 || exit 1; "
    "chmod -R u+rX \"$d\" && tar -c -C \"$d\" -f - -- \"$4\"";

static char *copy_line(const HutchRemote *remote, const char *script, gboolean quiet,
                       const char *name, const char *vm_path) {
  const char *const words[] = {
      "sh", "-c",    script, "hutch-cp", remote->program, remote->far_uri, quiet ? "-q" : "--",
      name, vm_path, NULL};
  return hutch_remote_command_line(words);
}

gboolean hutch_remote_copy(HutchRemote *remote, const char *src, const char *dst,
                           gboolean recursive, gboolean quiet, GError **error) {
  g_autofree char *vm_name = NULL, *vm_path = NULL;
  gboolean from_vm = FALSE;
  if (!hutch_copy_sides(src, dst, &vm_name, &vm_path, &from_vm, error))
    return FALSE;
  GPid pid;
  int fd = -1;
  gboolean ok;
  g_autoptr(GError) local_error = NULL;
  /* what this side can refuse, before anything is sent or asked for */
  if (!from_vm) {
    g_auto(HutchFd) probe = hutch_hostpath_open(src, O_RDONLY, error);
    struct stat st;
    if (probe < 0)
      return FALSE;
    if (fstat(probe, &st) == 0 && S_ISDIR(st.st_mode) && !recursive) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "uploading %s: it is a directory (copy it recursively)", src);
      return FALSE;
    }
  } else {
    ExtractPlace probe = {.target = -1};
    g_autofree char *base = g_path_get_basename(vm_path);
    gboolean placed = extract_place(base, dst, &probe, error);
    hutch_fd_close(probe.target);
    g_free(probe.first);
    if (!placed)
      return FALSE;
  }
  if (!from_vm) {
    /* the name is known before anything is sent: the stream's first entry */
    g_autofree char *canonical = g_canonicalize_filename(src, NULL);
    g_autofree char *base = g_path_get_basename(canonical);
    g_autofree char *line = copy_line(remote, upload_script, quiet, base, dst);
    if (!remote_spawn(remote, line, FALSE, FALSE, &pid, &fd, NULL, error))
      return FALSE;
    ok = hutch_remote_tar_write(fd, src, recursive, NULL, &local_error);
  } else {
    g_autofree char *base = g_path_get_basename(vm_path);
    if (!hutch_hostpath_name_is_safe(base, strlen(base))) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "on a remote host, cp takes a PATH that ends in a name ('%s' does not)", src);
      return FALSE;
    }
    /* the far side's cp refuses a directory without -r */
    g_autofree char *script = g_strdup_printf(download_script, recursive ? "-r " : "");
    g_autofree char *line = copy_line(remote, script, quiet, base, src);
    if (!remote_spawn(remote, line, FALSE, FALSE, &pid, NULL, &fd, error))
      return FALSE;
    ok = hutch_remote_tar_extract(fd, base, dst, &local_error);
  }
  close(fd);
  int status = remote_wait(remote, pid, error);
  if (status < 0)
    return FALSE;
  /* what this side refused or could not read or write, before the far side's failure that
   * followed from it (its end of the stream closed) */
  if (!ok && !g_error_matches(local_error, HUTCH_ERROR, HUTCH_ERROR_SSH)) {
    g_propagate_error(error, g_steal_pointer(&local_error));
    return FALSE;
  }
  if (status != 0) {
    /* the far side said why on stderr */
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "the copy on %s failed (exit %d)",
                remote->host, status);
    return FALSE;
  }
  if (!ok) {
    g_propagate_error(error, g_steal_pointer(&local_error));
    return FALSE;
  }
  return TRUE;
}
