/* test-system.c: what a VM on qemu:///system needs beside libvirt (lib/system.c): the ACLs
 * that let QEMU's user, and nobody else, connect to a socket and pass through a directory;
 * the links into them; the copies QEMU reads there. The pool itself and QEMU's uid need the
 * system daemon: tests/e2e/system.sh. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "system-private.h"

static char *tmp;

static int listen_unix(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_assert_cmpuint(strlen(path), <, sizeof(addr.sun_path));
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  g_assert_cmpint(listen(fd, 1), ==, 0);
  return fd;
}

/* The entries of path's access ACL as (tag, perm, id) triples. */
static GArray *read_acl(const char *path) {
  guint8 buf[256];
  ssize_t n = lgetxattr(path, "system.posix_acl_access", buf, sizeof(buf));
  g_assert_cmpint(n, >, 4);
  g_assert_cmpint((n - 4) % 8, ==, 0);
  g_assert_cmpuint(buf[0], ==, 2); /* version */
  GArray *entries = g_array_new(FALSE, FALSE, sizeof(guint32) * 3);
  for (ssize_t at = 4; at < n; at += 8) {
    guint32 e[3] = {buf[at] | buf[at + 1] << 8, buf[at + 2] | buf[at + 3] << 8,
                    (guint32)buf[at + 4] | (guint32)buf[at + 5] << 8 | (guint32)buf[at + 6] << 16 |
                        (guint32)buf[at + 7] << 24};
    g_array_append_val(entries, e);
  }
  return entries;
}

/* path's ACL is exactly: owner owner_perm, uid uid_perm, group and others nothing, the mask
 * uid_perm */
static void assert_acl(const char *path, guint32 owner_perm, guint32 uid, guint32 uid_perm) {
  g_autoptr(GArray) acl = read_acl(path);
  const guint32 want[][3] = {{0x01, owner_perm, 0xffffffffu},
                             {0x02, uid_perm, uid},
                             {0x04, 0, 0xffffffffu},
                             {0x10, uid_perm, 0xffffffffu},
                             {0x20, 0, 0xffffffffu}};
  g_assert_cmpuint(acl->len, ==, G_N_ELEMENTS(want));
  for (guint i = 0; i < acl->len; i++) {
    const guint32 *got = &g_array_index(acl, guint32, i * 3);
    g_assert_cmpuint(got[0], ==, want[i][0]);
    g_assert_cmpuint(got[1], ==, want[i][1]);
    if (want[i][0] == 0x02)
      g_assert_cmpuint(got[2], ==, want[i][2]);
  }
}

static void test_grant_socket(void) {
  g_autofree char *sock = g_build_filename(tmp, "s.sock", NULL);
  int fd = listen_unix(sock);
  g_assert_cmpint(chmod(sock, 0777), ==, 0); /* a loose umask's socket */
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_system_grant_socket(sock, 64055, &error));
  g_assert_no_error(error);
  /* owner rwx, QEMU's user rw, group and others nothing (the mask rw) */
  assert_acl(sock, 7, 64055, 6);
  struct stat st;
  g_assert_cmpint(stat(sock, &st), ==, 0);
  g_assert_cmpuint(st.st_mode & 07777, ==, 0760); /* the group bits show the mask */
  close(fd);

  /* a link planted at the socket's name, a file, a name that is not there: refused */
  g_autofree char *link = g_build_filename(tmp, "link.sock", NULL);
  g_assert_cmpint(symlink(sock, link), ==, 0);
  g_assert_false(hutch_system_grant_socket(link, 64055, &error));
  g_assert_nonnull(strstr(error->message, "is not a socket of yours"));
  g_clear_error(&error);
  g_autofree char *file = g_build_filename(tmp, "file", NULL);
  g_assert_true(g_file_set_contents(file, "x", 1, NULL));
  g_assert_false(hutch_system_grant_socket(file, 64055, &error));
  g_clear_error(&error);
  g_autofree char *absent = g_build_filename(tmp, "absent.sock", NULL);
  g_assert_false(hutch_system_grant_socket(absent, 64055, &error));
  g_assert_nonnull(strstr(error->message, "absent.sock"));
}

static void test_dirs_and_links(void) {
  g_autofree char *pool = g_build_filename(tmp, "pool", NULL);
  g_assert_cmpint(g_mkdir(pool, 0711), ==, 0);
  g_autofree char *run = hutch_system_run_dir(pool, "vm1");
  g_autofree char *vms = hutch_system_vm_dir(pool, "vm1");
  g_assert_true(g_str_has_suffix(run, "/pool/run/vm1"));
  g_assert_true(g_str_has_suffix(vms, "/pool/vms/vm1"));
  mode_t old = umask(0); /* a loose umask changes nothing */
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_system_mkdir(run, 64055, &error));
  umask(old);
  g_assert_no_error(error);
  g_autofree char *run_parent = g_path_get_dirname(run);
  /* the directory and its parent: QEMU's user passes through (x), nobody else at all */
  const char *dirs[] = {run, run_parent};
  for (guint i = 0; i < G_N_ELEMENTS(dirs); i++) {
    struct stat st;
    g_assert_cmpint(lstat(dirs[i], &st), ==, 0);
    g_assert_true(S_ISDIR(st.st_mode));
    g_assert_cmpuint(st.st_mode & 07777, ==, 0710); /* the group bits show the mask */
    assert_acl(dirs[i], 7, 64055, 1);
  }
  /* made again: the same; a link in the directory's place is refused, not followed */
  g_assert_true(hutch_system_mkdir(run, 64055, &error));
  g_autofree char *elsewhere = g_build_filename(tmp, "elsewhere", NULL);
  g_assert_cmpint(g_mkdir(elsewhere, 0755), ==, 0);
  g_autofree char *vm2 = hutch_system_run_dir(pool, "vm2");
  g_assert_cmpint(symlink(elsewhere, vm2), ==, 0);
  g_assert_false(hutch_system_mkdir(vm2, 64055, &error));
  g_assert_nonnull(strstr(error->message, "is not a directory of yours"));
  g_clear_error(&error);
  g_assert_cmpint(lgetxattr(elsewhere, "system.posix_acl_access", NULL, 0), <, 0);

  g_autofree char *link = g_build_filename(tmp, "runtime-vm1", NULL);
  g_assert_true(hutch_system_link(run, link, &error));
  g_assert_true(hutch_system_link(run, link, &error)); /* kept */
  g_autofree char *target = g_file_read_link(link, NULL);
  g_assert_cmpstr(target, ==, run);
  /* a link to elsewhere is replaced; a directory in its place is not */
  g_assert_true(hutch_system_link(vms, link, &error));
  g_free(target);
  target = g_file_read_link(link, NULL);
  g_assert_cmpstr(target, ==, vms);
  g_autofree char *dir = g_build_filename(tmp, "a-dir", NULL);
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
  g_assert_false(hutch_system_link(run, dir, &error));
  g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_EXIST);
}

/* A copy is 0600 from its first byte, replaces (never writes through) what was there, and
 * leaves nothing half-made when it fails. */
static void test_copy_file(void) {
  g_autofree char *from = g_build_filename(tmp, "seed.iso", NULL);
  g_autofree char *to = g_build_filename(tmp, "copy.iso", NULL);
  g_assert_true(g_file_set_contents(from, "seed-one", -1, NULL));
  g_assert_cmpint(chmod(from, 0644), ==, 0);
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", NULL);
  g_autoptr(GError) error = NULL;
  mode_t old = umask(0);
  g_assert_true(hutch_system_copy_file(ctx, from, to, &error));
  umask(old);
  g_assert_no_error(error);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(to, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "seed-one");
  struct stat st;
  g_assert_cmpint(stat(to, &st), ==, 0);
  g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
  ino_t first = st.st_ino;
  /* the old copy as libvirt would leave it (another owner's: here, unreadable) is replaced */
  g_assert_cmpint(chmod(to, 0), ==, 0);
  g_assert_true(g_file_set_contents(from, "seed-two", -1, NULL));
  g_assert_true(hutch_system_copy_file(ctx, from, to, &error));
  g_assert_cmpint(stat(to, &st), ==, 0);
  g_assert_cmpuint(st.st_ino, !=, first);
  g_clear_pointer(&text, g_free);
  g_assert_true(g_file_get_contents(to, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "seed-two");
  /* a link planted at the source is not followed; a missing source fails; no .part stays */
  g_autofree char *secret = g_build_filename(tmp, "secret", NULL);
  g_assert_true(g_file_set_contents(secret, "secret", -1, NULL));
  g_autofree char *planted = g_build_filename(tmp, "planted.iso", NULL);
  g_assert_cmpint(symlink(secret, planted), ==, 0);
  g_autofree char *out = g_build_filename(tmp, "out.iso", NULL);
  g_assert_false(hutch_system_copy_file(ctx, planted, out, &error));
  g_assert_nonnull(strstr(error->message, "a regular file was expected"));
  g_assert_false(g_file_test(out, G_FILE_TEST_EXISTS));
  g_clear_error(&error);
  g_autofree char *absent = g_build_filename(tmp, "absent.iso", NULL);
  g_assert_false(hutch_system_copy_file(ctx, absent, out, &error));
  g_assert_nonnull(error);
  g_autofree char *part = g_strconcat(out, ".part", NULL);
  g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
}

/* What an escaped QEMU could leave on the VM's files while its user owned them (a loose
 * mode, an ACL naming it, a second name) does not outlive the run: the files come back
 * 0600 without an ACL, and a second name is counted. A link is not followed. */
static void test_reclaim_files(void) {
  g_autofree char *vm_dir = g_build_filename(tmp, "reclaim", NULL);
  g_assert_cmpint(g_mkdir(vm_dir, 0700), ==, 0);
  g_autofree char *disk = g_build_filename(vm_dir, "disk.qcow2", NULL);
  g_autofree char *kernel = g_build_filename(vm_dir, "vmlinuz", NULL);
  g_autofree char *outside = g_build_filename(tmp, "reclaim-outside", NULL);
  g_autofree char *other_name = g_build_filename(tmp, "reclaim-second-name", NULL);
  g_assert_true(g_file_set_contents(disk, "disk", -1, NULL));
  g_assert_true(g_file_set_contents(kernel, "kernel", -1, NULL));
  g_assert_true(g_file_set_contents(outside, "outside", -1, NULL));
  g_assert_cmpint(chmod(disk, 0666), ==, 0);
  g_assert_cmpint(chmod(outside, 0644), ==, 0);
  /* the kernel: an ACL that lets QEMU's user (64055) read it, and a second name */
  /* clang-format off */
  guint8 acl[] = {2, 0, 0, 0,                             /* version 2 */
                  0x01, 0, 6, 0, 0xff, 0xff, 0xff, 0xff,  /* owner rw */
                  0x02, 0, 6, 0, 0x37, 0xfa, 0, 0,        /* user 64055 rw */
                  0x04, 0, 4, 0, 0xff, 0xff, 0xff, 0xff,  /* group r */
                  0x10, 0, 6, 0, 0xff, 0xff, 0xff, 0xff,  /* mask rw */
                  0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff}; /* others r */
  /* clang-format on */
  g_assert_cmpint(setxattr(kernel, "system.posix_acl_access", acl, sizeof(acl), 0), ==, 0);
  g_assert_cmpint(link(kernel, other_name), ==, 0);
  /* the initrd: an ACL that leaves its owner nothing (u::---, the user rw), which an open for
   * reading would not get past */
  g_autofree char *initrd = g_build_filename(vm_dir, "initrd.img", NULL);
  g_assert_true(g_file_set_contents(initrd, "initrd", -1, NULL));
  guint8 nothing_for_owner[sizeof(acl)];
  memcpy(nothing_for_owner, acl, sizeof(acl));
  nothing_for_owner[4 + 2] = 0; /* the owner entry's permissions */
  g_assert_cmpint(
      setxattr(initrd, "system.posix_acl_access", nothing_for_owner, sizeof(nothing_for_owner), 0),
      ==, 0);
  /* a link in the directory to a file elsewhere: neither followed nor changed */
  g_autofree char *planted = g_build_filename(vm_dir, "planted", NULL);
  g_assert_cmpint(symlink(outside, planted), ==, 0);

  g_autoptr(GError) error = NULL;
  guint not_yours = 7;
  g_assert_cmpuint(hutch_system_reclaim_files(vm_dir, &not_yours, &error), ==, 1);
  g_assert_no_error(error);
  g_assert_cmpuint(not_yours, ==, 0);
  const char *files[] = {disk, kernel, initrd};
  for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
    struct stat st;
    g_assert_cmpint(stat(files[i], &st), ==, 0);
    g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
    errno = 0;
    g_assert_cmpint(getxattr(files[i], "system.posix_acl_access", NULL, 0), <, 0);
    g_assert_cmpint(errno, ==, ENODATA);
  }
  struct stat st;
  g_assert_cmpint(stat(outside, &st), ==, 0);
  g_assert_cmpuint(st.st_mode & 07777, ==, 0644);
  /* taken back already: the same again, the second name still counted */
  g_assert_cmpuint(hutch_system_reclaim_files(vm_dir, &not_yours, &error), ==, 1);
  g_assert_cmpint(g_unlink(other_name), ==, 0);
  g_assert_cmpuint(hutch_system_reclaim_files(vm_dir, &not_yours, &error), ==, 0);
  /* no such directory: an error */
  g_autofree char *absent = g_build_filename(tmp, "reclaim-absent", NULL);
  g_assert_cmpuint(hutch_system_reclaim_files(absent, &not_yours, &error), ==, G_MAXUINT);
  g_assert_nonnull(error);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  tmp = g_dir_make_tmp("hutch-test-system-XXXXXX", NULL);
  g_assert_nonnull(tmp);
  g_test_add_func("/system/grant-socket", test_grant_socket);
  g_test_add_func("/system/dirs-and-links", test_dirs_and_links);
  g_test_add_func("/system/copy-file", test_copy_file);
  g_test_add_func("/system/reclaim-files", test_reclaim_files);
  int status = g_test_run();
  hutch_rmtree(tmp, NULL);
  g_free(tmp);
  return status;
}
