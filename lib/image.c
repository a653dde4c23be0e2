/* image.c: the image cache ($XDG_CACHE_HOME/hutch/images/KEY/), filled by building a Debian
 * root with mmdebstrap or by downloading a verified file with libcurl; header inspection that
 * refuses images which would make QEMU open other host files; instance overlays.
 *
 * A cache entry is complete when its directory exists under its key: everything is made in
 * images/.tmp-XXXXXX and renamed into place last. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "image-private.h"
#include "instance-private.h"

#define IMAGE_JSON "image.json"
#define IMAGE_CMDLINE "root=/dev/vda rw console=ttyS0 net.ifnames=0"
/* Part of the build key: bump it when the recipe below changes what an image contains. */
#define BUILD_RECIPE_VERSION "2"
#define CHECKSUMS_MAX_BYTES (4 << 20)
#define DOWNLOAD_ATTEMPTS 5

/* What every built image needs to boot with a direct kernel, take a NoCloud seed, get DHCP on
 * its virtio NIC (cloud-init 22.4 renders ENI first when ifupdown is there; systemd-networkd
 * is not enabled on Debian 12), and serve hutch's SSH, SFTP and guest agent. mmdebstrap
 * installs no Recommends, so udev, dbus and the SFTP server are named. */
static const char *const minimum_packages[] = {
    "ca-certificates",
    "cloud-init",
    "dbus",
    "e2fsprogs",
    "ifupdown",
    "isc-dhcp-client",
    "locales",
    "netbase",
    "openssh-server",
    "openssh-sftp-server",
    "qemu-guest-agent",
    "sudo",
    "systemd-sysv",
    "udev",
};

/* The kernel unless the profile's `kernel:` names another: what Debian's cloud images have (no
 * 9p, no AHCI, few drivers; a small initrd that boots fast). */
#define DEFAULT_KERNEL_PACKAGE "linux-image-cloud-amd64"

/* Before the kernel is installed, so that update-initramfs sees the root file system and
 * includes its fsck. */
static const char essential_hook[] =
    "printf '/dev/vda / ext4 defaults 0 1\\n' > \"$1/etc/fstab\"\n";

/* Run in the root by mmdebstrap ($1 is the root) at the end: NoCloud only (no metadata-server
 * probing at boot), no SSH host keys shared by every instance (cloud-init installs the pinned
 * one), loopback plus cloud-init's interfaces. */
static const char customize_hook[] =
    "set -e\n"
    "printf 'hutch\\n' > \"$1/etc/hostname\"\n"
    "mkdir -p \"$1/etc/cloud/cloud.cfg.d\"\n"
    "printf 'datasource_list: [ NoCloud ]\\n' > \"$1/etc/cloud/cloud.cfg.d/90_hutch.cfg\"\n"
    "printf 'auto lo\\niface lo inet loopback\\n\\nsource-directory /etc/network/interfaces.d\\n'"
    " > \"$1/etc/network/interfaces\"\n"
    "rm -f \"$1\"/etc/ssh/ssh_host_*\n";

/* Unpacks the root and copies its kernel and initrd out ($1 is the work directory). Runs as
 * root of a user namespace when hutch is not root, so that ownership survives. */
static const char unpack_script[] =
    "set -eu\n"
    "out=$1\n"
    "mkdir \"$out/root\"\n"
    "tar -C \"$out/root\" --numeric-owner -xpf \"$out/root.tar\"\n"
    /* The initramfs moves the kernel's devtmpfs onto /dev. mmdebstrap's tar has none
     * before 1.4 (Debian 12); newer ones have the directory (device nodes cannot be made
     * here either way). */
    "mkdir -p \"$out/root/dev\"\n"
    "chmod 0755 \"$out/root/dev\"\n"
    "rm -f \"$out/root.tar\"\n"
    "for pair in vmlinuz:vmlinuz initrd.img:initrd.img; do\n"
    "  set -- \"$out\"/root/boot/\"${pair%%:*}\"-*\n"
    "  if [ $# -ne 1 ] || [ ! -f \"$1\" ]; then\n"
    "    echo \"expected one /boot/${pair%%:*}-* in the root, found: $*\" >&2; exit 1\n"
    "  fi\n"
    "  cp \"$1\" \"$out/${pair#*:}\"\n"
    "  chmod 0600 \"$out/${pair#*:}\"\n"
    "done\n";

/* Content plus 1 GiB: instances get their size from the overlay and cloud-init's resizefs. */
static const char mkfs_script[] =
    "set -eu\n"
    "PATH=$PATH:/usr/sbin:/sbin\n"
    "out=$1\n"
    "mb=$(du -sxm \"$out/root\" | cut -f1)\n"
    "mkfs.ext4 -q -F -L hutch-root -E root_owner=0:0 -d \"$out/root\" \"$out/disk.raw\""
    " \"$((mb + 1024))M\"\n"
    "rm -rf \"$out/root\"\n";

void hutch_image_free(HutchImage *image) {
  if (!image)
    return;
  g_free(image->key);
  g_free(image->disk);
  g_free(image->format);
  g_free(image->kernel);
  g_free(image->initrd);
  g_free(image->cmdline);
  g_free(image);
}

static char *images_dir(void) {
  g_autofree char *cache = hutch_cache_dir();
  return g_build_filename(cache, "images", NULL);
}

/* "doing PATH: strerror" */
static void set_errno_error(GError **error, int saved, const char *doing, const char *path) {
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "%s %s: %s", doing, path, g_strerror(saved));
}

/* ---- Names and keys ------------------------------------------------------------------- */

static gboolean is_debian_name(const char *name) {
  if (!name || !(g_ascii_islower(name[0]) || g_ascii_isdigit(name[0])))
    return FALSE;
  for (const char *p = name; *p; p++)
    if (!g_ascii_islower(*p) && !g_ascii_isdigit(*p) && !strchr("+-.", *p))
      return FALSE;
  return TRUE;
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Minimum set plus the profile's, sorted, without duplicates. Borrowed strings. */
static GPtrArray *build_packages(const HutchImageSpec *spec) {
  g_autoptr(GPtrArray) all = g_ptr_array_new();
  for (gsize i = 0; i < G_N_ELEMENTS(minimum_packages); i++)
    g_ptr_array_add(all, (gpointer)minimum_packages[i]);
  g_ptr_array_add(all, spec->kernel ? spec->kernel : (gpointer)DEFAULT_KERNEL_PACKAGE);
  for (char **p = spec->packages; p && *p; p++)
    g_ptr_array_add(all, *p);
  g_ptr_array_sort(all, compare_strings);
  GPtrArray *unique = g_ptr_array_new();
  for (guint i = 0; i < all->len; i++)
    if (unique->len == 0 ||
        strcmp(g_ptr_array_index(unique, unique->len - 1), g_ptr_array_index(all, i)) != 0)
      g_ptr_array_add(unique, g_ptr_array_index(all, i));
  return unique;
}

char *hutch_image_build_key(const HutchImageSpec *spec) {
  g_autoptr(GPtrArray) packages = build_packages(spec);
  g_autoptr(GString) canon = g_string_new("hutch-image-build\n");
  g_string_append_printf(canon, "recipe=%s\nsuite=%s\nmirror=%s\n", BUILD_RECIPE_VERSION,
                         spec->suite ? spec->suite : "", spec->mirror ? spec->mirror : "");
  for (guint i = 0; i < packages->len; i++)
    g_string_append_printf(canon, "package=%s\n", (const char *)g_ptr_array_index(packages, i));
  g_autofree char *sum =
      g_compute_checksum_for_string(G_CHECKSUM_SHA256, canon->str, (gssize)canon->len);
  return g_strdup_printf("build-%.16s", sum);
}

/* "sha256:HEX" / "sha512:HEX" -> type and lower-case hex. */
static gboolean parse_digest(const char *digest, GChecksumType *ret_type, char **ret_hex,
                             GError **error) {
  const char *colon = digest ? strchr(digest, ':') : NULL;
  GChecksumType type = G_CHECKSUM_SHA256;
  gsize want = 0;
  if (colon && g_ascii_strncasecmp(digest, "sha256:", 7) == 0) {
    type = G_CHECKSUM_SHA256;
    want = 64;
  } else if (colon && g_ascii_strncasecmp(digest, "sha512:", 7) == 0) {
    type = G_CHECKSUM_SHA512;
    want = 128;
  }
  const char *hex = colon ? colon + 1 : "";
  gboolean ok = want && strlen(hex) == want;
  for (gsize i = 0; ok && i < want; i++)
    ok = g_ascii_isxdigit(hex[i]);
  if (!ok) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "invalid digest '%s': expected sha256:<64 hex digits> or sha512:<128 hex "
                "digits>",
                digest ? digest : "");
    return FALSE;
  }
  *ret_type = type;
  *ret_hex = g_ascii_strdown(hex, -1);
  return TRUE;
}

char *hutch_image_url_key(const char *digest, GError **error) {
  GChecksumType type;
  g_autofree char *hex = NULL;
  if (!parse_digest(digest, &type, &hex, error))
    return NULL;
  g_autofree char *canon =
      g_strdup_printf("%s:%s", type == G_CHECKSUM_SHA256 ? "sha256" : "sha512", hex);
  g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, canon, -1);
  return g_strdup_printf("url-%.16s", sum);
}

/* ---- Files ---------------------------------------------------------------------------- */

/* Hashes path with type, and also with SHA-256 when ret_sha256 is given (one read). */
static gboolean hash_file(const char *path, GChecksumType type, char **ret_hex, char **ret_sha256,
                          GError **error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    set_errno_error(error, errno, "reading", path);
    return FALSE;
  }
  g_autoptr(GChecksum) sum = g_checksum_new(type);
  g_autoptr(GChecksum) sha256 = ret_sha256 ? g_checksum_new(G_CHECKSUM_SHA256) : NULL;
  g_autofree guchar *buf = g_malloc(1 << 20);
  for (;;) {
    ssize_t n = read(fd, buf, 1 << 20);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int saved = errno;
      close(fd);
      set_errno_error(error, saved, "reading", path);
      return FALSE;
    }
    if (n == 0)
      break;
    g_checksum_update(sum, buf, n);
    if (sha256)
      g_checksum_update(sha256, buf, n);
  }
  close(fd);
  *ret_hex = g_strdup(g_checksum_get_string(sum));
  if (ret_sha256)
    *ret_sha256 = g_strdup(g_checksum_get_string(sha256));
  return TRUE;
}

/* Runs argv, feeding each output line (stdout and stderr, split at \n and \r) to on_line and
 * keeping the last lines for the error message. */
typedef void (*LineFunc)(const char *line, gpointer data);

/* lock_fd >= 0: the child gets a copy (as fd 3) and so holds the work directory's lock for
 * as long as it lives, even after hutch died. mmdebstrap ignores SIGTERM and SIGINT while apt
 * runs, so an orphaned build keeps writing; its directory must not look abandoned. */
static void unblock_child_signals(gpointer data) {
  (void)data;
  hutch_unblock_signals();
}

static gboolean run_command_locked(const char *const *argv, const char *what, LineFunc on_line,
                                   gpointer data, int lock_fd, GError **error) {
  g_autoptr(GError) local = NULL;
  g_autoptr(GSubprocessLauncher) launcher =
      g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE);
  if (lock_fd >= 0) {
    int copy = fcntl(lock_fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      set_errno_error(error, errno, "running", what);
      return FALSE;
    }
    g_subprocess_launcher_take_fd(launcher, copy, 3);
  }
  g_subprocess_launcher_set_child_setup(launcher, unblock_child_signals, NULL, NULL);
  g_autoptr(GSubprocess) proc = g_subprocess_launcher_spawnv(launcher, argv, &local);
  if (!proc) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "%s: %s", what, local->message);
    return FALSE;
  }
  GInputStream *out = g_subprocess_get_stdout_pipe(proc);
  g_autoptr(GString) line = g_string_new(NULL);
  GQueue tail = G_QUEUE_INIT;
  char buf[4096];
  gssize n;
  while ((n = g_input_stream_read(out, buf, sizeof(buf), NULL, NULL)) > 0) {
    for (gssize i = 0; i < n; i++) {
      if (buf[i] != '\n' && buf[i] != '\r') {
        g_string_append_c(line, buf[i]);
        continue;
      }
      if (line->len == 0)
        continue;
      if (on_line)
        on_line(line->str, data);
      g_queue_push_tail(&tail, g_strdup(line->str));
      if (tail.length > 6)
        g_free(g_queue_pop_head(&tail));
      g_string_truncate(line, 0);
    }
  }
  if (line->len > 0) {
    g_queue_push_tail(&tail, g_strdup(line->str));
    if (tail.length > 6)
      g_free(g_queue_pop_head(&tail));
  }
  gboolean ok = g_subprocess_wait(proc, NULL, &local) && g_subprocess_get_if_exited(proc) &&
                g_subprocess_get_exit_status(proc) == 0;
  if (!ok) {
    g_autoptr(GString) msg = g_string_new(NULL);
    for (GList *l = tail.head; l; l = l->next)
      g_string_append_printf(msg, "%s%s", msg->len ? "; " : "", (char *)l->data);
    if (local)
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "%s: %s", what, local->message);
    else if (g_subprocess_get_if_exited(proc))
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "%s failed (exit status %d)%s%s", what,
                  g_subprocess_get_exit_status(proc), msg->len ? ": " : "", msg->str);
    else
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "%s was killed by signal %d%s%s", what,
                  g_subprocess_get_term_sig(proc), msg->len ? ": " : "", msg->str);
  }
  g_queue_clear_full(&tail, g_free);
  return ok;
}

static gboolean run_command(const char *const *argv, const char *what, LineFunc on_line,
                            gpointer data, GError **error) {
  return run_command_locked(argv, what, on_line, data, -1, error);
}

/* argv of `sh -c script sh arg`, inside a user namespace with the user's subordinate ids
 * (root of the namespace is the user) unless hutch runs as root. */
static GStrv userns_argv(const char *script, const char *arg) {
  g_autoptr(GStrvBuilder) b = g_strv_builder_new();
  if (geteuid() != 0) {
    g_strv_builder_add_many(b, "unshare", "--map-root-user", "--map-auto", "--", NULL);
  }
  g_strv_builder_add_many(b, "sh", "-c", script, "sh", arg, NULL);
  return g_strv_builder_end(b);
}

/* rm -rf that also removes what a user namespace left owned by subordinate ids. */
static gboolean remove_tree(const char *path, GError **error) {
  g_autoptr(GError) local = NULL;
  if (hutch_rmtree(path, &local))
    return TRUE;
  if (geteuid() != 0) {
    g_auto(GStrv) argv = userns_argv("rm -rf -- \"$1\"", path);
    if (run_command((const char *const *)argv, "removing in a user namespace", NULL, NULL, NULL) &&
        !g_file_test(path, G_FILE_TEST_EXISTS))
      return TRUE;
  }
  g_propagate_error(error, g_steal_pointer(&local));
  return FALSE;
}

/* A work directory images/.tmp-XXXXXX, locked by its creator for as long as it works in it,
 * so that the next build can tell an abandoned one from a busy one. */
typedef HutchImageWork WorkDir;

static void work_dir_discard(WorkDir *work) {
  if (work->path)
    remove_tree(work->path, NULL);
  if (work->lock_fd >= 0)
    close(work->lock_fd);
  g_clear_pointer(&work->path, g_free);
  work->lock_fd = -1;
}

static void remove_stale_work_dirs(const char *images) {
  g_autoptr(GDir) dir = g_dir_open(images, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir))) {
    if (!g_str_has_prefix(name, ".tmp-"))
      continue;
    g_autofree char *path = g_build_filename(images, name, NULL);
    g_autofree char *lock = g_build_filename(path, "lock", NULL);
    int fd = open(lock, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      /* No lock file: its creator died before making one, or is about to; wait a minute. */
      GStatBuf st;
      if (g_stat(path, &st) == 0 && time(NULL) - st.st_mtime > 60)
        remove_tree(path, NULL);
      continue;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
      remove_tree(path, NULL);
    close(fd);
  }
}

static gboolean work_dir_create(const char *images, WorkDir *work, GError **error) {
  work->lock_fd = -1;
  if (!hutch_mkdir(images, 0700, error))
    return FALSE;
  remove_stale_work_dirs(images);
  work->path = g_build_filename(images, ".tmp-XXXXXX", NULL);
  if (!g_mkdtemp_full(work->path, 0700)) {
    set_errno_error(error, errno, "creating", work->path);
    g_clear_pointer(&work->path, g_free);
    return FALSE;
  }
  g_autofree char *lock = g_build_filename(work->path, "lock", NULL);
  work->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (work->lock_fd < 0 || flock(work->lock_fd, LOCK_EX) < 0) {
    set_errno_error(error, errno, "locking", lock);
    work_dir_discard(work);
    return FALSE;
  }
  return TRUE;
}

/* Moves the finished work directory to images/KEY. Losing a race to another process that
 * made the same key is fine: both results are equivalent. */
static gboolean work_dir_commit(WorkDir *work, const char *images, const char *key,
                                GError **error) {
  g_autofree char *lock = g_build_filename(work->path, "lock", NULL);
  g_autofree char *final = g_build_filename(images, key, NULL);
  g_unlink(lock);
  if (g_rename(work->path, final) < 0) {
    int saved = errno;
    if ((saved == ENOTEMPTY || saved == EEXIST) && g_file_test(final, G_FILE_TEST_IS_DIR)) {
      work_dir_discard(work);
      return TRUE;
    }
    set_errno_error(error, saved, "moving the image into", final);
    work_dir_discard(work);
    return FALSE;
  }
  g_clear_pointer(&work->path, g_free);
  close(work->lock_fd);
  work->lock_fd = -1;
  return TRUE;
}

static char *now_iso8601(void) {
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  return g_date_time_format(now, "%Y-%m-%dT%H:%M:%SZ");
}

static JsonObject *read_image_json(const char *dir, GError **error) {
  g_autofree char *path = g_build_filename(dir, IMAGE_JSON, NULL);
  g_autoptr(JsonParser) parser = json_parser_new();
  if (!json_parser_load_from_file(parser, path, error)) {
    g_prefix_error(error, "reading %s: ", path);
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "reading %s: not a JSON object", path);
    return NULL;
  }
  return json_object_ref(json_node_get_object(root));
}

static gboolean write_image_json(const char *dir, JsonObject *obj, GError **error) {
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), obj);
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_pretty(gen, TRUE);
  json_generator_set_root(gen, root);
  gsize len = 0;
  g_autofree char *text = json_generator_to_data(gen, &len);
  g_autofree char *path = g_build_filename(dir, IMAGE_JSON, NULL);
  return hutch_write_file(path, text, len, 0600, error);
}

static gboolean is_cached(const char *images, const char *key) {
  g_autofree char *path = g_build_filename(images, key, IMAGE_JSON, NULL);
  return g_file_test(path, G_FILE_TEST_IS_REGULAR);
}

/* ---- For the other kinds of cache entry (template.c) ------------------------------------ */

char *hutch_image_cache_dir(void) { return images_dir(); }

gboolean hutch_image_is_cached(const char *key) {
  g_autofree char *images = images_dir();
  return is_cached(images, key);
}

gboolean hutch_image_work_create(HutchImageWork *work, GError **error) {
  g_autofree char *images = images_dir();
  return work_dir_create(images, work, error);
}

void hutch_image_work_discard(HutchImageWork *work) { work_dir_discard(work); }

gboolean hutch_image_work_commit(HutchImageWork *work, const char *key, GError **error) {
  g_autofree char *images = images_dir();
  return work_dir_commit(work, images, key, error);
}

JsonObject *hutch_image_read_json(const char *key, GError **error) {
  g_autofree char *images = images_dir();
  g_autofree char *dir = g_build_filename(images, key, NULL);
  return read_image_json(dir, error);
}

gboolean hutch_image_write_json(const char *dir, JsonObject *obj, GError **error) {
  return write_image_json(dir, obj, error);
}

char *hutch_image_now(void) { return now_iso8601(); }

/* ---- Inspection ----------------------------------------------------------------------- */

static guint32 be32(const guchar *p) {
  return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

static guint64 be64(const guchar *p) {
  return (guint64)be32(p) << 32 | be32(p + 4);
}

static gboolean read_at(int fd, guchar *buf, gsize len, guint64 offset, gsize *ret_len) {
  gsize done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, (off_t)(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return FALSE;
    if (n == 0)
      break;
    done += (gsize)n;
  }
  *ret_len = done;
  return TRUE;
}

static gboolean refuse(GError **error, const char *path, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean refuse(GError **error, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *why = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "refusing image %s: %s", path, why);
  return FALSE;
}

#define QCOW2_INCOMPAT_DATA_FILE (1ULL << 2)
#define QCOW2_INCOMPAT_KNOWN 0x1fULL
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* Checks a qcow2 header (hdr holds the file's first bytes) by the layout in QEMU's
 * docs/interop/qcow2.txt. */
static gboolean inspect_qcow2(int fd, const char *path, const guchar *hdr, gsize len,
                              guint64 *ret_vsize, GError **error) {
  static const char danger[] = "it could make hutch (QEMU) read arbitrary host files";
  if (len < 72)
    return refuse(error, path, "truncated qcow2 header");
  guint32 version = be32(hdr + 4);
  if (version != 2 && version != 3)
    return refuse(error, path, "qcow version %u is not supported (only qcow2 v2/v3)", version);
  guint64 backing_offset = be64(hdr + 8);
  guint32 backing_size = be32(hdr + 16);
  if (backing_offset != 0 || backing_size != 0) {
    guchar name[256] = {0};
    gsize got = 0;
    if (!read_at(fd, name, MIN(backing_size, sizeof(name) - 1), backing_offset, &got))
      got = 0;
    name[got] = '\0';
    g_autofree char *shown = g_utf8_make_valid((const char *)name, -1);
    return refuse(error, path, "the qcow2 image has a backing file ('%s'): %s", shown, danger);
  }
  guint32 cluster_bits = be32(hdr + 20);
  guint64 vsize = be64(hdr + 24);
  if (be32(hdr + 32) != 0)
    return refuse(error, path, "encrypted qcow2 images are not supported");
  if (cluster_bits < 9 || cluster_bits > 21)
    return refuse(error, path, "invalid qcow2 cluster size (2^%u)", cluster_bits);
  guint32 header_length = 72;
  if (version == 3) {
    if (len < 104)
      return refuse(error, path, "truncated qcow2 v3 header");
    guint64 incompatible = be64(hdr + 72);
    if (incompatible & QCOW2_INCOMPAT_DATA_FILE)
      return refuse(error, path, "the qcow2 image uses an external data file: %s", danger);
    if (incompatible & ~QCOW2_INCOMPAT_KNOWN)
      return refuse(error, path, "unknown qcow2 incompatible features 0x%" G_GINT64_MODIFIER "x",
                    (guint64)(incompatible & ~QCOW2_INCOMPAT_KNOWN));
    header_length = be32(hdr + 100);
    if (header_length < 104)
      return refuse(error, path, "invalid qcow2 header length %u", header_length);
  }
  /* Header extensions follow the header, within the first cluster. */
  gsize cluster = (gsize)1 << cluster_bits;
  g_autofree guchar *first = g_malloc(cluster);
  gsize have = 0;
  if (!read_at(fd, first, cluster, 0, &have)) {
    set_errno_error(error, errno, "reading", path);
    return FALSE;
  }
  gsize off = header_length;
  for (;;) {
    if (off + 8 > have)
      return refuse(error, path, "qcow2 header extensions run past the first cluster");
    guint32 type = be32(first + off);
    guint32 ext_len = be32(first + off + 4);
    if (type == 0)
      break;
    if (ext_len > have - off - 8)
      return refuse(error, path, "qcow2 header extension 0x%08x runs past the first cluster", type);
    if (type == QCOW2_EXT_DATA_FILE) {
      g_autofree char *name = g_strndup((const char *)first + off + 8, MIN(ext_len, 255));
      g_autofree char *shown = g_utf8_make_valid(name, -1);
      return refuse(error, path, "the qcow2 image names an external data file ('%s'): %s", shown,
                    danger);
    }
    off += 8 + (((gsize)ext_len + 7) & ~(gsize)7);
  }
  *ret_vsize = vsize;
  return TRUE;
}

static gboolean inspect_file(const char *path, char **ret_format, guint64 *ret_vsize,
                             GError **error) {
  /* Formats QEMU knows that can refer to other files or that hutch does not handle. A file
   * that is none of these is raw, and is always opened with format=raw, never probed. */
  static const struct {
    gsize offset;
    const char *magic;
    gsize len;
    const char *name;
  } foreign[] = {
      {0, "KDMV", 4, "VMDK"},
      {0, "# Disk DescriptorFile", 21, "VMDK descriptor"},
      {0x40, "\x7f\x10\xda\xbe", 4, "VDI"},
      {0, "<<< ", 4, "VDI"},
      {0, "vhdxfile", 8, "VHDX"},
      {0, "conectix", 8, "VHD"},
      {0, "QED\0", 4, "QED"},
      {0, "LUKS\xba\xbe", 6, "LUKS"},
      {0, "WithoutFreeSpace", 16, "Parallels"},
      {0, "WithouFreSpacExt", 16, "Parallels"},
      {0, "Bochs Virtual HD Image", 22, "Bochs"},
      {0, "#!/bin/sh\n#V2.0 Format", 22, "cloop"},
  };
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int saved = errno;
    g_set_error(error, HUTCH_ERROR, saved == ENOENT ? HUTCH_ERROR_NOT_FOUND : HUTCH_ERROR_IMAGE,
                "opening image %s: %s", path, g_strerror(saved));
    return FALSE;
  }
  struct stat st;
  guchar hdr[512];
  gsize len = 0;
  gboolean ok = TRUE;
  if (fstat(fd, &st) < 0 || !read_at(fd, hdr, sizeof(hdr), 0, &len)) {
    set_errno_error(error, errno, "reading", path);
    ok = FALSE;
  } else if (!S_ISREG(st.st_mode)) {
    ok = refuse(error, path, "not a regular file");
  } else if (st.st_size == 0) {
    ok = refuse(error, path, "the file is empty");
  }
  for (gsize i = 0; ok && i < G_N_ELEMENTS(foreign); i++) {
    if (len >= foreign[i].offset + foreign[i].len &&
        memcmp(hdr + foreign[i].offset, foreign[i].magic, foreign[i].len) == 0)
      ok = refuse(error, path, "%s images are not supported (use raw or qcow2)", foreign[i].name);
  }
  guint64 vsize = (guint64)st.st_size;
  const char *format = "raw";
  if (ok && len >= 4 && memcmp(hdr, "QFI\xfb", 4) == 0) {
    format = "qcow2";
    ok = inspect_qcow2(fd, path, hdr, len, &vsize, error);
  }
  close(fd);
  if (!ok)
    return FALSE;
  if (ret_format)
    *ret_format = g_strdup(format);
  if (ret_vsize)
    *ret_vsize = vsize;
  return TRUE;
}

gboolean hutch_image_inspect(const char *path, char **ret_format, GError **error) {
  return inspect_file(path, ret_format, NULL, error);
}

/* ---- Downloads ------------------------------------------------------------------------ */

typedef struct {
  HutchContext *ctx;
  const char *phase;
  int fd;
  guint64 offset;  /* bytes in the file when this attempt started */
  guint64 written; /* bytes written by this attempt */
  double last_report;
  GByteArray *memory; /* instead of fd: collect into memory, up to CHECKSUMS_MAX_BYTES */
  int write_errno;
} Download;

static size_t download_write(char *ptr, size_t size, size_t nmemb, void *user_data) {
  Download *d = user_data;
  size_t len = size * nmemb;
  if (d->memory) {
    if (d->memory->len + len > CHECKSUMS_MAX_BYTES)
      return 0;
    g_byte_array_append(d->memory, (const guint8 *)ptr, (guint)len);
    return len;
  }
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(d->fd, ptr + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      d->write_errno = errno;
      return 0;
    }
    done += (size_t)n;
  }
  d->written += len;
  return len;
}

static int download_progress(void *user_data, curl_off_t dltotal, curl_off_t dlnow,
                             curl_off_t ultotal, curl_off_t ulnow) {
  Download *d = user_data;
  double now = hutch_now();
  if (!d->ctx || !d->phase || dltotal <= 0 || now - d->last_report < 0.25)
    return 0;
  d->last_report = now;
  double done = (double)(d->offset + (guint64)dlnow);
  double total = (double)(d->offset + (guint64)dltotal);
  hutch_progress_update(d->ctx, d->phase, done / total, "%.0f of %.0f MiB", done / 1048576,
                        total / 1048576);
  return 0;
}

static CURL *download_handle(const char *url, Download *d, char *errbuf) {
  CURL *curl = curl_easy_init();
  if (!curl)
    return NULL;
  curl_easy_setopt(curl, CURLOPT_URL, url);
  /* file:// for local mirrors and tests; redirects never lead to local files. */
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https,file");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
  /* A stalled transfer (under 1 byte/s for a minute) fails and is resumed. */
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "hutch/" HUTCH_VERSION);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, download_write);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, d);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, download_progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, d);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  return curl;
}

gboolean hutch_image_curl_unreachable(int code) {
  switch (code) {
  case CURLE_OK:
  /* hutch's side: the disk (or the size limit of a checksums file), memory, libcurl */
  case CURLE_WRITE_ERROR:
  case CURLE_OUT_OF_MEMORY:
  case CURLE_FAILED_INIT:
  case CURLE_ABORTED_BY_CALLBACK:
    return FALSE;
  default:
    return TRUE;
  }
}

/* ret_unreachable (may be NULL): "URL (why)" when the transfer itself failed
 * (hutch_image_curl_unreachable). */
static void set_curl_error(GError **error, CURL *curl, CURLcode code, const char *errbuf,
                           const char *url, char **ret_unreachable) {
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  const char *why = errbuf && *errbuf ? errbuf : curl_easy_strerror(code);
  int err_code = status == 404 ? HUTCH_ERROR_NOT_FOUND : HUTCH_ERROR_IMAGE;
  g_set_error(error, HUTCH_ERROR, err_code, "downloading %s: %s", url, why);
  if (ret_unreachable && hutch_image_curl_unreachable(code)) {
    g_free(*ret_unreachable);
    *ret_unreachable = g_strdup_printf("%s (%s)", url, why);
  }
}

static gboolean fetch_to_memory(const char *url, GBytes **ret_bytes, char **ret_unreachable,
                                GError **error) {
  char errbuf[CURL_ERROR_SIZE] = "";
  Download d = {.fd = -1, .memory = g_byte_array_new()};
  CURL *curl = download_handle(url, &d, errbuf);
  if (!curl) {
    g_byte_array_unref(d.memory);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "downloading %s: curl init failed", url);
    return FALSE;
  }
  CURLcode code = curl_easy_perform(curl);
  if (code == CURLE_WRITE_ERROR) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "downloading %s: larger than %d MiB", url,
                CHECKSUMS_MAX_BYTES >> 20);
  } else if (code != CURLE_OK) {
    set_curl_error(error, curl, code, errbuf, url, ret_unreachable);
  }
  curl_easy_cleanup(curl);
  if (code != CURLE_OK) {
    g_byte_array_unref(d.memory);
    return FALSE;
  }
  *ret_bytes = g_byte_array_free_to_bytes(d.memory);
  return TRUE;
}

/* Downloads url into path, resuming from what path holds already and retrying after
 * transfer errors. */
static gboolean download_file(HutchContext *ctx, const char *url, const char *path,
                              char **ret_unreachable, GError **error) {
  char errbuf[CURL_ERROR_SIZE];
  for (int attempt = 1;; attempt++) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
      set_errno_error(error, errno, "writing", path);
      if (fd >= 0)
        close(fd);
      return FALSE;
    }
    Download d = {.ctx = ctx, .phase = "download", .fd = fd, .offset = (guint64)st.st_size};
    errbuf[0] = '\0';
    CURL *curl = download_handle(url, &d, errbuf);
    if (!curl) {
      close(fd);
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "downloading %s: curl init failed", url);
      return FALSE;
    }
    curl_easy_setopt(curl, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)d.offset);
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    close(fd);
    if (code == CURLE_OK) {
      curl_easy_cleanup(curl);
      return TRUE;
    }
    if (code == CURLE_WRITE_ERROR && d.write_errno) {
      curl_easy_cleanup(curl);
      set_errno_error(error, d.write_errno, "writing", path);
      return FALSE;
    }
    /* A server that ignores Range (200 instead of 206: curl says RANGE_ERROR) or finds the
     * partial file longer than the resource (416): start over from nothing. */
    gboolean restart = d.offset > 0 && (code == CURLE_RANGE_ERROR ||
                                        (code == CURLE_HTTP_RETURNED_ERROR && status == 416));
    gboolean transient = d.written > 0 && (code == CURLE_PARTIAL_FILE || code == CURLE_RECV_ERROR ||
                                           code == CURLE_OPERATION_TIMEDOUT ||
                                           code == CURLE_GOT_NOTHING || code == CURLE_SEND_ERROR);
    if (attempt >= DOWNLOAD_ATTEMPTS || (!restart && !transient)) {
      set_curl_error(error, curl, code, errbuf, url, ret_unreachable);
      curl_easy_cleanup(curl);
      return FALSE;
    }
    curl_easy_cleanup(curl);
    if (restart && truncate(path, 0) < 0) {
      set_errno_error(error, errno, "truncating", path);
      return FALSE;
    }
    hutch_progress_update(ctx, "download", -1, "retrying (%s)",
                          restart ? "the server does not resume" : curl_easy_strerror(code));
  }
}

static char *url_basename(const char *url) {
  g_autofree char *no_query = g_strndup(url, strcspn(url, "?#"));
  const char *slash = strrchr(no_query, '/');
  g_autofree char *escaped = g_strdup(slash ? slash + 1 : no_query);
  char *name = g_uri_unescape_string(escaped, NULL);
  return name ? name : g_steal_pointer(&escaped);
}

/* Finds NAME's digest in a SHA256SUMS/SHA512SUMS text: GNU ("HEX  NAME", "HEX *NAME") or BSD
 * ("SHA256 (NAME) = HEX") lines. */
char *hutch_image_find_checksum(const char *sums, const char *name, GError **error) {
  g_auto(GStrv) lines = g_strsplit(sums, "\n", -1);
  for (char **l = lines; *l; l++) {
    char *line = g_strstrip(*l);
    g_autofree char *hex = NULL;
    g_autofree char *file = NULL;
    if (g_ascii_isxdigit(line[0])) {
      gsize n = strspn(line, "0123456789abcdefABCDEF");
      const char *rest = line + n;
      if (*rest != ' ' && *rest != '\t')
        continue;
      while (*rest == ' ' || *rest == '\t')
        rest++;
      if (*rest == '*')
        rest++;
      hex = g_strndup(line, n);
      file = g_strdup(rest);
    } else {
      const char *open = strstr(line, " (");
      const char *close = strstr(line, ") = ");
      if (!open || !close || close < open)
        continue;
      file = g_strndup(open + 2, close - open - 2);
      hex = g_strdup(close + 4);
    }
    if (strcmp(file, name) != 0 && !(g_str_has_prefix(file, "./") && !strcmp(file + 2, name)))
      continue;
    gsize len = strlen(hex);
    if (len != 64 && len != 128)
      continue;
    g_autofree char *lower = g_ascii_strdown(hex, -1);
    return g_strdup_printf("%s:%s", len == 64 ? "sha256" : "sha512", lower);
  }
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND, "no checksum for '%s'", name);
  return NULL;
}

static char *fetch_digest(const char *url, const char *checksums_url, char **ret_unreachable,
                          GError **error) {
  g_autoptr(GBytes) bytes = NULL;
  if (!fetch_to_memory(checksums_url, &bytes, ret_unreachable, error))
    return NULL;
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  g_autofree char *text = g_strndup(data, len);
  g_autofree char *name = url_basename(url);
  char *digest = hutch_image_find_checksum(text, name, error);
  if (!digest)
    g_prefix_error(error, "%s: ", checksums_url);
  return digest;
}

char *hutch_image_fetch_digest(const char *url, const char *checksums_url, GError **error) {
  return fetch_digest(url, checksums_url, NULL, error);
}

static JsonObject *url_spec_json(const char *url, const char *digest, const char *checksums) {
  JsonObject *spec = json_object_new();
  json_object_set_string_member(spec, "url", url);
  json_object_set_string_member(spec, "digest", digest);
  if (checksums)
    json_object_set_string_member(spec, "checksums", checksums);
  return spec;
}

/* Downloads, verifies, inspects and caches; called with the URL's download lock held. */
static gboolean pull_locked(HutchContext *ctx, const char *url, const char *digest,
                            const char *checksums, const char *key, const char *partial,
                            char **ret_unreachable, GError **error) {
  GChecksumType type;
  g_autofree char *want = NULL;
  g_autofree char *actual = NULL;
  g_autofree char *sha256 = NULL;
  g_autofree char *format = NULL;
  g_autofree char *images = images_dir();
  guint64 vsize = 0;
  GStatBuf st;
  if (!parse_digest(digest, &type, &want, error))
    return FALSE;
  hutch_progress_begin(ctx, "download", "%s", url);
  if (!download_file(ctx, url, partial, ret_unreachable, error) ||
      !hash_file(partial, type, &actual, &sha256, error))
    return FALSE;
  if (strcmp(actual, want) != 0) {
    const char *alg = type == G_CHECKSUM_SHA256 ? "sha256" : "sha512";
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_DIGEST,
                "%s: digest mismatch: expected %s:%s, got %s:%s (download discarded)", url, alg,
                want, alg, actual);
    g_unlink(partial);
    return FALSE;
  }
  if (!inspect_file(partial, &format, &vsize, error)) {
    g_unlink(partial);
    return FALSE;
  }
  if (g_stat(partial, &st) < 0) {
    set_errno_error(error, errno, "reading", partial);
    return FALSE;
  }
  WorkDir work = {NULL, -1};
  if (!work_dir_create(images, &work, error))
    return FALSE;
  g_autofree char *disk_name = g_strconcat("disk.", format, NULL);
  g_autofree char *disk = g_build_filename(work.path, disk_name, NULL);
  if (g_rename(partial, disk) < 0 || g_chmod(disk, 0600) < 0) {
    set_errno_error(error, errno, "moving the download to", disk);
    work_dir_discard(&work);
    return FALSE;
  }
  g_autoptr(JsonObject) obj = json_object_new();
  g_autofree char *created = now_iso8601();
  json_object_set_string_member(obj, "key", key);
  json_object_set_string_member(obj, "kind", "url");
  json_object_set_object_member(obj, "spec", url_spec_json(url, digest, checksums));
  json_object_set_string_member(obj, "format", format);
  json_object_set_string_member(obj, "disk", disk_name);
  json_object_set_null_member(obj, "kernel");
  json_object_set_null_member(obj, "initrd");
  json_object_set_null_member(obj, "cmdline");
  json_object_set_int_member(obj, "size", st.st_size);
  json_object_set_int_member(obj, "virtual_size", (gint64)vsize);
  json_object_set_string_member(obj, "created", created);
  json_object_set_string_member(obj, "sha256", sha256);
  gboolean ok =
      write_image_json(work.path, obj, error) && work_dir_commit(&work, images, key, error);
  work_dir_discard(&work);
  if (ok)
    hutch_progress_end(ctx, "download", "%s", key);
  return ok;
}

/* Opens (creating it) and locks path; returns the descriptor, or -1 with error set. Whoever
 * holds the lock may unlink path before closing: a process that locked the unlinked inode
 * finds path gone or another file, and tries again on the new one. */
static int lock_path_exclusive(const char *path, GError **error) {
  for (;;) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) < 0) {
      set_errno_error(error, errno, "locking", path);
      if (fd >= 0)
        close(fd);
      return -1;
    }
    struct stat held, now;
    if (fstat(fd, &held) == 0 && stat(path, &now) == 0 && held.st_dev == now.st_dev &&
        held.st_ino == now.st_ino)
      return fd;
    close(fd);
  }
}

/* ret_unreachable (may be NULL): see set_curl_error. */
static char *pull(HutchContext *ctx, const char *url, const char *digest, const char *checksums,
                  char **ret_unreachable, GError **error) {
  if (!url || !*url) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "no URL to download");
    return NULL;
  }
  g_autofree char *key = hutch_image_url_key(digest, error);
  g_autofree char *images = images_dir();
  if (!key)
    return NULL;
  if (is_cached(images, key))
    return g_steal_pointer(&key);

  g_autofree char *partial_dir = g_build_filename(images, ".partial", NULL);
  if (!hutch_mkdir(partial_dir, 0700, error))
    return NULL;
  g_autofree char *url_sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, url, -1);
  g_autofree char *partial = g_build_filename(partial_dir, url_sum, NULL);
  g_autofree char *lock_path = g_strconcat(partial, ".lock", NULL);
  /* One download of a URL at a time; whoever waited finds it cached. */
  int lock_fd = lock_path_exclusive(lock_path, error);
  if (lock_fd < 0)
    return NULL;
  gboolean ok = is_cached(images, key) ||
                pull_locked(ctx, url, digest, checksums, key, partial, ret_unreachable, error);
  /* Removed while still held: a waiter on this inode then sees it is gone and locks anew. A
   * partial download stays: the next pull resumes it. */
  g_unlink(lock_path);
  close(lock_fd);
  return ok ? g_steal_pointer(&key) : NULL;
}

char *hutch_image_pull(HutchContext *ctx, const char *url, const char *digest, GError **error) {
  char *key = pull(ctx, url, digest, NULL, NULL, error);
  if (!key)
    g_prefix_error(error, "pulling image: ");
  return key;
}

/* ---- Builds --------------------------------------------------------------------------- */

static gboolean validate_build_spec(const HutchImageSpec *spec, GError **error) {
  if (!is_debian_name(spec->suite)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "image build: invalid suite '%s'",
                spec->suite ? spec->suite : "");
    return FALSE;
  }
  /* Every package mmdebstrap will be given, the kernel included. */
  g_autoptr(GPtrArray) packages = build_packages(spec);
  for (guint i = 0; i < packages->len; i++) {
    const char *name = g_ptr_array_index(packages, i);
    if (!is_debian_name(name)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "image build: invalid package name '%s'",
                  name);
      return FALSE;
    }
  }
  if (spec->mirror &&
      (!strstr(spec->mirror, "://") || strpbrk(spec->mirror, " \t\n") || spec->mirror[0] == '-')) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "image build: invalid mirror '%s': expected a URI", spec->mirror);
    return FALSE;
  }
  return TRUE;
}

/* The URIs of the host's Debian archive in one-line and deb822 apt sources. */
static void collect_source_uris(const char *path, GPtrArray *uris) {
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return;
  gboolean deb822 = g_str_has_suffix(path, ".sources");
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    char *line = g_strstrip(*l);
    if (deb822 && g_ascii_strncasecmp(line, "URIs:", 5) == 0) {
      g_auto(GStrv) words = g_strsplit_set(line + 5, " \t", -1);
      for (char **w = words; *w; w++)
        if (**w)
          g_ptr_array_add(uris, g_strdup(*w));
    } else if (!deb822 && g_str_has_prefix(line, "deb ")) {
      g_auto(GStrv) words = g_strsplit_set(line + 4, " \t", -1);
      gboolean in_options = FALSE;
      for (char **w = words; *w; w++) {
        if (!**w)
          continue;
        if (**w == '[')
          in_options = TRUE;
        if (in_options) {
          in_options = !strchr(*w, ']');
          continue;
        }
        g_ptr_array_add(uris, g_strdup(*w));
        break;
      }
    }
  }
}

char *hutch_image_host_mirror(const char *apt_dir) {
  g_autoptr(GPtrArray) uris = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *list = g_build_filename(apt_dir, "sources.list", NULL);
  g_autofree char *list_d = g_build_filename(apt_dir, "sources.list.d", NULL);
  collect_source_uris(list, uris);
  g_autoptr(GDir) dir = g_dir_open(list_d, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)))
    if (g_str_has_suffix(name, ".list") || g_str_has_suffix(name, ".sources"))
      g_ptr_array_add(names, g_strdup(name));
  g_ptr_array_sort(names, compare_strings);
  for (guint i = 0; i < names->len; i++) {
    g_autofree char *path = g_build_filename(list_d, (char *)g_ptr_array_index(names, i), NULL);
    collect_source_uris(path, uris);
  }
  for (guint i = 0; i < uris->len; i++) {
    g_autofree char *uri = g_strdup(g_ptr_array_index(uris, i));
    gsize len = strlen(uri);
    while (len > 0 && uri[len - 1] == '/')
      uri[--len] = '\0';
    if (g_str_has_suffix(uri, "/debian") &&
        (g_str_has_prefix(uri, "http://") || g_str_has_prefix(uri, "https://")))
      return g_steal_pointer(&uri);
  }
  return NULL;
}

/* mmdebstrap's MIRROR arguments. None means deb.debian.org plus its updates and security
 * suites, which is also what the host uses unless it names another Debian archive (then only
 * that archive's SUITE: its -updates/-security suites may not exist for every suite). */
static GPtrArray *build_mirrors(const HutchImageSpec *spec) {
  GPtrArray *mirrors = g_ptr_array_new_with_free_func(g_free);
  if (spec->mirror) {
    g_ptr_array_add(mirrors, g_strdup(spec->mirror));
    return mirrors;
  }
  char *host = hutch_image_host_mirror("/etc/apt");
  if (host && strcmp(host, "http://deb.debian.org/debian") != 0)
    g_ptr_array_add(mirrors, host);
  else
    g_free(host);
  return mirrors;
}

typedef struct {
  HutchContext *ctx;
  const char *phase;
} PhaseLines;

static void bootstrap_line(const char *line, gpointer data) {
  PhaseLines *p = data;
  if (g_str_has_prefix(line, "I: "))
    hutch_progress_update(p->ctx, p->phase, -1, "%s", line + 3);
}

static void convert_line(const char *line, gpointer data) {
  PhaseLines *p = data;
  double percent = 0;
  if (sscanf(line, " (%lf/100%%)", &percent) == 1)
    hutch_progress_update(p->ctx, p->phase, percent / 100, NULL);
}

static gboolean build_into(HutchContext *ctx, const HutchImageSpec *spec, const char *key,
                           const char *work, int lock_fd, GError **error) {
  g_autofree char *tar = g_build_filename(work, "root.tar", NULL);
  g_autofree char *raw = g_build_filename(work, "disk.raw", NULL);
  g_autofree char *qcow2 = g_build_filename(work, "disk.qcow2", NULL);
  g_autoptr(GPtrArray) packages = build_packages(spec);
  g_autoptr(GString) include = g_string_new("--include=");
  for (guint i = 0; i < packages->len; i++)
    g_string_append_printf(include, "%s%s", i ? "," : "",
                           (const char *)g_ptr_array_index(packages, i));
  g_autofree char *early_hook = g_strconcat("--essential-hook=", essential_hook, NULL);
  g_autofree char *hook = g_strconcat("--customize-hook=", customize_hook, NULL);
  g_autoptr(GPtrArray) mirrors = build_mirrors(spec);

  g_autoptr(GStrvBuilder) b = g_strv_builder_new();
  g_strv_builder_add_many(b, "mmdebstrap", geteuid() == 0 ? "--mode=root" : "--mode=unshare",
                          "--variant=apt", "--skip=output/dev", include->str, early_hook, hook,
                          "--", spec->suite, tar, NULL);
  for (guint i = 0; i < mirrors->len; i++)
    g_strv_builder_add(b, g_ptr_array_index(mirrors, i));
  g_auto(GStrv) argv = g_strv_builder_end(b);
  PhaseLines lines = {ctx, "bootstrap"};
  hutch_progress_begin(ctx, "bootstrap", "Debian %s, %u packages", spec->suite, packages->len);
  if (!run_command_locked((const char *const *)argv, "mmdebstrap", bootstrap_line, &lines, lock_fd,
                          error))
    return FALSE;
  hutch_progress_end(ctx, "bootstrap", NULL);

  hutch_progress_begin(ctx, "kernel", "unpacking the root, copying kernel and initrd");
  g_auto(GStrv) unpack = userns_argv(unpack_script, work);
  if (!run_command_locked((const char *const *)unpack, "unpacking the root", NULL, NULL, lock_fd,
                          error))
    return FALSE;
  hutch_progress_end(ctx, "kernel", NULL);

  hutch_progress_begin(ctx, "filesystem", "mkfs.ext4");
  g_auto(GStrv) mkfs = userns_argv(mkfs_script, work);
  if (!run_command_locked((const char *const *)mkfs, "making the root file system", NULL, NULL,
                          lock_fd, error))
    return FALSE;
  hutch_progress_end(ctx, "filesystem", NULL);

  hutch_progress_begin(ctx, "convert", "qcow2, compressed");
  const char *convert[] = {"qemu-img", "convert", "-p", "-c",  "-f", "raw",
                           "-O",       "qcow2",   raw,  qcow2, NULL};
  lines.phase = "convert";
  if (!run_command_locked(convert, "qemu-img convert", convert_line, &lines, lock_fd, error))
    return FALSE;
  g_unlink(raw);
  hutch_progress_end(ctx, "convert", NULL);

  g_autofree char *sha256 = NULL;
  guint64 vsize = 0;
  GStatBuf st;
  if (!inspect_file(qcow2, NULL, &vsize, error) ||
      !hash_file(qcow2, G_CHECKSUM_SHA256, &sha256, NULL, error))
    return FALSE;
  if (g_chmod(qcow2, 0600) < 0 || g_stat(qcow2, &st) < 0) {
    set_errno_error(error, errno, "finishing", qcow2);
    return FALSE;
  }
  JsonObject *spec_obj = json_object_new();
  json_object_set_string_member(spec_obj, "suite", spec->suite);
  JsonArray *pkgs = json_array_new();
  for (guint i = 0; i < packages->len; i++)
    json_array_add_string_element(pkgs, g_ptr_array_index(packages, i));
  json_object_set_array_member(spec_obj, "packages", pkgs);
  if (spec->mirror)
    json_object_set_string_member(spec_obj, "mirror", spec->mirror);
  else
    json_object_set_null_member(spec_obj, "mirror");
  json_object_set_string_member(spec_obj, "recipe", BUILD_RECIPE_VERSION);

  g_autoptr(JsonObject) obj = json_object_new();
  g_autofree char *created = now_iso8601();
  json_object_set_string_member(obj, "key", key);
  json_object_set_string_member(obj, "kind", "build");
  json_object_set_object_member(obj, "spec", spec_obj);
  json_object_set_string_member(obj, "format", "qcow2");
  json_object_set_string_member(obj, "disk", "disk.qcow2");
  json_object_set_string_member(obj, "kernel", "vmlinuz");
  json_object_set_string_member(obj, "initrd", "initrd.img");
  json_object_set_string_member(obj, "cmdline", IMAGE_CMDLINE);
  json_object_set_int_member(obj, "size", st.st_size);
  json_object_set_int_member(obj, "virtual_size", (gint64)vsize);
  json_object_set_string_member(obj, "created", created);
  json_object_set_string_member(obj, "sha256", sha256);
  return write_image_json(work, obj, error);
}

static char *build(HutchContext *ctx, const HutchImageSpec *spec, GError **error) {
  if (!validate_build_spec(spec, error))
    return NULL;
  g_autofree char *key = hutch_image_build_key(spec);
  g_autofree char *images = images_dir();
  if (is_cached(images, key))
    return g_steal_pointer(&key);
  WorkDir work = {NULL, -1};
  if (!work_dir_create(images, &work, error))
    return NULL;
  gboolean ok = build_into(ctx, spec, key, work.path, work.lock_fd, error) &&
                work_dir_commit(&work, images, key, error);
  work_dir_discard(&work);
  return ok ? g_steal_pointer(&key) : NULL;
}

char *hutch_image_build(HutchContext *ctx, HutchProfile *profile, GError **error) {
  /* A downloaded image's fallback can be built ahead, for a machine about to go offline. */
  const HutchImageSpec *spec = profile->image.kind == HUTCH_IMAGE_URL && profile->image.fallback
                                   ? profile->image.fallback
                                   : &profile->image;
  if (spec->kind != HUTCH_IMAGE_BUILD) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "building image: profile '%s' has no image: build: (nor fallback: build:)",
                profile->name ? profile->name : "");
    return NULL;
  }
  char *key = build(ctx, spec, error);
  if (!key)
    g_prefix_error(error, "building image: ");
  return key;
}

/* ---- Resolving, overlays -------------------------------------------------------------- */

static char *member_path(JsonObject *obj, const char *member, const char *dir) {
  const char *name = json_object_has_member(obj, member)
                         ? json_object_get_string_member_with_default(obj, member, NULL)
                         : NULL;
  if (!name || !*name || strchr(name, '/'))
    return NULL;
  return g_build_filename(dir, name, NULL);
}

static HutchImage *load_cached(const char *key, GError **error) {
  g_autofree char *images = images_dir();
  g_autofree char *dir = g_build_filename(images, key, NULL);
  g_autoptr(JsonObject) obj = read_image_json(dir, error);
  if (!obj)
    return NULL;
  g_autoptr(HutchImage) image = g_new0(HutchImage, 1);
  image->key = g_strdup(key);
  image->disk = member_path(obj, "disk", dir);
  image->kernel = member_path(obj, "kernel", dir);
  image->initrd = member_path(obj, "initrd", dir);
  const char *cmdline = json_object_get_string_member_with_default(obj, "cmdline", NULL);
  image->cmdline = image->kernel && cmdline ? g_strdup(cmdline) : NULL;
  if (!image->disk) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE, "image %s: no disk in %s", key, IMAGE_JSON);
    return NULL;
  }
  /* The header is checked again: the cache is the user's to modify. */
  if (!inspect_file(image->disk, &image->format, NULL, error))
    return NULL;
  return g_steal_pointer(&image);
}

/* For `checksums:` when the checksums file cannot be fetched (offline): the newest cached
 * image pulled from the same url and checksums. */
static char *find_cached_by_checksums(const char *url, const char *checksums) {
  g_autofree char *images = images_dir();
  g_autoptr(GDir) dir = g_dir_open(images, 0, NULL);
  const char *name;
  char *best = NULL;
  g_autofree char *best_created = NULL;
  while (dir && (name = g_dir_read_name(dir))) {
    if (!g_str_has_prefix(name, "url-"))
      continue;
    g_autofree char *path = g_build_filename(images, name, NULL);
    g_autoptr(JsonObject) obj = read_image_json(path, NULL);
    JsonObject *spec = obj ? json_object_get_object_member(obj, "spec") : NULL;
    if (!spec || g_strcmp0(json_object_get_string_member_with_default(spec, "url", NULL), url) ||
        g_strcmp0(json_object_get_string_member_with_default(spec, "checksums", NULL), checksums))
      continue;
    const char *created = json_object_get_string_member_with_default(obj, "created", "");
    if (!best || strcmp(created, best_created) > 0) {
      g_free(best);
      g_free(best_created);
      best = g_strdup(name);
      best_created = g_strdup(created);
    }
  }
  return best;
}

/* The cache key of spec's download; *ret_unreachable says why when the download (of the
 * checksums or of the file) could not be made at all. */
static char *resolve_url(HutchContext *ctx, const HutchImageSpec *spec, char **ret_unreachable,
                         GError **error) {
  g_autofree char *images = images_dir();
  g_autofree char *digest = g_strdup(spec->digest);
  if (!digest && spec->checksums) {
    g_autoptr(GError) fetch_error = NULL;
    g_autofree char *unreachable = NULL;
    digest = fetch_digest(spec->url, spec->checksums, &unreachable, &fetch_error);
    if (!digest) {
      char *key = find_cached_by_checksums(spec->url, spec->checksums);
      if (key)
        return key;
      *ret_unreachable = g_steal_pointer(&unreachable);
      g_propagate_prefixed_error(error, g_steal_pointer(&fetch_error),
                                 "resolving image %s: ", spec->url);
      return NULL;
    }
  }
  g_autofree char *expected = hutch_image_url_key(digest, NULL);
  gboolean cached = expected && is_cached(images, expected);
  hutch_progress_begin(ctx, "image", "%s", spec->url);
  char *key = pull(ctx, spec->url, digest, spec->checksums, ret_unreachable, error);
  if (!key) {
    g_prefix_error(error, "pulling image: ");
    return NULL;
  }
  hutch_progress_end(ctx, "image", "%s%s", key, cached ? " (cached)" : "");
  return key;
}

/* fallback_why: NULL for an image: build:, else why the download it replaces failed. */
static char *resolve_build(HutchContext *ctx, const HutchImageSpec *spec, const char *fallback_why,
                           GError **error) {
  g_autofree char *images = images_dir();
  const char *suite = spec->suite ? spec->suite : "";
  if (fallback_why)
    hutch_progress_note(ctx, "cannot download %s: building Debian %s locally from %s instead",
                        fallback_why, suite, spec->mirror ? spec->mirror : "the Debian mirror");
  g_autofree char *expected = hutch_image_build_key(spec);
  gboolean cached = is_cached(images, expected);
  const char *how = fallback_why ? ", built locally" : "";
  hutch_progress_begin(ctx, "image", "Debian %s%s", suite, how);
  char *key = build(ctx, spec, error);
  if (!key) {
    g_prefix_error(error, "building image%s: ", fallback_why ? " (the download's fallback)" : "");
    return NULL;
  }
  hutch_progress_end(ctx, "image", "%s%s%s", key, how, cached ? " (cached)" : "");
  return key;
}

HutchImage *hutch_image_resolve(HutchContext *ctx, const HutchProfile *profile, GError **error) {
  const HutchImageSpec *spec = &profile->image;
  g_autofree char *key = NULL;
  switch (spec->kind) {
  case HUTCH_IMAGE_FILE: {
    if (!spec->file || !g_path_is_absolute(spec->file)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "image file must be an absolute "
                  "path");
      return NULL;
    }
    g_autoptr(HutchImage) image = g_new0(HutchImage, 1);
    image->disk = g_strdup(spec->file);
    if (!inspect_file(image->disk, &image->format, NULL, error))
      return NULL;
    return g_steal_pointer(&image);
  }
  case HUTCH_IMAGE_URL: {
    g_autoptr(GError) local = NULL;
    g_autofree char *unreachable = NULL;
    key = resolve_url(ctx, spec, &unreachable, &local);
    /* Only a download that could not be made falls back: a file that arrived and is wrong
     * (digest, header, no checksum for it) stays an error. */
    if (!key && unreachable && spec->fallback) {
      key = resolve_build(ctx, spec->fallback, unreachable, error);
    } else if (!key) {
      if (unreachable) {
        char *message = g_strdup_printf("%s (the profile's image has no fallback: to build "
                                        "instead; see hutch-profile(5))",
                                        local->message);
        g_free(local->message);
        local->message = message;
      }
      g_propagate_error(error, g_steal_pointer(&local));
    }
    if (!key)
      return NULL;
    break;
  }
  case HUTCH_IMAGE_BUILD:
    key = resolve_build(ctx, spec, NULL, error);
    if (!key)
      return NULL;
    break;
  case HUTCH_IMAGE_TEMPLATE:
    key = g_strconcat(HUTCH_TEMPLATE_KEY_PREFIX, spec->template, NULL);
    if (!hutch_image_is_cached(key)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
                  "no template '%s' (hutch template list shows them)", spec->template);
      return NULL;
    }
    break;
  case HUTCH_IMAGE_NONE:
  case HUTCH_IMAGE_N:
  default:
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "profile '%s' names no image",
                profile->name ? profile->name : "");
    return NULL;
  }
  return load_cached(key, error);
}

gboolean hutch_image_create_overlay(const HutchImage *image, const char *overlay, guint64 size,
                                    GError **error) {
  guint64 vsize = 0;
  if (!inspect_file(image->disk, NULL, &vsize, error)) {
    g_prefix_error(error, "creating overlay %s: ", overlay);
    return FALSE;
  }
  g_autofree char *size_arg = g_strdup_printf("%" G_GUINT64_FORMAT, MAX(size, vsize));
  const char *argv[] = {"qemu-img",    "create", "-q",        "-f",    "qcow2",  "-F",
                        image->format, "-b",     image->disk, overlay, size_arg, NULL};
  if (!run_command(argv, "qemu-img create", NULL, NULL, error)) {
    g_prefix_error(error, "creating overlay %s: ", overlay);
    g_unlink(overlay);
    return FALSE;
  }
  if (g_chmod(overlay, 0600) < 0) {
    set_errno_error(error, errno, "creating overlay", overlay);
    return FALSE;
  }
  return TRUE;
}

gboolean hutch_image_create_copy(const HutchImage *image, const char *out, guint64 size,
                                 GError **error) {
  guint64 vsize = 0;
  if (!inspect_file(image->disk, NULL, &vsize, error)) {
    g_prefix_error(error, "copying the image to %s: ", out);
    return FALSE;
  }
  g_autofree char *size_arg = g_strdup_printf("%" G_GUINT64_FORMAT, MAX(size, vsize));
  /* no backing file in the copy: -O qcow2 writes the whole image, holes kept */
  const char *convert[] = {"qemu-img", "convert", "-q",        "-f", image->format,
                           "-O",       "qcow2",   image->disk, out,  NULL};
  const char *resize[] = {"qemu-img", "resize", "-q", "-f", "qcow2", out, size_arg, NULL};
  mode_t old = umask(077); /* never readable by others, not even while it is written */
  gboolean ok =
      run_command(convert, "qemu-img convert", NULL, NULL, error) &&
      (MAX(size, vsize) == vsize || run_command(resize, "qemu-img resize", NULL, NULL, error));
  umask(old);
  if (!ok || g_chmod(out, 0600) < 0) {
    if (ok)
      set_errno_error(error, errno, "copying the image to", out);
    g_prefix_error(error, "copying the image to %s: ", out);
    g_unlink(out);
    return FALSE;
  }
  return TRUE;
}

/* qemu-img convert of the qcow2 source to the qcow2 out, onto backing (with its format) or
 * standalone (backing NULL); out is 0600, or removed on failure. */
static gboolean convert_qcow2(const char *source, const char *out, const char *backing,
                              const char *backing_format, GError **error) {
  const char *argv[16] = {"qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2"};
  int n = 7;
  if (backing) {
    argv[n++] = "-B";
    argv[n++] = backing;
    argv[n++] = "-F";
    argv[n++] = backing_format;
  }
  argv[n++] = source;
  argv[n++] = out;
  argv[n] = NULL;
  if (!run_command(argv, "qemu-img convert", NULL, NULL, error)) {
    g_prefix_error(error, "copying %s: ", source);
    g_unlink(out);
    return FALSE;
  }
  if (g_chmod(out, 0600) < 0) {
    set_errno_error(error, errno, "copying the disk", out);
    g_unlink(out);
    return FALSE;
  }
  return TRUE;
}

gboolean hutch_image_copy_overlay(const HutchImage *image, const char *source, const char *overlay,
                                  GError **error) {
  return convert_qcow2(source, overlay, image->disk, image->format, error);
}

gboolean hutch_image_flatten(const char *overlay, const char *out, GError **error) {
  return convert_qcow2(overlay, out, NULL, NULL, error);
}

/* The overlay is hutch's own file (with a backing file, which inspect_file rightly refuses in
 * an image): its size is read from the qcow2 header (big-endian, at offset 24). */
gboolean hutch_image_overlay_size(const char *overlay, guint64 *ret_size, GError **error) {
  gsize len = 0;
  g_autofree char *header = hutch_read_file_part(overlay, 32, FALSE, &len, error);
  if (!header) {
    g_prefix_error(error, "reading the size of %s: ", overlay);
    return FALSE;
  }
  if (len < 32 || memcmp(header, "QFI\xfb", 4) != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "reading the size of %s: not qcow2",
                overlay);
    return FALSE;
  }
  guint64 size_be;
  memcpy(&size_be, header + 24, sizeof size_be);
  *ret_size = GUINT64_FROM_BE(size_be);
  return TRUE;
}

gboolean hutch_image_grow_overlay(const char *overlay, guint64 size, GError **error) {
  guint64 current = 0;
  if (!hutch_image_overlay_size(overlay, &current, error))
    return FALSE;
  if (size < current) {
    g_autofree char *want = hutch_format_size(size);
    g_autofree char *have = hutch_format_size(current);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "disk: %s is smaller than the disk's %s: a disk only grows", want, have);
    return FALSE;
  }
  if (size == current)
    return TRUE;
  g_autofree char *size_arg = g_strdup_printf("%" G_GUINT64_FORMAT, size);
  const char *argv[] = {"qemu-img", "resize", "-q", "-f", "qcow2", overlay, size_arg, NULL};
  if (!run_command(argv, "qemu-img resize", NULL, NULL, error)) {
    g_prefix_error(error, "growing %s: ", overlay);
    return FALSE;
  }
  return TRUE;
}

/* ---- Listing and removal -------------------------------------------------------------- */

/* key -> GPtrArray of instance names that use it. */
static GHashTable *image_users(void) {
  GHashTable *users =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_ptr_array_unref);
  g_autofree char *data = hutch_data_dir();
  g_autofree char *instances = g_build_filename(data, "instances", NULL);
  g_autoptr(GDir) dir = g_dir_open(instances, 0, NULL);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)))
    g_ptr_array_add(names, g_strdup(name));
  g_ptr_array_sort(names, compare_strings);
  for (guint i = 0; i < names->len; i++) {
    const char *instance = g_ptr_array_index(names, i);
    g_autofree char *path =
        g_build_filename(instances, instance, HUTCH_INSTANCE_IMAGE_KEY_FILE, NULL);
    g_autofree char *key = NULL;
    if (!g_file_get_contents(path, &key, NULL, NULL))
      continue;
    /* a VM on qemu:///system has its own copy of the image's disk, kernel and initrd */
    g_autofree char *instance_dir = g_build_filename(instances, instance, NULL);
    if (hutch_instance_dir_is_system(instance_dir))
      continue;
    g_strstrip(key);
    GPtrArray *list = g_hash_table_lookup(users, key);
    if (!list) {
      list = g_ptr_array_new_with_free_func(g_free);
      g_hash_table_insert(users, g_strdup(key), list);
    }
    g_ptr_array_add(list, g_strdup(instance));
  }
  return users;
}

static const char *image_source(JsonObject *obj) {
  JsonObject *spec =
      json_object_has_member(obj, "spec") ? json_object_get_object_member(obj, "spec") : NULL;
  if (!spec)
    return NULL;
  const char *suite = json_object_get_string_member_with_default(spec, "suite", NULL);
  const char *template = json_object_get_string_member_with_default(spec, "template", NULL);
  return suite      ? suite
         : template ? template
                    : json_object_get_string_member_with_default(spec, "url", NULL);
}

/* Sorted keys of complete cache entries. */
static GPtrArray *cached_keys(const char *images) {
  GPtrArray *keys = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GDir) dir = g_dir_open(images, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)))
    if (name[0] != '.' && is_cached(images, name))
      g_ptr_array_add(keys, g_strdup(name));
  g_ptr_array_sort(keys, compare_strings);
  return keys;
}

JsonArray *hutch_image_list(HutchContext *ctx, GError **error) {
  g_autofree char *images = images_dir();
  g_autoptr(GPtrArray) keys = cached_keys(images);
  g_autoptr(GHashTable) users = image_users();
  JsonArray *list = json_array_new();
  for (guint i = 0; i < keys->len; i++) {
    const char *key = g_ptr_array_index(keys, i);
    g_autofree char *dir = g_build_filename(images, key, NULL);
    g_autoptr(JsonObject) obj = read_image_json(dir, NULL);
    if (!obj)
      continue;
    JsonObject *item = json_object_new();
    json_object_set_string_member(item, "key", key);
    json_object_set_string_member(item, "kind",
                                  json_object_get_string_member_with_default(obj, "kind", ""));
    json_object_set_string_member(item, "source", image_source(obj));
    json_object_set_int_member(item, "size",
                               json_object_get_int_member_with_default(obj, "size", 0));
    json_object_set_string_member(item, "created",
                                  json_object_get_string_member_with_default(obj, "created", NULL));
    const char *kernel = json_object_has_member(obj, "kernel")
                             ? json_object_get_string_member_with_default(obj, "kernel", NULL)
                             : NULL;
    json_object_set_boolean_member(item, "kernel", kernel != NULL);
    JsonArray *used = json_array_new();
    GPtrArray *names = g_hash_table_lookup(users, key);
    for (guint j = 0; names && j < names->len; j++)
      json_array_add_string_element(used, g_ptr_array_index(names, j));
    json_object_set_array_member(item, "used_by", used);
    json_array_add_object_element(list, item);
  }
  return list;
}

/* key_or_name: a key, a unique prefix of one, or a source (suite or URL) that names exactly
 * one cached image. */
static char *find_key(const char *images, const char *key_or_name, GError **error) {
  g_autoptr(GPtrArray) keys = cached_keys(images);
  g_autoptr(GPtrArray) matches = g_ptr_array_new();
  for (guint i = 0; i < keys->len; i++) {
    const char *key = g_ptr_array_index(keys, i);
    if (strcmp(key, key_or_name) == 0)
      return g_strdup(key);
  }
  for (guint i = 0; i < keys->len; i++) {
    const char *key = g_ptr_array_index(keys, i);
    g_autofree char *dir = g_build_filename(images, key, NULL);
    g_autoptr(JsonObject) obj = read_image_json(dir, NULL);
    if (g_str_has_prefix(key, key_or_name) ||
        (obj && g_strcmp0(image_source(obj), key_or_name) == 0))
      g_ptr_array_add(matches, (gpointer)key);
  }
  if (matches->len == 1)
    return g_strdup(g_ptr_array_index(matches, 0));
  if (matches->len == 0)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND, "no cached image '%s'", key_or_name);
  else
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "'%s' names %u cached images: give the key",
                key_or_name, matches->len);
  return NULL;
}

gboolean hutch_image_remove(HutchContext *ctx, const char *key_or_name, GError **error) {
  g_autofree char *images = images_dir();
  g_autofree char *key = find_key(images, key_or_name ? key_or_name : "", error);
  if (!key) {
    g_prefix_error(error, "removing image: ");
    return FALSE;
  }
  g_autoptr(GHashTable) users = image_users();
  GPtrArray *names = g_hash_table_lookup(users, key);
  if (names && names->len > 0) {
    g_ptr_array_add(names, NULL);
    g_autofree char *joined = g_strjoinv(", ", (char **)names->pdata);
    g_ptr_array_remove_index(names, names->len - 1);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "removing image %s: used by instance%s %s",
                key, names->len > 1 ? "s" : "", joined);
    return FALSE;
  }
  /* Renamed first, so a half-removed entry never looks like a complete image. */
  g_autofree char *dir = g_build_filename(images, key, NULL);
  g_autofree char *doomed = g_build_filename(images, ".tmp-remove-XXXXXX", NULL);
  if (!g_mkdtemp_full(doomed, 0700) || g_rename(dir, doomed) < 0) {
    set_errno_error(error, errno, "removing image", key);
    g_rmdir(doomed);
    return FALSE;
  }
  return remove_tree(doomed, error);
}
