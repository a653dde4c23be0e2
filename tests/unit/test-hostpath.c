/* test-hostpath.c: the path walker (lib/hostpath.c): names from a guest, links that only root
 * may own, and the descriptor-relative steps of a copy. Works as root and as an ordinary
 * user: the links standing for ones a guest planted are given to nobody when we are root. */
#define _GNU_SOURCE /* O_PATH */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "hostpath-private.h"
#include "util-private.h"

#define NOBODY 65534
/* An ordinary user, for hutch_hostpath_open_as. */
#define USER 1000

static char *tmp;

/* A link as a guest would plant it through a share: not root's. */
static void plant_link(const char *target, const char *path) {
  g_assert_cmpint(symlink(target, path), ==, 0);
  if (getuid() == 0)
    g_assert_cmpint(lchown(path, NOBODY, NOBODY), ==, 0);
}

static char *path_in(const char *name) {
  return g_build_filename(tmp, name, NULL);
}

static void write_text(const char *path, const char *text) {
  g_autoptr(GError) error = NULL;
  g_assert_true(g_file_set_contents(path, text, -1, &error));
  g_assert_no_error(error);
}

static void assert_text(const char *path, const char *text) {
  g_autofree char *got = NULL;
  g_assert_true(g_file_get_contents(path, &got, NULL, NULL));
  g_assert_cmpstr(got, ==, text);
}

static void test_names(void) {
  g_assert_false(hutch_hostpath_name_is_safe("", 0));
  g_assert_false(hutch_hostpath_name_is_safe(".", 1));
  g_assert_false(hutch_hostpath_name_is_safe("..", 2));
  g_assert_false(hutch_hostpath_name_is_safe("a/b", 3));
  g_assert_false(hutch_hostpath_name_is_safe("/", 1));
  g_assert_false(hutch_hostpath_name_is_safe("../x", 4));
  g_assert_false(hutch_hostpath_name_is_safe("a\0b", 3));
  g_assert_false(hutch_hostpath_name_is_safe("..\0", 3));
  g_assert_false(hutch_hostpath_name_is_safe(NULL, 0));
  g_assert_true(hutch_hostpath_name_is_safe("a", 1));
  g_assert_true(hutch_hostpath_name_is_safe("...", 3));
  g_assert_true(hutch_hostpath_name_is_safe(".ssh", 4));
  g_assert_true(hutch_hostpath_name_is_safe("c with space", 12));
  g_assert_true(hutch_hostpath_name_is_safe("a\\b", 3));
  /* Only len bytes count: "ab" of "abc". */
  g_assert_true(hutch_hostpath_name_is_safe("ab/", 2));

  g_autofree char *plain = hutch_hostpath_name_display("x.txt", 5);
  g_assert_cmpstr(plain, ==, "x.txt");
  g_autofree char *hostile = hutch_hostpath_name_display("\x1b]0;hi\x07\\\0/\xc3\xa9", 12);
  g_assert_cmpstr(hostile, ==, "\\x1b]0;hi\\x07\\x5c\\x00/\\xc3\\xa9");
  char long_name[100];
  memset(long_name, 'a', sizeof long_name);
  g_autofree char *cut = hutch_hostpath_name_display(long_name, sizeof long_name);
  g_assert_cmpuint(strlen(cut), ==, 64 + 3);
  g_assert_true(g_str_has_suffix(cut, "a..."));
}

static void test_link_trust(void) {
  struct stat st = {.st_mode = S_IFLNK | 0777, .st_uid = 0};
  g_assert_true(hutch_hostpath_link_is_trusted(&st, USER));
  /* hutch as root: guest root's links in a share are root's too. */
  g_assert_false(hutch_hostpath_link_is_trusted(&st, 0));
  st.st_uid = USER;
  g_assert_false(hutch_hostpath_link_is_trusted(&st, USER));
  st.st_uid = NOBODY;
  g_assert_false(hutch_hostpath_link_is_trusted(&st, USER));
  st = (struct stat){.st_mode = S_IFDIR | 0755, .st_uid = 0};
  g_assert_false(hutch_hostpath_link_is_trusted(&st, USER));

  g_autoptr(GError) error = NULL;
  hutch_hostpath_refuse_link(&error, "follow", "/s/x", USER);
  g_assert_cmpstr(error->message, ==,
                  "refusing to follow the symbolic link /s/x (not owned by root; a guest could "
                  "have planted it through a share): name the real path");
  g_clear_error(&error);
  hutch_hostpath_refuse_link(&error, "write through", "/s/x", 0);
  g_assert_cmpstr(error->message, ==,
                  "refusing to write through the symbolic link /s/x (hutch runs as root, so a "
                  "guest could have planted even a root-owned link through a share): name the "
                  "real path");
}

static void assert_same_file(int fd, const char *path) {
  struct stat a, b;
  g_assert_cmpint(fstat(fd, &a), ==, 0);
  g_assert_cmpint(stat(path, &b), ==, 0);
  g_assert_cmpuint(a.st_dev, ==, b.st_dev);
  g_assert_cmpuint(a.st_ino, ==, b.st_ino);
}

static void test_open_plain(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = path_in("plain");
  g_autofree char *sub = g_build_filename(dir, "sub", NULL);
  g_autofree char *file = g_build_filename(sub, "f", NULL);
  g_assert_cmpint(g_mkdir_with_parents(sub, 0700), ==, 0);
  write_text(file, "text");

  g_auto(HutchFd) fd = hutch_hostpath_open(file, O_RDONLY, &error);
  g_assert_no_error(error);
  assert_same_file(fd, file);
  char buf[8] = {0};
  g_assert_cmpint(read(fd, buf, sizeof buf), ==, 4);
  g_assert_cmpint(fcntl(fd, F_GETFL) & O_NONBLOCK, ==, 0);
  hutch_fd_close(fd);

  /* "." and ".." as typed, doubled slashes, a trailing slash on a directory. */
  g_autofree char *dotted = g_strdup_printf("%s/./sub/..//sub/", dir);
  fd = hutch_hostpath_open(dotted, O_PATH | O_DIRECTORY, &error);
  g_assert_no_error(error);
  assert_same_file(fd, sub);
  hutch_fd_close(fd);
  fd = hutch_hostpath_open("/", O_PATH | O_DIRECTORY, &error);
  g_assert_no_error(error);
  assert_same_file(fd, "/");
  hutch_fd_close(fd);

  /* Relative to the working directory. */
  g_autofree char *cwd = g_get_current_dir();
  g_assert_cmpint(chdir(dir), ==, 0);
  fd = hutch_hostpath_open("sub/f", O_RDONLY, &error);
  g_assert_no_error(error);
  assert_same_file(fd, file);
  hutch_fd_close(fd);
  fd = hutch_hostpath_open(".", O_RDONLY | O_DIRECTORY, &error);
  g_assert_no_error(error);
  assert_same_file(fd, dir);
  hutch_fd_close(fd);
  g_assert_cmpint(chdir(cwd), ==, 0);
  fd = -1;

  /* Failures name the component. */
  g_autofree char *missing = g_build_filename(dir, "nope", "f", NULL);
  g_assert_cmpint(hutch_hostpath_open(missing, O_RDONLY, &error), ==, -1);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_autofree char *want = g_strdup_printf("%s/nope: No such file or directory", dir);
  g_assert_cmpstr(error->message, ==, want);
  g_clear_error(&error);
  g_autofree char *through_file = g_build_filename(file, "x", NULL);
  g_assert_cmpint(hutch_hostpath_open(through_file, O_PATH, &error), ==, -1);
  g_assert_nonnull(strstr(error->message, "Not a directory"));
  g_clear_error(&error);
  g_autofree char *file_slash = g_strconcat(file, "/", NULL);
  g_assert_cmpint(hutch_hostpath_open(file_slash, O_PATH, &error), ==, -1);
  g_assert_nonnull(strstr(error->message, "Not a directory"));
  g_clear_error(&error);
  g_assert_cmpint(hutch_hostpath_open("", O_PATH, &error), ==, -1);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);

  /* A FIFO is never opened for reading (it would block): refused at once. */
  g_autofree char *fifo = g_build_filename(dir, "fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  g_assert_cmpint(hutch_hostpath_open(fifo, O_RDONLY, &error), ==, -1);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_true(g_str_has_suffix(error->message, "fifo: not a regular file or directory"));
  g_clear_error(&error);
  fd = hutch_hostpath_open(fifo, O_PATH, &error);
  g_assert_no_error(error);
  g_assert_cmpint(fd, >=, 0);
}

static void test_open_links(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = path_in("links");
  g_autofree char *real = g_build_filename(dir, "real", NULL);
  g_autofree char *secret = g_build_filename(real, "secret", NULL);
  g_assert_cmpint(g_mkdir_with_parents(real, 0700), ==, 0);
  write_text(secret, "key");

  /* A link that is not root's, as a component or as the last one: refused. */
  g_autofree char *planted = g_build_filename(dir, "planted", NULL);
  plant_link("real", planted);
  g_autofree char *via = g_build_filename(planted, "secret", NULL);
  g_autofree char *want = g_strdup_printf(
      "refusing to follow the symbolic link %s (not owned by root; a guest could have "
      "planted it through a share): name the real path",
      planted);
  g_autofree char *want_prefix =
      g_strdup_printf("refusing to follow the symbolic link %s (", planted);
  g_assert_cmpint(hutch_hostpath_open_as(via, O_RDONLY, USER, &error), ==, -1);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
  g_assert_cmpstr(error->message, ==, want);
  g_clear_error(&error);
  g_assert_cmpint(hutch_hostpath_open(via, O_RDONLY, &error), ==, -1);
  g_assert_true(g_str_has_prefix(error->message, want_prefix));
  g_clear_error(&error);
  g_assert_cmpint(hutch_hostpath_open(planted, O_PATH, &error), ==, -1);
  g_assert_true(g_str_has_prefix(error->message, want_prefix));
  g_clear_error(&error);
  g_autofree char *file_link = g_build_filename(dir, "file-link", NULL);
  plant_link(secret, file_link);
  g_assert_cmpint(hutch_hostpath_open(file_link, O_RDONLY, &error), ==, -1);
  g_assert_true(g_str_has_prefix(error->message, "refusing to follow the symbolic link"));
  g_clear_error(&error);
  /* The parent of a path: the same walk. */
  g_autofree char *name = NULL;
  g_assert_cmpint(hutch_hostpath_open_parent(via, &name, &error), ==, -1);
  g_assert_true(g_str_has_prefix(error->message, want_prefix));
  g_assert_null(name);
  g_clear_error(&error);

  /* Root's links are followed (unless hutch is root): our own when we are root, else a
   * system one. */
  if (getuid() != 0) {
    const char *candidates[] = {"/proc/self", "/bin", "/lib", "/sbin"};
    for (gsize i = 0; i < G_N_ELEMENTS(candidates); i++) {
      struct stat st, target;
      if (lstat(candidates[i], &st) == 0 && hutch_hostpath_link_is_trusted(&st, getuid()) &&
          stat(candidates[i], &target) == 0 && S_ISDIR(target.st_mode)) {
        g_auto(HutchFd) fd = hutch_hostpath_open(candidates[i], O_PATH | O_DIRECTORY, &error);
        g_assert_no_error(error);
        assert_same_file(fd, candidates[i]);
        return;
      }
    }
    g_test_skip("not root, and no root-owned link to a directory (/proc/self, /bin, /lib, "
                "/sbin) to follow");
    return;
  }
  g_autofree char *system = g_build_filename(dir, "system", NULL);
  g_assert_cmpint(symlink("real", system), ==, 0);
  g_autofree char *via_system = g_build_filename(system, "secret", NULL);
  g_auto(HutchFd) fd = hutch_hostpath_open_as(via_system, O_RDONLY, USER, &error);
  g_assert_no_error(error);
  assert_same_file(fd, secret);
  hutch_fd_close(fd);
  fd = -1;
  /* hutch as root follows none. */
  g_assert_cmpint(hutch_hostpath_open(via_system, O_RDONLY, &error), ==, -1);
  g_assert_true(g_str_has_suffix(error->message, "(hutch runs as root, so a guest could have "
                                                 "planted even a root-owned link through a "
                                                 "share): name the real path"));
  g_clear_error(&error);
  /* Absolute targets, chains, ".." inside a target. */
  g_autofree char *chain = g_build_filename(dir, "chain", NULL);
  g_assert_cmpint(symlink(system, chain), ==, 0);
  g_autofree char *up = g_build_filename(dir, "up", NULL);
  g_assert_cmpint(symlink("real/../chain/secret", up), ==, 0);
  fd = hutch_hostpath_open_as(up, O_RDONLY, USER, &error);
  g_assert_no_error(error);
  assert_same_file(fd, secret);
  hutch_fd_close(fd);
  fd = -1;
  /* A root link whose target goes through a planted one: refused there. */
  g_autofree char *mixed = g_build_filename(dir, "mixed", NULL);
  g_assert_cmpint(symlink("planted/secret", mixed), ==, 0);
  g_assert_cmpint(hutch_hostpath_open_as(mixed, O_RDONLY, USER, &error), ==, -1);
  g_assert_cmpstr(error->message, ==, want);
  g_clear_error(&error);
  /* A loop ends. */
  g_autofree char *loop_a = g_build_filename(dir, "loop-a", NULL);
  g_autofree char *loop_b = g_build_filename(dir, "loop-b", NULL);
  g_assert_cmpint(symlink("loop-b", loop_a), ==, 0);
  g_assert_cmpint(symlink("loop-a", loop_b), ==, 0);
  g_assert_cmpint(hutch_hostpath_open_as(loop_a, O_PATH, USER, &error), ==, -1);
  g_assert_nonnull(strstr(error->message, "Too many levels of symbolic links"));
}

static void test_open_parent(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = path_in("parent");
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
  const struct {
    const char *path; /* under dir, or absolute */
    const char *parent;
    const char *name;
  } cases[] = {
      {"new", "", "new"}, {"new/", "", "new"}, {"new//", "", "new"}, {".", "", "."},
      {"..", "", ".."},   {"/", "/", "."},     {"/tmp", "/", "tmp"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *path = cases[i].path[0] == '/' ? g_strdup(cases[i].path)
                                                    : g_strconcat(dir, "/", cases[i].path, NULL);
    g_autofree char *name = NULL;
    g_auto(HutchFd) fd = hutch_hostpath_open_parent(path, &name, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(name, ==, cases[i].name);
    assert_same_file(fd, cases[i].parent[0] ? cases[i].parent : dir);
  }
  g_autofree char *cwd = g_get_current_dir();
  g_assert_cmpint(chdir(dir), ==, 0);
  g_autofree char *name = NULL;
  g_auto(HutchFd) fd = hutch_hostpath_open_parent("plain-name", &name, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(name, ==, "plain-name");
  assert_same_file(fd, dir);
  g_assert_cmpint(chdir(cwd), ==, 0);
}

static void test_children(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = path_in("children");
  g_autofree char *outside = path_in("outside");
  g_autofree char *secret = g_build_filename(outside, "secret", NULL);
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(outside, 0700), ==, 0);
  write_text(secret, "key");
  g_auto(HutchFd) dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(dirfd, >=, 0);

  /* Links, even root's, are never written or read through. */
  g_autofree char *file_link = g_build_filename(dir, "file-link", NULL);
  g_assert_cmpint(symlink(secret, file_link), ==, 0);
  g_autofree char *dir_link = g_build_filename(dir, "dir-link", NULL);
  g_assert_cmpint(symlink(outside, dir_link), ==, 0);
  HutchHostpathNewFile file = HUTCH_HOSTPATH_NEW_FILE_INIT;
  g_assert_false(hutch_hostpath_new_file_begin(dirfd, "file-link", file_link, &file, &error));
  g_autofree char *want =
      g_strdup_printf("refusing to write through the symbolic link %s", file_link);
  g_assert_cmpstr(error->message, ==, want);
  g_clear_error(&error);
  assert_text(secret, "key");
  g_assert_cmpint(hutch_hostpath_open_child_file(dirfd, "file-link", NULL, file_link, &error), ==,
                  -1);
  g_assert_true(g_str_has_prefix(error->message, "refusing to read through the symbolic link"));
  g_clear_error(&error);
  g_assert_cmpint(hutch_hostpath_make_child_dir(dirfd, "dir-link", 0700, NULL, dir_link, &error), ==, -1);
  g_clear_pointer(&want, g_free);
  want = g_strdup_printf("refusing to write through the symbolic link %s", dir_link);
  g_assert_cmpstr(error->message, ==, want);
  g_clear_error(&error);
  g_assert_cmpint(hutch_hostpath_open_child_dir(dirfd, "dir-link", NULL, dir_link, &error), ==, -1);
  g_assert_true(g_str_has_prefix(error->message, "refusing to read through the symbolic link"));
  g_clear_error(&error);

  /* A FIFO fails at once, with or without a reader; nothing is written into it. */
  g_autofree char *fifo = g_build_filename(dir, "fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  g_assert_false(hutch_hostpath_new_file_begin(dirfd, "fifo", fifo, &file, &error));
  g_assert_true(g_str_has_suffix(error->message, "fifo: not a regular file"));
  g_clear_error(&error);
  g_auto(HutchFd) reader = open(fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  g_assert_cmpint(reader, >=, 0);
  g_assert_false(hutch_hostpath_new_file_begin(dirfd, "fifo", fifo, &file, &error));
  g_assert_true(g_str_has_suffix(error->message, "fifo: not a regular file"));
  g_clear_error(&error);
  g_assert_cmpint(hutch_hostpath_open_child_file(dirfd, "fifo", NULL, fifo, &error), ==, -1);
  g_assert_true(g_str_has_suffix(error->message, "fifo: not a regular file"));
  g_clear_error(&error);

  /* Ordinary use: create, replace, make, reuse; modes are the callers' (fchmod). */
  g_autofree char *made = g_build_filename(dir, "made", NULL);
  g_assert_true(hutch_hostpath_new_file_begin(dirfd, "made", made, &file, &error));
  g_assert_no_error(error);
  g_assert_cmpint(write(file.fd, "abc", 3), ==, 3);
  g_assert_true(hutch_hostpath_new_file_commit(&file, made, &error));
  g_assert_no_error(error);
  assert_text(made, "abc");
  g_assert_true(hutch_hostpath_new_file_begin(dirfd, "made", made, &file, &error));
  g_assert_true(hutch_hostpath_new_file_commit(&file, made, &error));
  g_assert_no_error(error);
  assert_text(made, "");
  g_auto(HutchFd) fd = -1;
  g_autofree char *sub = g_build_filename(dir, "sub", NULL);
  gboolean created = FALSE;
  fd = hutch_hostpath_make_child_dir(dirfd, "sub", 0700, &created, sub, &error);
  g_assert_no_error(error);
  g_assert_true(created);
  g_assert_cmpint(fchmod(fd, 0750), ==, 0);
  hutch_fd_close(fd);
  fd = hutch_hostpath_make_child_dir(dirfd, "sub", 0700, &created, sub, &error);
  g_assert_no_error(error);
  g_assert_false(created);
  assert_same_file(fd, sub);
  hutch_fd_close(fd);
  fd = -1;
  GStatBuf st;
  g_assert_cmpint(g_stat(sub, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0750);
  g_assert_cmpint(hutch_hostpath_make_child_dir(dirfd, "made", 0700, NULL, made, &error), ==, -1);
  g_assert_true(g_str_has_suffix(error->message, "made: Not a directory"));
  g_clear_error(&error);

  /* Names are checked here too. */
  g_assert_false(hutch_hostpath_new_file_begin(dirfd, "../escape", "x", &file, &error));
  g_assert_cmpstr(error->message, ==, "x: an invalid file name");
  g_clear_error(&error);
  g_assert_cmpint(hutch_hostpath_make_child_dir(dirfd, "..", 0700, NULL, "x", &error), ==, -1);
  g_clear_error(&error);

  /* Swapped between the lstat that decided and the open: an error, never the new file. The
   * old file is kept under another name, so that its inode number is not reused. */
  g_autofree char *swapped = g_build_filename(dir, "swapped", NULL);
  g_autofree char *kept = g_build_filename(dir, "kept", NULL);
  write_text(swapped, "data");
  struct stat before;
  g_assert_cmpint(fstatat(dirfd, "swapped", &before, AT_SYMLINK_NOFOLLOW), ==, 0);
  g_assert_cmpint(g_rename(swapped, kept), ==, 0);
  g_assert_cmpint(symlink(secret, swapped), ==, 0);
  g_assert_cmpint(hutch_hostpath_open_child_file(dirfd, "swapped", &before, swapped, &error), ==,
                  -1);
  g_assert_true(g_str_has_prefix(error->message, "refusing to read through the symbolic link"));
  g_clear_error(&error);
  g_assert_cmpint(g_unlink(swapped), ==, 0);
  write_text(swapped, "other");
  g_assert_cmpint(hutch_hostpath_open_child_file(dirfd, "swapped", &before, swapped, &error), ==,
                  -1);
  g_clear_pointer(&want, g_free);
  want = g_strdup_printf("%s changed while hutch was copying it", swapped);
  g_assert_cmpstr(error->message, ==, want);
  g_clear_error(&error);
  g_assert_cmpint(g_unlink(swapped), ==, 0);
  g_assert_cmpint(g_mkdir(swapped, 0700), ==, 0);
  g_assert_cmpint(hutch_hostpath_open_child_file(dirfd, "swapped", &before, swapped, &error), ==,
                  -1);
  g_assert_true(g_str_has_suffix(error->message, "swapped: not a regular file"));
  g_clear_error(&error);
  /* The file itself, unchanged: fine. */
  g_assert_cmpint(g_rmdir(swapped), ==, 0);
  g_assert_cmpint(g_rename(kept, swapped), ==, 0);
  fd = hutch_hostpath_open_child_file(dirfd, "swapped", &before, swapped, &error);
  g_assert_no_error(error);
  g_assert_cmpint(fd, >=, 0);
}

/* The names in dir, sorted, joined with spaces. */
static char *list_dir(const char *dir) {
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  g_autoptr(GPtrArray) names = g_ptr_array_new();
  const char *name;
  while ((name = g_dir_read_name(d)))
    g_ptr_array_add(names, (gpointer)name);
  g_ptr_array_sort(names, (GCompareFunc)(void (*)(void))g_strcmp0);
  g_ptr_array_add(names, NULL);
  return g_strjoinv(" ", (char **)names->pdata);
}

/* A file written under a temporary name and renamed into place: an existing file's inode is
 * never written (a hard link into the destination from outside keeps its content), an
 * unfinished file leaves the old one and no temporary file. */
static void test_new_file(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = path_in("new-file");
  g_autofree char *outside = path_in("new-file-outside");
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(outside, 0700), ==, 0);
  g_auto(HutchFd) dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(dirfd, >=, 0);

  /* a cache's file, hard-linked into the destination */
  g_autofree char *cache = g_build_filename(outside, "cache", NULL);
  g_autofree char *linked = g_build_filename(dir, "linked", NULL);
  write_text(cache, "shared");
  g_assert_cmpint(link(cache, linked), ==, 0);
  g_auto(HutchHostpathNewFile) file = HUTCH_HOSTPATH_NEW_FILE_INIT;
  g_assert_true(hutch_hostpath_new_file_begin(dirfd, "linked", linked, &file, &error));
  g_assert_no_error(error);
  g_assert_true(g_str_has_prefix(file.temp, ".linked.hutch-"));
  g_assert_cmpuint(strlen(file.temp), ==, strlen(".linked.hutch-XXXXXX"));
  struct stat st;
  g_assert_cmpint(fstat(file.fd, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0600);
  g_assert_cmpint(st.st_nlink, ==, 1);
  g_assert_cmpint(write(file.fd, "guest", 5), ==, 5);
  g_assert_cmpint(fchmod(file.fd, 0644), ==, 0);
  /* nothing at the name changes before the commit */
  assert_text(linked, "shared");
  g_assert_true(hutch_hostpath_new_file_commit(&file, linked, &error));
  g_assert_no_error(error);
  g_assert_cmpint(file.fd, ==, -1);
  g_assert_null(file.temp);
  assert_text(linked, "guest");
  assert_text(cache, "shared");
  g_assert_cmpint(g_stat(cache, &st), ==, 0);
  g_assert_cmpint(st.st_nlink, ==, 1);
  g_assert_cmpint(g_stat(linked, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0644);

  /* Abandoned halfway, by _abort or by leaving the scope: the old file, no temporary one. */
  g_autofree char *old = g_build_filename(dir, "old", NULL);
  write_text(old, "old");
  g_assert_true(hutch_hostpath_new_file_begin(dirfd, "old", old, &file, &error));
  g_assert_cmpint(write(file.fd, "partial", 7), ==, 7);
  hutch_hostpath_new_file_abort(&file);
  g_assert_cmpint(file.fd, ==, -1);
  hutch_hostpath_new_file_abort(&file);
  {
    g_auto(HutchHostpathNewFile) scoped = HUTCH_HOSTPATH_NEW_FILE_INIT;
    g_assert_true(hutch_hostpath_new_file_begin(dirfd, "old", old, &scoped, &error));
    g_assert_cmpint(write(scoped.fd, "partial", 7), ==, 7);
  }
  assert_text(old, "old");
  g_autofree char *names = list_dir(dir);
  g_assert_cmpstr(names, ==, "linked old");

  /* A directory at the name: refused before, or failing the rename when it appears meanwhile
   * (the temporary file removed, the directory as it was). */
  g_autofree char *sub = g_build_filename(dir, "sub", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  g_assert_false(hutch_hostpath_new_file_begin(dirfd, "sub", sub, &file, &error));
  g_assert_true(g_str_has_suffix(error->message, "sub: not a regular file"));
  g_clear_error(&error);
  g_autofree char *late = g_build_filename(dir, "late", NULL);
  g_assert_true(hutch_hostpath_new_file_begin(dirfd, "late", late, &file, &error));
  g_assert_cmpint(g_mkdir(late, 0700), ==, 0);
  g_assert_false(hutch_hostpath_new_file_commit(&file, late, &error));
  g_assert_nonnull(error);
  g_clear_error(&error);
  g_assert_true(g_file_test(late, G_FILE_TEST_IS_DIR));
  g_assert_cmpint(g_rmdir(late), ==, 0);
  g_assert_cmpint(g_rmdir(sub), ==, 0);

  /* A link planted at the name meanwhile is replaced, not written through. */
  g_autofree char *secret = g_build_filename(outside, "secret", NULL);
  write_text(secret, "key");
  g_autofree char *planted = g_build_filename(dir, "planted", NULL);
  g_assert_true(hutch_hostpath_new_file_begin(dirfd, "planted", planted, &file, &error));
  g_assert_cmpint(write(file.fd, "new", 3), ==, 3);
  plant_link(secret, planted);
  g_assert_true(hutch_hostpath_new_file_commit(&file, planted, &error));
  g_assert_no_error(error);
  assert_text(secret, "key");
  g_assert_cmpint(g_lstat(planted, &st), ==, 0);
  g_assert_true(S_ISREG(st.st_mode));
  g_assert_cmpint(g_unlink(planted), ==, 0);

  /* The longest name a directory holds still gets a temporary name beside it. */
  char longest[256];
  memset(longest, 'n', 255);
  longest[255] = '\0';
  g_autofree char *long_path = g_build_filename(dir, longest, NULL);
  g_assert_true(hutch_hostpath_new_file_begin(dirfd, longest, long_path, &file, &error));
  g_assert_no_error(error);
  g_assert_true(hutch_hostpath_new_file_commit(&file, long_path, &error));
  g_assert_no_error(error);
  g_assert_true(g_file_test(long_path, G_FILE_TEST_IS_REGULAR));
  g_assert_cmpint(g_unlink(long_path), ==, 0);
  g_clear_pointer(&names, g_free);
  names = list_dir(dir);
  g_assert_cmpstr(names, ==, "linked old");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  tmp = g_dir_make_tmp("hutch-test-hostpath-XXXXXX", NULL);
  g_assert_nonnull(tmp);
  g_test_add_func("/hostpath/names", test_names);
  g_test_add_func("/hostpath/link-trust", test_link_trust);
  g_test_add_func("/hostpath/open-plain", test_open_plain);
  g_test_add_func("/hostpath/open-links", test_open_links);
  g_test_add_func("/hostpath/open-parent", test_open_parent);
  g_test_add_func("/hostpath/children", test_children);
  g_test_add_func("/hostpath/new-file", test_new_file);
  int rc = g_test_run();
  if (!g_getenv("HUTCH_KEEP_TEST_DIR"))
    hutch_rmtree(tmp, NULL);
  g_free(tmp);
  return rc;
}
