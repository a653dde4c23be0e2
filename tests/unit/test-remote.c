/* test-remote.c: hutch against another host (lib/remote.c): the URI, the ssh command line
 * built from it (nothing in it can become an ssh option or a shell word it was not), and cp's
 * tar stream, written and read with hutch cp's rules (links and special files skipped, only
 * the expected names, nothing written through a planted link). The far side itself is the e2e
 * suite's (tests/e2e/remote.sh). */
#include "config.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "remote-private.h"
#include "util-private.h"

#define NOBODY 65534

static char *tmp;

static char *path_in(const char *name) {
  return g_build_filename(tmp, name, NULL);
}

static void write_text(const char *path, const char *text, mode_t mode) {
  g_autoptr(GError) error = NULL;
  g_assert_true(g_file_set_contents(path, text, -1, &error));
  g_assert_no_error(error);
  g_assert_cmpint(chmod(path, mode), ==, 0);
}

static char *read_text(const char *path) {
  char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return text;
}

/* A link as a guest would plant it: not root's. */
static void plant_link(const char *target, const char *path) {
  g_assert_cmpint(symlink(target, path), ==, 0);
  if (getuid() == 0)
    g_assert_cmpint(lchown(path, NOBODY, NOBODY), ==, 0);
}

static GStrv ssh_argv_for(const char *uri) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchRemote) remote = hutch_remote_new(uri, &error);
  g_assert_no_error(error);
  g_assert_nonnull(remote);
  return hutch_remote_ssh_argv(remote, FALSE, FALSE, "LINE");
}

static void test_uri(void) {
  g_unsetenv("HUTCH_REMOTE_PROGRAM");
  g_auto(GStrv) full = ssh_argv_for("qemu+ssh://alice@build.example:2222/session");
  const char *const expect_full[] = {
      "ssh", "-e", "none", "-T", "-p", "2222", "--", "alice@build.example", "LINE", NULL};
  g_assert_cmpstrv(full, expect_full);
  g_auto(GStrv) plain = ssh_argv_for("QEMU+SSH://box/system?keyfile=/home/a/.ssh/k");
  const char *const expect_plain[] = {"ssh", "-e",  "none", "-T", "-i", "/home/a/.ssh/k",
                                      "--",  "box", "LINE", NULL};
  g_assert_cmpstrv(plain, expect_plain);

  g_autoptr(GError) error = NULL;
  g_autoptr(HutchRemote) system = hutch_remote_new("qemu+ssh://box/system", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(hutch_remote_host(system), ==, "box");
  g_auto(GStrv) no_stdin = hutch_remote_ssh_argv(system, TRUE, TRUE, "LINE");
  const char *const expect_no_stdin[] = {"ssh", "-e",  "none", "-t", "-n",
                                         "--",  "box", "LINE", NULL};
  g_assert_cmpstrv(no_stdin, expect_no_stdin);
  const char *const args[] = {"list", NULL};
  g_autofree char *line = hutch_remote_hutch_line(system, args);
  g_assert_cmpstr(line, ==, "'hutch' '-c' 'qemu:///system' 'list'");
  g_autoptr(HutchRemote) v6 = hutch_remote_new("qemu+ssh://u@[::1]:22/session", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(hutch_remote_host(v6), ==, "::1");

  /* each refused before anything runs, as a usage error */
  const char *const bad[] = {
      "qemu:///session",                          /* not remote */
      "qemu+ssh://box",                           /* no daemon */
      "qemu+ssh://box/",                          /* no daemon */
      "qemu+ssh://box/other",                     /* no such daemon */
      "qemu+ssh://box/session?no_verify=1",       /* never without the host key check */
      "qemu+ssh://box/session?socket=/x",         /* libvirt's, not hutch's */
      "qemu+ssh://box/session?keyfile=",          /* empty */
      "qemu+ssh://-oProxyCommand=sh/session",     /* an ssh option for a host */
      "qemu+ssh://-oProxyCommand=sh@box/session", /* and for a user */
      "qemu+ssh://a%20b@box/session",             /* a space in the user */
      "qemu+ssh://box%3Bid/session",              /* ';' in the host */
      "qemu+ssh://u:pw@box/session",              /* a password */
      "qemu+ssh://box/session#x",                 /* a fragment */
      "qemu+ssh:///session",                      /* no host */
      "qemu+ssh://box:0/session",                 /* no port */
  };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) bad_error = NULL;
    g_autoptr(HutchRemote) remote = hutch_remote_new(bad[i], &bad_error);
    if (remote || !g_error_matches(bad_error, HUTCH_ERROR, HUTCH_ERROR_USAGE))
      g_error("%s: taken (%s)", bad[i], bad_error ? bad_error->message : "no error");
  }
}

/* Every word reaches the far side's shell as itself. */
static void test_command_line(void) {
  g_setenv("HUTCH_REMOTE_PROGRAM", "/opt/hutch dev/bin/hutch", TRUE);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchRemote) remote = hutch_remote_new("qemu+ssh://box/session", &error);
  g_unsetenv("HUTCH_REMOTE_PROGRAM");
  g_assert_no_error(error);
  const char *const args[] = {"shell", "dev",       "--", "echo",   "it's", "$(id)", "a;b",
                              "`x`",   "new\nline", "",   "--json", "*",    NULL};
  g_autofree char *line = hutch_remote_hutch_line(remote, args);
  g_auto(GStrv) parsed = NULL;
  g_assert_true(g_shell_parse_argv(line, NULL, &parsed, &error));
  g_assert_no_error(error);
  const char *const expect[] = {"/opt/hutch dev/bin/hutch",
                                "-c",
                                "qemu:///session",
                                "shell",
                                "dev",
                                "--",
                                "echo",
                                "it's",
                                "$(id)",
                                "a;b",
                                "`x`",
                                "new\nline",
                                "",
                                "--json",
                                "*",
                                NULL};
  g_assert_cmpstrv(parsed, expect);
  /* a shell, not GLib's parser: sh -c 'printf "%s|" WORDS' prints them as given */
  g_autofree char *printf_line = g_strconcat("printf '%s|' ", line, NULL);
  const char *const sh[] = {"/bin/sh", "-c", printf_line, NULL};
  g_autofree char *out = NULL;
  int status = -1;
  g_assert_true(g_spawn_sync(NULL, (char **)sh, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, NULL,
                             &status, &error));
  g_assert_no_error(error);
  g_assert_cmpstr(out, ==,
                  "/opt/hutch dev/bin/hutch|-c|qemu:///session|shell|dev|--|echo|it's|$(id)|a;b|"
                  "`x`|new\nline||--json|*|");
}

/* A tree, its stream in a file, and that file read back elsewhere. */
static int stream_of(const char *src, gboolean recursive, GError **error) {
  g_autofree char *stream = path_in("stream.tar");
  int fd = open(stream, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(fd, >=, 0);
  g_autofree char *base = NULL;
  if (!hutch_remote_tar_write(fd, src, recursive, &base, error)) {
    close(fd);
    return -1;
  }
  g_autofree char *expect_base = g_path_get_basename(src);
  g_assert_cmpstr(base, ==, expect_base);
  g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
  return fd;
}

static void test_tar_roundtrip(void) {
  g_autofree char *src = path_in("proj");
  g_autofree char *sub = path_in("proj/sub");
  g_assert_cmpint(g_mkdir_with_parents(sub, 0755), ==, 0);
  g_autofree char *a = path_in("proj/a.txt");
  g_autofree char *b = path_in("proj/sub/b.sh");
  write_text(a, "alpha\n", 0640);
  write_text(b, "#!/bin/sh\n", 04755);
  /* a name that is not ASCII (hutch runs in the C locale: written and read as its bytes) */
  g_autofree char *accented = path_in("proj/caf\xc3\xa9.txt");
  write_text(accented, "au lait\n", 0644);
  g_autofree char *secret = path_in("secret");
  write_text(secret, "host secret\n", 0600);
  /* a link into the user's secrets, in a tree the user copies (a cloned repository) */
  g_autofree char *key_link = path_in("proj/sub/key");
  plant_link(secret, key_link);
  g_autofree char *fifo = path_in("proj/fifo");
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);

  g_autoptr(GError) error = NULL;
  g_assert_cmpint(stream_of(src, FALSE, &error), ==, -1);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_clear_error(&error);

  /* a new name: the copy is made as it */
  int fd = stream_of(src, TRUE, &error);
  g_assert_no_error(error);
  g_autofree char *copy = path_in("copy");
  g_assert_true(hutch_remote_tar_extract(fd, "proj", copy, &error));
  g_assert_no_error(error);
  close(fd);
  g_autofree char *copy_a = path_in("copy/a.txt");
  g_autofree char *copy_b = path_in("copy/sub/b.sh");
  g_autofree char *text = read_text(copy_a);
  g_assert_cmpstr(text, ==, "alpha\n");
  struct stat st;
  g_assert_cmpint(stat(copy_a, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0640);
  g_assert_cmpint(stat(copy_b, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0755); /* no setuid bit */
  g_autofree char *copy_accented = path_in("copy/caf\xc3\xa9.txt");
  g_autofree char *accented_text = read_text(copy_accented);
  g_assert_cmpstr(accented_text, ==, "au lait\n");
  g_autofree char *copy_key = path_in("copy/sub/key");
  g_autofree char *copy_fifo = path_in("copy/fifo");
  g_assert_cmpint(lstat(copy_key, &st), ==, -1);
  g_assert_cmpint(lstat(copy_fifo, &st), ==, -1);

  /* an existing directory: the copy goes in, under its own name */
  g_autofree char *into = path_in("into");
  g_assert_cmpint(g_mkdir(into, 0700), ==, 0);
  fd = stream_of(src, TRUE, &error);
  g_autofree char *into_slash = g_strconcat(into, "/", NULL);
  g_assert_true(hutch_remote_tar_extract(fd, "proj", into_slash, &error));
  g_assert_no_error(error);
  close(fd);
  g_autofree char *into_a = path_in("into/proj/a.txt");
  g_assert_true(g_file_test(into_a, G_FILE_TEST_IS_REGULAR));

  /* one file over an existing one: replaced */
  g_autofree char *old = path_in("old.txt");
  write_text(old, "old\n", 0600);
  fd = stream_of(a, FALSE, &error);
  g_assert_true(hutch_remote_tar_extract(fd, "a.txt", old, &error));
  g_assert_no_error(error);
  close(fd);
  g_autofree char *replaced = read_text(old);
  g_assert_cmpstr(replaced, ==, "alpha\n");

  /* a file that is a hard link to one outside (a uv or pnpm cache): replaced, the outside
   * one unchanged */
  g_autofree char *shared = path_in("shared-cache-file");
  write_text(shared, "cache\n", 0644);
  g_autofree char *linked_copy = path_in("into/proj/a.txt");
  g_assert_cmpint(g_unlink(linked_copy), ==, 0);
  g_assert_cmpint(link(shared, linked_copy), ==, 0);
  fd = stream_of(src, TRUE, &error);
  g_assert_true(hutch_remote_tar_extract(fd, "proj", into_slash, &error));
  g_assert_no_error(error);
  close(fd);
  g_autofree char *cache_text = read_text(shared);
  g_assert_cmpstr(cache_text, ==, "cache\n");
  g_autofree char *relinked = read_text(linked_copy);
  g_assert_cmpstr(relinked, ==, "alpha\n");

  /* a directory that ends in '/' must exist */
  fd = stream_of(a, FALSE, &error);
  g_autofree char *missing = path_in("missing/");
  g_assert_false(hutch_remote_tar_extract(fd, "a.txt", missing, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  close(fd);
}

/* Modes come back through the user's umask, as hutch cp's downloads. */
static void test_extract_umask(void) {
  g_autofree char *src = path_in("open.txt");
  write_text(src, "x\n", 0666);
  g_autoptr(GError) error = NULL;
  int fd = stream_of(src, FALSE, &error);
  g_assert_no_error(error);
  mode_t saved = umask(077);
  g_autofree char *dst = path_in("private.txt");
  gboolean ok = hutch_remote_tar_extract(fd, "open.txt", dst, &error);
  umask(saved);
  close(fd);
  g_assert_no_error(error);
  g_assert_true(ok);
  struct stat st;
  g_assert_cmpint(stat(dst, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0600);
}

typedef struct {
  const char *path;
  mode_t type;
  const char *target; /* a link's */
} Entry;

/* A stream as a hostile far side could send it. */
static int crafted(const Entry *entries, guint n) {
  g_autofree char *stream = path_in("crafted.tar");
  int fd = open(stream, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(fd, >=, 0);
  struct archive *a = archive_write_new();
  g_assert_cmpint(archive_write_set_format_pax_restricted(a), ==, ARCHIVE_OK);
  g_assert_cmpint(archive_write_open_fd(a, fd), ==, ARCHIVE_OK);
  for (guint i = 0; i < n; i++) {
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, entries[i].path);
    archive_entry_set_filetype(e, entries[i].type);
    archive_entry_set_perm(e, 0644);
    /* a target on a regular file: a hard link entry */
    if (entries[i].target && entries[i].type == AE_IFLNK)
      archive_entry_set_symlink(e, entries[i].target);
    else if (entries[i].target)
      archive_entry_set_hardlink(e, entries[i].target);
    gboolean data = entries[i].type == AE_IFREG && !entries[i].target;
    archive_entry_set_size(e, data ? 4 : 0);
    g_assert_cmpint(archive_write_header(a, e), ==, ARCHIVE_OK);
    if (data)
      g_assert_cmpint(archive_write_data(a, "evil", 4), ==, 4);
    archive_entry_free(e);
  }
  g_assert_cmpint(archive_write_close(a), ==, ARCHIVE_OK);
  archive_write_free(a);
  g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
  return fd;
}

static void test_extract_refuses(void) {
  g_autofree char *dest = path_in("dest");
  g_assert_cmpint(g_mkdir(dest, 0700), ==, 0);
  g_autofree char *outside = path_in("outside");
  g_assert_cmpint(g_mkdir(outside, 0700), ==, 0);
  const Entry cases[][2] = {
      {{"base", AE_IFDIR, NULL}, {"base/../escaped", AE_IFREG, NULL}},
      {{"base", AE_IFDIR, NULL}, {"/tmp/escaped", AE_IFREG, NULL}},
      {{"base", AE_IFDIR, NULL}, {"other/escaped", AE_IFREG, NULL}},
      {{"base", AE_IFDIR, NULL}, {"base/link", AE_IFLNK, "/etc/passwd"}},
      {{"base", AE_IFDIR, NULL}, {"base/dev", AE_IFCHR, NULL}},
      {{"base", AE_IFDIR, NULL}, {"base//x", AE_IFREG, NULL}},
      {{"base", AE_IFDIR, NULL}, {"base/hard", AE_IFREG, "/etc/passwd"}},
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    int fd = crafted(cases[i], 2);
    g_autoptr(GError) error = NULL;
    if (hutch_remote_tar_extract(fd, "base", dest, &error))
      g_error("case %u (%s): taken", i, cases[i][1].path);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
    close(fd);
  }
  /* where each would have landed: beside the destination, in it, or at its absolute name */
  g_autofree char *escaped = path_in("escaped");
  g_autofree char *escaped_in = path_in("dest/escaped");
  g_autofree char *other = path_in("dest/other");
  g_assert_false(g_file_test(escaped, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(escaped_in, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(other, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test("/tmp/escaped", G_FILE_TEST_EXISTS));

  /* a link planted where the copy's directory goes: nothing is written through it */
  g_autofree char *linked = path_in("linked");
  g_assert_cmpint(g_mkdir(linked, 0700), ==, 0);
  g_autofree char *planted = path_in("linked/base");
  plant_link(outside, planted);
  const Entry through[] = {{"base", AE_IFDIR, NULL}, {"base/x", AE_IFREG, NULL}};
  int fd = crafted(through, 2);
  g_autoptr(GError) error = NULL;
  g_assert_false(hutch_remote_tar_extract(fd, "base", linked, &error));
  g_assert_nonnull(error);
  close(fd);
  g_autofree char *outside_x = path_in("outside/x");
  g_assert_false(g_file_test(outside_x, G_FILE_TEST_EXISTS));

  /* an empty stream is no copy */
  fd = crafted(NULL, 0);
  g_clear_error(&error);
  g_autofree char *empty_dest = path_in("empty-copy");
  g_assert_false(hutch_remote_tar_extract(fd, "base", empty_dest, &error));
  g_assert_nonnull(error);
  close(fd);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  tmp = g_dir_make_tmp("hutch-test-remote-XXXXXX", NULL);
  g_assert_nonnull(tmp);
  g_test_add_func("/remote/uri", test_uri);
  g_test_add_func("/remote/command-line", test_command_line);
  g_test_add_func("/remote/tar-roundtrip", test_tar_roundtrip);
  g_test_add_func("/remote/extract-refuses", test_extract_refuses);
  g_test_add_func("/remote/extract-umask", test_extract_umask);
  int rc = g_test_run();
  if (!g_getenv("HUTCH_KEEP_TEST_DIR"))
    hutch_rmtree(tmp, NULL);
  g_free(tmp);
  return rc;
}
