/* test-doctor.c: hutch doctor's checks against a fake host (a root directory with dev, sys,
 * proc and etc, a PATH of stub programs) and libvirt's test driver. */
#include "config.h"

#include <glib/gstdio.h>
#include <grp.h>
#include <unistd.h>

#include "doctor-private.h"
#include "util-private.h"

typedef struct {
  char *root;
  char *bin;
  char *runtime;
  char *instances;
  HutchDoctorEnv env;
} Fake;

static void put(const char *root, const char *rel, const char *text, int mode) {
  g_autofree char *path = g_build_filename(root, rel, NULL);
  g_autofree char *dir = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  g_assert_cmpint(g_chmod(path, mode), ==, 0);
}

/* A host with everything but KVM: all programs, subuid ranges for "me", a runtime dir. */
static Fake *fake_new(void) {
  Fake *f = g_new0(Fake, 1);
  f->root = g_dir_make_tmp("hutch-doctor-XXXXXX", NULL);
  g_assert_nonnull(f->root);
  f->bin = g_build_filename(f->root, "bin", NULL);
  f->runtime = g_build_filename(f->root, "run", NULL);
  f->instances = g_build_filename(f->root, "data", "hutch", "instances", NULL);
  g_assert_cmpint(g_mkdir_with_parents(f->runtime, 0700), ==, 0);
  const char *programs[] = {"qemu-system-x86_64", "passt",      "newuidmap",
                            "newgidmap",          "mmdebstrap", "nft", "ip", NULL};
  for (guint i = 0; programs[i]; i++)
    put(f->bin, programs[i], "#!/bin/sh\nexit 0\n", 0755);
  put(f->root, "etc/subuid", "other:200000:65536\nme:100000:65536\n", 0644);
  put(f->root, "etc/subgid", "me:100000:65536\n", 0644);
  /* a virtiofsd that says it is the Rust one */
  put(f->bin, "virtiofsd", "#!/bin/sh\necho 'Usage: virtiofsd --shared-dir <dir> --readonly'\n",
      0755);
  g_autofree char *virtiofsd = g_build_filename(f->bin, "virtiofsd", NULL);
  g_setenv("HUTCH_VIRTIOFSD", virtiofsd, TRUE);
  g_unsetenv("HUTCH_PASST");
  f->env = (HutchDoctorEnv){
      .root = f->root,
      .path = f->bin,
      .runtime_dir = f->runtime,
      .cache_dir = f->root,
      .user = "me",
      .uid = 1234,
      .min_free = 0,
      .nofile_hard = 524288,
      .instances_dir = f->instances,
      .config_dir = "/home/me/.config",
  };
  return f;
}

static void fake_free(Fake *f) {
  hutch_rmtree(f->root, NULL);
  g_free(f->root);
  g_free(f->bin);
  g_free(f->runtime);
  g_free(f->instances);
  g_free(f);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Fake, fake_free)

static JsonObject *result(JsonArray *results, const char *check) {
  for (guint i = 0; i < json_array_get_length(results); i++) {
    JsonObject *r = json_array_get_object_element(results, i);
    if (g_strcmp0(json_object_get_string_member(r, "check"), check) == 0)
      return r;
  }
  g_assert_not_reached();
}

/* Every result is well-formed: a failed check has a severity other than info and a fix; a
 * passed one has neither. */
static void assert_shape(JsonArray *results) {
  for (guint i = 0; i < json_array_get_length(results); i++) {
    JsonObject *r = json_array_get_object_element(results, i);
    gboolean ok = json_object_get_boolean_member(r, "ok");
    const char *severity = json_object_get_string_member(r, "severity");
    g_assert_nonnull(json_object_get_string_member(r, "detail"));
    if (ok) {
      g_assert_cmpstr(severity, ==, "info");
      g_assert_false(json_object_has_member(r, "fix"));
    } else {
      g_assert_true(g_str_equal(severity, "warning") || g_str_equal(severity, "error"));
      g_assert_nonnull(json_object_get_string_member(r, "fix"));
    }
  }
}

static void assert_check(JsonArray *results, const char *check, gboolean ok, const char *severity,
                         const char *detail_part) {
  JsonObject *r = result(results, check);
  g_assert_cmpint(json_object_get_boolean_member(r, "ok"), ==, ok);
  g_assert_cmpstr(json_object_get_string_member(r, "severity"), ==, severity);
  if (detail_part && !strstr(json_object_get_string_member(r, "detail"), detail_part))
    g_error("%s: '%s' not in '%s'", check, detail_part, json_object_get_string_member(r, "detail"));
}

static void test_all_well_but_kvm(void) {
  g_autoptr(Fake) f = fake_new();
  g_autoptr(JsonArray) results = hutch_doctor_run(NULL, &f->env);
  assert_shape(results);
  /* fixed order, no libvirt check without a context */
  const char *order[] = {"kvm",        "qemu",   "passt",      "egress",      "virtiofsd",
                         "open-files", "subuid", "mmdebstrap", "runtime-dir", "cache-space",
                         NULL};
  g_assert_cmpuint(json_array_get_length(results), ==, g_strv_length((char **)order));
  for (guint i = 0; order[i]; i++)
    g_assert_cmpstr(
        json_object_get_string_member(json_array_get_object_element(results, i), "check"), ==,
        order[i]);
  assert_check(results, "kvm", FALSE, "warning", "no /dev/kvm");
  g_assert_null(strstr(json_object_get_string_member(result(results, "kvm"), "detail"), "kvm_pvm"));
  assert_check(results, "qemu", TRUE, "info", f->bin);
  assert_check(results, "passt", TRUE, "info", NULL);
  /* this host allows unprivileged user namespaces (tests/run's hosts do) */
  assert_check(results, "egress", TRUE, "info", "user namespaces allowed");
  assert_check(results, "virtiofsd", TRUE, "info", "Rust virtiofsd, has --readonly");
  assert_check(results, "open-files", TRUE, "info", "hard limit 524288");
  assert_check(results, "subuid", TRUE, "info", "100000+65536");
  assert_check(results, "mmdebstrap", TRUE, "info", NULL);
  assert_check(results, "runtime-dir", TRUE, "info", f->runtime);
  assert_check(results, "cache-space", TRUE, "info", "free");
}

/* nft and ip missing (neither in PATH nor in ROOT/usr/sbin): an error naming both packages */
static void test_egress_programs(void) {
  g_autoptr(Fake) f = fake_new();
  g_autofree char *nft = g_build_filename(f->bin, "nft", NULL);
  g_assert_cmpint(g_unlink(nft), ==, 0);
  g_autoptr(JsonArray) results = hutch_doctor_run(NULL, &f->env);
  assert_check(results, "egress", FALSE, "error", "nft missing");
  g_assert_nonnull(strstr(json_object_get_string_member(result(results, "egress"), "fix"), "nftables"));
  /* found in /usr/sbin under the root, which a user's PATH lacks */
  put(f->root, "usr/sbin/nft", "#!/bin/sh\nexit 0\n", 0755);
  g_autoptr(JsonArray) again = hutch_doctor_run(NULL, &f->env);
  assert_check(again, "egress", TRUE, "info", "usr/sbin/nft");
}

static void test_kvm(void) {
  g_autoptr(Fake) f = fake_new();
  /* kvm_pvm without /dev/kvm (this project's development machines) */
  g_autofree char *pvm = g_build_filename(f->root, "sys", "module", "kvm_pvm", NULL);
  g_assert_cmpint(g_mkdir_with_parents(pvm, 0700), ==, 0);
  g_autoptr(JsonArray) r1 = hutch_doctor_run(NULL, &f->env);
  assert_check(r1, "kvm", FALSE, "warning", "kvm_pvm");
  g_assert_nonnull(
      strstr(json_object_get_string_member(result(r1, "kvm"), "fix"), "HUTCH_ACCEL=tcg"));
  /* a usable /dev/kvm on a kvm_pvm host is still a warning */
  put(f->root, "dev/kvm", "", 0600);
  g_autoptr(JsonArray) r2 = hutch_doctor_run(NULL, &f->env);
  assert_check(r2, "kvm", FALSE, "warning", "paravirtual");
  /* found through /proc/modules when /sys has no module directory */
  g_assert_cmpint(g_rmdir(pvm), ==, 0);
  put(f->root, "proc/modules", "kvm 1 0 - Live 0x0\nkvm_pvm 2 0 - Live 0x0\n", 0644);
  g_autoptr(JsonArray) r3 = hutch_doctor_run(NULL, &f->env);
  assert_check(r3, "kvm", FALSE, "warning", "paravirtual");
  /* plain KVM */
  put(f->root, "proc/modules", "kvm 1 0 - Live 0x0\nkvm_intel 2 0 - Live 0x0\n", 0644);
  g_autoptr(JsonArray) r4 = hutch_doctor_run(NULL, &f->env);
  assert_check(r4, "kvm", TRUE, "info", "usable");
  /* root can open anything: the permission case needs an ordinary user */
  if (getuid() != 0) {
    g_autofree char *dev = g_build_filename(f->root, "dev", "kvm", NULL);
    g_assert_cmpint(g_chmod(dev, 0), ==, 0);
    g_autoptr(JsonArray) r5 = hutch_doctor_run(NULL, &f->env);
    assert_check(r5, "kvm", FALSE, "warning", "cannot open /dev/kvm");
    /* mode 0: no group could open it, so joining one is no fix; a udev rule is */
    const char *fix5 = json_object_get_string_member(result(r5, "kvm"), "fix");
    g_assert_nonnull(strstr(fix5, "udev rule"));
    g_assert_nonnull(strstr(fix5, "usermod -aG kvm me"));
    /* a group that may read and write it (not root's): join that group */
    struct group *group = getgrgid(getgid());
    g_assert_nonnull(group);
    if (getgid() != 0) {
      g_assert_cmpint(g_chmod(dev, 0060), ==, 0);
      g_autoptr(JsonArray) r6 = hutch_doctor_run(NULL, &f->env);
      assert_check(r6, "kvm", FALSE, "warning", "cannot open /dev/kvm");
      g_autofree char *join = g_strdup_printf("sudo usermod -aG %s me", group->gr_name);
      g_assert_nonnull(strstr(json_object_get_string_member(result(r6, "kvm"), "fix"), join));
      g_assert_cmpint(g_chmod(dev, 0), ==, 0);
    }
    /* kvm_pvm and no access (this project's CI machines: /dev/kvm is root's, mode 0600):
     * the advice is TCG, never a group to join */
    put(f->root, "proc/modules", "kvm 1 0 - Live 0x0\nkvm_pvm 2 0 - Live 0x0\n", 0644);
    g_autoptr(JsonArray) r7 = hutch_doctor_run(NULL, &f->env);
    assert_check(r7, "kvm", FALSE, "warning", "kvm_pvm");
    const char *detail7 = json_object_get_string_member(result(r7, "kvm"), "detail");
    const char *fix7 = json_object_get_string_member(result(r7, "kvm"), "fix");
    g_assert_nonnull(strstr(detail7, "cannot open it"));
    g_assert_nonnull(strstr(fix7, "HUTCH_ACCEL=tcg"));
    g_assert_null(strstr(fix7, "usermod"));
  }
}

static void test_missing_programs(void) {
  g_autoptr(Fake) f = fake_new();
  const char *gone[] = {"passt", "qemu-system-x86_64", "mmdebstrap", "newgidmap", NULL};
  for (guint i = 0; gone[i]; i++) {
    g_autofree char *path = g_build_filename(f->bin, gone[i], NULL);
    g_assert_cmpint(g_unlink(path), ==, 0);
  }
  g_setenv("HUTCH_VIRTIOFSD", "/nonexistent/virtiofsd", TRUE);
  g_autoptr(JsonArray) results = hutch_doctor_run(NULL, &f->env);
  assert_shape(results);
  assert_check(results, "passt", FALSE, "error", "passt not found");
  g_assert_cmpstr(json_object_get_string_member(result(results, "passt"), "fix"), ==,
                  "apt-get install passt");
  assert_check(results, "qemu", FALSE, "error", "qemu-system-x86_64 not found");
  assert_check(results, "mmdebstrap", FALSE, "warning", NULL);
  assert_check(results, "virtiofsd", FALSE, "warning", "HUTCH_VIRTIOFSD");
  assert_check(results, "subuid", FALSE, "warning", "newgidmap not found");
  g_assert_nonnull(
      strstr(json_object_get_string_member(result(results, "subuid"), "fix"), "uidmap"));
  /* HUTCH_PASST names the passt hutch runs */
  g_autofree char *other = g_build_filename(f->bin, "newuidmap", NULL);
  g_setenv("HUTCH_PASST", other, TRUE);
  g_autoptr(JsonArray) again = hutch_doctor_run(NULL, &f->env);
  assert_check(again, "passt", TRUE, "info", other);
  g_unsetenv("HUTCH_PASST");
}

/* This machine's case: a hard limit of 20,000 stops a share at about 20,000 files. */
static void test_open_files(void) {
  g_autoptr(Fake) f = fake_new();
  f->env.nofile_hard = 20000;
  g_autoptr(JsonArray) r1 = hutch_doctor_run(NULL, &f->env);
  assert_check(r1, "open-files", FALSE, "warning", "hard limit 20000");
  g_assert_nonnull(strstr(json_object_get_string_member(result(r1, "open-files"), "fix"),
                          "me hard nofile 524288"));
  f->env.nofile_hard = 65536;
  g_autoptr(JsonArray) r2 = hutch_doctor_run(NULL, &f->env);
  assert_check(r2, "open-files", TRUE, "info", "hard limit 65536");
}

static void test_subids(void) {
  g_autoptr(Fake) f = fake_new();
  put(f->root, "etc/subgid", "other:100000:65536\n", 0644);
  g_autoptr(JsonArray) r1 = hutch_doctor_run(NULL, &f->env);
  assert_check(r1, "subuid", FALSE, "warning", "/etc/subgid has no range for me");
  g_assert_nonnull(
      strstr(json_object_get_string_member(result(r1, "subuid"), "fix"), "me:100000:65536"));
  /* a line by uid counts as well */
  put(f->root, "etc/subgid", "1234:300000:65536\n", 0644);
  g_autoptr(JsonArray) r2 = hutch_doctor_run(NULL, &f->env);
  assert_check(r2, "subuid", TRUE, "info", "/etc/subgid 300000+65536");
  /* root runs no VM: said, with the way out */
  f->env.uid = 0;
  put(f->root, "etc/subuid", "", 0644);
  g_autoptr(JsonArray) r3 = hutch_doctor_run(NULL, &f->env);
  assert_check(r3, "subuid", FALSE, "error", "hutch refuses to run VMs as root");
  g_assert_cmpstr(json_object_get_string_member(result(r3, "subuid"), "fix"), ==,
                  "run hutch as your own user");
}

static void test_runtime_dir_and_space(void) {
  g_autoptr(Fake) f = fake_new();
  f->env.runtime_dir = NULL;
  g_autoptr(JsonArray) r1 = hutch_doctor_run(NULL, &f->env);
  assert_check(r1, "runtime-dir", FALSE, "error", "not set");
  g_autofree char *missing = g_build_filename(f->root, "nope", NULL);
  f->env.runtime_dir = missing;
  /* a cache that does not exist yet is measured on its parent's filesystem */
  g_autofree char *cache = g_build_filename(f->root, "cache", "hutch", "images", NULL);
  f->env.cache_dir = cache;
  f->env.min_free = G_MAXUINT64;
  g_autoptr(JsonArray) r2 = hutch_doctor_run(NULL, &f->env);
  assert_shape(r2);
  assert_check(r2, "runtime-dir", FALSE, "error", "not a directory");
  assert_check(r2, "cache-space", FALSE, "warning", cache);
  f->env.min_free = 1;
  g_autoptr(JsonArray) r3 = hutch_doctor_run(NULL, &f->env);
  assert_check(r3, "cache-space", TRUE, "info", "free");
}

static const char *fix_of(JsonArray *results, const char *check) {
  return json_object_get_string_member(result(results, check), "fix");
}

static void test_libvirt(void) {
  g_autoptr(Fake) f = fake_new();
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", NULL);
  g_assert_nonnull(ctx);
  g_autoptr(JsonArray) r1 = hutch_doctor_run(ctx, &f->env);
  assert_shape(r1);
  assert_check(r1, "libvirt", TRUE, "info", "on test:///default");
  g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(r1, 1), "check"), ==,
                  "libvirt");
  /* a session URI whose daemon is not there */
  g_autofree char *absent = g_strdup_printf(
      "qemu+unix:///session?socket=%s/libvirt/hutch-test-no-such-sock", g_get_user_runtime_dir());
  g_autoptr(HutchContext) broken = hutch_context_new(absent, NULL);
  g_assert_nonnull(broken);
  g_autoptr(JsonArray) r2 = hutch_doctor_run(broken, &f->env);
  assert_shape(r2);
  assert_check(r2, "libvirt", FALSE, "error", "libvirt unreachable");
  /* a URI hutch does not run VMs on: the fix is the URI, not installing libvirt */
  g_autoptr(HutchContext) other = hutch_context_new("qemu+ssh://nobody@host.invalid/session", NULL);
  g_autoptr(JsonArray) r3 = hutch_doctor_run(other, &f->env);
  assert_check(r3, "libvirt", FALSE, "error", "host.invalid/session is not supported");
  g_assert_nonnull(strstr(fix_of(r3, "libvirt"), "-c qemu:///session"));
}

/* VMs that vanished from view: their directories are there, their domains are not, because
 * a session daemon with another config tree serves the socket (a bench run kept the user's
 * XDG_RUNTIME_DIR but had its own XDG_CONFIG_HOME). */
static void test_instances(void) {
  g_autoptr(Fake) f = fake_new();
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", NULL);
  g_autoptr(JsonArray) r1 = hutch_doctor_run(ctx, &f->env);
  assert_shape(r1);
  assert_check(r1, "instances", TRUE, "info", "every instance directory");

  g_autofree char *ghost = g_build_filename(f->instances, "dev", NULL);
  g_assert_cmpint(g_mkdir_with_parents(ghost, 0700), ==, 0);
  g_autoptr(JsonArray) r2 = hutch_doctor_run(ctx, &f->env);
  assert_shape(r2);
  assert_check(r2, "instances", FALSE, "warning", "1 VM whose files are in");
  assert_check(r2, "instances", FALSE, "warning", ": dev");
  /* the daemon cannot be asked: the likely cause, and how to see it */
  g_assert_nonnull(strstr(fix_of(r2, "instances"), "another XDG_CONFIG_HOME"));
  g_assert_nonnull(strstr(fix_of(r2, "instances"), "virsh -c test:///default list --all"));

  /* the daemon's pid file and environment say it keeps another config tree */
  put(f->runtime, "libvirt/libvirtd.pid", "4242\n", 0644);
  put(f->root, "proc/4242/environ", "", 0644);
  g_autofree char *environ_path = g_build_filename(f->root, "proc/4242/environ", NULL);
  const char env_bytes[] = "HOME=/home/me\0XDG_CONFIG_HOME=/tmp/hutch-bench.X/config\0PATH=/bin";
  g_assert_true(g_file_set_contents(environ_path, env_bytes, sizeof(env_bytes), NULL));
  g_autoptr(JsonArray) r3 = hutch_doctor_run(ctx, &f->env);
  assert_shape(r3);
  const char *fix3 = fix_of(r3, "instances");
  g_assert_nonnull(strstr(fix3, "pid 4242"));
  g_assert_nonnull(strstr(fix3, "XDG_CONFIG_HOME=/tmp/hutch-bench.X/config, not /home/me/.config"));
  g_assert_nonnull(strstr(fix3, "kill 4242"));

  /* no missing VM, but the same daemon: still a warning (the user's VMs are not shown) */
  g_assert_cmpint(g_rmdir(ghost), ==, 0);
  g_autoptr(JsonArray) r4 = hutch_doctor_run(ctx, &f->env);
  assert_check(r4, "instances", FALSE, "warning", "keeps its domains under");

  /* a daemon of this user's own tree (HOME/.config, no XDG_CONFIG_HOME) is fine */
  const char own[] = "HOME=/home/me\0PATH=/bin";
  g_assert_true(g_file_set_contents(environ_path, own, sizeof(own), NULL));
  g_autoptr(JsonArray) r5 = hutch_doctor_run(ctx, &f->env);
  assert_check(r5, "instances", TRUE, "info", NULL);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  g_test_add_func("/doctor/all-well-but-kvm", test_all_well_but_kvm);
  g_test_add_func("/doctor/egress-programs", test_egress_programs);
  g_test_add_func("/doctor/kvm", test_kvm);
  g_test_add_func("/doctor/missing-programs", test_missing_programs);
  g_test_add_func("/doctor/open-files", test_open_files);
  g_test_add_func("/doctor/subids", test_subids);
  g_test_add_func("/doctor/runtime-dir-and-space", test_runtime_dir_and_space);
  g_test_add_func("/doctor/libvirt", test_libvirt);
  g_test_add_func("/doctor/instances", test_instances);
  return g_test_run();
}
