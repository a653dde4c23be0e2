/* share.c: host directories shared into the guest. See share-private.h for the design. */
/* unshare, setresuid */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostpath-private.h"
#include "nosetid-private.h"
#include "pidfile-private.h"
#include "share-private.h"
#include "util-private.h"

extern char **environ;

/* What virtiofsd prints (C and Rust alike) once it listens for QEMU. */
#define VIRTIOFSD_READY "Waiting for vhost-user socket connection"
/* The namespace ids 0..65535 cover every id a Debian guest hands out. */
#define NS_ID_COUNT 65536u
#define START_TIMEOUT_S 10

/* g_strv_builder_take is GLib 2.80; Debian 12 has 2.74. */
static void builder_take(GStrvBuilder *builder, char *text) {
  g_strv_builder_add(builder, text);
  g_free(text);
}

/* ---- finding virtiofsd ---------------------------------------------------------------- */

void hutch_virtiofsd_parse_help(const char *help, HutchVirtiofsdKind *ret_kind,
                                gboolean *ret_has_readonly) {
  /* The Rust virtiofsd takes --shared-dir; the C one takes -o source=. */
  *ret_kind = strstr(help, "--shared-dir") ? HUTCH_VIRTIOFSD_RUST : HUTCH_VIRTIOFSD_C;
  *ret_has_readonly = strstr(help, "--readonly") != NULL;
}

void hutch_virtiofsd_free(HutchVirtiofsd *virtiofsd) {
  if (!virtiofsd)
    return;
  g_free(virtiofsd->path);
  g_free(virtiofsd);
}

/* Where the two virtiofsd are installed (the Rust one, then Debian 12's C one). */
static const char *const virtiofsd_places[] = {"/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd",
                                               NULL};

HutchVirtiofsd *hutch_virtiofsd_find(GError **error) {
  const char *configured = g_getenv("HUTCH_VIRTIOFSD");
  g_autofree char *path = NULL;
  if (configured && *configured) {
    path = g_find_program_in_path(configured);
    if (!path) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                  "HUTCH_VIRTIOFSD=%s is not an executable program", configured);
      return NULL;
    }
  } else {
    for (guint i = 0; virtiofsd_places[i] && !path; i++)
      if (g_file_test(virtiofsd_places[i], G_FILE_TEST_IS_EXECUTABLE))
        path = g_strdup(virtiofsd_places[i]);
    if (!path) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                  "virtiofsd not found in /usr/libexec or /usr/lib/qemu (apt-get install "
                  "qemu-system-common, or virtiofsd on newer distributions; or set "
                  "HUTCH_VIRTIOFSD)");
      return NULL;
    }
  }
  const char *argv[] = {path, "--help", NULL};
  g_autofree char *out = NULL, *err = NULL;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, NULL,
                    error)) {
    g_prefix_error(error, "running %s --help: ", path);
    return NULL;
  }
  /* Both print their usage on stdout; the C one on stderr in some versions. */
  g_autofree char *help = g_strconcat(out ? out : "", err ? err : "", NULL);
  HutchVirtiofsd *virtiofsd = g_new0(HutchVirtiofsd, 1);
  virtiofsd->path = g_steal_pointer(&path);
  hutch_virtiofsd_parse_help(help, &virtiofsd->kind, &virtiofsd->has_readonly);
  return virtiofsd;
}

/* ---- planning ------------------------------------------------------------------------- */

void hutch_share_plan_entry_free(HutchSharePlanEntry *entry) {
  if (!entry)
    return;
  g_free(entry->host_dir);
  g_free(entry->guest_path);
  g_free(entry->tag);
  g_free(entry->socket);
  g_free(entry->pidfile);
  g_free(entry->logfile);
  g_free(entry->root);
  g_free(entry->virtiofsd);
  if (entry->dir_fd >= 0)
    close(entry->dir_fd);
  g_free(entry);
}

/* dir equals path or is one of its parents (both canonical). */
static gboolean is_dir_or_parent_of(const char *dir, const char *path) {
  if (strcmp(dir, "/") == 0)
    return TRUE;
  size_t len = strlen(dir);
  return strncmp(dir, path, len) == 0 && (path[len] == '\0' || path[len] == '/');
}

static gboolean has_control_chars(const char *text) {
  for (const char *p = text; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return TRUE;
  return FALSE;
}

/* Resolves symlinks in path (absolute, lexically canonical). A missing tail is kept as
 * written after the deepest existing parent, which must be a directory. *ret_exists tells
 * whether the whole path exists. */
static char *resolve_path(const char *path, gboolean *ret_exists, GError **error) {
  char resolved[PATH_MAX];
  if (realpath(path, resolved)) {
    *ret_exists = TRUE;
    return g_strdup(resolved);
  }
  if (errno == ENOTDIR) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "%s: one of its parents is not a directory", path);
    return NULL;
  }
  if (errno != ENOENT) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "%s: %s", path, g_strerror(errno));
    return NULL;
  }
  *ret_exists = FALSE;
  g_autofree char *parent = g_path_get_dirname(path);
  g_autofree char *base = g_path_get_basename(path);
  gboolean parent_exists = FALSE;
  g_autofree char *parent_resolved = resolve_path(parent, &parent_exists, error);
  if (!parent_resolved)
    return NULL;
  if (parent_exists && !g_file_test(parent_resolved, G_FILE_TEST_IS_DIR)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "%s is not a directory", parent_resolved);
    return NULL;
  }
  return g_build_filename(parent_resolved, base, NULL);
}

static char *canonical_home(const char *home) {
  char resolved[PATH_MAX];
  if (realpath(home, resolved))
    return g_strdup(resolved);
  return g_canonicalize_filename(home, "/");
}

static HutchSharePlanEntry *plan_entry(const HutchShare *share, guint index,
                                       const HutchVirtiofsd *virtiofsd,
                                       const GError *virtiofsd_error, const char *runtime_dir,
                                       const char *host_home, const char *guest_home,
                                       GError **error) {
  g_autoptr(HutchSharePlanEntry) entry = g_new0(HutchSharePlanEntry, 1);
  entry->index = index;
  entry->dir_fd = -1;
  entry->tag = g_strdup_printf("hutchfs%u", index);
  entry->readonly = !share->writable;
  entry->create = share->create;
  entry->cache = share->cache;

  if (has_control_chars(share->host) || has_control_chars(share->guest)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "control characters in a path");
    return NULL;
  }
  g_autofree char *host = hutch_expand_tilde(share->host, host_home);
  if (!g_path_is_absolute(host)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "the host path must be absolute or start with ~");
    return NULL;
  }
  g_autofree char *host_canonical = g_canonicalize_filename(host, "/");
  gboolean exists = FALSE;
  entry->host_dir = resolve_path(host_canonical, &exists, error);
  if (!entry->host_dir)
    return NULL;
  g_autofree char *home = canonical_home(host_home);
  if (strcmp(entry->host_dir, "/") == 0 || is_dir_or_parent_of(entry->host_dir, home)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "refusing to share %s: it is %s; share a project directory instead",
                entry->host_dir,
                strcmp(entry->host_dir, "/") == 0    ? "the whole file system"
                : strcmp(entry->host_dir, home) == 0 ? "your whole home directory"
                                                     : "a parent of your home directory");
    return NULL;
  }
  if (exists && !g_file_test(entry->host_dir, G_FILE_TEST_IS_DIR)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "%s is not a directory", entry->host_dir);
    return NULL;
  }
  if (!exists && !share->create) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "%s does not exist (create it, or set create: true)", entry->host_dir);
    return NULL;
  }

  g_autofree char *guest = hutch_expand_tilde(share->guest, guest_home);
  if (!g_path_is_absolute(guest)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "the guest path must be absolute or start with ~");
    return NULL;
  }
  entry->guest_path = g_canonicalize_filename(guest, "/");
  g_autofree char *guest_home_canonical = g_canonicalize_filename(guest_home, "/");
  /* Mounting over the guest's home would hide ~/.ssh/authorized_keys: hutch could not log
   * in any more. */
  if (is_dir_or_parent_of(entry->guest_path, guest_home_canonical)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "the guest path %s would hide the guest user's home %s", entry->guest_path,
                guest_home_canonical);
    return NULL;
  }

  /* Read-only shares are virtiofs too, enforced on the host: the Rust virtiofsd by
   * --readonly, the C one (Debian 12) by a read-only bind mount of the directory in a mount
   * namespace of its own (see child_run). 9p is no option for them: Debian's cloud kernels
   * (linux-image-cloud-amd64, as in the official cloud images) are built without 9p. */
  if (!virtiofsd) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "%s", virtiofsd_error->message);
    return NULL;
  }
  entry->virtiofsd = g_strdup(virtiofsd->path);
  entry->virtiofsd_kind = virtiofsd->kind;
  g_autofree char *socket = g_strdup_printf(HUTCH_VIRTIOFS_SOCKET, index);
  g_autofree char *pidfile = g_strdup_printf(HUTCH_VIRTIOFS_PID, index);
  g_autofree char *logfile = g_strdup_printf(HUTCH_VIRTIOFS_LOG, index);
  g_autofree char *root = g_strdup_printf(HUTCH_VIRTIOFS_ROOT, index);
  entry->socket = g_build_filename(runtime_dir, socket, NULL);
  entry->pidfile = g_build_filename(runtime_dir, pidfile, NULL);
  entry->logfile = g_build_filename(runtime_dir, logfile, NULL);
  entry->root = g_build_filename(runtime_dir, root, NULL);
  if (strlen(entry->socket) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "the socket path %s is too long for a unix socket (shorten XDG_RUNTIME_DIR "
                "or the VM's name)",
                entry->socket);
    return NULL;
  }
  return g_steal_pointer(&entry);
}

GPtrArray *hutch_share_plan(const HutchProfile *profile, const HutchVirtiofsd *virtiofsd,
                            const char *runtime_dir, const char *host_home, const char *guest_home,
                            GError **error) {
  g_autoptr(GPtrArray) plan =
      g_ptr_array_new_with_free_func((GDestroyNotify)hutch_share_plan_entry_free);
  g_autoptr(HutchVirtiofsd) found = NULL;
  g_autoptr(GError) find_error = NULL;
  if (!virtiofsd && profile->shares->len > 0)
    virtiofsd = found = hutch_virtiofsd_find(&find_error);

  for (guint i = 0; i < profile->shares->len; i++) {
    const HutchShare *share = g_ptr_array_index(profile->shares, i);
    HutchSharePlanEntry *entry =
        plan_entry(share, i, virtiofsd, find_error, runtime_dir, host_home, guest_home, error);
    if (!entry) {
      g_prefix_error(error, "share %s -> %s: ", share->host, share->guest);
      return NULL;
    }
    for (guint j = 0; j < plan->len; j++) {
      const HutchSharePlanEntry *other = g_ptr_array_index(plan, j);
      if (strcmp(other->guest_path, entry->guest_path) == 0) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                    "share %s -> %s: another share is mounted on %s", share->host, share->guest,
                    entry->guest_path);
        hutch_share_plan_entry_free(entry);
        return NULL;
      }
    }
    g_ptr_array_add(plan, entry);
  }
  return g_steal_pointer(&plan);
}

#define RECORD_GROUP "shares"

/* Opens entry->host_dir for good (see hutch_share_check_record). A missing directory is
 * HUTCH_ERROR_NOT_FOUND; every other failure HUTCH_ERROR_PROFILE. */
static gboolean open_host_dir(HutchSharePlanEntry *entry, GError **error) {
  g_autoptr(GError) local = NULL;
  int fd = hutch_hostpath_open(entry->host_dir, O_PATH | O_DIRECTORY, &local);
  if (fd < 0) {
    g_set_error(error, HUTCH_ERROR,
                g_error_matches(local, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND) ? HUTCH_ERROR_NOT_FOUND
                                                                           : HUTCH_ERROR_PROFILE,
                "%s", local->message);
    return FALSE;
  }
  if (entry->dir_fd >= 0)
    close(entry->dir_fd);
  entry->dir_fd = fd;
  return TRUE;
}

/* The identity recorded for key ("N.device", "N.inode"): FALSE when there is none (a record
 * from before identities were kept); a value that is not a number is an error. */
static gboolean record_get_id(GKeyFile *keys, const char *key, const char *field, guint64 *ret,
                              gboolean *ret_present, GError **error) {
  g_autofree char *name = g_strdup_printf("%s.%s", key, field);
  *ret_present = g_key_file_has_key(keys, RECORD_GROUP, name, NULL);
  if (!*ret_present)
    return TRUE;
  g_autofree char *text = g_key_file_get_string(keys, RECORD_GROUP, name, NULL);
  if (!text || !g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64, ret, NULL)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "%s is not a number", name);
    return FALSE;
  }
  return TRUE;
}

static void record_set_id(GKeyFile *keys, const char *key, const struct stat *st) {
  g_autofree char *device = g_strdup_printf("%s.device", key);
  g_autofree char *inode = g_strdup_printf("%s.inode", key);
  g_key_file_set_uint64(keys, RECORD_GROUP, device, (guint64)st->st_dev);
  g_key_file_set_uint64(keys, RECORD_GROUP, inode, (guint64)st->st_ino);
}

gboolean hutch_share_record_carry(const char *from, const HutchProfile *from_profile,
                                  const char *to, const HutchProfile *to_profile, GError **error) {
  g_autoptr(GKeyFile) old = g_key_file_new();
  g_autoptr(GError) local = NULL;
  if (!g_key_file_load_from_file(old, from, G_KEY_FILE_NONE, &local)) {
    if (g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      return TRUE;
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "reading %s: %s", from, local->message);
    return FALSE;
  }
  g_autoptr(GKeyFile) carried = g_key_file_new();
  gboolean any = FALSE;
  for (guint i = 0; i < to_profile->shares->len; i++) {
    const HutchShare *share = g_ptr_array_index(to_profile->shares, i);
    for (guint j = 0; j < from_profile->shares->len; j++) {
      const HutchShare *was = g_ptr_array_index(from_profile->shares, j);
      if (strcmp(was->host, share->host) != 0 || strcmp(was->guest, share->guest) != 0)
        continue;
      g_autofree char *old_key = g_strdup_printf("%u", j);
      g_autofree char *new_key = g_strdup_printf("%u", i);
      for (guint f = 0; f < 3; f++) {
        const char *suffix = (const char *[]){"", ".device", ".inode"}[f];
        g_autofree char *old_name = g_strconcat(old_key, suffix, NULL);
        g_autofree char *new_name = g_strconcat(new_key, suffix, NULL);
        g_autofree char *value = g_key_file_get_string(old, RECORD_GROUP, old_name, NULL);
        if (value) {
          g_key_file_set_string(carried, RECORD_GROUP, new_name, value);
          any = TRUE;
        }
      }
      break;
    }
  }
  if (!any)
    return TRUE;
  gsize len = 0;
  g_autofree char *data = g_key_file_to_data(carried, &len, NULL);
  return hutch_write_file(to, data, len, 0600, error);
}

gboolean hutch_share_check_record(GPtrArray *plan, const HutchProfile *profile, const char *record,
                                  GError **error) {
  g_autoptr(GKeyFile) keys = g_key_file_new();
  g_autoptr(GError) local = NULL;
  if (!g_key_file_load_from_file(keys, record, G_KEY_FILE_NONE, &local) &&
      !g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "reading %s: %s", record, local->message);
    return FALSE;
  }
  gboolean changed = FALSE;
  for (guint i = 0; i < plan->len; i++) {
    HutchSharePlanEntry *entry = g_ptr_array_index(plan, i);
    const HutchShare *share = g_ptr_array_index(profile->shares, entry->index);
    g_autofree char *key = g_strdup_printf("%u", entry->index);
    g_autoptr(GError) open_error = NULL;
    /* the directory itself, opened once: what is checked here is what virtiofsd serves */
    gboolean opened = open_host_dir(entry, &open_error);
    if (!opened &&
        !(entry->create && g_error_matches(open_error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND))) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "share %s -> %s: %s", share->host,
                  share->guest, open_error->message);
      return FALSE;
    }
    struct stat st;
    if (opened && fstat(entry->dir_fd, &st) < 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "share %s -> %s: %s: %s", share->host,
                  share->guest, entry->host_dir, g_strerror(errno));
      return FALSE;
    }

    g_autofree char *recorded = g_key_file_get_string(keys, RECORD_GROUP, key, NULL);
    if (!recorded) {
      g_key_file_set_string(keys, RECORD_GROUP, key, entry->host_dir);
      if (opened)
        record_set_id(keys, key, &st);
      changed = TRUE;
      continue;
    }
    if (strcmp(recorded, entry->host_dir) != 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "share %s -> %s: the host directory was %s at create but now resolves to %s; "
                  "refusing to share it (a symlink in the path? a guest can plant one through "
                  "another writable share). If you moved it on purpose, remove %s to accept "
                  "the new place, or create the VM again",
                  share->host, share->guest, recorded, entry->host_dir, record);
      return FALSE;
    }
    if (!opened)
      continue; /* create: true, not made yet: hutch_share_make_dirs makes it */
    guint64 device = 0, inode = 0;
    gboolean has_device = FALSE, has_inode = FALSE;
    if (!record_get_id(keys, key, "device", &device, &has_device, error) ||
        !record_get_id(keys, key, "inode", &inode, &has_inode, error)) {
      g_prefix_error(error, "reading %s: ", record);
      return FALSE;
    }
    if (!has_device || !has_inode) {
      /* recorded before identities were (or before create: true made it): record it now */
      record_set_id(keys, key, &st);
      changed = TRUE;
      continue;
    }
    if (device == (guint64)st.st_dev && inode == (guint64)st.st_ino)
      continue;
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "share %s -> %s: the host directory %s was device %" G_GUINT64_FORMAT
                " inode %" G_GUINT64_FORMAT " at create but is now device %" G_GUINT64_FORMAT
                " inode %" G_GUINT64_FORMAT "; refusing to share it (another directory in its "
                "place? a guest can remove or rename it and put another there through another "
                "writable share). If you replaced it on purpose, remove %s to accept the new "
                "one, or create the VM again",
                share->host, share->guest, entry->host_dir, device, inode, (guint64)st.st_dev,
                (guint64)st.st_ino, record);
    return FALSE;
  }
  if (!changed)
    return TRUE;
  gsize len = 0;
  g_autofree char *text = g_key_file_to_data(keys, &len, NULL);
  return hutch_write_file(record, text, len, 0600, error);
}

GPtrArray *hutch_share_plan_domain_fs(GPtrArray *plan) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_domain_fs_free);
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *entry = g_ptr_array_index(plan, i);
    HutchDomainFs *fs = g_new0(HutchDomainFs, 1);
    fs->tag = g_strdup(entry->tag);
    fs->socket = g_strdup(entry->socket);
    g_ptr_array_add(out, fs);
  }
  return out;
}

GPtrArray *hutch_share_plan_seed_mounts(GPtrArray *plan) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *entry = g_ptr_array_index(plan, i);
    HutchSeedMount *mount = g_new0(HutchSeedMount, 1);
    mount->tag = entry->tag;
    mount->guest_path = entry->guest_path;
    mount->readonly = entry->readonly;
    g_ptr_array_add(out, mount);
  }
  return out;
}

/* mount_setattr(2)'s argument and flags, by value: <linux/mount.h> clashes with glibc's
 * <sys/mount.h> in some versions */
struct share_mount_attr {
  guint64 attr_set, attr_clr, propagation, userns_fd;
};
#define SHARE_MOUNT_ATTR_RDONLY 0x00000001
#define SHARE_AT_RECURSIVE 0x8000

/* ---- virtiofsd's command line --------------------------------------------------------- */

/* The C virtiofsd splits -o values at commas; its option parser takes \ as an escape. */
static char *fuse_opt_escape(const char *text) {
  GString *out = g_string_new(NULL);
  for (const char *p = text; *p; p++) {
    if (*p == ',' || *p == '\\')
      g_string_append_c(out, '\\');
    g_string_append_c(out, *p);
  }
  return g_string_free(out, FALSE);
}

GStrv hutch_share_virtiofsd_argv(const HutchSharePlanEntry *entry, int listen_fd,
                                 gboolean unprivileged) {
  g_autoptr(GStrvBuilder) argv = g_strv_builder_new();
  g_strv_builder_add(argv, entry->virtiofsd);
  /* hutch made and bound the socket: it belongs to the host user whatever uid virtiofsd has
   * in its namespace, and the C virtiofsd skips its lock file under /run with --fd */
  builder_take(argv, g_strdup_printf("--fd=%d", listen_fd));
  /* never the host path, which a guest may have changed since it was checked: the checked
   * directory itself, mounted there in virtiofsd's own mount namespace (see child_run) */
  /* how long the guest keeps names, attributes and data: timeouts of 1 s (auto), none
   * (never), or until it drops them, with writes cached in the guest (always) */
  gboolean always = entry->cache == HUTCH_SHARE_CACHE_ALWAYS;
  if (entry->virtiofsd_kind == HUTCH_VIRTIOFSD_RUST) {
    builder_take(argv, g_strdup_printf("--shared-dir=%s", entry->root));
    builder_take(argv, g_strdup_printf("--cache=%s", hutch_share_cache_name(entry->cache)));
    if (always)
      g_strv_builder_add(argv, "--writeback");
    if (unprivileged)
      g_strv_builder_add(argv, "--sandbox=chroot");
    if (entry->readonly)
      g_strv_builder_add(argv, "--readonly");
    return g_strv_builder_end(argv);
  }
  g_autofree char *escaped = fuse_opt_escape(entry->root);
  /* -f: stay in the foreground, so the pid hutch records is virtiofsd's and its stderr goes
   * to the log */
  g_strv_builder_add(argv, "-f");
  g_strv_builder_add(argv, "-o");
  builder_take(argv, g_strdup_printf("source=%s", escaped));
  g_strv_builder_add(argv, "-o");
  /* the C virtiofsd's word for never */
  builder_take(argv, g_strdup_printf("cache=%s", entry->cache == HUTCH_SHARE_CACHE_NEVER
                                                     ? "none"
                                                     : hutch_share_cache_name(entry->cache)));
  if (always)
    g_strv_builder_addv(argv, (const char *[]){"-o", "writeback", NULL});
  if (unprivileged) {
    /* the namespace sandbox's pivot_root and new /proc need more than a user namespace
     * reliably grants; chroot works there (libvirt-facts: "Shares") */
    g_strv_builder_addv(argv, (const char *[]){"-o", "sandbox=chroot", NULL});
    /* virtiofsd keeps a file open for every inode the guest has looked up, so it needs a
     * high open-file limit, but its own default (1,000,000, soft and hard) needs host
     * privileges. It sets soft and hard to the value given: the current hard limit, which
     * needs none (the soft one is often 1024: a node_modules tree would hit EMFILE). */
    struct rlimit nofile = {0};
    if (getrlimit(RLIMIT_NOFILE, &nofile) < 0 || nofile.rlim_max == RLIM_INFINITY)
      nofile.rlim_max = 0; /* 0: virtiofsd leaves the limit alone */
    builder_take(argv,
                 g_strdup_printf("--rlimit-nofile=%llu", (unsigned long long)nofile.rlim_max));
  }
  return g_strv_builder_end(argv);
}

/* ---- user namespace mapping ----------------------------------------------------------- */

guint hutch_share_id_map(guint32 guest_id, guint32 host_id, guint32 sub_start, guint32 sub_count,
                         HutchIdRange ranges[3]) {
  guint n = 0;
  guint32 below = MIN(guest_id, sub_count);
  if (below > 0)
    ranges[n++] = (HutchIdRange){.inner = 0, .outer = sub_start, .count = below};
  ranges[n++] = (HutchIdRange){.inner = guest_id, .outer = host_id, .count = 1};
  if ((guint64)guest_id + 1 < NS_ID_COUNT && sub_count > below) {
    guint32 above = MIN(NS_ID_COUNT - guest_id - 1, sub_count - below);
    ranges[n++] = (HutchIdRange){.inner = guest_id + 1, .outer = sub_start + below, .count = above};
  }
  return n;
}

gboolean hutch_share_parse_subid(const char *text, const char *user, guint32 uid,
                                 guint32 *ret_start, guint32 *ret_count) {
  g_autofree char *uid_text = g_strdup_printf("%u", uid);
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (guint i = 0; lines[i]; i++) {
    g_auto(GStrv) fields = g_strsplit(g_strstrip(lines[i]), ":", -1);
    if (g_strv_length(fields) != 3 || fields[0][0] == '#')
      continue;
    if (strcmp(fields[0], user) != 0 && strcmp(fields[0], uid_text) != 0)
      continue;
    guint64 start = 0, count = 0;
    if (!g_ascii_string_to_unsigned(fields[1], 10, 0, G_MAXUINT32, &start, NULL) ||
        !g_ascii_string_to_unsigned(fields[2], 10, 1, G_MAXUINT32 - start, &count, NULL))
      continue;
    *ret_start = (guint32)start;
    *ret_count = (guint32)count;
    return TRUE;
  }
  return FALSE;
}

/* The newuidmap/newgidmap command for pid. */
static GStrv id_map_argv(const char *tool, pid_t pid, const char *file, const char *user,
                         guint32 host_id, guint32 guest_id, GError **error) {
  g_autofree char *text = NULL;
  guint32 start = 0, count = 0;
  if (!g_file_get_contents(file, &text, NULL, NULL) ||
      !hutch_share_parse_subid(text, user, host_id, &start, &count)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                "%s has no range for %s; virtiofsd needs one to run without root: add the "
                "line '%s:100000:65536' to both /etc/subuid and /etc/subgid (or run: sudo "
                "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s), with a "
                "range no other user has",
                file, user, user, user);
    return NULL;
  }
  HutchIdRange ranges[3];
  guint n = hutch_share_id_map(guest_id, host_id, start, count, ranges);
  g_autoptr(GStrvBuilder) argv = g_strv_builder_new();
  g_strv_builder_add(argv, tool);
  builder_take(argv, g_strdup_printf("%d", (int)pid));
  for (guint i = 0; i < n; i++) {
    builder_take(argv, g_strdup_printf("%u", ranges[i].inner));
    builder_take(argv, g_strdup_printf("%u", ranges[i].outer));
    builder_take(argv, g_strdup_printf("%u", ranges[i].count));
  }
  return g_strv_builder_end(argv);
}

static gboolean run_id_map(GStrv argv, GError **error) {
  g_autofree char *err = NULL;
  int status = 0;
  if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                    NULL, &err, &status, error)) {
    g_prefix_error(error, "running %s (apt-get install uidmap): ", argv[0]);
    return FALSE;
  }
  if (!g_spawn_check_wait_status(status, NULL)) {
    g_autofree char *cmd = g_strjoinv(" ", argv);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "%s failed: %s", cmd,
                err ? g_strstrip(err) : "");
    return FALSE;
  }
  return TRUE;
}

/* ---- starting virtiofsd --------------------------------------------------------------- */

/* Steps of the child, reported to the parent when one fails. */
typedef enum {
  STEP_FORK,
  STEP_SETSID,
  STEP_FDS,
  STEP_UNSHARE,
  STEP_SETGROUPS,
  STEP_SETGID,
  STEP_SETUID,
  STEP_MOUNT,
  STEP_READONLY,
  STEP_NOSETID,
  STEP_EXEC,
  STEP_N
} ChildStep;

static const char *const step_names[STEP_N] = {
    "fork",
    "setsid",
    "setting up file descriptors",
    "creating a user namespace",
    "setgroups",
    "setresgid",
    "setresuid",
    "mounting the shared directory in a mount namespace of its own",
    "making the shared directory read-only",
    "installing the seccomp filter against set-user-ID files",
    "exec",
};

/* What the child tells the parent: its pid (step -1) or the step that failed. */
typedef struct {
  gint32 step;
  gint32 err;
  gint32 pid;
} ChildMsg;

static void child_send(int status_fd, int step, int err) {
  ChildMsg msg = {.step = step, .err = err, .pid = getpid()};
  ssize_t rc = write(status_fd, &msg, sizeof(msg));
  (void)rc;
}

/* Between fork and exec only async-signal-safe calls: everything is prepared before. */
static G_GNUC_NORETURN void child_fail(int status_fd, ChildStep step) {
  child_send(status_fd, step, errno);
  _exit(127);
}

typedef struct {
  int devnull, log, listen, status_w, go_r;
  int dir_fd;       /* the checked host directory (O_PATH) */
  const char *root; /* where to mount it for virtiofsd */
  gboolean unprivileged;
  gboolean readonly; /* mount it read-only (a virtiofsd without --readonly) */
  char **argv;
} ChildSetup;

static G_GNUC_NORETURN void child_run(ChildSetup *s) {
  /* setsid in the first child, so that the grandchild (virtiofsd) is in a session of its own
   * without leading it: it can never get a controlling terminal */
  if (setsid() < 0)
    child_fail(s->status_w, STEP_SETSID);
    /* _Fork runs no atfork handlers, which may take locks another thread of the parent held */
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
  pid_t pid = _Fork();
#else
  pid_t pid = fork();
#endif
  if (pid < 0)
    child_fail(s->status_w, STEP_FORK);
  if (pid > 0)
    _exit(0);

  /* Out of the way of 0..3 first, so that no dup2 below overwrites a source. */
  int fds[6] = {s->devnull, s->log, s->listen, s->status_w, s->go_r, s->dir_fd};
  for (int i = 0; i < 6; i++) {
    fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
    if (fds[i] < 0)
      child_fail(s->status_w, STEP_FDS);
  }
  int status_w = fds[3], go_r = fds[4], dir_fd = fds[5];
  if (dup2(fds[0], 0) < 0 || dup2(fds[1], 1) < 0 || dup2(fds[1], 2) < 0 || dup2(fds[2], 3) < 0)
    child_fail(status_w, STEP_FDS);
    /* whatever else the calling process has open must not reach virtiofsd */
#ifdef SYS_close_range
  syscall(SYS_close_range, 4u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
#endif

  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  const int reset[] = {SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD};
  for (size_t i = 0; i < G_N_ELEMENTS(reset); i++)
    signal(reset[i], SIG_DFL);

  if (s->unprivileged && unshare(CLONE_NEWUSER) < 0)
    child_fail(status_w, STEP_UNSHARE);
  child_send(status_w, -1, 0);
  /* the parent writes the id maps, then says go */
  char go = 0;
  if (read(go_r, &go, 1) != 1 || go != 'g')
    _exit(127);
  if (s->unprivileged) {
    if (setgroups(0, NULL) < 0)
      child_fail(status_w, STEP_SETGROUPS);
    if (setresgid(0, 0, 0) < 0)
      child_fail(status_w, STEP_SETGID);
    if (setresuid(0, 0, 0) < 0)
      child_fail(status_w, STEP_SETUID);
  }
  /* virtiofsd gets the directory that was checked, not its path, which a guest can swap for
   * a link through another share at any moment: a private mount namespace in which that
   * directory is bind-mounted on s->root, a directory in hutch's runtime directory no guest
   * reaches. The source is the working directory, set from dir_fd: unshare(CLONE_NEWNS)
   * moves it into the new namespace's copy of its mount, where "/proc/self/fd/N" would still
   * name the old namespace's mount (mount(2) refuses that with EINVAL). Recursive, because a
   * user namespace may not uncover what mounts below the directory hide. Nothing outside
   * this process sees the mount. */
  if (fchdir(dir_fd) < 0 || unshare(CLONE_NEWNS) < 0 ||
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
      mount(".", s->root, NULL, MS_BIND | MS_REC, NULL) < 0 || chdir("/") < 0)
    child_fail(status_w, STEP_MOUNT);
  close(dir_fd);
  /* A read-only share for a virtiofsd without --readonly: the kernel refuses every write
   * (EROFS) whatever the guest does. A remount applies to one mount, and the bind above is
   * recursive: every mount below the directory (a host mount point inside the share) is made
   * read-only too, with mount_setattr (Linux 5.12; on older kernels the top alone). */
  if (s->readonly) {
    struct share_mount_attr attr = {.attr_set = SHARE_MOUNT_ATTR_RDONLY};
    if (mount(NULL, s->root, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0 ||
        (syscall(SYS_mount_setattr, AT_FDCWD, s->root, SHARE_AT_RECURSIVE, &attr, sizeof attr) <
             0 &&
         errno != ENOSYS))
      child_fail(status_w, STEP_READONLY);
  }
  /* last, so that nothing above runs under it: no set-user-ID or set-group-ID file from the
   * guest (nosetid-private.h) */
  if (hutch_nosetid_install() < 0)
    child_fail(status_w, STEP_NOSETID);
  execve(s->argv[0], s->argv, environ);
  child_fail(status_w, STEP_EXEC);
}

/* Reads exactly len bytes, waiting at most timeout_ms. Returns the bytes read (0 at EOF). */
static gssize read_timeout(int fd, void *buf, gsize len, int timeout_ms) {
  gsize done = 0;
  gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
  while (done < len) {
    int left = (int)((deadline - g_get_monotonic_time()) / 1000);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int rc = poll(&pfd, 1, MAX(left, 0));
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc <= 0)
      return -1;
    ssize_t n = read(fd, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    done += (gsize)n;
  }
  return (gssize)done;
}

static int listen_unix(const char *path, GError **error) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || chmod(path, 0600) < 0 ||
      listen(fd, 1) < 0) {
    int saved = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "listening on %s: %s", path,
                g_strerror(saved));
    return -1;
  }
  return fd;
}

static char *log_tail(const char *path) {
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL) || !*g_strstrip(text))
    return g_strdup("(nothing in its log)");
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  guint n = g_strv_length(lines);
  g_autofree char *tail = g_strjoinv("\n", lines + (n > 5 ? n - 5 : 0));
  return g_strdup_printf("%s says:\n%s", path, tail);
}

/* Running, not a zombie waiting for init. */
static gboolean process_alive(pid_t pid) {
  if (kill(pid, 0) < 0 && errno == ESRCH)
    return FALSE;
  g_autofree char *stat_path = g_strdup_printf("/proc/%d/stat", (int)pid);
  g_autofree char *stat = NULL;
  if (!g_file_get_contents(stat_path, &stat, NULL, NULL))
    return FALSE;
  const char *end = strrchr(stat, ')');
  return !(end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X'));
}

static gboolean log_says_ready(const char *logfile) {
  g_autofree char *text = NULL;
  return g_file_get_contents(logfile, &text, NULL, NULL) && strstr(text, VIRTIOFSD_READY);
}

static void close_fds(int a, int b, int c, int d) {
  int fds[] = {a, b, c, d};
  for (guint i = 0; i < G_N_ELEMENTS(fds); i++)
    if (fds[i] >= 0)
      close(fds[i]);
}

/* Forks the detached virtiofsd; returns its pid once it has exec'd, or 0. */
static pid_t spawn_virtiofsd(const HutchSharePlanEntry *entry, int listen_fd, gboolean unprivileged,
                             guint guest_uid, guint guest_gid, GError **error) {
  g_auto(GStrv) argv = hutch_share_virtiofsd_argv(entry, 3, unprivileged);
  g_auto(GStrv) uid_map = NULL, gid_map = NULL;
  if (unprivileged) {
    struct passwd pwd, *pw = NULL;
    char buf[4096];
    uid_t uid = getuid();
    gid_t gid = getgid();
    const char *user = g_get_user_name();
    /* newgidmap lets a user map the primary group of its passwd entry */
    if (getpwuid_r(uid, &pwd, buf, sizeof(buf), &pw) == 0 && pw) {
      gid = pw->pw_gid;
      user = pw->pw_name;
    }
    uid_map = id_map_argv("newuidmap", 0, "/etc/subuid", user, uid, guest_uid, error);
    if (!uid_map)
      return 0;
    gid_map = id_map_argv("newgidmap", 0, "/etc/subgid", user, gid, guest_gid, error);
    if (!gid_map)
      return 0;
  }

  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  int log = open(entry->logfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  int status[2] = {-1, -1}, go[2] = {-1, -1};
  if (devnull < 0 || log < 0 || pipe2(status, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0) {
    int saved = errno;
    close_fds(devnull, log, -1, -1);
    close_fds(status[0], status[1], go[0], go[1]);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "opening %s: %s", entry->logfile,
                g_strerror(saved));
    return 0;
  }
  ChildSetup setup = {
      .devnull = devnull,
      .log = log,
      .listen = listen_fd,
      .status_w = status[1],
      .go_r = go[0],
      .dir_fd = entry->dir_fd,
      .root = entry->root,
      .unprivileged = unprivileged,
      .readonly = entry->readonly && entry->virtiofsd_kind != HUTCH_VIRTIOFSD_RUST,
      .argv = argv,
  };
  pid_t first = fork();
  if (first == 0)
    child_run(&setup);
  int fork_errno = errno;
  close_fds(devnull, log, status[1], go[0]);
  if (first < 0) {
    close_fds(status[0], go[1], -1, -1);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "fork: %s", g_strerror(fork_errno));
    return 0;
  }
  int wstatus = 0;
  while (waitpid(first, &wstatus, 0) < 0 && errno == EINTR)
    ;

  ChildMsg msg = {.step = STEP_FORK, .err = EIO};
  gboolean ok = read_timeout(status[0], &msg, sizeof(msg), 5000) == sizeof(msg) && msg.step == -1 &&
                msg.pid > 1;
  pid_t pid = ok ? msg.pid : 0;
  if (ok && unprivileged) {
    g_free(uid_map[1]);
    uid_map[1] = g_strdup_printf("%d", (int)pid);
    g_free(gid_map[1]);
    gid_map[1] = g_strdup_printf("%d", (int)pid);
    ok = run_id_map(uid_map, error) && run_id_map(gid_map, error);
  }
  if (ok) {
    ok = write(go[1], "g", 1) == 1;
    /* EOF: exec succeeded (the pipe is close-on-exec); else the step that failed */
    gssize n = read_timeout(status[0], &msg, sizeof(msg), 5000);
    if (n != 0) {
      ok = FALSE;
      if (n != sizeof(msg))
        msg.step = STEP_EXEC, msg.err = ETIMEDOUT;
    }
  }
  close_fds(status[0], go[1], -1, -1);
  if (!ok) {
    if (pid > 0)
      kill(pid, SIGKILL);
    if (error && !*error)
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "starting %s: %s: %s%s", argv[0],
                  msg.step >= 0 && msg.step < STEP_N ? step_names[msg.step] : "setup",
                  g_strerror(msg.err),
                  msg.step == STEP_UNSHARE ? " (virtiofsd needs unprivileged user namespaces: "
                                             "sysctl user.max_user_namespaces, "
                                             "kernel.unprivileged_userns_clone)"
                                           : "");
    return 0;
  }
  return pid;
}

/* A virtiofsd hutch started: one of the binaries it may have run (the entry's,
 * $HUTCH_VIRTIOFSD, the usual places), with the start time hutch recorded in its pidfile. */
static gboolean stop_virtiofsd(const char *pidfile, const char *binary) {
  g_autoptr(GPtrArray) exes = g_ptr_array_new_with_free_func(g_free);
  if (binary)
    g_ptr_array_add(exes, g_strdup(binary));
  const char *configured = g_getenv("HUTCH_VIRTIOFSD");
  char *found = configured && *configured ? g_find_program_in_path(configured) : NULL;
  if (found)
    g_ptr_array_add(exes, found);
  for (guint i = 0; virtiofsd_places[i]; i++)
    g_ptr_array_add(exes, g_strdup(virtiofsd_places[i]));
  g_ptr_array_add(exes, NULL);
  HutchHelperId id = {.exes = (const char *const *)exes->pdata, .recorded = TRUE};
  return hutch_pidfile_kill(pidfile, &id);
}

static void stop_entry(const HutchSharePlanEntry *entry) {
  stop_virtiofsd(entry->pidfile, entry->virtiofsd);
  g_unlink(entry->socket);
  g_rmdir(entry->root); /* empty outside virtiofsd's mount namespace */
}

/* entry->root: a directory of ours (the runtime directory is 0700 and hutch's). */
static gboolean make_root(const HutchSharePlanEntry *entry, GError **error) {
  struct stat st;
  if (g_mkdir(entry->root, 0700) < 0 && errno != EEXIST) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "creating %s: %s", entry->root,
                g_strerror(errno));
    return FALSE;
  }
  if (lstat(entry->root, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "%s is not a directory of yours",
                entry->root);
    return FALSE;
  }
  return TRUE;
}

static gboolean start_one(const HutchSharePlanEntry *entry, gboolean unprivileged, guint guest_uid,
                          guint guest_gid, GError **error) {
  /* a virtiofsd left over from a VM that died before QEMU connected holds nothing we need */
  stop_entry(entry);
  if (!make_root(entry, error))
    return FALSE;
  int listen_fd = listen_unix(entry->socket, error);
  if (listen_fd < 0)
    return FALSE;
  pid_t pid = spawn_virtiofsd(entry, listen_fd, unprivileged, guest_uid, guest_gid, error);
  close(listen_fd);
  if (pid == 0) {
    g_unlink(entry->socket);
    g_rmdir(entry->root);
    return FALSE;
  }
  /* NULL: it exited already; the wait below reports it */
  g_autofree char *pid_text = hutch_pidfile_format(pid);
  if (pid_text && !hutch_write_file(entry->pidfile, pid_text, strlen(pid_text), 0600, error)) {
    kill(pid, SIGKILL);
    g_unlink(entry->socket);
    return FALSE;
  }
  for (int i = 0; i < START_TIMEOUT_S * 50; i++) {
    if (log_says_ready(entry->logfile))
      return TRUE;
    if (!process_alive(pid))
      break;
    g_usleep(20 * 1000);
  }
  gboolean alive = process_alive(pid);
  stop_entry(entry);
  g_autofree char *tail = log_tail(entry->logfile);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "virtiofsd %s; %s",
              alive ? "did not get ready in time" : "exited", tail);
  return FALSE;
}

/* Makes dir (absolute, canonical) and its missing parents, 0700, one name at a time below the
 * deepest directory that exists, opened by the path walker: a symbolic link a guest planted
 * on the way (through another share) is refused, and nothing is made at its target. */
static gboolean make_dir_walking(const char *dir, GError **error) {
  g_auto(GStrv) names = g_strsplit(dir + 1, "/", -1);
  guint n = g_strv_length(names), have = n;
  g_auto(HutchFd) fd = -1;
  for (;; have--) {
    char *saved = names[have];
    names[have] = NULL;
    g_autofree char *joined = g_strjoinv("/", names);
    names[have] = saved;
    g_autofree char *prefix = g_strconcat("/", joined, NULL);
    g_autoptr(GError) local = NULL;
    fd = hutch_hostpath_open(prefix, O_PATH | O_DIRECTORY, &local);
    if (fd >= 0)
      break;
    if (!g_error_matches(local, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND) || have == 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "creating it: %s", local->message);
      return FALSE;
    }
  }
  for (guint i = have; i < n; i++) {
    if (mkdirat(fd, names[i], 0700) < 0 && errno != EEXIST) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "creating it: %s: %s", names[i],
                  g_strerror(errno));
      return FALSE;
    }
    int next = openat(fd, names[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "creating it: %s: %s (not a directory: replaced by a file or a symbolic link "
                  "meanwhile?)",
                  names[i], g_strerror(errno));
      return FALSE;
    }
    close(fd);
    fd = next;
  }
  return TRUE;
}

gboolean hutch_share_make_dirs(GPtrArray *plan, GError **error) {
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *entry = g_ptr_array_index(plan, i);
    if (entry->create && !g_file_test(entry->host_dir, G_FILE_TEST_EXISTS) &&
        !make_dir_walking(entry->host_dir, error)) {
      g_prefix_error(error, "share %s: ", entry->host_dir);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean hutch_share_prepare(GPtrArray *plan, const HutchProfile *profile, const char *record,
                             GError **error) {
  return hutch_share_check_record(plan, profile, record, error) &&
         hutch_share_make_dirs(plan, error) &&
         hutch_share_check_record(plan, profile, record, error);
}

gboolean hutch_share_start(GPtrArray *plan, guint guest_uid, guint guest_gid, GError **error) {
  gboolean unprivileged = geteuid() != 0;
  if (!hutch_share_make_dirs(plan, error))
    return FALSE;
  for (guint i = 0; i < plan->len; i++) {
    HutchSharePlanEntry *entry = g_ptr_array_index(plan, i);
    g_autoptr(GError) local = NULL;
    if (entry->dir_fd < 0 && !open_host_dir(entry, &local)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "share %s: %s", entry->host_dir,
                  local->message);
      return FALSE;
    }
  }
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *entry = g_ptr_array_index(plan, i);
    if (!start_one(entry, unprivileged, guest_uid, guest_gid, error)) {
      g_prefix_error(error, "share %s: ", entry->host_dir);
      for (guint j = 0; j < i; j++) {
        const HutchSharePlanEntry *started = g_ptr_array_index(plan, j);
        stop_entry(started);
      }
      return FALSE;
    }
  }
  return TRUE;
}

/* ---- the open-file limit ---------------------------------------------------------------- */

/* Descriptors virtiofsd holds besides the guest's inodes (its sockets, logs, threads' own),
 * with room to spare. */
#define VIRTIOFSD_OWN_FDS 500

/* How deep the count goes: a guest can nest directories without end in a writable share, and
 * the walk is recursive (what is deeper goes uncounted: a warning missed, nothing more). */
#define COUNT_DEPTH_MAX 64

static void count_below(int dir_fd, guint depth, guint64 cap, guint64 *count) {
  int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
  if (!dir) {
    if (fd >= 0)
      close(fd);
    return;
  }
  /* the subdirectories are read after this one is closed: one descriptor per level at most */
  g_autoptr(GPtrArray) subdirs = g_ptr_array_new_with_free_func(g_free);
  struct dirent *d;
  while (*count <= cap && (d = readdir(dir))) {
    if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
      continue;
    (*count)++;
    if (d->d_type == DT_DIR)
      g_ptr_array_add(subdirs, g_strdup(d->d_name));
  }
  for (guint i = 0; i < subdirs->len && *count <= cap && depth < COUNT_DEPTH_MAX; i++) {
    const char *name = g_ptr_array_index(subdirs, i);
    int sub = openat(dirfd(dir), name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0)
      continue;
    count_below(sub, depth + 1, cap, count);
    close(sub);
  }
  closedir(dir);
}

guint64 hutch_share_count_entries(int dir_fd, guint64 cap) {
  guint64 count = 0;
  count_below(dir_fd, 0, cap, &count);
  return count;
}

char *hutch_share_crowded(const HutchSharePlanEntry *entry, guint64 nofile) {
  if (nofile == 0 || nofile == G_MAXUINT64 || entry->dir_fd < 0)
    return NULL;
  guint64 room = nofile > VIRTIOFSD_OWN_FDS ? nofile - VIRTIOFSD_OWN_FDS : 0;
  if (hutch_share_count_entries(entry->dir_fd, room) <= room)
    return NULL;
  return g_strdup_printf(
      "share %s holds more than %" G_GUINT64_FORMAT " files and directories, and its virtiofsd "
      "keeps one open for each the guest looks at, up to the open-file limit (%" G_GUINT64_FORMAT
      "): a guest that goes through all of them (find, git status, a build) meets \"Too many "
      "open files\". Raise the hard limit (hutch doctor says how), or keep such a tree on the "
      "guest's own disk",
      entry->host_dir, room, nofile);
}

/* ---- stopping ------------------------------------------------------------------------- */

void hutch_share_stop(const char *runtime_dir) {
  g_autoptr(GDir) dir = g_dir_open(runtime_dir, 0, NULL);
  if (!dir)
    return;
  const char *name;
  while ((name = g_dir_read_name(dir))) {
    if (!g_str_has_prefix(name, "virtiofs-"))
      continue;
    if (g_str_has_suffix(name, ".pid")) {
      g_autofree char *path = g_build_filename(runtime_dir, name, NULL);
      stop_virtiofsd(path, NULL);
    }
  }
  /* the sockets once nothing listens on them any more, and the mount points (empty here:
   * the mounts were in virtiofsd's own namespace) */
  g_dir_rewind(dir);
  while ((name = g_dir_read_name(dir))) {
    if (!g_str_has_prefix(name, "virtiofs-"))
      continue;
    g_autofree char *path = g_build_filename(runtime_dir, name, NULL);
    if (g_str_has_suffix(name, ".sock"))
      g_unlink(path);
    else if (g_str_has_suffix(name, ".root"))
      g_rmdir(path);
  }
}
