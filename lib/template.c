/* template.c: templates, provisioned and generalised disks in the image cache that new VMs
 * start from without provisioning (hutch template create, hutch clone TEMPLATE, hutch run
 * --template, image: {template: NAME}).
 *
 * A template is the cache entry images/template-NAME: image.json (kind "template"), the
 * disk (standalone qcow2), the kernel and initrd its source VM booted, its profile (without
 * shares and ports, with the network policy the VM had), the provisioning records and the
 * broker's files. It is made from a throwaway clone of the source VM, booted once to be
 * generalised by the guest runner (hutch-provision generalise): the source VM is only read. A
 * VM made on it gets an overlay of the template's disk; its first boot takes its own identity
 * from its seed (hutch-identity.service), since cloud-init stays disabled. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "broker-private.h"
#include "image-private.h"
#include "instance-private.h"
#include "seed-private.h"
#include "template-private.h"
#include "text-private.h"
#include "util-private.h"

#define TEMPLATE_DISK "disk.qcow2"

static char *template_key(const char *name) {
  return g_strconcat(HUTCH_TEMPLATE_KEY_PREFIX, name, NULL);
}

static char *template_dir(const char *name) {
  g_autofree char *images = hutch_image_cache_dir();
  g_autofree char *key = template_key(name);
  return g_build_filename(images, key, NULL);
}

gboolean hutch_template_exists(const char *name) {
  if (!hutch_name_is_valid(name, NULL))
    return FALSE;
  g_autofree char *key = template_key(name);
  return hutch_image_is_cached(key);
}

static gboolean check_exists(const char *name, GError **error) {
  if (!hutch_name_is_valid(name, error))
    return FALSE;
  if (!hutch_template_exists(name)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
                "no template '%s' (hutch template list shows them)", name);
    return FALSE;
  }
  return TRUE;
}

HutchProfile *hutch_template_profile(const char *name, GError **error) {
  if (!check_exists(name, error))
    return NULL;
  g_autofree char *dir = template_dir(name);
  g_autofree char *path = g_build_filename(dir, HUTCH_TEMPLATE_PROFILE, NULL);
  g_autoptr(HutchProfile) profile = hutch_profile_load_file(path, error);
  if (!profile) {
    g_prefix_error(error, "template '%s': ", name);
    return NULL;
  }
  /* the recorded profile names the image the source VM was made on */
  hutch_profile_set_template_image(profile, name);
  return g_steal_pointer(&profile);
}

/* ---- a profile on a template ------------------------------------------------------------ */

static const char *origin_of(const HutchProfile *profile, const char *key) {
  const char *where = g_hash_table_lookup(profile->origins, key);
  return where ? where : profile->path ? profile->path : "the profile";
}

static gboolean refuse_key(GError **error, const HutchProfile *profile, const char *key,
                           const char *template, const char *what) {
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
              "%s: %s: a VM on template '%s' has the template's (it does not provision); make "
              "a template from a VM that has it",
              origin_of(profile, key), what, template);
  return FALSE;
}

static gboolean strv_equal(char **a, char **b) {
  if (!a || !b)
    return a == b;
  return g_strv_equal((const char *const *)a, (const char *const *)b);
}

/* What a step does, as written: a step of the same name that does something else is not the
 * template's (a script's text is not compared: the template recorded its name only). */
static gboolean step_same(const HutchProvisionStep *a, const HutchProvisionStep *b) {
  return strv_equal(a->packages, b->packages) && g_strcmp0(a->script, b->script) == 0 &&
         g_strcmp0(a->run, b->run) == 0 && a->as_user == b->as_user;
}

static gboolean check_adoptable(const HutchProfile *profile, const HutchProfile *tp,
                                GError **error) {
  const char *template = profile->image.template;
  for (guint i = 0; i < profile->provision->len; i++) {
    const HutchProvisionStep *step = g_ptr_array_index(profile->provision, i);
    const HutchProvisionStep *held = NULL;
    for (guint j = 0; j < tp->provision->len && !held; j++) {
      const HutchProvisionStep *t = g_ptr_array_index(tp->provision, j);
      if (g_strcmp0(t->name, step->name) == 0)
        held = t;
    }
    if (!held || !step_same(step, held)) {
      g_autofree char *key = g_strconcat("provision:", step->name, NULL);
      g_autofree char *what = g_strdup_printf(held ? "step '%s' differs from the template's"
                                                   : "step '%s' is not in the template",
                                              step->name);
      return refuse_key(error, profile, key, template, what);
    }
  }
  /* the users as a create makes them: a template whose source left the user to the host
   * has the host's */
  g_autofree char *name = NULL, *tp_name = NULL;
  guint uid = 0, gid = 0, tp_uid = 0, tp_gid = 0;
  hutch_instance_guest_user(profile, &name, &uid, &gid);
  hutch_instance_guest_user(tp, &tp_name, &tp_uid, &tp_gid);
  const char *user_key = profile->user_name && strcmp(name, tp_name) != 0 ? "user.name"
                         : profile->user_uid >= 0 && uid != tp_uid        ? "user.uid"
                         : profile->user_gid >= 0 && gid != tp_gid        ? "user.gid"
                                                                          : NULL;
  if (user_key)
    return refuse_key(error, profile, user_key, template, "another user");
  if (g_hash_table_contains(profile->origins, "user.sudo") && profile->user_sudo != tp->user_sudo)
    return refuse_key(error, profile, "user.sudo", template, "another sudo setting");
  if (g_hash_table_contains(profile->origins, "user.shell") &&
      g_strcmp0(profile->user_shell, tp->user_shell) != 0)
    return refuse_key(error, profile, "user.shell", template, "another shell");
  for (guint i = 0; i < profile->env->len; i++) {
    const HutchEnvVar *var = g_ptr_array_index(profile->env, i);
    gboolean same = FALSE;
    for (guint j = 0; j < tp->env->len && !same; j++) {
      const HutchEnvVar *held = g_ptr_array_index(tp->env, j);
      same = strcmp(held->key, var->key) == 0 && g_strcmp0(held->value, var->value) == 0;
    }
    if (!same) {
      g_autofree char *key = g_strconcat("env.", var->key, NULL);
      g_autofree char *what = g_strdup_printf("env %s differs from the template's", var->key);
      return refuse_key(error, profile, key, template, what);
    }
  }
  for (guint i = 0; i < profile->secrets->len; i++) {
    const HutchSecret *secret = g_ptr_array_index(profile->secrets, i);
    gboolean held = FALSE;
    for (guint j = 0; j < tp->secrets->len && !held; j++)
      held = strcmp(((HutchSecret *)g_ptr_array_index(tp->secrets, j))->name, secret->name) == 0;
    if (!held) {
      g_autofree char *key = g_strconcat("secrets:", secret->name, NULL);
      g_autofree char *what =
          g_strdup_printf("secret %s is not in the template", secret->name);
      return refuse_key(error, profile, key, template, what);
    }
  }
  return TRUE;
}

/* Whether the profile itself (or the command line) sets a network policy: one that only a
 * base profile sets (default's `egress: public`) must not widen the template's. */
static gboolean sets_own_network(const HutchProfile *profile) {
  if (profile->egress == HUTCH_EGRESS_UNSET && profile->egress_allow->len == 0 &&
      profile->egress_deny->len == 0)
    return FALSE;
  const char *keys[] = {"network.egress", "network.allow", "network.deny"};
  gboolean any_origin = FALSE;
  g_autofree char *own = profile->path ? g_path_get_basename(profile->path) : NULL;
  for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
    const char *origin = g_hash_table_lookup(profile->origins, keys[i]);
    if (!origin)
      continue;
    any_origin = TRUE;
    /* "FILE:LINE[, FILE:LINE...]": the last file that set it */
    const char *last = strrchr(origin, ',');
    last = last ? last + 2 : origin;
    g_autofree char *file = g_strndup(last, strrchr(last, ':') ? (gsize)(strrchr(last, ':') - last)
                                                               : strlen(last));
    g_autofree char *base = g_path_get_basename(file);
    if (own && strcmp(base, own) == 0)
      return TRUE;
  }
  /* set with no origin: --egress on the command line */
  return !any_origin;
}

HutchProfile *hutch_template_adopt(const HutchProfile *profile, GError **error) {
  g_autoptr(HutchProfile) tp = hutch_template_profile(profile->image.template, error);
  if (!tp || !check_adoptable(profile, tp, error))
    return NULL;
  g_free(tp->name);
  tp->name = g_strdup(profile->name);
  tp->cpus = profile->cpus;
  tp->memory = profile->memory;
  tp->disk = profile->disk;
  tp->accel = profile->accel;
  tp->boot_timeout = profile->boot_timeout;
  g_ptr_array_unref(tp->shares);
  tp->shares = g_ptr_array_ref(profile->shares);
  g_ptr_array_unref(tp->ports);
  tp->ports = g_ptr_array_ref(profile->ports);
  if (sets_own_network(profile)) {
    tp->egress = profile->egress;
    g_ptr_array_unref(tp->egress_allow);
    tp->egress_allow = g_ptr_array_ref(profile->egress_allow);
    g_ptr_array_unref(tp->egress_deny);
    tp->egress_deny = g_ptr_array_ref(profile->egress_deny);
  }
  return g_steal_pointer(&tp);
}

/* ---- create ------------------------------------------------------------------------------ */

static gboolean copy_file(const char *from, const char *to, GError **error) {
  g_autoptr(GFile) src = g_file_new_for_path(from);
  g_autoptr(GFile) dst = g_file_new_for_path(to);
  if (!g_file_copy(src, dst, G_FILE_COPY_NONE, NULL, NULL, NULL, error)) {
    g_prefix_error(error, "copying %s: ", from);
    return FALSE;
  }
  if (g_chmod(to, 0600) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: %s", to, g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

/* What the throwaway clone runs as root: the current runner and identity unit (the source
 * may have been provisioned by an older hutch), then `hutch-provision generalise`. */
static char *generalise_script(GError **error) {
  g_autofree char *runner = hutch_seed_read_data_file("hutch-provision.sh", error);
  if (!runner)
    return NULL;
  g_autofree char *unit = hutch_seed_read_data_file("hutch-identity.service", error);
  if (!unit)
    return NULL;
  g_autofree char *random = g_uuid_string_random();
  g_autofree char *eof = g_strdup_printf("HUTCH_TEMPLATE_EOF_%s", random);
  return g_strdup_printf(
      "set -e\n"
      "install -d -m 0755 /usr/local/lib/hutch /etc/systemd/system\n"
      "cat > " HUTCH_SEED_GUEST_RUNNER ".new <<'%s'\n%s%s%s\n"
      "chmod 0755 " HUTCH_SEED_GUEST_RUNNER ".new\n"
      "mv -f " HUTCH_SEED_GUEST_RUNNER ".new " HUTCH_SEED_GUEST_RUNNER "\n"
      "cat > /etc/systemd/system/hutch-identity.service <<'%s'\n%s%s%s\n"
      "systemctl daemon-reload\n"
      "exec " HUTCH_SEED_GUEST_RUNNER " generalise\n",
      eof, runner, g_str_has_suffix(runner, "\n") ? "" : "\n", eof, eof, unit,
      g_str_has_suffix(unit, "\n") ? "" : "\n", eof);
}

char *hutch_template_copy_name(const char *name) {
  g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, name, -1);
  return g_strdup_printf("tmpl-%.12s", sum);
}

/* The template's profile: the source VM's, without its shares and ports, with the network
 * policy the VM has now (hutch net may have changed its profile's). */
static HutchProfile *template_profile_of(const char *instance_dir, GError **error) {
  g_autofree char *path = g_build_filename(instance_dir, HUTCH_INSTANCE_PROFILE, NULL);
  g_autoptr(HutchProfile) profile = hutch_profile_load_file(path, error);
  if (!profile)
    return NULL;
  hutch_profile_clear_shares(profile);
  hutch_profile_clear_ports(profile);
  g_autoptr(HutchEgressPolicy) policy = hutch_instance_egress_policy(instance_dir, profile, error);
  if (!policy)
    return NULL;
  profile->egress = policy->mode;
  g_ptr_array_set_size(profile->egress_allow, 0);
  g_ptr_array_set_size(profile->egress_deny, 0);
  for (guint i = 0; i < policy->allow->len; i++)
    g_ptr_array_add(profile->egress_allow,
                    g_strdup(((HutchEgressRule *)g_ptr_array_index(policy->allow, i))->text));
  for (guint i = 0; i < policy->deny->len; i++)
    g_ptr_array_add(profile->egress_deny,
                    g_strdup(((HutchEgressRule *)g_ptr_array_index(policy->deny, i))->text));
  return g_steal_pointer(&profile);
}

/* Fills work (the template's cache directory in the making) from the generalised, stopped
 * throwaway clone temp of vm. */
static gboolean fill_template(const char *name, const char *vm, const char *vm_dir,
                              const char *temp, const char *work, GError **error) {
  g_autofree char *temp_dir = hutch_instance_dir(temp);
  g_autofree char *temp_disk = g_build_filename(temp_dir, HUTCH_INSTANCE_DISK, NULL);
  g_autofree char *disk = g_build_filename(work, TEMPLATE_DISK, NULL);
  if (!hutch_image_flatten(temp_disk, disk, error))
    return FALSE;
  g_autoptr(JsonObject) obj = json_object_new();
  json_object_set_string_member(obj, "kind", "template");
  json_object_set_string_member(obj, "name", name);
  json_object_set_string_member(obj, "source_vm", vm);
  JsonObject *spec = json_object_new();
  json_object_set_string_member(spec, "template", name);
  json_object_set_object_member(obj, "spec", spec);
  json_object_set_string_member(obj, "disk", TEMPLATE_DISK);

  /* the kernel the VM boots directly, from the image it was made on */
  g_autofree char *key_file = g_build_filename(vm_dir, HUTCH_INSTANCE_IMAGE_KEY_FILE, NULL);
  g_autofree char *base_key = NULL;
  if (g_file_get_contents(key_file, &base_key, NULL, NULL)) {
    g_strstrip(base_key);
    g_autoptr(JsonObject) base = hutch_image_read_json(base_key, error);
    if (!base)
      return FALSE;
    g_autofree char *images = hutch_image_cache_dir();
    g_autofree char *base_dir = g_build_filename(images, base_key, NULL);
    const char *members[] = {"kernel", "initrd"};
    for (gsize i = 0; i < G_N_ELEMENTS(members); i++) {
      const char *file = json_object_has_member(base, members[i])
                             ? json_object_get_string_member_with_default(base, members[i], NULL)
                             : NULL;
      if (!file || !*file || strchr(file, '/'))
        continue;
      g_autofree char *from = g_build_filename(base_dir, file, NULL);
      g_autofree char *to = g_build_filename(work, file, NULL);
      if (!copy_file(from, to, error))
        return FALSE;
      json_object_set_string_member(obj, members[i], file);
    }
    const char *cmdline = json_object_get_string_member_with_default(base, "cmdline", NULL);
    if (cmdline && json_object_has_member(obj, "kernel"))
      json_object_set_string_member(obj, "cmdline", cmdline);
    json_object_set_string_member(obj, "base", base_key);
  }

  g_autoptr(HutchProfile) profile = template_profile_of(vm_dir, error);
  if (!profile)
    return FALSE;
  g_autofree char *yaml = hutch_profile_to_yaml(profile, error);
  g_autofree char *profile_path = g_build_filename(work, HUTCH_TEMPLATE_PROFILE, NULL);
  if (!yaml || !hutch_write_file(profile_path, yaml, strlen(yaml), 0600, error))
    return FALSE;
  json_object_set_string_member(obj, "profile", profile->name ? profile->name : "");
  g_autofree char *user = NULL;
  guint uid = 0, gid = 0;
  hutch_instance_guest_user(profile, &user, &uid, &gid);
  json_object_set_string_member(obj, "user", user);
  JsonArray *steps = json_array_new();
  for (guint i = 0; i < profile->provision->len; i++)
    json_array_add_string_element(
        steps, ((HutchProvisionStep *)g_ptr_array_index(profile->provision, i))->name);
  json_object_set_array_member(obj, "steps", steps);

  /* provisioned, the optional steps that failed, and the broker's CA and placeholders
   * that the disk's guest holds */
  const char *records[] = {HUTCH_INSTANCE_PROVISIONED, HUTCH_INSTANCE_OPTIONAL_FAILED,
                           HUTCH_BROKER_FILE, HUTCH_BROKER_CA_KEY, HUTCH_BROKER_CA_CERT};
  for (gsize i = 0; i < G_N_ELEMENTS(records); i++) {
    g_autofree char *from = g_build_filename(vm_dir, records[i], NULL);
    g_autofree char *to = g_build_filename(work, records[i], NULL);
    if (g_file_test(from, G_FILE_TEST_EXISTS) && !copy_file(from, to, error))
      return FALSE;
  }
  GStatBuf st;
  json_object_set_int_member(obj, "size", g_stat(disk, &st) == 0 ? (gint64)st.st_size : 0);
  g_autofree char *created = hutch_image_now();
  json_object_set_string_member(obj, "created", created);
  return hutch_image_write_json(work, obj, error);
}

static gboolean create_steps(HutchContext *ctx, const char *name, HutchInstance *vm,
                             gboolean *was_running, char **ret_temp, GError **error) {
  const char *vm_dir = vm->meta->instance_dir;
  if (!hutch_instance_first_boot_done(vm_dir)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE,
                "%s has not finished its first boot: hutch start %s first", vm->name, vm->name);
    return FALSE;
  }
  g_autofree char *script = generalise_script(error);
  if (!script)
    return FALSE;
  if (hutch_instance_is_active(vm)) {
    *was_running = TRUE;
    hutch_progress_note(ctx, "%s is running: stopping it for the copy (it is started again)",
                        vm->name);
    if (!hutch_instance_stop(ctx, vm->name, FALSE, error))
      return FALSE;
  }
  /* the throwaway clone: the only VM that is ever generalised. Its name is the template's
   * (a create killed half-way is found by the next create of the same template, which holds
   * the template's lock). */
  g_autofree char *temp = hutch_template_copy_name(name);
  g_autoptr(GError) local = NULL;
  gboolean left = hutch_instance_exists(ctx, temp, &local);
  if (local) {
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  if (strcmp(vm->name, temp) == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "%s is the name of this template's throwaway copy: clone it to another name first",
                temp);
    return FALSE;
  }
  if (left) {
    g_autofree char *left_dir = hutch_instance_dir(temp);
    g_autofree char *marker = g_build_filename(left_dir, HUTCH_INSTANCE_TEMPLATE_COPY, NULL);
    if (!g_file_test(marker, G_FILE_TEST_EXISTS)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS,
                  "a VM named %s exists and is not a template's copy: this template needs the "
                  "name (give the template another name)",
                  temp);
      return FALSE;
    }
    hutch_progress_note(ctx, "removing %s, the copy an interrupted template create left", temp);
    if (!hutch_instance_delete(ctx, temp, TRUE, error))
      return FALSE;
  }
  hutch_progress_begin(ctx, "template", "a copy of %s (%s) to generalise", vm->name, temp);
  if (!hutch_instance_clone_bare(ctx, vm->name, temp, error))
    return FALSE;
  *ret_temp = g_strdup(temp);
  hutch_progress_end(ctx, "template", "a copy of %s (%s) to generalise", vm->name, temp);
  if (!hutch_instance_start(ctx, temp, TRUE, error))
    return FALSE;
  hutch_progress_begin(ctx, "template", "generalising %s", temp);
  g_autofree char *err_text = NULL;
  int status = hutch_instance_exec(ctx, temp, "sudo -n sh -s", script, &err_text, error);
  if (status < 0)
    return FALSE;
  /* the guest's words: sanitised, and only lines of the forms the runner writes are used */
  g_autofree char *clean = hutch_text_sanitize(err_text ? err_text : "", -1, HUTCH_TEXT_LINES);
  g_auto(GStrv) lines = g_strsplit(clean, "\n", 0);
  if (status != 0) {
    const char *last = "";
    for (char **l = lines; *l; l++)
      if (**l)
        last = *l;
    g_autofree char *reason = g_strdup(last);
    hutch_text_truncate(reason, 300);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "generalising the copy failed (exit %d: %s)",
                status, reason);
    return FALSE;
  }
  /* what looks like a tool's sign-in: kept (it is the user's data), but said; and how much
   * free space was zeroed (what removed files left there is not in the template) */
  guint credentials = 0, zeroed = 0;
  for (char **l = lines; *l && zeroed < 8; l++) {
    if (!g_str_has_prefix(*l, "hutch: zeroed "))
      continue;
    g_autofree char *what = g_strdup(*l + strlen("hutch: "));
    hutch_text_truncate(what, 200);
    hutch_progress_note(ctx, "%s", what);
    zeroed++;
  }
  for (char **l = lines; *l && credentials < 32; l++) {
    if (!g_str_has_prefix(*l, "hutch: credential "))
      continue;
    g_autofree char *path = g_strdup(*l + strlen("hutch: credential "));
    hutch_text_truncate(path, 200);
    hutch_progress_note(ctx, "the template keeps %s, which looks like a credential (every VM made "
                             "on it gets it: remove it from %s and make the template again if "
                             "that is not what you want)",
                        path, vm->name);
    credentials++;
  }
  if (!hutch_instance_stop(ctx, temp, FALSE, error))
    return FALSE;
  hutch_progress_end(ctx, "template", "generalising %s", temp);

  hutch_progress_begin(ctx, "template", "its disk into the image cache");
  HutchImageWork work = {.lock_fd = -1};
  g_autofree char *key = template_key(name);
  if (!hutch_image_work_create(&work, error))
    return FALSE;
  if (!fill_template(name, vm->name, vm_dir, temp, work.path, error)) {
    hutch_image_work_discard(&work);
    return FALSE;
  }
  if (hutch_image_is_cached(key)) {
    hutch_image_work_discard(&work);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS, "a template '%s' was made meanwhile",
                name);
    return FALSE;
  }
  if (!hutch_image_work_commit(&work, key, error))
    return FALSE;
  hutch_progress_end(ctx, "template", "its disk into the image cache");
  return TRUE;
}

static gboolean create_locked(HutchContext *ctx, const char *name, HutchInstance *instance,
                              GError **error) {
  const char *vm = instance->name;
  double started = hutch_now();
  gboolean was_running = FALSE;
  g_autofree char *temp = NULL;
  /* The source's secrets (the credential broker's host variables) are not the copy's: out of
   * this process's environment while the copy runs, so that its helpers and supervisor never
   * hold their values; back for the source's own start. */
  g_auto(GStrv) secret_vars = hutch_broker_env_names(instance->meta->instance_dir);
  g_autoptr(GPtrArray) hidden = g_ptr_array_new_with_free_func(g_free);
  for (char **v = secret_vars; v && *v; v++) {
    const char *value = g_getenv(*v);
    if (!value)
      continue;
    g_ptr_array_add(hidden, g_strdup(*v));
    g_ptr_array_add(hidden, g_strdup(value));
    g_unsetenv(*v);
  }
  gboolean ok = create_steps(ctx, name, instance, &was_running, &temp, error);
  for (guint i = 0; i + 1 < hidden->len; i += 2)
    g_setenv(g_ptr_array_index(hidden, i), g_ptr_array_index(hidden, i + 1), TRUE);
  if (temp) {
    g_autoptr(GError) delete_error = NULL;
    if (!hutch_instance_delete(ctx, temp, TRUE, &delete_error))
      hutch_progress_note(ctx, "removing the copy %s: %s", temp, delete_error->message);
  }
  if (was_running) {
    g_autoptr(GError) start_error = NULL;
    if (!hutch_instance_start(ctx, vm, TRUE, &start_error)) {
      if (ok) {
        g_propagate_prefixed_error(error, g_steal_pointer(&start_error),
                                   "template '%s' made, but starting %s again failed: ", name,
                                   vm);
        return FALSE;
      }
      hutch_progress_note(ctx, "starting %s again: %s", vm, start_error->message);
    }
  }
  if (!ok) {
    g_prefix_error(error, "making template '%s' from %s: ", name, vm);
    return FALSE;
  }
  hutch_progress_note(ctx, "template %s made from %s in %.1f s: hutch run --template %s -- CMD",
                      name, vm, hutch_now() - started, name);
  return TRUE;
}

/* An exclusive lock on path, taken without waiting: its fd, or -1 with busy as the error when
 * another process holds it. */
static int try_lock(const char *path, const char *busy, GError **error) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0)
    return fd;
  int saved = errno;
  if (fd >= 0)
    close(fd);
  if (saved == EWOULDBLOCK)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "%s", busy);
  else
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: %s", path, g_strerror(saved));
  return -1;
}

gboolean hutch_template_create(HutchContext *ctx, const char *name, const char *vm,
                               GError **error) {
  if (!hutch_context_check_not_system(ctx, "templates", error))
    return FALSE;
  /* it stops the source and starts a copy: refused before either */
  if (!hutch_name_is_valid(name, error) || !hutch_context_check_may_run_vms(ctx, error))
    return FALSE;
  if (hutch_template_exists(name)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS,
                "a template '%s' exists already (hutch template rm %s first)", name, name);
    return FALSE;
  }
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, vm, error);
  if (!instance)
    return FALSE;
  /* one create of a template name at a time, and one from a VM at a time (the source is
   * stopped, copied and started again: two at once would start it under the other's copy) */
  g_autofree char *images = hutch_image_cache_dir();
  g_autofree char *lock_name = g_strdup_printf(".lock-template-%s", name);
  g_autofree char *lock_path = g_build_filename(images, lock_name, NULL);
  g_autofree char *source_lock_path =
      g_build_filename(instance->meta->instance_dir, "template-source.lock", NULL);
  if (!hutch_mkdir(images, 0700, error))
    return FALSE;
  g_autofree char *busy = g_strdup_printf("another template create of '%s' is running", name);
  int lock_fd = try_lock(lock_path, busy, error);
  if (lock_fd < 0)
    return FALSE;
  g_free(busy);
  busy = g_strdup_printf("a template is being made from %s already", vm);
  int source_lock_fd = try_lock(source_lock_path, busy, error);
  if (source_lock_fd < 0) {
    close(lock_fd);
    return FALSE;
  }
  gboolean ok = FALSE;
  if (hutch_template_exists(name))
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_EXISTS, "a template '%s' was made meanwhile", name);
  else
    ok = create_locked(ctx, name, instance, error);
  close(source_lock_fd);
  close(lock_fd);
  return ok;
}

/* ---- list, remove ------------------------------------------------------------------------ */

JsonArray *hutch_template_list(HutchContext *ctx, GError **error) {
  g_autoptr(JsonArray) images = hutch_image_list(ctx, error);
  if (!images)
    return NULL;
  JsonArray *list = json_array_new();
  for (guint i = 0; i < json_array_get_length(images); i++) {
    JsonObject *image = json_array_get_object_element(images, i);
    if (g_strcmp0(json_object_get_string_member_with_default(image, "kind", ""), "template"))
      continue;
    const char *key = json_object_get_string_member(image, "key");
    g_autoptr(JsonObject) obj = hutch_image_read_json(key, NULL);
    if (!obj)
      continue;
    JsonObject *item = json_object_new();
    json_object_set_string_member(item, "name",
                                  json_object_get_string_member_with_default(obj, "name", ""));
    const char *fields[] = {"source_vm", "profile", "user", "created"};
    for (gsize f = 0; f < G_N_ELEMENTS(fields); f++)
      json_object_set_string_member(
          item, fields[f], json_object_get_string_member_with_default(obj, fields[f], ""));
    JsonArray *steps = json_array_new();
    JsonArray *held = json_object_has_member(obj, "steps")
                          ? json_object_get_array_member(obj, "steps")
                          : NULL;
    for (guint s = 0; held && s < json_array_get_length(held); s++)
      json_array_add_string_element(steps, json_array_get_string_element(held, s));
    json_object_set_array_member(item, "steps", steps);
    json_object_set_int_member(item, "size",
                               json_object_get_int_member_with_default(obj, "size", 0));
    json_object_set_array_member(item, "used_by",
                                 json_array_ref(json_object_get_array_member(image, "used_by")));
    json_array_add_object_element(list, item);
  }
  return list;
}

gboolean hutch_template_remove(HutchContext *ctx, const char *name, GError **error) {
  if (!check_exists(name, error))
    return FALSE;
  g_autofree char *key = template_key(name);
  g_autoptr(JsonArray) images = hutch_image_list(ctx, error);
  if (!images)
    return FALSE;
  for (guint i = 0; i < json_array_get_length(images); i++) {
    JsonObject *image = json_array_get_object_element(images, i);
    if (g_strcmp0(json_object_get_string_member(image, "key"), key))
      continue;
    JsonArray *used = json_object_get_array_member(image, "used_by");
    guint n = json_array_get_length(used);
    if (n == 0)
      break;
    GString *names = g_string_new(NULL);
    for (guint u = 0; u < n; u++)
      g_string_append_printf(names, "%s%s", u ? ", " : "", json_array_get_string_element(used, u));
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE,
                "template '%s' is used by %s %s: delete %s first", name, n == 1 ? "VM" : "VMs",
                names->str, n == 1 ? "it" : "them");
    g_string_free(names, TRUE);
    return FALSE;
  }
  return hutch_image_remove(ctx, key, error);
}
