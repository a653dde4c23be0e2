/* seed.c: profile + instance -> cloud-init NoCloud documents, written with libyaml's emitter,
 * and the cidata ISO 9660 volume that carries them, written with libarchive.
 *
 * The guest side of provisioning is cloud-init/hutch-provision.sh (the runner) and
 * cloud-init/hutch-ready.service; both travel in user-data's write_files, and runcmd starts
 * the runner. Each provisioning step becomes one file /var/lib/hutch/steps/NN-NAME.sh, listed
 * in order in steps.list, so the runner can report progress step by step. */
#include "config.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <unistd.h>
#include <yaml.h>

#include "broker-private.h"
#include "seed-private.h"
#include "util-private.h"

#define GUEST_RUNNER HUTCH_SEED_GUEST_RUNNER
#define GUEST_CONF "/etc/hutch/provision.conf"
#define GUEST_MOUNTS "/etc/hutch/fstab"
#define GUEST_STEPS_DIR "/var/lib/hutch/steps"
#define GUEST_ENV_FILE "/etc/profile.d/hutch-env.sh"
#define GUEST_READY_UNIT "/etc/systemd/system/hutch-ready.service"

void hutch_seed_documents_free(HutchSeedDocuments *docs) {
  if (!docs)
    return;
  g_free(docs->meta_data);
  g_free(docs->user_data);
  g_free(docs->network_config);
  g_free(docs->identity);
  if (docs->host_key) {
    explicit_bzero(docs->host_key, strlen(docs->host_key));
    g_free(docs->host_key);
  }
  g_free(docs);
}

/* ---- YAML output ------------------------------------------------------------------------ */

typedef struct {
  yaml_emitter_t emitter;
  GString *out;
  gboolean failed;
} Yaml;

static int yaml_write_to_gstring(void *data, unsigned char *buffer, size_t size) {
  g_string_append_len(data, (const char *)buffer, (gssize)size);
  return 1;
}

static void y_emit(Yaml *y, yaml_event_t *event, int initialised) {
  /* The emitter frees the event even when it fails; a failure latches and is reported once,
   * by y_finish. */
  if (!initialised) {
    y->failed = TRUE;
    return;
  }
  if (y->failed) {
    yaml_event_delete(event);
    return;
  }
  if (!yaml_emitter_emit(&y->emitter, event))
    y->failed = TRUE;
}

static void y_init(Yaml *y, const char *header) {
  memset(y, 0, sizeof(*y));
  y->out = g_string_new(header);
  if (!yaml_emitter_initialize(&y->emitter)) {
    y->failed = TRUE;
    return;
  }
  yaml_emitter_set_output(&y->emitter, yaml_write_to_gstring, y->out);
  yaml_emitter_set_unicode(&y->emitter, 1);
  /* Keys and certificates stay on one line: easier to read and to grep in the guest. */
  yaml_emitter_set_width(&y->emitter, -1);
  yaml_event_t event;
  y_emit(y, &event, yaml_stream_start_event_initialize(&event, YAML_UTF8_ENCODING));
  y_emit(y, &event, yaml_document_start_event_initialize(&event, NULL, NULL, NULL, 1));
}

/* Returns the document text, or NULL with error set. Frees the emitter either way. */
static char *y_finish(Yaml *y, const char *what, GError **error) {
  yaml_event_t event;
  y_emit(y, &event, yaml_document_end_event_initialize(&event, 1));
  y_emit(y, &event, yaml_stream_end_event_initialize(&event));
  if (!y->failed && !yaml_emitter_flush(&y->emitter))
    y->failed = TRUE;
  if (y->failed) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing %s: %s", what,
                y->emitter.problem ? y->emitter.problem : "the YAML emitter failed");
    yaml_emitter_delete(&y->emitter);
    g_string_free(y->out, TRUE);
    return NULL;
  }
  yaml_emitter_delete(&y->emitter);
  return g_string_free(y->out, FALSE);
}

/* cloud-init reads YAML 1.1 with PyYAML, which turns plain scalars such as 0644, yes, on,
 * ~, 1e3 or 12:30 into numbers, booleans or null; libyaml's emitter does not know that and
 * would write them plain. Quote anything that could resolve to something other than a
 * string. Errs on the side of quoting. */
static gboolean needs_quotes(const char *s) {
  static const char *const words[] = {"y",  "n",   "yes",  "no", "true", "false",
                                      "on", "off", "null", "~",  "<<",   "="};
  if (!*s || g_ascii_isdigit(s[0]) || s[0] == '.')
    return TRUE;
  if ((s[0] == '+' || s[0] == '-') && (g_ascii_isdigit(s[1]) || s[1] == '.'))
    return TRUE;
  for (gsize i = 0; i < G_N_ELEMENTS(words); i++)
    if (g_ascii_strcasecmp(s, words[i]) == 0)
      return TRUE;
  return FALSE;
}

static void y_scalar(Yaml *y, const char *s, yaml_scalar_style_t style) {
  yaml_event_t event;
  y_emit(y, &event,
         yaml_scalar_event_initialize(&event, NULL, NULL, (const yaml_char_t *)s, (int)strlen(s), 1,
                                      1, style));
}

static void y_str(Yaml *y, const char *s) {
  y_scalar(y, s, needs_quotes(s) ? YAML_SINGLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE);
}

/* Multi-line text (scripts, keys): a literal block where the emitter allows one. */
static void y_text(Yaml *y, const char *s) {
  if (strchr(s, '\n'))
    y_scalar(y, s, YAML_LITERAL_SCALAR_STYLE);
  else
    y_str(y, s);
}

static void y_bool(Yaml *y, gboolean value) {
  y_scalar(y, value ? "true" : "false", YAML_PLAIN_SCALAR_STYLE);
}

static void y_uint(Yaml *y, guint value) {
  char buf[16];
  g_snprintf(buf, sizeof(buf), "%u", value);
  y_scalar(y, buf, YAML_PLAIN_SCALAR_STYLE);
}

static void y_map(Yaml *y) {
  yaml_event_t event;
  y_emit(y, &event,
         yaml_mapping_start_event_initialize(&event, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE));
}

static void y_map_end(Yaml *y) {
  yaml_event_t event;
  y_emit(y, &event, yaml_mapping_end_event_initialize(&event));
}

static void y_seq(Yaml *y, gboolean flow) {
  yaml_event_t event;
  y_emit(y, &event,
         yaml_sequence_start_event_initialize(
             &event, NULL, NULL, 1, flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE));
}

static void y_seq_end(Yaml *y) {
  yaml_event_t event;
  y_emit(y, &event, yaml_sequence_end_event_initialize(&event));
}

static void y_kv(Yaml *y, const char *key, const char *value) {
  y_str(y, key);
  y_str(y, value);
}

static void y_kv_bool(Yaml *y, const char *key, gboolean value) {
  y_str(y, key);
  y_bool(y, value);
}

/* ---- validation ------------------------------------------------------------------------- */

/* Names that end up in file names, shell command lines and fstab fields are restricted to a
 * set that needs no quoting anywhere. */
static gboolean is_word(const char *s, const char *extra) {
  if (!s || !*s || s[0] == '-' || s[0] == '.')
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && !strchr(extra, *p))
      return FALSE;
  return TRUE;
}

static gboolean is_single_line(const char *s) {
  if (!s || !*s || !g_utf8_validate(s, -1, NULL))
    return FALSE;
  for (const char *p = s; *p; p++)
    if ((guchar)*p < 0x20 || *p == 0x7f)
      return FALSE;
  return TRUE;
}

static gboolean is_user_name(const char *s) {
  if (!s || !*s || strlen(s) > 32 || !(g_ascii_islower(s[0]) || s[0] == '_'))
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_islower(*p) && !g_ascii_isdigit(*p) && *p != '_' && *p != '-')
      return FALSE;
  return TRUE;
}

static gboolean is_env_key(const char *s) {
  if (!s || !(g_ascii_isalpha(s[0]) || s[0] == '_'))
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '_')
      return FALSE;
  return TRUE;
}

static gboolean is_guest_path(const char *s) {
  /* fstab separates fields by blanks and the runner splits its lines the same way. */
  if (!s || s[0] != '/' || !g_utf8_validate(s, -1, NULL))
    return FALSE;
  for (const char *p = s; *p; p++)
    if ((guchar)*p <= 0x20 || *p == 0x7f || *p == '\\')
      return FALSE;
  return TRUE;
}

static gboolean is_mac(const char *s) {
  if (strlen(s) != 17)
    return FALSE;
  for (int i = 0; i < 17; i++)
    if (i % 3 == 2 ? s[i] != ':' : !g_ascii_isxdigit(s[i]))
      return FALSE;
  return TRUE;
}

static gboolean validate_config(const HutchSeedConfig *c, GError **error) {
  const char *bad = NULL;
  const char *value = NULL;
  if (!is_single_line(c->instance_id))
    bad = "instance id", value = c->instance_id;
  else if (!hutch_name_is_valid(c->hostname, NULL))
    bad = "host name", value = c->hostname;
  else if (!is_user_name(c->user_name) || strcmp(c->user_name, "root") == 0)
    bad = "user name", value = c->user_name;
  else if (c->user_uid == 0)
    bad = "user id", value = "0";
  else if (c->user_gid == 0)
    bad = "group id", value = "0";
  else if (!is_single_line(c->authorized_key))
    bad = "authorized key", value = c->authorized_key;
  else if (!c->host_key_private || !g_utf8_validate(c->host_key_private, -1, NULL))
    bad = "host private key", value = "(not shown)";
  else if (!is_single_line(c->host_key_public))
    bad = "host public key", value = c->host_key_public;
  else if (!is_word(c->ready_channel, "._-"))
    bad = "ready channel name", value = c->ready_channel;
  else if (c->mac_address && !is_mac(c->mac_address))
    bad = "MAC address", value = c->mac_address;
  for (guint i = 0; !bad && c->mounts && i < c->mounts->len; i++) {
    const HutchSeedMount *m = g_ptr_array_index(c->mounts, i);
    if (!is_word(m->tag, "._-"))
      bad = "mount tag", value = m->tag;
    else if (!is_guest_path(m->guest_path))
      bad = "guest mount path", value = m->guest_path;
  }
  if (bad) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "invalid %s '%s'", bad,
                value ? value : "(none)");
    return FALSE;
  }
  return TRUE;
}

/* ---- the documents ---------------------------------------------------------------------- */

/* The runner and the ready unit are read at build time, from the first of: the source tree
 * named by $HUTCH_SOURCE_DIR (tests), the installed data directory, the source tree hutch was
 * built from (uninstalled runs). */
char *hutch_seed_read_data_file(const char *name, GError **error) {
  g_autoptr(GPtrArray) candidates = g_ptr_array_new_with_free_func(g_free);
  const char *env = g_getenv("HUTCH_SOURCE_DIR");
  if (env && *env)
    g_ptr_array_add(candidates, g_build_filename(env, "cloud-init", name, NULL));
  g_ptr_array_add(candidates, g_build_filename(HUTCH_DATADIR, "cloud-init", name, NULL));
  g_ptr_array_add(candidates, g_build_filename(HUTCH_SOURCE_DIR, "cloud-init", name, NULL));
  for (guint i = 0; i < candidates->len; i++) {
    const char *path = g_ptr_array_index(candidates, i);
    char *text = NULL;
    if (g_file_get_contents(path, &text, NULL, NULL))
      return text;
  }
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
              "cloud-init/%s not found in %s (is hutch installed?)", name, HUTCH_DATADIR);
  return NULL;
}

typedef struct {
  char *path;
  char *content;
  const char *permissions;
  gboolean append; /* to what the image has there */
} GuestFile;

static void guest_file_free(GuestFile *f) {
  g_free(f->path);
  g_free(f->content);
  g_free(f);
}

static void add_file(GPtrArray *files, char *path, char *content, const char *permissions) {
  GuestFile *f = g_new0(GuestFile, 1);
  f->path = path;
  f->content = content;
  f->permissions = permissions;
  g_ptr_array_add(files, f);
}

static gboolean is_package_name(const char *s) {
  /* Debian names, optionally with =VERSION, :ARCH or /RELEASE. Never an option. */
  return is_word(s, "+.-:=~_/");
}

static char *step_script(const HutchProvisionStep *step, GError **error) {
  int kinds = (step->packages != NULL) + (step->script != NULL || step->script_path != NULL) +
              (step->run != NULL);
  if (kinds != 1) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "provision step '%s': needs exactly one of packages, script, run", step->name);
    return NULL;
  }
  if (step->packages) {
    if (!step->packages[0]) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "provision step '%s': empty package list", step->name);
      return NULL;
    }
    GString *s =
        g_string_new("#!/bin/sh\nexec \"${HUTCH_RUNNER:-" GUEST_RUNNER "}\" install-packages");
    for (char **p = step->packages; *p; p++) {
      if (!is_package_name(*p)) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                    "provision step '%s': invalid package name '%s'", step->name, *p);
        g_string_free(s, TRUE);
        return NULL;
      }
      g_string_append_printf(s, " %s", *p);
    }
    g_string_append_c(s, '\n');
    return g_string_free(s, FALSE);
  }
  g_autofree char *body = NULL;
  if (step->run) {
    body = g_strconcat("#!/bin/bash\nset -e\n", step->run, NULL);
  } else {
    if (!step->script_path) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "provision step '%s': script '%s' was not resolved to a file", step->name,
                  step->script);
      return NULL;
    }
    g_autofree char *text = NULL;
    g_autoptr(GError) local = NULL;
    if (!g_file_get_contents(step->script_path, &text, NULL, &local)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "provision step '%s': %s", step->name,
                  local->message);
      return NULL;
    }
    /* Steps are executed directly (runuser -c FILE for `as: user`); without an interpreter
     * line exec would fail with ENOEXEC. */
    body = g_str_has_prefix(text, "#!") ? g_steal_pointer(&text)
                                        : g_strconcat("#!/bin/bash\n", text, NULL);
  }
  if (!g_str_has_suffix(body, "\n"))
    return g_strconcat(body, "\n", NULL);
  return g_steal_pointer(&body);
}

/* Collects every file the guest gets through write_files. */
static GPtrArray *guest_files(const HutchProfile *profile, const HutchSeedConfig *config,
                              GError **error) {
  g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func((GDestroyNotify)guest_file_free);

  if (profile->env && profile->env->len > 0) {
    GString *s = g_string_new("# Written by hutch from the profile's env.\n");
    for (guint i = 0; i < profile->env->len; i++) {
      const HutchEnvVar *var = g_ptr_array_index(profile->env, i);
      if (!is_env_key(var->key)) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "env: invalid variable name '%s'",
                    var->key ? var->key : "");
        g_string_free(s, TRUE);
        return NULL;
      }
      g_autofree char *quoted = g_shell_quote(var->value ? var->value : "");
      g_string_append_printf(s, "export %s=%s\n", var->key, quoted);
    }
    add_file(files, g_strdup(GUEST_ENV_FILE), g_string_free(s, FALSE), "0644");
  }

  g_autofree char *user = g_shell_quote(config->user_name);
  g_autofree char *channel = g_shell_quote(config->ready_channel);
  add_file(files, g_strdup(GUEST_CONF),
           g_strdup_printf("# Written by hutch: read by " GUEST_RUNNER ".\n"
                           "HUTCH_USER=%s\nHUTCH_READY_CHANNEL=%s\n",
                           user, channel),
           "0644");

  if (config->mounts && config->mounts->len > 0)
    add_file(files, g_strdup(GUEST_MOUNTS), hutch_seed_mount_table(config->mounts), "0644");

  if (config->broker_ca) {
    /* the broker's CA in the system store (update-ca-certificates runs before the steps)
     * and where Node.js, Python and Go look; the placeholders in every session's
     * environment: pam_env reads /etc/environment for SSH sessions, logins and sudo */
    add_file(files, g_strdup(HUTCH_BROKER_GUEST_CA), g_strdup(config->broker_ca), "0644");
    GString *env = g_string_new("# Written by hutch: the credential broker's placeholders and CA\n");
    g_string_append(env, "NODE_EXTRA_CA_CERTS=" HUTCH_BROKER_GUEST_CA "\n"
                         "REQUESTS_CA_BUNDLE=" HUTCH_BROKER_GUEST_BUNDLE "\n"
                         "SSL_CERT_FILE=" HUTCH_BROKER_GUEST_BUNDLE "\n");
    GString *keep = g_string_new("# Written by hutch: the credential broker's variables\n"
                                 "Defaults env_keep += \"NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE "
                                 "SSL_CERT_FILE");
    for (char **e = config->broker_env; e && *e; e++) {
      const char *eq = strchr(*e, '=');
      g_autofree char *key = eq ? g_strndup(*e, eq - *e) : NULL;
      if (!key || !is_env_key(key) || !is_word(eq + 1, "-_")) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "secrets: invalid variable '%s'",
                    *e);
        g_string_free(env, TRUE);
        g_string_free(keep, TRUE);
        return NULL;
      }
      g_string_append_printf(env, "%s\n", *e);
      g_string_append_printf(keep, " %s", key);
    }
    add_file(files, g_strdup("/etc/environment"), g_string_free(env, FALSE), "0644");
    ((GuestFile *)g_ptr_array_index(files, files->len - 1))->append = TRUE;
    /* sudo resets the environment (and Debian's sudo reads no pam_env): keep these */
    g_string_append(keep, "\"\n");
    add_file(files, g_strdup("/etc/sudoers.d/hutch-broker"), g_string_free(keep, FALSE), "0440");
  }

  char *runner = hutch_seed_read_data_file("hutch-provision.sh", error);
  if (!runner)
    return NULL;
  add_file(files, g_strdup(GUEST_RUNNER), runner, "0755");
  char *unit = hutch_seed_read_data_file("hutch-ready.service", error);
  if (!unit)
    return NULL;
  add_file(files, g_strdup(GUEST_READY_UNIT), unit, "0644");

  GString *list = g_string_new("");
  guint n = profile->provision ? profile->provision->len : 0;
  for (guint i = 0; i < n; i++) {
    const HutchProvisionStep *step = g_ptr_array_index(profile->provision, i);
    if (!is_word(step->name, "._-")) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "provision: invalid step name '%s' (use letters, digits, '.', '_', '-')",
                  step->name ? step->name : "");
      g_string_free(list, TRUE);
      return NULL;
    }
    char *script = step_script(step, error);
    if (!script) {
      g_string_free(list, TRUE);
      return NULL;
    }
    /* Installing packages needs root whatever `as:` says. */
    gboolean as_user = step->as_user && !step->packages;
    g_string_append_printf(list, "%02u %s %s %s\n", i + 1, step->name, as_user ? "user" : "root",
                           step->optional ? "optional" : "required");
    add_file(files, g_strdup_printf(GUEST_STEPS_DIR "/%02u-%s.sh", i + 1, step->name), script,
             "0755");
  }
  add_file(files, g_strdup(GUEST_STEPS_DIR "/steps.list"), g_string_free(list, FALSE), "0644");
  return g_steal_pointer(&files);
}

static void emit_write_files(Yaml *y, GPtrArray *files) {
  y_str(y, "write_files");
  y_seq(y, FALSE);
  for (guint i = 0; i < files->len; i++) {
    const GuestFile *f = g_ptr_array_index(files, i);
    y_map(y);
    y_kv(y, "path", f->path);
    y_kv(y, "owner", "root:root");
    y_kv(y, "permissions", f->permissions);
    if (f->append)
      y_kv_bool(y, "append", TRUE);
    if (g_utf8_validate(f->content, -1, NULL)) {
      y_str(y, "content");
      y_text(y, f->content);
    } else {
      /* YAML is UTF-8 text; a script in another encoding travels as base64. */
      g_autofree char *b64 = g_base64_encode((const guchar *)f->content, strlen(f->content));
      y_kv(y, "encoding", "b64");
      y_kv(y, "content", b64);
    }
    y_map_end(y);
  }
  y_seq_end(y);
}

static char *build_user_data(const HutchProfile *profile, const HutchSeedConfig *config,
                             GError **error) {
  g_autoptr(GPtrArray) files = guest_files(profile, config, error);
  if (!files)
    return NULL;

  Yaml y;
  y_init(&y, "#cloud-config\n");
  y_map(&y);
  y_kv(&y, "hostname", config->hostname);
  y_kv_bool(&y, "manage_etc_hosts", TRUE);
  y_kv_bool(&y, "ssh_pwauth", FALSE);
  y_kv_bool(&y, "disable_root", TRUE);

  /* The guest's only host key is the one hutch generated and pinned: the image's keys are
   * deleted, and with ssh_keys given cloud-init generates none (ssh_genkeytypes names the
   * pinned type only, which the schema accepts where [] draws a warning). */
  y_kv_bool(&y, "ssh_deletekeys", TRUE);
  y_str(&y, "ssh_genkeytypes");
  y_seq(&y, TRUE);
  y_str(&y, "ed25519");
  y_seq_end(&y);
  y_str(&y, "ssh_keys");
  y_map(&y);
  y_str(&y, "ed25519_private");
  y_text(&y, config->host_key_private);
  y_kv(&y, "ed25519_public", config->host_key_public);
  y_map_end(&y);

  /* The user's own group with the gid the host maps shares to: useradd would give it the
   * uid's number only when that is free, and cloud-init's `groups:` takes no gid. bootcmd
   * runs before users-groups (at every boot: a group that exists is left alone); a gid that
   * is taken falls back to useradd's choice rather than leaving the guest without a user. */
  g_autofree char *gid_text = g_strdup_printf("%u", config->user_gid);
  y_str(&y, "bootcmd");
  y_seq(&y, FALSE);
  y_seq(&y, TRUE);
  y_str(&y, "sh");
  y_str(&y, "-c");
  y_str(&y, "getent group \"$1\" >/dev/null || groupadd -g \"$2\" \"$1\" || groupadd \"$1\"");
  y_str(&y, "hutch-user-group");
  y_str(&y, config->user_name);
  y_str(&y, gid_text);
  y_seq_end(&y);
  y_seq_end(&y);

  /* `users:` without "default" creates exactly this one account. */
  y_str(&y, "users");
  y_seq(&y, FALSE);
  y_map(&y);
  y_kv(&y, "name", config->user_name);
  y_str(&y, "uid");
  y_uint(&y, config->user_uid);
  y_kv(&y, "primary_group", config->user_name);
  if (profile->user_shell)
    y_kv(&y, "shell", profile->user_shell);
  y_kv_bool(&y, "lock_passwd", TRUE);
  if (profile->user_sudo)
    y_kv(&y, "sudo", "ALL=(ALL) NOPASSWD:ALL");
  y_str(&y, "ssh_authorized_keys");
  y_seq(&y, FALSE);
  y_str(&y, config->authorized_key);
  y_seq_end(&y);
  y_map_end(&y);
  y_seq_end(&y);

  emit_write_files(&y, files);

  /* Shares are mounted by the runner, not by cloud-init's mounts module (which runs before
   * users-groups and would create the user's home directory as root); packages are
   * installed by the runner too, one step at a time, so that progress reaches the host. */
  y_str(&y, "runcmd");
  y_seq(&y, FALSE);
  if (config->broker_ca) {
    y_seq(&y, TRUE);
    y_str(&y, "update-ca-certificates");
    y_seq_end(&y);
  }
  y_seq(&y, TRUE);
  y_str(&y, GUEST_RUNNER);
  y_str(&y, "run");
  y_seq_end(&y);
  y_seq_end(&y);

  y_kv(&y, "final_message", "hutch: cloud-init finished after $UPTIME seconds");
  y_map_end(&y);
  return y_finish(&y, "user-data", error);
}

static char *build_meta_data(const HutchSeedConfig *config, GError **error) {
  Yaml y;
  y_init(&y, "");
  y_map(&y);
  y_kv(&y, "instance-id", config->instance_id);
  y_kv(&y, "local-hostname", config->hostname);
  y_map_end(&y);
  return y_finish(&y, "meta-data", error);
}

static char *build_network_config(const HutchSeedConfig *config, GError **error) {
  /* passt answers DHCP. By MAC, cloud-init renames the NIC to eth0 whatever the renderer.
   * By driver, netplan matches any name, but eni and networkd use the entry's name (eth0) as
   * the interface name, which holds under net.ifnames=0 as in the images hutch builds. */
  Yaml y;
  y_init(&y, "");
  y_map(&y);
  y_str(&y, "version");
  y_uint(&y, 2);
  y_str(&y, "ethernets");
  y_map(&y);
  y_str(&y, "eth0");
  y_map(&y);
  y_str(&y, "match");
  y_map(&y);
  if (config->mac_address)
    y_kv(&y, "macaddress", config->mac_address);
  else
    y_kv(&y, "driver", "virtio_net");
  y_map_end(&y);
  if (config->mac_address)
    y_kv(&y, "set-name", "eth0");
  y_kv_bool(&y, "dhcp4", TRUE);
  y_map_end(&y);
  y_map_end(&y);
  y_map_end(&y);
  return y_finish(&y, "network-config", error);
}

char *hutch_seed_mount_table(GPtrArray *mounts) {
  GString *s = g_string_new("");
  for (guint i = 0; mounts && i < mounts->len; i++) {
    const HutchSeedMount *m = g_ptr_array_index(mounts, i);
    /* ro in the guest is a courtesy only: the guest user has sudo, the host enforces it. */
    g_string_append_printf(s, "%s %s virtiofs defaults,nofail%s 0 0\n", m->tag, m->guest_path,
                           m->readonly ? ",ro" : "");
  }
  return g_string_free(s, FALSE);
}

HutchSeedDocuments *hutch_seed_build(const HutchProfile *profile, const HutchSeedConfig *config,
                                     GError **error) {
  if (!validate_config(config, error)) {
    g_prefix_error(error, "building cloud-init seed: ");
    return NULL;
  }
  g_autoptr(HutchSeedDocuments) docs = g_new0(HutchSeedDocuments, 1);
  if (!(docs->meta_data = build_meta_data(config, error)) ||
      !(docs->user_data = build_user_data(profile, config, error)) ||
      !(docs->network_config = build_network_config(config, error))) {
    g_prefix_error(error, "building cloud-init seed: ");
    return NULL;
  }
  /* validate_config has checked both to be single lines */
  docs->identity = g_strdup_printf("hostname %s\nauthorized-key %s\n", config->hostname,
                                   config->authorized_key);
  docs->host_key = g_strdup(config->host_key_private);
  return g_steal_pointer(&docs);
}

/* ---- the ISO ---------------------------------------------------------------------------- */

static gboolean archive_failed(struct archive *a, const char *path, GError **error) {
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing seed image %s: %s", path,
              archive_error_string(a) ? archive_error_string(a) : "libarchive failed");
  return FALSE;
}

static gboolean write_iso_to_fd(const HutchSeedDocuments *docs, int fd, const char *path,
                                GError **error) {
  const struct {
    const char *name;
    const char *text;
  } members[] = {
      {"meta-data", docs->meta_data},
      {"user-data", docs->user_data},
      {"network-config", docs->network_config},
      {"hutch-identity", docs->identity},
      {"hutch-host-key", docs->host_key},
  };
  struct archive *a = archive_write_new();
  gboolean ok = FALSE;
  /* cloud-init's NoCloud source wants the label cidata and long file names: plain ISO 9660
   * would show USER_DAT.;1. Rock Ridge for Linux, Joliet for anything else. */
  if (archive_write_set_format_iso9660(a) != ARCHIVE_OK ||
      archive_write_set_options(a, "iso9660:volume-id=cidata,iso9660:rockridge,"
                                   "iso9660:joliet") != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
      archive_write_open_fd(a, fd) != ARCHIVE_OK) {
    archive_failed(a, path, error);
    goto out;
  }
  time_t now = time(NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(members); i++) {
    if (!members[i].text) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing seed image %s: no %s", path,
                  members[i].name);
      goto out;
    }
    gsize len = strlen(members[i].text);
    struct archive_entry *entry = archive_entry_new();
    archive_entry_set_pathname(entry, members[i].name);
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, 0644);
    archive_entry_set_size(entry, (la_int64_t)len);
    archive_entry_set_mtime(entry, now, 0);
    int rc = archive_write_header(a, entry);
    archive_entry_free(entry);
    if (rc != ARCHIVE_OK || archive_write_data(a, members[i].text, len) != (la_ssize_t)len) {
      archive_failed(a, path, error);
      goto out;
    }
  }
  /* The ISO writer lays out the volume only at close. */
  if (archive_write_close(a) != ARCHIVE_OK) {
    archive_failed(a, path, error);
    goto out;
  }
  ok = TRUE;
out:
  archive_write_free(a);
  return ok;
}

gboolean hutch_seed_write_iso(const HutchSeedDocuments *docs, const char *path, GError **error) {
  g_autofree char *tmp = g_strdup_printf("%s.tmp-XXXXXX", path);
  int fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    int saved = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "writing seed image %s: %s",
                path, g_strerror(saved));
    return FALSE;
  }
  if (!write_iso_to_fd(docs, fd, path, error)) {
    close(fd);
    g_unlink(tmp);
    return FALSE;
  }
  int rc = fchmod(fd, 0600) < 0 || fsync(fd) < 0 ? -1 : 0;
  int saved = errno;
  if (close(fd) < 0 && rc == 0)
    rc = -1, saved = errno;
  if (rc == 0 && g_rename(tmp, path) < 0)
    rc = -1, saved = errno;
  if (rc < 0) {
    g_unlink(tmp);
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved), "writing seed image %s: %s",
                path, g_strerror(saved));
    return FALSE;
  }
  return TRUE;
}
