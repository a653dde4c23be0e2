/* test-template.c: templates as the image cache holds them (images/template-NAME with
 * image.json and profile.yaml, made here by hand: making one for real boots a VM): looking
 * one up, the profile a VM on it gets (hutch_template_adopt) and what it refuses, and the
 * list and removal against instance directories that name the template. */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>

#include "image-private.h"
#include "instance-private.h"
#include "template-private.h"
#include "util-private.h"

static char *tmp_root;  /* everything a test makes lives below */
static char *images;    /* $XDG_CACHE_HOME/hutch/images */
static char *instances; /* $XDG_DATA_HOME/hutch/instances */

/* The source VM's profile, frozen: what hutch template create writes as profile.yaml (the
 * template keeps no shares or ports). */
static const char template_source[] = "cpus: 4\n"
                                      "memory: 8GiB\n"
                                      "image: {build: {suite: bookworm}}\n"
                                      "user: {name: agent, uid: 2000, gid: 2100}\n"
                                      "network:\n"
                                      "  egress: allowlist\n"
                                      "  allow: [deb.debian.org, github.com]\n"
                                      "  deny: [evil.example]\n"
                                      "provision:\n"
                                      "  - {name: pkgs, packages: [vim]}\n"
                                      "  - {name: setup, run: 'echo hi', as: user}\n"
                                      "env:\n"
                                      "  EDITOR: vim\n"
                                      "secrets:\n"
                                      "  - {name: GH_TOKEN, from: env, hosts: [github.com]}\n";

static char *tmp_path(const char *name) {
  return g_build_filename(tmp_root, name, NULL);
}

static char *template_dir(const char *name) {
  g_autofree char *key = g_strconcat(HUTCH_TEMPLATE_KEY_PREFIX, name, NULL);
  return g_build_filename(images, key, NULL);
}

/* A cache entry as fill_template leaves it: image.json (kind template) and profile.yaml,
 * the YAML hutch_profile_to_yaml emits for source (no disk: nothing here reads it). */
static void make_template(const char *name, const char *source) {
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = template_dir(name);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);

  g_autoptr(HutchProfile) profile =
      hutch_profile_load_data(source, strlen(source), "source.yaml", &error);
  g_assert_no_error(error);
  g_autofree char *yaml = hutch_profile_to_yaml(profile, &error);
  g_assert_no_error(error);
  g_autofree char *profile_path = g_build_filename(dir, HUTCH_TEMPLATE_PROFILE, NULL);
  g_assert_true(g_file_set_contents(profile_path, yaml, -1, NULL));

  g_autoptr(JsonObject) obj = json_object_new();
  json_object_set_string_member(obj, "kind", "template");
  json_object_set_string_member(obj, "name", name);
  json_object_set_string_member(obj, "source_vm", "src");
  JsonObject *spec = json_object_new();
  json_object_set_string_member(spec, "template", name);
  json_object_set_object_member(obj, "spec", spec);
  json_object_set_string_member(obj, "disk", "disk.qcow2");
  json_object_set_string_member(obj, "profile", "source");
  json_object_set_string_member(obj, "user", "agent");
  JsonArray *steps = json_array_new();
  for (guint i = 0; i < profile->provision->len; i++)
    json_array_add_string_element(
        steps, ((HutchProvisionStep *)g_ptr_array_index(profile->provision, i))->name);
  json_object_set_array_member(obj, "steps", steps);
  json_object_set_int_member(obj, "size", 4096);
  json_object_set_string_member(obj, "created", "2024-01-02T03:04:05Z");
  g_assert_true(hutch_image_write_json(dir, obj, &error));
  g_assert_no_error(error);
}

/* A profile file in the temp directory, loaded as hutch create loads one. */
static HutchProfile *load_profile(const char *file, const char *text, char **ret_path) {
  g_autoptr(GError) error = NULL;
  g_autofree char *path = tmp_path(file);
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
  HutchProfile *profile = hutch_profile_load_file(path, &error);
  g_assert_no_error(error);
  if (ret_path)
    *ret_path = g_steal_pointer(&path);
  return profile;
}

static const char *step_name(const HutchProfile *profile, guint i) {
  return ((HutchProvisionStep *)g_ptr_array_index(profile->provision, i))->name;
}

static void assert_template_content(const HutchProfile *p) {
  g_assert_cmpstr(p->user_name, ==, "agent");
  g_assert_cmpint(p->user_uid, ==, 2000);
  g_assert_cmpint(p->user_gid, ==, 2100);
  g_assert_cmpuint(p->provision->len, ==, 2);
  g_assert_cmpstr(step_name(p, 0), ==, "pkgs");
  g_assert_cmpstr(step_name(p, 1), ==, "setup");
  const HutchProvisionStep *pkgs = g_ptr_array_index(p->provision, 0);
  g_assert_nonnull(pkgs->packages);
  g_assert_cmpstr(pkgs->packages[0], ==, "vim");
  g_assert_null(pkgs->packages[1]);
  g_assert_cmpuint(p->env->len, ==, 1);
  const HutchEnvVar *var = g_ptr_array_index(p->env, 0);
  g_assert_cmpstr(var->key, ==, "EDITOR");
  g_assert_cmpstr(var->value, ==, "vim");
  g_assert_cmpuint(p->secrets->len, ==, 1);
  g_assert_cmpstr(((HutchSecret *)g_ptr_array_index(p->secrets, 0))->name, ==, "GH_TOKEN");
}

static void assert_template_network(const HutchProfile *p) {
  g_assert_cmpint(p->egress, ==, HUTCH_EGRESS_ALLOWLIST);
  g_assert_cmpuint(p->egress_allow->len, ==, 2);
  g_assert_cmpstr(g_ptr_array_index(p->egress_allow, 0), ==, "deb.debian.org");
  g_assert_cmpstr(g_ptr_array_index(p->egress_allow, 1), ==, "github.com");
  g_assert_cmpuint(p->egress_deny->len, ==, 1);
  g_assert_cmpstr(g_ptr_array_index(p->egress_deny, 0), ==, "evil.example");
}

/* ---- exists, profile ---------------------------------------------------------------------- */

static void test_exists_and_profile(void) {
  g_autoptr(GError) error = NULL;
  make_template("base", template_source);
  g_assert_true(hutch_template_exists("base"));
  g_assert_false(hutch_template_exists("nope"));
  g_assert_false(hutch_template_exists("Bad_Name"));
  g_assert_false(hutch_template_exists("../images"));

  /* an entry without image.json is one in the making (or half removed): not there yet */
  g_autofree char *half = template_dir("half");
  g_assert_cmpint(g_mkdir_with_parents(half, 0700), ==, 0);
  g_autofree char *half_profile = g_build_filename(half, HUTCH_TEMPLATE_PROFILE, NULL);
  g_assert_true(g_file_set_contents(half_profile, "cpus: 1\n", -1, NULL));
  g_assert_false(hutch_template_exists("half"));
  g_autoptr(HutchProfile) none = hutch_template_profile("half", &error);
  g_assert_null(none);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);

  g_autoptr(HutchProfile) p = hutch_template_profile("base", &error);
  g_assert_no_error(error);
  g_assert_nonnull(p);
  /* the recorded profile's image (the source VM's build) gives way to the template */
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_TEMPLATE);
  g_assert_cmpstr(p->image.template, ==, "base");
  g_assert_null(p->image.suite);
  g_assert_null(p->image.url);
  g_assert_null(p->image.file);
  g_assert_null(p->image.fallback);
  assert_template_content(p);
  assert_template_network(p);
  g_assert_cmpuint(p->cpus, ==, 4);
  g_assert_cmpuint(p->memory, ==, 8ULL << 30);
  g_assert_cmpuint(p->shares->len, ==, 0);
  g_assert_cmpuint(p->ports->len, ==, 0);

  g_autoptr(HutchProfile) missing = hutch_template_profile("nope", &error);
  g_assert_null(missing);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_assert_cmpstr(error->message, ==, "no template 'nope' (hutch template list shows them)");
  g_clear_error(&error);

  const char *invalid[] = {"Bad_Name", "../images", "", "a/b"};
  for (gsize i = 0; i < G_N_ELEMENTS(invalid); i++) {
    g_autoptr(HutchProfile) bad = hutch_template_profile(invalid[i], &error);
    g_assert_null(bad);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_clear_error(&error);
  }

  /* a profile.yaml that does not read says which template it belongs to */
  make_template("broken", template_source);
  g_autofree char *broken_dir = template_dir("broken");
  g_autofree char *broken = g_build_filename(broken_dir, HUTCH_TEMPLATE_PROFILE, NULL);
  g_assert_true(g_file_set_contents(broken, "cpus: [\n", -1, NULL));
  g_autoptr(HutchProfile) unread = hutch_template_profile("broken", &error);
  g_assert_null(unread);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_true(g_str_has_prefix(error->message, "template 'broken': "));
}

/* ---- adopt ------------------------------------------------------------------------------ */

static void test_adopt(void) {
  g_autoptr(GError) error = NULL;
  make_template("base", template_source);
  g_autoptr(HutchProfile) profile = load_profile("on-base.yaml",
                                                 "image: {template: base}\n"
                                                 "cpus: 3\n"
                                                 "memory: 2GiB\n"
                                                 "disk: 20GiB\n"
                                                 "accel: tcg\n"
                                                 "boot_timeout: 120\n"
                                                 "shares:\n"
                                                 "  - {host: /srv/src, guest: /src}\n"
                                                 "ports:\n"
                                                 "  - {host: 8080, guest: 80}\n",
                                                 NULL);
  g_autoptr(HutchProfile) p = hutch_template_adopt(profile, &error);
  g_assert_no_error(error);
  g_assert_nonnull(p);
  g_assert_cmpstr(p->name, ==, "on-base");
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_TEMPLATE);
  g_assert_cmpstr(p->image.template, ==, "base");
  assert_template_content(p);
  g_assert_cmpuint(p->cpus, ==, 3);
  g_assert_cmpuint(p->memory, ==, 2ULL << 30);
  g_assert_cmpuint(p->disk, ==, 20ULL << 30);
  g_assert_cmpint(p->accel, ==, HUTCH_ACCEL_TCG);
  g_assert_cmpuint(p->boot_timeout, ==, 120);
  g_assert_cmpuint(p->shares->len, ==, 1);
  g_assert_cmpstr(((HutchShare *)g_ptr_array_index(p->shares, 0))->guest, ==, "/src");
  g_assert_cmpuint(p->ports->len, ==, 1);
  const HutchPort *port = g_ptr_array_index(p->ports, 0);
  g_assert_cmpuint(port->host_start, ==, 8080);
  g_assert_cmpuint(port->guest_start, ==, 80);
  /* the profile says nothing of the network: the template's policy stays */
  assert_template_network(p);

  /* the profile's network, when it says, wins (and its empty lists with it) */
  g_autoptr(HutchProfile) closed = load_profile("closed.yaml",
                                                "image: {template: base}\n"
                                                "network: {egress: none}\n",
                                                NULL);
  g_autoptr(HutchProfile) q = hutch_template_adopt(closed, &error);
  g_assert_no_error(error);
  g_assert_cmpint(q->egress, ==, HUTCH_EGRESS_NONE);
  g_assert_cmpuint(q->egress_allow->len, ==, 0);
  g_assert_cmpuint(q->egress_deny->len, ==, 0);
  assert_template_content(q);

  g_autoptr(HutchProfile) other = load_profile("other-allow.yaml",
                                               "image: {template: base}\n"
                                               "network:\n"
                                               "  egress: allowlist\n"
                                               "  allow: [example.org]\n",
                                               NULL);
  g_autoptr(HutchProfile) r = hutch_template_adopt(other, &error);
  g_assert_no_error(error);
  g_assert_cmpint(r->egress, ==, HUTCH_EGRESS_ALLOWLIST);
  g_assert_cmpuint(r->egress_allow->len, ==, 1);
  g_assert_cmpstr(g_ptr_array_index(r->egress_allow, 0), ==, "example.org");
  g_assert_cmpuint(r->egress_deny->len, ==, 0);

  /* a network only a base profile sets (default's egress: public) does not widen the
   * template's; the command line's (--egress, no origin) does change it */
  g_autoptr(HutchProfile) wide_base = load_profile("wide-base.yaml", "network: {egress: public}\n",
                                                   NULL);
  g_autoptr(HutchProfile) on_wide = load_profile("on-wide.yaml",
                                                 "base: wide-base.yaml\n"
                                                 "image: {template: base}\n",
                                                 NULL);
  g_autoptr(HutchProfile) w = hutch_template_adopt(on_wide, &error);
  g_assert_no_error(error);
  assert_template_network(w);
  g_autoptr(HutchProfile) by_flag = hutch_template_profile("base", &error);
  g_assert_no_error(error);
  g_assert_true(hutch_profile_set_egress(by_flag, "none", &error));
  g_autoptr(HutchProfile) f = hutch_template_adopt(by_flag, &error);
  g_assert_no_error(error);
  g_assert_cmpint(f->egress, ==, HUTCH_EGRESS_NONE);

  /* a template that is not there */
  g_autoptr(HutchProfile) lost = load_profile("lost.yaml", "image: {template: lost}\n", NULL);
  g_autoptr(HutchProfile) s = hutch_template_adopt(lost, &error);
  g_assert_null(s);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
}

/* ---- adopt: what a VM on a template cannot have ------------------------------------------ */

/* hutch_template_adopt refuses the profile text (written to file) at its line, naming needle. */
static void assert_refused(const char *file, const char *text, guint line, const char *needle) {
  g_autoptr(GError) error = NULL;
  g_autofree char *path = NULL;
  g_autoptr(HutchProfile) profile = load_profile(file, text, &path);
  g_autoptr(HutchProfile) p = hutch_template_adopt(profile, &error);
  g_assert_null(p);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_autofree char *where = g_strdup_printf("%s:%u: ", path, line);
  if (!g_str_has_prefix(error->message, where) || !strstr(error->message, needle) ||
      !strstr(error->message, "template 'base'"))
    g_error("'%s' does not start with '%s' or does not name '%s' and the template", error->message,
            where, needle);
}

static HutchProfile *adopt_ok(const char *file, const char *text) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) profile = load_profile(file, text, NULL);
  HutchProfile *p = hutch_template_adopt(profile, &error);
  g_assert_no_error(error);
  g_assert_nonnull(p);
  return p;
}

static void test_adopt_refuses(void) {
  make_template("base", template_source);
  assert_refused("extra-step.yaml",
                 "image: {template: base}\n"
                 "provision:\n"
                 "  - {name: pkgs, packages: [vim]}\n"
                 "  - {name: extra, run: 'true'}\n",
                 4, "step 'extra'");
  /* a step of the same name that does something else would silently not run */
  assert_refused("changed-step.yaml",
                 "image: {template: base}\n"
                 "provision:\n"
                 "  - {name: pkgs, packages: [vim, emacs]}\n",
                 3, "step 'pkgs' differs");
  assert_refused("changed-as.yaml",
                 "image: {template: base}\n"
                 "provision:\n"
                 "  - {name: setup, run: 'echo hi'}\n",
                 3, "step 'setup' differs");
  assert_refused("other-user.yaml",
                 "image: {template: base}\n"
                 "user: {name: bob}\n",
                 2, "another user");
  /* uid and gid alone are where the profile says them too */
  assert_refused("other-uid.yaml",
                 "image: {template: base}\n"
                 "user:\n"
                 "  name: agent\n"
                 "  uid: 3000\n",
                 4, "another user");
  assert_refused("other-gid.yaml",
                 "image: {template: base}\n"
                 "user:\n"
                 "  gid: 3100\n",
                 3, "another user");
  assert_refused("other-env.yaml",
                 "image: {template: base}\n"
                 "env:\n"
                 "  EDITOR: nano\n",
                 3, "env EDITOR");
  assert_refused("new-env.yaml",
                 "image: {template: base}\n"
                 "env:\n"
                 "  EDITOR: vim\n"
                 "  PAGER: less\n",
                 4, "env PAGER");
  assert_refused("new-secret.yaml",
                 "image: {template: base}\n"
                 "secrets:\n"
                 "  - {name: GH_TOKEN, from: env, hosts: [github.com]}\n"
                 "  - {name: OTHER, from: env, hosts: [api.example.com]}\n",
                 4, "secret OTHER");

  /* what the template holds already may be said again; the template's is what the VM gets */
  g_autoptr(HutchProfile) same = adopt_ok("same.yaml", "image: {template: base}\n"
                                                       "user: {name: agent, uid: 2000, gid: 2100}\n"
                                                       "provision:\n"
                                                       "  - {name: pkgs, packages: [vim]}\n"
                                                       "env:\n"
                                                       "  EDITOR: vim\n"
                                                       "secrets:\n"
                                                       "  - {name: GH_TOKEN, from: env, hosts: "
                                                       "[github.com]}\n");
  assert_template_content(same);
}

/* A template whose source left the user to the host (no user in its profile) has the guest
 * user hutch_instance_guest_user makes of that; a profile naming that same user is no other. */
static void test_adopt_default_user(void) {
  g_autoptr(GError) error = NULL;
  make_template("plain", "provision:\n  - {name: pkgs, packages: [vim]}\n");
  g_autoptr(HutchProfile) tp = hutch_template_profile("plain", &error);
  g_assert_no_error(error);
  g_assert_null(tp->user_name);
  g_autofree char *name = NULL;
  guint uid = 0, gid = 0;
  hutch_instance_guest_user(tp, &name, &uid, &gid);

  g_autofree char *text = g_strdup_printf("image: {template: plain}\n"
                                          "user: {name: %s, uid: %u, gid: %u}\n",
                                          name, uid, gid);
  g_autoptr(HutchProfile) p = adopt_ok("plain-same-user.yaml", text);
  g_assert_cmpuint(p->provision->len, ==, 1);

  g_autoptr(HutchProfile) profile = load_profile("plain-other-user.yaml",
                                                 "image: {template: plain}\n"
                                                 "user: {name: someone-else}\n",
                                                 NULL);
  g_autoptr(HutchProfile) q = hutch_template_adopt(profile, &error);
  g_assert_null(q);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
}

/* ---- list, remove ------------------------------------------------------------------------- */

static JsonObject *find_named(JsonArray *list, const char *name) {
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *o = json_array_get_object_element(list, i);
    if (g_strcmp0(json_object_get_string_member(o, "name"), name) == 0)
      return o;
  }
  return NULL;
}

static guint count_named(JsonArray *list, const char *name) {
  guint n = 0;
  for (guint i = 0; i < json_array_get_length(list); i++)
    n += g_strcmp0(json_object_get_string_member(json_array_get_object_element(list, i), "name"),
                   name) == 0;
  return n;
}

static void test_list_and_remove(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  make_template("used", template_source);
  /* an image that is no template is not listed, whatever its image.json says */
  g_autofree char *plain = g_build_filename(images, "url-0123456789abcdef", NULL);
  g_assert_cmpint(g_mkdir_with_parents(plain, 0700), ==, 0);
  g_autoptr(JsonObject) plain_obj = json_object_new();
  json_object_set_string_member(plain_obj, "kind", "url");
  json_object_set_string_member(plain_obj, "name", "used");
  g_assert_true(hutch_image_write_json(plain, plain_obj, &error));

  g_autofree char *vm = g_build_filename(instances, "vm1", NULL);
  g_assert_cmpint(g_mkdir_with_parents(vm, 0700), ==, 0);
  g_autofree char *ref = g_build_filename(vm, HUTCH_INSTANCE_IMAGE_KEY_FILE, NULL);
  g_assert_true(g_file_set_contents(ref, HUTCH_TEMPLATE_KEY_PREFIX "used\n", -1, NULL));

  g_autoptr(JsonArray) list = hutch_template_list(ctx, &error);
  g_assert_no_error(error);
  JsonObject *item = find_named(list, "used");
  g_assert_nonnull(item);
  g_assert_cmpuint(count_named(list, "used"), ==, 1);
  g_assert_cmpstr(json_object_get_string_member(item, "source_vm"), ==, "src");
  g_assert_cmpstr(json_object_get_string_member(item, "user"), ==, "agent");
  g_assert_cmpint(json_object_get_int_member(item, "size"), ==, 4096);
  JsonArray *steps = json_object_get_array_member(item, "steps");
  g_assert_cmpuint(json_array_get_length(steps), ==, 2);
  g_assert_cmpstr(json_array_get_string_element(steps, 0), ==, "pkgs");
  JsonArray *used = json_object_get_array_member(item, "used_by");
  g_assert_cmpuint(json_array_get_length(used), ==, 1);
  g_assert_cmpstr(json_array_get_string_element(used, 0), ==, "vm1");

  g_autofree char *dir = template_dir("used");
  g_assert_false(hutch_template_remove(ctx, "used", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE);
  if (!strstr(error->message, "VM vm1"))
    g_error("'%s' does not name the VM", error->message);
  g_clear_error(&error);
  g_assert_true(g_file_test(dir, G_FILE_TEST_IS_DIR));
  g_assert_true(hutch_template_exists("used"));

  /* the VM is gone: the template goes */
  g_assert_true(hutch_rmtree(vm, NULL));
  g_assert_true(hutch_template_remove(ctx, "used", &error));
  g_assert_no_error(error);
  g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
  g_assert_false(hutch_template_exists("used"));
  g_autoptr(JsonArray) after = hutch_template_list(ctx, &error);
  g_assert_no_error(error);
  g_assert_null(find_named(after, "used"));
  /* the other image stays */
  g_assert_true(g_file_test(plain, G_FILE_TEST_IS_DIR));

  g_assert_false(hutch_template_remove(ctx, "used", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);
  g_assert_false(hutch_template_remove(ctx, "Bad_Name", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  tmp_root = g_dir_make_tmp("hutch-test-template-XXXXXX", NULL);
  g_assert_nonnull(tmp_root);
  /* Before GLib reads and caches the XDG directories. */
  g_autofree char *cache = g_build_filename(tmp_root, "cache", NULL);
  g_autofree char *data = g_build_filename(tmp_root, "data", NULL);
  g_setenv("XDG_CACHE_HOME", cache, TRUE);
  g_setenv("XDG_DATA_HOME", data, TRUE);
  g_autofree char *cache_dir = hutch_cache_dir();
  g_autofree char *data_dir = hutch_data_dir();
  images = g_build_filename(cache_dir, "images", NULL);
  instances = g_build_filename(data_dir, "instances", NULL);
  hutch_init();

  g_test_add_func("/template/exists-and-profile", test_exists_and_profile);
  g_test_add_func("/template/adopt", test_adopt);
  g_test_add_func("/template/adopt/refuses", test_adopt_refuses);
  g_test_add_func("/template/adopt/default-user", test_adopt_default_user);
  g_test_add_func("/template/list-and-remove", test_list_and_remove);
  int status = g_test_run();
  hutch_rmtree(tmp_root, NULL);
  g_free(tmp_root);
  g_free(images);
  g_free(instances);
  return status;
}
