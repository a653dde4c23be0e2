/* test-share.c: share planning, virtiofsd's command line and id mapping (pure), and a real
 * virtiofsd started and stopped as the user running the test. */
#include "config.h"

#include <errno.h>
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

static void assert_argv(GStrv argv, const char *const *want) {
  g_autofree char *got_text = g_strjoinv(" ", argv);
  g_autofree char *want_text = g_strjoinv(" ", (GStrv)want);
  g_assert_cmpstr(got_text, ==, want_text);
}

static void test_argv(void) {
  HutchSharePlanEntry e = {
      .host_dir = (char *)"/home/me/a,b\\c",
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
                                       "source=/home/me/a\\,b\\\\c", "-o", "sandbox=chroot",
                                       rlimit, NULL});
  g_auto(GStrv) root = hutch_share_virtiofsd_argv(&e, 5, FALSE);
  assert_argv(root, (const char *[]){"/usr/lib/qemu/virtiofsd", "--fd=5", "-f", "-o",
                                     "source=/home/me/a\\,b\\\\c", NULL});
  HutchSharePlanEntry r = {
      .host_dir = (char *)"/home/me/a,b",
      .virtiofsd = (char *)"/usr/libexec/virtiofsd",
      .virtiofsd_kind = HUTCH_VIRTIOFSD_RUST,
      .readonly = TRUE,
  };
  g_auto(GStrv) rust = hutch_share_virtiofsd_argv(&r, 3, TRUE);
  assert_argv(rust,
              (const char *[]){"/usr/libexec/virtiofsd", "--fd=3", "--shared-dir=/home/me/a,b",
                               "--sandbox=chroot", "--readonly", NULL});
  r.readonly = FALSE;
  g_auto(GStrv) rust_root = hutch_share_virtiofsd_argv(&r, 3, FALSE);
  assert_argv(rust_root, (const char *[]){"/usr/libexec/virtiofsd", "--fd=3",
                                          "--shared-dir=/home/me/a,b", NULL});
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
  if (!virtiofsd->has_readonly) {
    /* the read-only share is a read-only bind mount in virtiofsd's own mount namespace; the
     * writable one is not */
    g_autofree char *mountinfo = proc_text(pids[1], "mountinfo");
    g_assert_nonnull(mountinfo);
    g_auto(GStrv) lines = g_strsplit(mountinfo, "\n", -1);
    gboolean ro_found = FALSE;
    const char *ro_dir = entry_at(plan, 1)->host_dir;
    for (guint l = 0; lines[l]; l++) {
      g_auto(GStrv) fields = g_strsplit(lines[l], " ", 7);
      if (g_strv_length(fields) >= 6 && strcmp(fields[4], ro_dir) == 0)
        ro_found = g_str_has_prefix(fields[5], "ro,") || strcmp(fields[5], "ro") == 0;
    }
    if (!ro_found)
      g_error("no read-only mount of %s in virtiofsd's mountinfo:\n%s", ro_dir, mountinfo);
    g_autofree char *rw_info = proc_text(pids[0], "mountinfo");
    g_assert_null(strstr(rw_info, entry_at(plan, 0)->host_dir));
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

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/share/help", test_help);
  g_test_add_func("/share/plan", test_plan);
  g_test_add_func("/share/plan-rust-readonly", test_plan_rust_readonly);
  g_test_add_func("/share/plan-refusals", test_plan_refusals);
  g_test_add_func("/share/plan-no-virtiofsd", test_plan_no_virtiofsd);
  g_test_add_func("/share/argv", test_argv);
  g_test_add_func("/share/id-map", test_id_map);
  g_test_add_func("/share/subid", test_subid);
  g_test_add_func("/share/start-stop", test_start_stop);
  g_test_add_func("/share/start-failures", test_start_failures);
  g_test_add_func("/share/stop-reused-pid", test_stop_reused_pid);
  return g_test_run();
}
