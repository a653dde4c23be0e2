/* test-share.c: share planning, virtiofsd's command line and id mapping (pure), and a real
 * virtiofsd started and stopped as the user running the test. */
#define _GNU_SOURCE /* O_PATH */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "share-private.h"
#include "util-private.h"

/* A scratch home with a few directories, removed at the end. */
typedef struct {
  char *root;
  char *home;    /* root/home/me */
  char *runtime; /* root/run */
} Scratch;

static Scratch *scratch_new(void) {
  Scratch *s = g_new0(Scratch, 1);
  s->root = g_dir_make_tmp("hutch-share-XXXXXX", NULL);
  g_assert_nonnull(s->root);
  s->home = g_build_filename(s->root, "home", "me", NULL);
  s->runtime = g_build_filename(s->root, "run", NULL);
  const char *dirs[] = {"proj", "ro", "a,b\\c", NULL};
  for (guint i = 0; dirs[i]; i++) {
    g_autofree char *dir = g_build_filename(s->home, dirs[i], NULL);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  }
  g_assert_cmpint(g_mkdir_with_parents(s->runtime, 0700), ==, 0);
  g_autofree char *file = g_build_filename(s->home, "file", NULL);
  g_assert_true(g_file_set_contents(file, "x", 1, NULL));
  g_autofree char *link = g_build_filename(s->home, "link-to-home", NULL);
  g_assert_cmpint(symlink(s->home, link), ==, 0);
  return s;
}

static void scratch_free(Scratch *s) {
  g_assert_true(hutch_rmtree(s->root, NULL));
  g_free(s->root);
  g_free(s->home);
  g_free(s->runtime);
  g_free(s);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Scratch, scratch_free)

static void add_share(HutchProfile *profile, const char *host, const char *guest, gboolean writable,
                      gboolean create) {
  HutchShare *share = g_new0(HutchShare, 1);
  share->host = g_strdup(host);
  share->guest = g_strdup(guest);
  share->writable = writable;
  share->create = create;
  g_ptr_array_add(profile->shares, share);
}

static const HutchVirtiofsd c_virtiofsd = {
    .path = (char *)"/usr/lib/qemu/virtiofsd", .kind = HUTCH_VIRTIOFSD_C, .has_readonly = FALSE};
static const HutchVirtiofsd rust_virtiofsd = {
    .path = (char *)"/usr/libexec/virtiofsd", .kind = HUTCH_VIRTIOFSD_RUST, .has_readonly = TRUE};

static char *data_file(const char *name) {
  g_autofree char *path = g_build_filename(g_getenv("HUTCH_TEST_DATA"), "share", name, NULL);
  char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return text;
}

static void test_help(void) {
  HutchVirtiofsdKind kind = HUTCH_VIRTIOFSD_N;
  gboolean readonly = TRUE;
  g_autofree char *c_help = data_file("virtiofsd-c-help.txt");
  hutch_virtiofsd_parse_help(c_help, &kind, &readonly);
  g_assert_cmpint(kind, ==, HUTCH_VIRTIOFSD_C);
  g_assert_false(readonly);
  g_autofree char *rust_help = data_file("virtiofsd-rust-help.txt");
  hutch_virtiofsd_parse_help(rust_help, &kind, &readonly);
  g_assert_cmpint(kind, ==, HUTCH_VIRTIOFSD_RUST);
  g_assert_true(readonly);
}

static const HutchSharePlanEntry *entry_at(GPtrArray *plan, guint i) {
  return g_ptr_array_index(plan, i);
}

static void test_plan(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/proj", "~/Shared", TRUE, FALSE);
  add_share(profile, "~/ro/", "/opt/ro", FALSE, FALSE);
  add_share(profile, "~/new/sub", "~/x/../y", TRUE, TRUE);
  g_autofree char *proj_abs = g_build_filename(s->home, "proj", NULL);
  add_share(profile, proj_abs, "/srv/again", TRUE, FALSE);

  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(plan->len, ==, 4);

  g_autofree char *ro_abs = g_build_filename(s->home, "ro", NULL);
  g_autofree char *new_abs = g_build_filename(s->home, "new", "sub", NULL);
  const char *hosts[] = {proj_abs, ro_abs, new_abs, proj_abs};
  const char *guests[] = {"/home/dev/Shared", "/opt/ro", "/home/dev/y", "/srv/again"};
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *e = entry_at(plan, i);
    g_autofree char *tag = g_strdup_printf("hutchfs%u", i);
    g_assert_cmpuint(e->index, ==, i);
    g_assert_cmpstr(e->tag, ==, tag);
    g_assert_cmpstr(e->host_dir, ==, hosts[i]);
    g_assert_cmpstr(e->guest_path, ==, guests[i]);
    g_assert_cmpint(e->readonly, ==, i == 1);
    /* read-only shares are virtiofs too, enforced on the host */
    g_autofree char *sock = g_strdup_printf("%s/virtiofs-%u.sock", s->runtime, i);
    g_autofree char *pid = g_strdup_printf("%s/virtiofs-%u.pid", s->runtime, i);
    g_autofree char *log = g_strdup_printf("%s/virtiofs-%u.log", s->runtime, i);
    g_assert_cmpstr(e->socket, ==, sock);
    g_assert_cmpstr(e->pidfile, ==, pid);
    g_assert_cmpstr(e->logfile, ==, log);
    g_assert_cmpstr(e->virtiofsd, ==, c_virtiofsd.path);
  }
  g_assert_true(entry_at(plan, 2)->create);
  /* planning creates nothing: create: true happens at start */
  g_autofree char *new_parent = g_build_filename(s->home, "new", NULL);
  g_assert_false(g_file_test(new_parent, G_FILE_TEST_EXISTS));

  /* deterministic: recomputed at every start from the frozen profile */
  g_autoptr(GPtrArray) again =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  for (guint i = 0; i < plan->len; i++) {
    g_assert_cmpstr(entry_at(plan, i)->tag, ==, entry_at(again, i)->tag);
    g_assert_cmpstr(entry_at(plan, i)->socket, ==, entry_at(again, i)->socket);
    g_assert_cmpstr(entry_at(plan, i)->host_dir, ==, entry_at(again, i)->host_dir);
  }

  g_autoptr(GPtrArray) fs = hutch_share_plan_domain_fs(plan);
  g_assert_cmpuint(fs->len, ==, 4);
  const HutchDomainFs *fs0 = g_ptr_array_index(fs, 0), *fs1 = g_ptr_array_index(fs, 1);
  g_assert_cmpstr(fs0->tag, ==, "hutchfs0");
  g_assert_cmpstr(fs0->socket, ==, entry_at(plan, 0)->socket);
  g_assert_cmpstr(fs1->tag, ==, "hutchfs1");
  g_assert_cmpstr(fs1->socket, ==, entry_at(plan, 1)->socket);

  g_autoptr(GPtrArray) mounts = hutch_share_plan_seed_mounts(plan);
  g_assert_cmpuint(mounts->len, ==, 4);
  const HutchSeedMount *m0 = g_ptr_array_index(mounts, 0), *m1 = g_ptr_array_index(mounts, 1);
  g_assert_cmpstr(m0->tag, ==, "hutchfs0");
  g_assert_cmpstr(m0->guest_path, ==, "/home/dev/Shared");
  g_assert_false(m0->readonly);
  g_assert_true(m1->readonly);
}

static void test_plan_rust_readonly(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/ro", "/opt/ro", FALSE, FALSE);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, &rust_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  const HutchSharePlanEntry *e = entry_at(plan, 0);
  g_assert_true(e->readonly);
  g_assert_cmpint(e->virtiofsd_kind, ==, HUTCH_VIRTIOFSD_RUST);
  /* virtiofsd enforces it: the domain entry has no read-only flag (libvirt refuses one) */
  g_autoptr(GPtrArray) fs = hutch_share_plan_domain_fs(plan);
  const HutchDomainFs *fs0 = g_ptr_array_index(fs, 0);
  g_assert_nonnull(fs0->socket);
  g_autoptr(GPtrArray) mounts = hutch_share_plan_seed_mounts(plan);
  g_assert_true(((HutchSeedMount *)g_ptr_array_index(mounts, 0))->readonly);
}

/* Plans one share and expects a HUTCH_ERROR_PROFILE error containing want. */
static void expect_refusal(Scratch *s, const char *host, const char *guest, gboolean create,
                           const char *want) {
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, host, guest, TRUE, create);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_null(plan);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  if (!strstr(error->message, want) || !strstr(error->message, host))
    g_error("share %s -> %s: expected '%s' in the error, got: %s", host, guest, want,
            error->message);
}

static void test_plan_refusals(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autofree char *parent = g_path_get_dirname(s->home);
  expect_refusal(s, "/", "~/x", FALSE, "the whole file system");
  expect_refusal(s, "~", "~/x", FALSE, "your whole home directory");
  expect_refusal(s, "~/", "~/x", FALSE, "your whole home directory");
  expect_refusal(s, "~/proj/..", "~/x", FALSE, "your whole home directory");
  expect_refusal(s, "~/link-to-home", "~/x", FALSE, "your whole home directory");
  expect_refusal(s, parent, "~/x", FALSE, "a parent of your home directory");
  expect_refusal(s, "~/missing", "~/x", FALSE, "does not exist");
  expect_refusal(s, "~/file", "~/x", FALSE, "is not a directory");
  expect_refusal(s, "~/file/sub", "~/x", TRUE, "is not a directory");
  expect_refusal(s, "relative/dir", "~/x", FALSE, "must be absolute");
  expect_refusal(s, "~/proj", "x", FALSE, "must be absolute");
  expect_refusal(s, "~/proj", "/", FALSE, "would hide the guest user's home");
  expect_refusal(s, "~/proj", "~", FALSE, "would hide the guest user's home");
  expect_refusal(s, "~/proj", "/home", FALSE, "would hide the guest user's home");
  expect_refusal(s, "~/proj", "/opt/\nx", FALSE, "control characters");

  /* two shares on one guest path */
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/proj", "~/a", TRUE, FALSE);
  add_share(profile, "~/ro", "/home/dev/a/", FALSE, FALSE);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_null(plan);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_nonnull(strstr(error->message, "another share is mounted on /home/dev/a"));
}

static void test_plan_no_virtiofsd(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_setenv("HUTCH_VIRTIOFSD", "/nonexistent/virtiofsd", TRUE);
  /* read-only shares need virtiofsd too */
  g_autoptr(HutchProfile) ro = hutch_profile_new_defaults();
  add_share(ro, "~/ro", "/opt/ro", FALSE, FALSE);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) plan = hutch_share_plan(ro, NULL, s->runtime, s->home, "/home/dev", &error);
  g_assert_null(plan);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER);
  g_clear_error(&error);
  /* and so do writable ones */
  g_autoptr(HutchProfile) rw = hutch_profile_new_defaults();
  add_share(rw, "~/proj", "/opt/rw", TRUE, FALSE);
  g_autoptr(GPtrArray) none = hutch_share_plan(rw, NULL, s->runtime, s->home, "/home/dev", &error);
  g_assert_null(none);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER);
  g_assert_nonnull(strstr(error->message, "/nonexistent/virtiofsd"));
  g_clear_error(&error);
  g_unsetenv("HUTCH_VIRTIOFSD");
  /* no shares: virtiofsd is not even looked for */
  g_autoptr(HutchProfile) empty = hutch_profile_new_defaults();
  g_setenv("HUTCH_VIRTIOFSD", "/nonexistent/virtiofsd", TRUE);
  g_autoptr(GPtrArray) nothing =
      hutch_share_plan(empty, NULL, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(nothing->len, ==, 0);
  g_unsetenv("HUTCH_VIRTIOFSD");
}

/* A share's host directory is where it led at create: a guest that plants a symlink through
 * one share (here the parent of another share) cannot redirect the other at the next start. */
static void test_record(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autofree char *sub = g_build_filename(s->home, "proj", "sub", NULL);
  g_autofree char *ssh = g_build_filename(s->home, ".ssh", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(ssh, 0700), ==, 0);
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/proj", "~/VM-Shared", TRUE, FALSE);
  add_share(profile, "~/proj/sub", "/opt/sub", FALSE, FALSE);
  add_share(profile, "~/later", "/opt/later", TRUE, TRUE);
  g_autofree char *record = g_build_filename(s->root, "shares", NULL);
  g_autoptr(GError) error = NULL;

  /* at create: recorded (0600); at a start with nothing changed: the same */
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_true(hutch_share_check_record(plan, profile, record, &error));
  g_assert_no_error(error);
  struct stat st;
  g_assert_cmpint(g_stat(record, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);
  g_autofree char *created = NULL;
  g_assert_true(g_file_get_contents(record, &created, NULL, NULL));
  g_assert_nonnull(strstr(created, sub));
  /* the identity of each directory beside its path; none yet for the one not made yet */
  struct stat sub_st;
  g_assert_cmpint(g_stat(sub, &sub_st), ==, 0);
  g_autofree char *sub_id =
      g_strdup_printf("1.device=%" G_GUINT64_FORMAT "\n1.inode=%" G_GUINT64_FORMAT "\n",
                      (guint64)sub_st.st_dev, (guint64)sub_st.st_ino);
  if (!strstr(created, sub_id))
    g_error("no '%s' in the record:\n%s", sub_id, created);
  g_assert_null(strstr(created, "2.inode"));
  /* the directories checked are held open: those are what virtiofsd gets */
  struct stat fd_st;
  g_assert_cmpint(fstat(entry_at(plan, 1)->dir_fd, &fd_st), ==, 0);
  g_assert_true(fd_st.st_dev == sub_st.st_dev && fd_st.st_ino == sub_st.st_ino);
  g_assert_cmpint(entry_at(plan, 2)->dir_fd, ==, -1);
  g_assert_true(hutch_share_check_record(plan, profile, record, &error));
  g_autofree char *later = g_build_filename(s->home, "later", NULL);
  g_assert_false(g_file_test(later, G_FILE_TEST_EXISTS));
  g_autoptr(GPtrArray) again =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_true(hutch_share_make_dirs(again, &error)); /* create: true, at the first start */
  g_assert_no_error(error);
  g_assert_true(g_file_test(later, G_FILE_TEST_IS_DIR));
  g_assert_true(hutch_share_check_record(again, profile, record, &error));
  g_assert_no_error(error);
  g_autofree char *first = NULL;
  g_assert_true(g_file_get_contents(record, &first, NULL, NULL));
  g_assert_nonnull(strstr(first, "2.inode="));
  g_assert_cmpint(entry_at(again, 2)->dir_fd, >=, 0);

  /* the guest replaces sub (in the writable share) with a symlink to ~/.ssh */
  g_assert_cmpint(g_rmdir(sub), ==, 0);
  g_assert_cmpint(symlink(ssh, sub), ==, 0);
  g_autoptr(GPtrArray) attacked =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_false(hutch_share_check_record(attacked, profile, record, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_autofree char *want = g_strdup_printf("share ~/proj/sub -> /opt/sub: the host directory was "
                                          "%s at create but now resolves to %s; refusing",
                                          sub, ssh);
  if (!strstr(error->message, want))
    g_error("%s\nwanted: %s", error->message, want);
  g_assert_nonnull(strstr(error->message, record));
  g_clear_error(&error);
  /* nothing was rewritten: it is refused again */
  g_autofree char *now = NULL;
  g_assert_true(g_file_get_contents(record, &now, NULL, NULL));
  g_assert_cmpstr(now, ==, first);

  /* the way out the message names: without a record the current places are recorded */
  g_assert_cmpint(g_unlink(record), ==, 0);
  g_assert_true(hutch_share_check_record(attacked, profile, record, &error));
  g_assert_no_error(error);

  /* an unreadable record fails closed */
  g_assert_true(g_file_set_contents(record, "not a key file", -1, NULL));
  g_assert_false(hutch_share_check_record(plan, profile, record, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
}

/* An edit or a clone starts its record from the old one: a share both have keeps what was
 * recorded (a redirect since is refused, under the share's new index), an added one is
 * recorded as it resolves now */
static void test_record_carry(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autofree char *sub = g_build_filename(s->home, "proj", "sub", NULL);
  g_autofree char *ssh = g_build_filename(s->home, ".ssh", NULL);
  g_autofree char *extra = g_build_filename(s->home, "extra", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(ssh, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(extra, 0700), ==, 0);
  g_autoptr(HutchProfile) before = hutch_profile_new_defaults();
  add_share(before, "~/proj", "~/VM-Shared", TRUE, FALSE);
  add_share(before, "~/proj/sub", "/opt/sub", FALSE, FALSE);
  g_autofree char *record = g_build_filename(s->root, "shares", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(before, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_true(hutch_share_check_record(plan, before, record, &error));
  g_assert_no_error(error);

  /* the edited list: the first share gone, sub now at index 0, a new one at 1 */
  g_autoptr(HutchProfile) after = hutch_profile_new_defaults();
  add_share(after, "~/proj/sub", "/opt/sub", FALSE, FALSE);
  add_share(after, "~/extra", "/opt/extra", FALSE, FALSE);
  g_autofree char *carried = g_build_filename(s->root, "shares.new", NULL);
  g_assert_true(hutch_share_record_carry(record, before, carried, after, &error));
  g_assert_no_error(error);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(carried, &text, NULL, NULL));
  g_autofree char *sub_line = g_strdup_printf("0=%s\n", sub);
  g_assert_nonnull(strstr(text, sub_line));
  g_assert_null(strstr(text, "1="));
  g_autoptr(GPtrArray) edited_plan =
      hutch_share_plan(after, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_true(hutch_share_check_record(edited_plan, after, carried, &error));
  g_assert_no_error(error);
  g_unlink(carried);

  /* the guest replaces sub with a link to ~/.ssh: the edit's record refuses it */
  g_assert_cmpint(g_rmdir(sub), ==, 0);
  g_assert_cmpint(symlink(ssh, sub), ==, 0);
  g_autoptr(GPtrArray) attacked =
      hutch_share_plan(after, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_true(hutch_share_record_carry(record, before, carried, after, &error));
  g_assert_false(hutch_share_check_record(attacked, after, carried, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_test_message("%s", error->message);
  g_clear_error(&error);
  /* ... and another directory made there too (the identity is carried) */
  g_assert_cmpint(unlink(sub), ==, 0);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  g_unlink(carried);
  g_autoptr(GPtrArray) remade =
      hutch_share_plan(after, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_true(hutch_share_record_carry(record, before, carried, after, &error));
  g_assert_false(hutch_share_check_record(remade, after, carried, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_clear_error(&error);
  /* no old record (an instance from before records): nothing carried, nothing written */
  g_unlink(carried);
  g_autofree char *none = g_build_filename(s->root, "no-such-record", NULL);
  g_assert_true(hutch_share_record_carry(none, before, carried, after, &error));
  g_assert_false(g_file_test(carried, G_FILE_TEST_EXISTS));
}

/* A create: true share not made yet is made one name at a time below what exists: a link the
 * guest planted on its way (through a writable share holding its parent) is refused, and
 * nothing is made at the link's target. */
static void test_make_dirs_link(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autofree char *proj = g_build_filename(s->home, "proj", NULL);
  g_autofree char *ssh = g_build_filename(s->home, ".ssh", NULL);
  g_autofree char *cache = g_build_filename(proj, "cache", NULL);
  g_autofree char *made = g_build_filename(cache, "new", NULL);
  g_assert_cmpint(g_mkdir(ssh, 0700), ==, 0);
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/proj", "~/VM-Shared", TRUE, FALSE);
  add_share(profile, "~/proj/cache/new", "/opt/new", TRUE, TRUE);
  g_autofree char *record = g_build_filename(s->root, "shares", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) at_create =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_true(hutch_share_check_record(at_create, profile, record, &error));
  g_assert_no_error(error);

  /* the guest makes proj/cache a link to ~/.ssh: the plan resolves the share through it, the
   * record refuses it before anything is made */
  g_assert_cmpint(symlink(ssh, cache), ==, 0);
  g_autoptr(GPtrArray) attacked =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_false(hutch_share_prepare(attacked, profile, record, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_clear_error(&error);
  g_autofree char *in_ssh = g_build_filename(ssh, "new", NULL);
  g_assert_false(g_file_test(in_ssh, G_FILE_TEST_EXISTS));

  /* a link planted after the plan resolved the share (a race): the walk refuses it */
  g_assert_cmpint(g_unlink(cache), ==, 0);
  g_autoptr(GPtrArray) racing =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_true(hutch_share_check_record(racing, profile, record, &error));
  g_assert_no_error(error);
  g_assert_cmpint(symlink(ssh, cache), ==, 0);
  g_assert_false(hutch_share_make_dirs(racing, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  if (!strstr(error->message, "symbolic link"))
    g_error("%s", error->message);
  g_clear_error(&error);
  g_assert_false(g_file_test(in_ssh, G_FILE_TEST_EXISTS));

  /* without it: both names made, 0700, and the made directory's identity recorded */
  g_assert_cmpint(g_unlink(cache), ==, 0);
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_true(hutch_share_prepare(plan, profile, record, &error));
  g_assert_no_error(error);
  g_autofree char *recorded = NULL;
  g_assert_true(g_file_get_contents(record, &recorded, NULL, NULL));
  g_assert_nonnull(strstr(recorded, "1.inode="));
  struct stat st;
  g_assert_cmpint(lstat(cache, &st), ==, 0);
  g_assert_true(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
  g_assert_cmpint(lstat(made, &st), ==, 0);
  g_assert_true(S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
  /* and again: nothing to make */
  g_assert_true(hutch_share_make_dirs(plan, &error));
  g_assert_no_error(error);
}

/* The same path, another directory: a guest that can write the parent of a share (through a
 * share of its own) removes or renames the directory and puts another in its place. */
static void test_record_identity(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autofree char *sub = g_build_filename(s->home, "proj", "sub", NULL);
  g_autofree char *old = g_build_filename(s->home, "proj", "sub.old", NULL);
  g_autofree char *other = g_build_filename(s->home, "proj", "other", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(other, 0700), ==, 0);
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/proj/sub", "/opt/sub", TRUE, FALSE);
  g_autofree char *record = g_build_filename(s->root, "shares", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_true(hutch_share_check_record(plan, profile, record, &error));
  g_assert_no_error(error);
  g_autofree char *first = NULL;
  g_assert_true(g_file_get_contents(record, &first, NULL, NULL));
  struct stat was, now;
  g_assert_cmpint(g_stat(sub, &was), ==, 0);
  g_assert_cmpint(g_stat(other, &now), ==, 0);

  /* another directory renamed into place: the path is the same, the directory is not */
  g_assert_cmpint(g_rename(sub, old), ==, 0);
  g_assert_cmpint(g_rename(other, sub), ==, 0);
  g_autoptr(GPtrArray) swapped =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_false(hutch_share_check_record(swapped, profile, record, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_autofree char *want = g_strdup_printf(
      "share ~/proj/sub -> /opt/sub: the host directory %s was device %" G_GUINT64_FORMAT
      " inode %" G_GUINT64_FORMAT " at create but is now device %" G_GUINT64_FORMAT
      " inode %" G_GUINT64_FORMAT "; refusing",
      sub, (guint64)was.st_dev, (guint64)was.st_ino, (guint64)now.st_dev, (guint64)now.st_ino);
  if (!strstr(error->message, want) || !strstr(error->message, record))
    g_error("%s\nwanted: %s", error->message, want);
  g_clear_error(&error);
  g_autofree char *after = NULL;
  g_assert_true(g_file_get_contents(record, &after, NULL, NULL));
  g_assert_cmpstr(after, ==, first);

  /* removed and made again */
  g_assert_cmpint(g_rmdir(sub), ==, 0);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  g_assert_false(hutch_share_check_record(swapped, profile, record, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_nonnull(strstr(error->message, "refusing to share it"));
  g_clear_error(&error);

  /* the original back in place: accepted */
  g_assert_cmpint(g_rmdir(sub), ==, 0);
  g_assert_cmpint(g_rename(old, sub), ==, 0);
  g_assert_true(hutch_share_check_record(swapped, profile, record, &error));
  g_assert_no_error(error);

  /* a record from before identities were kept: the path is compared, the identity added */
  g_autofree char *legacy = g_strdup_printf("[shares]\n0=%s\n", sub);
  g_assert_true(g_file_set_contents(record, legacy, -1, NULL));
  g_assert_true(hutch_share_check_record(swapped, profile, record, &error));
  g_assert_no_error(error);
  g_autofree char *upgraded = NULL;
  g_assert_true(g_file_get_contents(record, &upgraded, NULL, NULL));
  g_assert_cmpstr(upgraded, ==, first);
  /* a broken identity fails closed */
  g_autofree char *broken = g_strdup_printf("[shares]\n0=%s\n0.device=x\n0.inode=1\n", sub);
  g_assert_true(g_file_set_contents(record, broken, -1, NULL));
  g_assert_false(hutch_share_check_record(swapped, profile, record, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_nonnull(strstr(error->message, "0.device is not a number"));
  g_clear_error(&error);

  /* a link planted after the path was resolved (between plan and check): the directory is
   * opened without following it */
  g_assert_true(g_file_set_contents(record, first, -1, NULL));
  g_autoptr(GPtrArray) planned =
      hutch_share_plan(profile, &c_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_assert_cmpint(g_rename(sub, old), ==, 0);
  g_autofree char *ssh = g_build_filename(s->home, ".ssh", NULL);
  g_assert_cmpint(g_mkdir(ssh, 0700), ==, 0);
  g_assert_cmpint(symlink(ssh, sub), ==, 0);
  g_assert_false(hutch_share_check_record(planned, profile, record, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  if (!strstr(error->message, "share ~/proj/sub -> /opt/sub: refusing to follow the symbolic link"))
    g_error("unexpected: %s", error->message);
}

static void assert_argv(GStrv argv, const char *const *want) {
  g_autofree char *got_text = g_strjoinv(" ", argv);
  g_autofree char *want_text = g_strjoinv(" ", (GStrv)want);
  g_assert_cmpstr(got_text, ==, want_text);
}

static void test_argv(void) {
  HutchSharePlanEntry e = {
      .host_dir = (char *)"/home/me/not-given",
      .root = (char *)"/run/user/1000/hutch/a,b\\c/virtiofs-0.root",
      .virtiofsd = (char *)"/usr/lib/qemu/virtiofsd",
      .virtiofsd_kind = HUTCH_VIRTIOFSD_C,
  };
  g_auto(GStrv) unpriv = hutch_share_virtiofsd_argv(&e, 3, TRUE);
  /* the open-file limit virtiofsd sets: the hard one, which needs no privilege */
  struct rlimit nofile;
  g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &nofile), ==, 0);
  g_autofree char *rlimit = g_strdup_printf(
      "--rlimit-nofile=%llu",
      nofile.rlim_max == RLIM_INFINITY ? 0ULL : (unsigned long long)nofile.rlim_max);
  assert_argv(unpriv, (const char *[]){"/usr/lib/qemu/virtiofsd", "--fd=3", "-f", "-o",
                                       "source=/run/user/1000/hutch/a\\,b\\\\c/virtiofs-0.root",
                                       "-o", "cache=auto", "-o", "sandbox=chroot", rlimit, NULL});
  g_auto(GStrv) root = hutch_share_virtiofsd_argv(&e, 5, FALSE);
  assert_argv(root, (const char *[]){"/usr/lib/qemu/virtiofsd", "--fd=5", "-f", "-o",
                                     "source=/run/user/1000/hutch/a\\,b\\\\c/virtiofs-0.root", "-o",
                                     "cache=auto", NULL});
  /* the share's cache mode: always caches writes in the guest too; never is C's "none" */
  e.cache = HUTCH_SHARE_CACHE_ALWAYS;
  g_auto(GStrv) always = hutch_share_virtiofsd_argv(&e, 5, FALSE);
  assert_argv(always, (const char *[]){"/usr/lib/qemu/virtiofsd", "--fd=5", "-f", "-o",
                                       "source=/run/user/1000/hutch/a\\,b\\\\c/virtiofs-0.root",
                                       "-o", "cache=always", "-o", "writeback", NULL});
  e.cache = HUTCH_SHARE_CACHE_NEVER;
  g_auto(GStrv) never = hutch_share_virtiofsd_argv(&e, 5, FALSE);
  assert_argv(never, (const char *[]){"/usr/lib/qemu/virtiofsd", "--fd=5", "-f", "-o",
                                      "source=/run/user/1000/hutch/a\\,b\\\\c/virtiofs-0.root",
                                      "-o", "cache=none", NULL});
  HutchSharePlanEntry r = {
      .host_dir = (char *)"/home/me/not-given",
      .root = (char *)"/run/hutch/a,b/virtiofs-1.root",
      .virtiofsd = (char *)"/usr/libexec/virtiofsd",
      .virtiofsd_kind = HUTCH_VIRTIOFSD_RUST,
      .readonly = TRUE,
  };
  g_auto(GStrv) rust = hutch_share_virtiofsd_argv(&r, 3, TRUE);
  assert_argv(rust, (const char *[]){"/usr/libexec/virtiofsd", "--fd=3",
                                     "--shared-dir=/run/hutch/a,b/virtiofs-1.root", "--cache=auto",
                                     "--sandbox=chroot", "--readonly", NULL});
  r.readonly = FALSE;
  g_auto(GStrv) rust_root = hutch_share_virtiofsd_argv(&r, 3, FALSE);
  assert_argv(rust_root, (const char *[]){"/usr/libexec/virtiofsd", "--fd=3",
                                          "--shared-dir=/run/hutch/a,b/virtiofs-1.root",
                                          "--cache=auto", NULL});
  r.cache = HUTCH_SHARE_CACHE_ALWAYS;
  g_auto(GStrv) rust_always = hutch_share_virtiofsd_argv(&r, 3, FALSE);
  assert_argv(rust_always, (const char *[]){"/usr/libexec/virtiofsd", "--fd=3",
                                            "--shared-dir=/run/hutch/a,b/virtiofs-1.root",
                                            "--cache=always", "--writeback", NULL});
  r.cache = HUTCH_SHARE_CACHE_NEVER;
  g_auto(GStrv) rust_never = hutch_share_virtiofsd_argv(&r, 3, FALSE);
  assert_argv(rust_never, (const char *[]){"/usr/libexec/virtiofsd", "--fd=3",
                                           "--shared-dir=/run/hutch/a,b/virtiofs-1.root",
                                           "--cache=never", NULL});
}

static char *map_text(guint32 guest, guint32 host, guint32 start, guint32 count) {
  HutchIdRange ranges[3];
  guint n = hutch_share_id_map(guest, host, start, count, ranges);
  GString *out = g_string_new(NULL);
  for (guint i = 0; i < n; i++)
    g_string_append_printf(out, "%s%u %u %u", i ? "; " : "", ranges[i].inner, ranges[i].outer,
                           ranges[i].count);
  return g_string_free(out, FALSE);
}

static void test_id_map(void) {
  const struct {
    guint32 guest, host, start, count;
    const char *want;
  } cases[] = {
      /* the guest user 1000 is host user 1001; guest root and the rest are subuids */
      {1000, 1001, 100000, 65536, "0 100000 1000; 1000 1001 1; 1001 101000 64535"},
      /* the default: the guest user has the host user's uid */
      {1001, 1001, 100000, 65536, "0 100000 1001; 1001 1001 1; 1002 101001 64534"},
      /* a guest uid 0 (not what hutch asks for, but well defined) */
      {0, 1000, 100000, 65536, "0 1000 1; 1 100000 65535"},
      /* a short subordinate range maps what it can */
      {1000, 1001, 200000, 10, "0 200000 10; 1000 1001 1"},
      {1000, 1001, 200000, 1500, "0 200000 1000; 1000 1001 1; 1001 201000 500"},
      /* a guest uid beyond 65535 */
      {70000, 1001, 100000, 65536, "0 100000 65536; 70000 1001 1"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *got = map_text(cases[i].guest, cases[i].host, cases[i].start, cases[i].count);
    g_assert_cmpstr(got, ==, cases[i].want);
  }
}

static void test_subid(void) {
  const char *text = "# comment\nalice:100000:65536\n\nbob:bad:1\n1002:300000:1000\n"
                     "bob:165536:65536\ncarol:1:0\n";
  guint32 start = 0, count = 0;
  g_assert_true(hutch_share_parse_subid(text, "alice", 1000, &start, &count));
  g_assert_cmpuint(start, ==, 100000);
  g_assert_cmpuint(count, ==, 65536);
  g_assert_true(hutch_share_parse_subid(text, "bob", 1001, &start, &count));
  g_assert_cmpuint(start, ==, 165536);
  g_assert_true(hutch_share_parse_subid(text, "dave", 1002, &start, &count));
  g_assert_cmpuint(start, ==, 300000);
  g_assert_cmpuint(count, ==, 1000);
  g_assert_false(hutch_share_parse_subid(text, "carol", 1003, &start, &count));
  g_assert_false(hutch_share_parse_subid(text, "alic", 1004, &start, &count));
}

/* ---- a real virtiofsd ------------------------------------------------------------------ */

static pid_t read_pid(const char *pidfile) {
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(pidfile, &text, NULL, NULL));
  return (pid_t)g_ascii_strtoll(text, NULL, 10);
}

static char *proc_text(pid_t pid, const char *file) {
  g_autofree char *path = g_strdup_printf("/proc/%d/%s", (int)pid, file);
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  return text;
}

/* Gone, or a zombie waiting for init to reap it. */
static gboolean wait_gone(pid_t pid) {
  for (int i = 0; i < 200; i++) {
    g_autofree char *stat = proc_text(pid, "stat");
    const char *end = stat ? strrchr(stat, ')') : NULL;
    if (!stat || (end && (end[2] == 'Z' || end[2] == 'X')))
      return TRUE;
    g_usleep(20 * 1000);
  }
  return FALSE;
}

static gboolean is_socket(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == getuid();
}

static GPtrArray *real_plan(Scratch *s, HutchVirtiofsd **ret_virtiofsd) {
  g_autoptr(GError) error = NULL;
  *ret_virtiofsd = hutch_virtiofsd_find(&error);
  if (!*ret_virtiofsd) {
    g_test_skip(error->message);
    return NULL;
  }
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/a,b\\c", "~/Shared", TRUE, FALSE);
  add_share(profile, "~/ro", "/opt/ro", FALSE, FALSE);
  add_share(profile, "~/created/here", "/opt/new", TRUE, TRUE);
  GPtrArray *plan =
      hutch_share_plan(profile, *ret_virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  return plan;
}

/* Where a share's directory (name NULL) or a name in it is in its virtiofsd's view: under
 * its mount point, or under "/" for the Rust virtiofsd, which chroots into the directory. */
static char *served_path(const HutchSharePlanEntry *e, const char *name) {
  const char *top = e->virtiofsd_kind == HUTCH_VIRTIOFSD_RUST ? "/" : e->root;
  return name ? g_build_filename(top, name, NULL) : g_strdup(top);
}

/* The Rust virtiofsd chroots into the shared directory a moment after it starts: wait (up to
 * 5 s) until it has, so that what the tests read through /proc/PID is its final view. */
static void wait_chrooted(const HutchSharePlanEntry *e, pid_t pid) {
  if (e->virtiofsd_kind != HUTCH_VIRTIOFSD_RUST)
    return;
  g_autofree char *link = g_strdup_printf("/proc/%d/root", (int)pid);
  for (int i = 0; i < 100; i++) {
    g_autofree char *root = g_file_read_link(link, NULL);
    if (root && strcmp(root, "/") != 0)
      return;
    g_usleep(50 * 1000);
  }
  g_error("virtiofsd %d did not chroot into %s", (int)pid, e->root);
}

/* path as /proc/PID/mountinfo writes it: space, tab, newline and backslash as \ooo */
static char *mountinfo_escape(const char *path) {
  GString *out = g_string_new(NULL);
  for (const char *p = path; *p; p++) {
    if (strchr(" \t\n\\", *p))
      g_string_append_printf(out, "\\%03o", (guchar)*p);
    else
      g_string_append_c(out, *p);
  }
  return g_string_free(out, FALSE);
}

static void test_start_stop(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autoptr(HutchVirtiofsd) virtiofsd = NULL;
  g_autoptr(GPtrArray) plan = real_plan(s, &virtiofsd);
  if (!plan)
    return;
  g_autoptr(GError) error = NULL;
  guint guest_uid = 1000, guest_gid = 1000;
  if (!hutch_share_start(plan, guest_uid, guest_gid, &error))
    g_error("hutch_share_start: %s", error->message);
  g_autofree char *created = g_build_filename(s->home, "created", "here", NULL);
  g_assert_true(g_file_test(created, G_FILE_TEST_IS_DIR));

  pid_t pids[3] = {0};
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *e = entry_at(plan, i);
    g_assert_true(is_socket(e->socket));
    pids[i] = read_pid(e->pidfile);
    g_autofree char *comm = proc_text(pids[i], "comm");
    g_assert_nonnull(comm);
    g_assert_cmpstr(g_strstrip(comm), ==, "virtiofsd");
    /* under the filter against set-ID files (test-nosetid.c): no new privileges, seccomp */
    g_autofree char *status = proc_text(pids[i], "status");
    g_assert_nonnull(strstr(status, "\nNoNewPrivs:\t1\n"));
    g_assert_nonnull(strstr(status, "\nSeccomp:\t2\n"));
    if (geteuid() != 0) {
      /* namespace uid 1000 is this user; namespace root is a subordinate uid */
      g_autofree char *uid_map = proc_text(pids[i], "uid_map");
      g_auto(GStrv) lines = g_strsplit(uid_map, "\n", -1);
      gboolean found = FALSE, root_is_user = FALSE;
      for (guint l = 0; lines[l]; l++) {
        guint inner = 0, outer = 0, count = 0;
        if (sscanf(lines[l], "%u %u %u", &inner, &outer, &count) != 3)
          continue;
        found |= inner == guest_uid && outer == getuid() && count == 1;
        root_is_user |= inner == 0 && outer == getuid();
      }
      if (!found || root_is_user)
        g_error("unexpected uid_map of virtiofsd:\n%s", uid_map);
    }
  }
  g_assert_cmpint(pids[0], >, 1);
  g_assert_cmpint(pids[1], >, 1);
  for (guint i = 0; i < 2; i++) {
    /* each virtiofsd shares its mount point, on which its own mount namespace has the host
     * directory; read-only there for a read-only share when virtiofsd cannot do it itself */
    const HutchSharePlanEntry *e = entry_at(plan, i);
    wait_chrooted(e, pids[i]);
    g_autofree char *mountinfo = proc_text(pids[i], "mountinfo");
    g_assert_nonnull(mountinfo);
    g_auto(GStrv) lines = g_strsplit(mountinfo, "\n", -1);
    const char *options = NULL;
    /* The Rust virtiofsd chroots into the shared directory once it starts: its mountinfo
     * then shows only what is under its root, the mount on e->root as "/", whose source
     * (the path within its file system; a root below / when the tests run in one) ends in
     * the host directory. */
    gboolean chrooted = e->virtiofsd_kind == HUTCH_VIRTIOFSD_RUST;
    g_autofree char *source = mountinfo_escape(e->host_dir);
    for (guint l = 0; lines[l]; l++) {
      g_auto(GStrv) fields = g_strsplit(lines[l], " ", 7);
      if (g_strv_length(fields) < 6)
        continue;
      if (chrooted ? strcmp(fields[4], "/") == 0 && g_str_has_suffix(fields[3], source)
                   : strcmp(fields[4], e->root) == 0)
        options = strstr(lines[l], fields[5]);
    }
    if (!options)
      g_error("no mount on %s (of %s) in virtiofsd's mountinfo:\n%s", e->root, source, mountinfo);
    gboolean ro = g_str_has_prefix(options, "ro,") || g_str_has_prefix(options, "ro ");
    g_assert_cmpint(ro, ==, e->readonly && !virtiofsd->has_readonly);
    g_assert_true(g_file_test(e->root, G_FILE_TEST_IS_DIR));
    /* outside virtiofsd, nothing is mounted there */
    g_autoptr(GDir) empty = g_dir_open(e->root, 0, NULL);
    g_assert_nonnull(empty);
    g_assert_null(g_dir_read_name(empty));
  }

  /* QEMU connecting and going away: virtiofsd sets up its sandbox, then exits by itself */
  const HutchSharePlanEntry *e2 = entry_at(plan, 2);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, e2->socket, sizeof(addr.sun_path));
  g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  g_usleep(300 * 1000);
  g_autofree char *comm2 = proc_text(pids[2], "comm");
  g_assert_nonnull(comm2); /* the chroot sandbox worked: still running */
  /* once connected, its soft open-file limit is the hard one (virtiofsd applies
   * --rlimit-nofile after the connection): it holds a file per inode the guest saw. As root
   * the limit is left alone. */
  g_autofree char *limits = proc_text(pids[2], "limits");
  g_assert_nonnull(limits);
  const char *line = strstr(limits, "Max open files");
  g_assert_nonnull(line);
  guint64 soft = 0, hard = 0;
  g_assert_cmpint(sscanf(line + strlen("Max open files"), "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT,
                         &soft, &hard), ==, 2);
  if (geteuid() != 0)
    g_assert_cmpuint(soft, ==, hard);
  close(fd);
  g_assert_true(wait_gone(pids[2]));

  hutch_share_stop(s->runtime);
  g_assert_true(wait_gone(pids[0]));
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *e = entry_at(plan, i);
    g_assert_false(g_file_test(e->socket, G_FILE_TEST_EXISTS));
    g_assert_false(g_file_test(e->pidfile, G_FILE_TEST_EXISTS));
    g_assert_false(g_file_test(e->root, G_FILE_TEST_EXISTS));
    g_assert_true(g_file_test(e->logfile, G_FILE_TEST_EXISTS));
  }

  /* starting again on the same paths works */
  if (!hutch_share_start(plan, guest_uid, guest_gid, &error))
    g_error("hutch_share_start again: %s", error->message);
  pid_t again = read_pid(entry_at(plan, 0)->pidfile);
  g_assert_cmpint(again, !=, pids[0]);
  hutch_share_stop(s->runtime);
  g_assert_true(wait_gone(again));
}

/* stat of path inside pid's mount namespace (and root) */
static gboolean stat_in(pid_t pid, const char *path, struct stat *st) {
  g_autofree char *through = g_strdup_printf("/proc/%d/root%s", (int)pid, path);
  return g_stat(through, st) == 0;
}

/* The directory checked is the directory served: the host path swapped for a link to another
 * directory after the check (as a guest of another VM writing the parent through its own share
 * can, at any moment) changes nothing for virtiofsd, which never gets the path. */
static void test_start_serves_checked(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchVirtiofsd) virtiofsd = hutch_virtiofsd_find(&error);
  if (!virtiofsd) {
    g_test_skip(error->message);
    return;
  }
  /* the share is ~/proj/mid/sub; the guest makes ~/proj/mid a link to ~/secret, which
   * holds a sub too: the path then leads to a real directory, no link at its end */
  g_autofree char *mid = g_build_filename(s->home, "proj", "mid", NULL);
  g_autofree char *moved = g_build_filename(s->home, "proj", "mid.moved", NULL);
  g_autofree char *victim = g_build_filename(mid, "sub", NULL);
  g_autofree char *elsewhere = g_build_filename(s->home, "secret", NULL);
  g_autofree char *ssh = g_build_filename(elsewhere, "sub", NULL);
  g_autofree char *victim_mark = g_build_filename(victim, "shared-file", NULL);
  g_autofree char *ssh_mark = g_build_filename(ssh, "id_ed25519", NULL);
  g_assert_cmpint(g_mkdir_with_parents(victim, 0700), ==, 0);
  g_assert_cmpint(g_mkdir_with_parents(ssh, 0700), ==, 0);
  g_assert_true(g_file_set_contents(victim_mark, "ok", -1, NULL));
  g_assert_true(g_file_set_contents(ssh_mark, "secret", -1, NULL));
  struct stat victim_st, ssh_st;
  g_assert_cmpint(g_stat(victim, &victim_st), ==, 0);
  g_assert_cmpint(g_stat(ssh, &ssh_st), ==, 0);

  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  add_share(profile, "~/proj/mid/sub", "/opt/sub", TRUE, FALSE);
  add_share(profile, "~/proj/mid/sub/", "/opt/sub-ro", FALSE, FALSE);
  g_autoptr(GPtrArray) plan =
      hutch_share_plan(profile, virtiofsd, s->runtime, s->home, "/home/dev", &error);
  g_assert_no_error(error);
  g_autofree char *record = g_build_filename(s->root, "shares", NULL);
  g_assert_true(hutch_share_check_record(plan, profile, record, &error));
  g_assert_no_error(error);

  /* checked; now the guest swaps a part of the path for a link */
  g_assert_cmpint(g_rename(mid, moved), ==, 0);
  g_assert_cmpint(symlink(elsewhere, mid), ==, 0);
  if (!hutch_share_start(plan, 1000, 1000, &error))
    g_error("hutch_share_start: %s", error->message);

  pid_t pids[2] = {0};
  for (guint i = 0; i < plan->len; i++) {
    const HutchSharePlanEntry *e = entry_at(plan, i);
    pid_t pid = read_pid(e->pidfile);
    /* what virtiofsd shares, seen from inside its mount namespace: the directory checked */
    wait_chrooted(e, pid);
    struct stat served;
    g_autofree char *top = served_path(e, NULL);
    if (!stat_in(pid, top, &served))
      g_error("stat %s in virtiofsd %d: %s", top, (int)pid, g_strerror(errno));
    g_assert_true(served.st_dev == victim_st.st_dev && served.st_ino == victim_st.st_ino);
    g_assert_false(served.st_dev == ssh_st.st_dev && served.st_ino == ssh_st.st_ino);
    g_autofree char *mark = served_path(e, "shared-file");
    g_autofree char *secret = served_path(e, "id_ed25519");
    struct stat st;
    g_assert_true(stat_in(pid, mark, &st));
    g_assert_false(stat_in(pid, secret, &st));
    /* and its command line names the mount point, never the host path */
    g_autofree char *cmdline = NULL;
    gsize len = 0;
    g_autofree char *cmdline_path = g_strdup_printf("/proc/%d/cmdline", (int)pid);
    g_assert_true(g_file_get_contents(cmdline_path, &cmdline, &len, NULL));
    gboolean names_root = FALSE;
    for (gsize off = 0; off < len; off += strlen(cmdline + off) + 1) {
      g_assert_null(strstr(cmdline + off, victim));
      names_root |= strstr(cmdline + off, e->root) != NULL;
    }
    g_assert_true(names_root);
    pids[i] = pid;
  }
  hutch_share_stop(s->runtime);
  for (guint i = 0; i < plan->len; i++)
    g_assert_true(wait_gone(pids[i]));
}

static void test_start_failures(void) {
  g_autoptr(Scratch) s = scratch_new();
  g_autoptr(HutchVirtiofsd) virtiofsd = NULL;
  g_autoptr(GPtrArray) plan = real_plan(s, &virtiofsd);
  if (!plan)
    return;
  /* a shared directory that went away between planning and start */
  g_autofree char *dir = g_build_filename(s->home, "a,b\\c", NULL);
  g_assert_cmpint(g_rmdir(dir), ==, 0);
  g_autoptr(GError) error = NULL;
  g_assert_false(hutch_share_start(plan, 1000, 1000, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_clear_error(&error);
  g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);

  /* a virtiofsd that dies at once: the error carries its log, nothing is left behind */
  HutchSharePlanEntry *e = g_ptr_array_index(plan, 0);
  g_free(e->virtiofsd);
  e->virtiofsd = g_strdup(g_getenv("HUTCH_TEST_FAKE_VIRTIOFSD") ?: "/bin/false");
  g_assert_false(hutch_share_start(plan, 1000, 1000, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER);
  g_assert_nonnull(strstr(error->message, "exited"));
  g_assert_false(g_file_test(e->socket, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(e->pidfile, G_FILE_TEST_EXISTS));
  g_clear_error(&error);

  /* not an executable: exec fails in the child and says so */
  g_free(e->virtiofsd);
  e->virtiofsd = g_strdup("/nonexistent/virtiofsd");
  g_assert_false(hutch_share_start(plan, 1000, 1000, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER);
  g_assert_nonnull(strstr(error->message, "exec"));
  g_assert_false(g_file_test(e->socket, G_FILE_TEST_EXISTS));
}

static void test_stop_reused_pid(void) {
  /* a stale pidfile naming a process that is not virtiofsd: not killed, file removed */
  g_autoptr(Scratch) s = scratch_new();
  GPid child = 0;
  const char *argv[] = {"sleep", "30", NULL};
  g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                              G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &child,
                              NULL));
  g_autofree char *pidfile = g_build_filename(s->runtime, "virtiofs-0.pid", NULL);
  g_autofree char *text = g_strdup_printf("%d\n", (int)child);
  g_assert_true(g_file_set_contents(pidfile, text, -1, NULL));
  hutch_share_stop(s->runtime);
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  g_assert_cmpint(kill(child, 0), ==, 0);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
}

/* The files and directories below a share, counted up to a cap, links not followed; the
 * start's warning when they outnumber what virtiofsd can keep open. */
static void test_crowded(void) {
  g_autofree char *root = g_dir_make_tmp("hutch-crowded-XXXXXX", NULL);
  g_assert_nonnull(root);
  /* 3 directories of 10 files, and one of 4 directories nested 4 deep: 30 + 3 + 4 = 37 */
  for (int d = 0; d < 3; d++) {
    g_autofree char *dir = g_strdup_printf("%s/pkg-%d", root, d);
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    for (int f = 0; f < 10; f++) {
      g_autofree char *file = g_strdup_printf("%s/f%d", dir, f);
      g_assert_true(g_file_set_contents(file, "x", 1, NULL));
    }
  }
  g_autofree char *deep = g_strdup_printf("%s/a/b/c/d", root);
  g_assert_cmpint(g_mkdir_with_parents(deep, 0700), ==, 0);
  /* a link to a directory is one entry, and is not followed */
  g_autofree char *link = g_strdup_printf("%s/a/up", root);
  g_assert_cmpint(symlink(root, link), ==, 0);
  int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpuint(hutch_share_count_entries(fd, 1000), ==, 38);
  /* it stops once past the cap */
  g_assert_cmpuint(hutch_share_count_entries(fd, 10), ==, 11);
  g_assert_cmpuint(hutch_share_count_entries(fd, 0), ==, 1);

  HutchSharePlanEntry e = {.host_dir = root, .dir_fd = fd};
  /* 500 of the limit are virtiofsd's own */
  g_assert_null(hutch_share_crowded(&e, 500 + 38));
  g_assert_null(hutch_share_crowded(&e, G_MAXUINT64));
  g_autofree char *warning = hutch_share_crowded(&e, 500 + 37);
  g_assert_nonnull(warning);
  g_autofree char *want = g_strdup_printf(
      "share %s holds more than 37 files and directories, and its virtiofsd keeps one open for "
      "each the guest looks at, up to the open-file limit (537): a guest that goes through all "
      "of them (find, git status, a build) meets \"Too many open files\". Raise the hard limit "
      "(hutch doctor says how), or keep such a tree on the guest's own disk",
      root);
  g_assert_cmpstr(warning, ==, want);
  close(fd);
  /* a guest nests directories without end: the count stops at 64 levels */
  g_autofree char *nest = g_strdup_printf("%s/nest", root);
  g_assert_cmpint(g_mkdir(nest, 0700), ==, 0);
  int nest_fd = open(nest, O_PATH | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(nest_fd, >=, 0);
  int at = open(nest, O_PATH | O_DIRECTORY | O_CLOEXEC);
  for (int level = 0; level < 200; level++) {
    g_assert_cmpint(mkdirat(at, "d", 0700), ==, 0);
    int next = openat(at, "d", O_PATH | O_DIRECTORY | O_CLOEXEC);
    g_assert_cmpint(next, >=, 0);
    close(at);
    at = next;
  }
  close(at);
  g_assert_cmpuint(hutch_share_count_entries(nest_fd, 100000), ==, 65);
  close(nest_fd);
  g_autofree char *rm = g_strdup_printf("rm -rf '%s'", root);
  g_assert_cmpint(system(rm), ==, 0);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/share/help", test_help);
  g_test_add_func("/share/plan", test_plan);
  g_test_add_func("/share/plan-rust-readonly", test_plan_rust_readonly);
  g_test_add_func("/share/plan-refusals", test_plan_refusals);
  g_test_add_func("/share/plan-no-virtiofsd", test_plan_no_virtiofsd);
  g_test_add_func("/share/record", test_record);
  g_test_add_func("/share/record-identity", test_record_identity);
  g_test_add_func("/share/argv", test_argv);
  g_test_add_func("/share/crowded", test_crowded);
  g_test_add_func("/share/record-carry", test_record_carry);
  g_test_add_func("/share/make-dirs-link", test_make_dirs_link);
  g_test_add_func("/share/id-map", test_id_map);
  g_test_add_func("/share/subid", test_subid);
  g_test_add_func("/share/start-stop", test_start_stop);
  g_test_add_func("/share/start-serves-checked", test_start_serves_checked);
  g_test_add_func("/share/start-failures", test_start_failures);
  g_test_add_func("/share/stop-reused-pid", test_stop_reused_pid);
  return g_test_run();
}
