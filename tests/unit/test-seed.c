/* test-seed.c: cloud-init seed documents (golden files, YAML round trip, quoting), the cidata
 * ISO, and the guest-side provisioning runner run on the host with stubbed commands. */
#include "config.h"

#include <archive.h>
#include <archive_entry.h>
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <yaml.h>

#include "ready-private.h"
#include "seed-private.h"

#define TRICKY_VALUE "it's '$(rm -rf /)\" `id` \\n $HOME"

/* ---- fixtures --------------------------------------------------------------------------- */

static void add_env(HutchProfile *p, const char *key, const char *value) {
  HutchEnvVar *var = g_new0(HutchEnvVar, 1);
  var->key = g_strdup(key);
  var->value = g_strdup(value);
  g_ptr_array_add(p->env, var);
}

static HutchProvisionStep *add_step(HutchProfile *p, const char *name) {
  HutchProvisionStep *step = g_new0(HutchProvisionStep, 1);
  step->name = g_strdup(name);
  g_ptr_array_add(p->provision, step);
  return step;
}

/* A profile with every kind of step, `as: user`, an optional step and awkward env values.
 * Built by hand: the YAML parser is tested on its own. */
static HutchProfile *make_profile(void) {
  HutchProfile *p = hutch_profile_new_defaults();
  p->name = g_strdup("seedtest");
  add_env(p, "EDITOR", "vim");
  add_env(p, "TRICKY", TRICKY_VALUE);
  add_env(p, "MULTI", "line one\nline two\n");
  add_env(p, "YES", "yes");
  add_env(p, "EMPTY", "");

  HutchProvisionStep *step = add_step(p, "tools");
  step->packages = g_strsplit("vim jq build-essential", " ", -1);
  step = add_step(p, "node");
  step->script = g_strdup("node.sh");
  step->script_path =
      g_build_filename(g_getenv("HUTCH_TEST_DATA"), "seed", "scripts", "node.sh", NULL);
  step->as_user = TRUE;
  step = add_step(p, "greet");
  step->run =
      g_strdup("echo \"hello from run as $(id -un)\"\n"
               "if [ -n \"${HUTCH_TEST_OUT:-}\" ]; then echo greet >>\"$HUTCH_TEST_OUT\"; fi");
  step->optional = TRUE;
  return p;
}

static HutchSeedMount mounts_data[] = {
    {"hutch0", "/home/dev/Shared", FALSE},
    {"hutch1", "/home/dev/reference docs", TRUE},
    {"hutch2", "/srv/ro", TRUE},
};

typedef struct {
  HutchSeedConfig config;
  GPtrArray *mounts;
} ConfigFixture;

static void config_fixture_init(ConfigFixture *f) {
  memset(f, 0, sizeof(*f));
  f->mounts = g_ptr_array_new();
  g_ptr_array_add(f->mounts, &mounts_data[0]);
  g_ptr_array_add(f->mounts, &mounts_data[2]);
  f->config = (HutchSeedConfig){
      .instance_id = "4d1b7e0a-6a43-4f8e-9b1e-0c5f2d9a7e31",
      .hostname = "dev",
      .user_name = "dev",
      .user_uid = 1000,
      .user_gid = 1001,
      .authorized_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeClientKeyForTests hutch@host",
      .host_key_private = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
                          "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2\n"
                          "FakeHostKeyBodyForTestsOnly==\n"
                          "-----END OPENSSH PRIVATE KEY-----\n",
      .host_key_public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTests",
      .mounts = f->mounts,
      .ready_channel = "org.hutch.ready.0",
  };
}

static void config_fixture_clear(ConfigFixture *f) {
  g_ptr_array_unref(f->mounts);
}

static HutchSeedDocuments *build_fixture(void) {
  g_autoptr(HutchProfile) profile = make_profile();
  ConfigFixture f;
  config_fixture_init(&f);
  g_autoptr(GError) error = NULL;
  HutchSeedDocuments *docs = hutch_seed_build(profile, &f.config, &error);
  g_assert_no_error(error);
  g_assert_nonnull(docs);
  config_fixture_clear(&f);
  return docs;
}

static char *source_file(const char *relative) {
  return g_build_filename(g_getenv("HUTCH_SOURCE_DIR"), relative, NULL);
}

static char *read_text(const char *path) {
  g_autoptr(GError) error = NULL;
  char *text = NULL;
  g_file_get_contents(path, &text, NULL, &error);
  g_assert_no_error(error);
  return text;
}

static void write_text(const char *path, const char *text, int mode) {
  g_autoptr(GError) error = NULL;
  g_file_set_contents(path, text, -1, &error);
  g_assert_no_error(error);
  g_assert_cmpint(g_chmod(path, mode), ==, 0);
}

/* ---- YAML reading (libyaml's document loader) ------------------------------------------- */

typedef struct {
  yaml_document_t doc;
  yaml_node_t *root;
} Yaml;

static Yaml *yaml_load(const char *text) {
  yaml_parser_t parser;
  g_assert_true(yaml_parser_initialize(&parser));
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
  Yaml *y = g_new0(Yaml, 1);
  int ok = yaml_parser_load(&parser, &y->doc);
  if (!ok)
    g_error("YAML does not parse: %s at line %zu", parser.problem, parser.problem_mark.line + 1);
  y->root = yaml_document_get_root_node(&y->doc);
  g_assert_nonnull(y->root);
  /* Exactly one document. */
  yaml_document_t second;
  g_assert_true(yaml_parser_load(&parser, &second));
  g_assert_null(yaml_document_get_root_node(&second));
  yaml_document_delete(&second);
  yaml_parser_delete(&parser);
  return y;
}

static void yaml_free(Yaml *y) {
  yaml_document_delete(&y->doc);
  g_free(y);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Yaml, yaml_free)

static yaml_node_t *ymap(Yaml *y, yaml_node_t *map, const char *key) {
  g_assert_nonnull(map);
  g_assert_cmpint(map->type, ==, YAML_MAPPING_NODE);
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
    if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, key) == 0)
      return yaml_document_get_node(&y->doc, p->value);
  }
  return NULL;
}

static guint yseq_len(yaml_node_t *seq) {
  g_assert_nonnull(seq);
  g_assert_cmpint(seq->type, ==, YAML_SEQUENCE_NODE);
  return (guint)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

static yaml_node_t *yseq(Yaml *y, yaml_node_t *seq, guint i) {
  g_assert_cmpuint(i, <, yseq_len(seq));
  return yaml_document_get_node(&y->doc, seq->data.sequence.items.start[i]);
}

static const char *yscalar(yaml_node_t *node) {
  g_assert_nonnull(node);
  g_assert_cmpint(node->type, ==, YAML_SCALAR_NODE);
  return (const char *)node->data.scalar.value;
}

/* A plain scalar is what PyYAML would resolve by its look (int, bool, null); a quoted or block
 * one is a string whatever it says. */
static gboolean yplain(yaml_node_t *node) {
  return node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static yaml_node_t *find_write_file(Yaml *y, const char *path) {
  yaml_node_t *files = ymap(y, y->root, "write_files");
  for (guint i = 0; i < yseq_len(files); i++) {
    yaml_node_t *f = yseq(y, files, i);
    if (strcmp(yscalar(ymap(y, f, "path")), path) == 0)
      return f;
  }
  return NULL;
}

static const char *write_file_content(Yaml *y, const char *path) {
  yaml_node_t *f = find_write_file(y, path);
  if (!f)
    g_error("user-data writes no %s", path);
  g_assert_null(ymap(y, f, "encoding"));
  return yscalar(ymap(y, f, "content"));
}

/* ---- documents -------------------------------------------------------------------------- */

static void check_golden(const char *name, const char *actual) {
  g_autofree char *path = g_build_filename(g_getenv("HUTCH_TEST_DATA"), "seed", name, NULL);
  if (g_strcmp0(g_getenv("HUTCH_REGENERATE"), "1") == 0) {
    write_text(path, actual, 0644);
    return;
  }
  g_autofree char *expected = read_text(path);
  g_assert_cmpstr(actual, ==, expected);
}

static void test_golden(void) {
  g_autoptr(HutchSeedDocuments) docs = build_fixture();
  check_golden("meta-data", docs->meta_data);
  check_golden("user-data", docs->user_data);
  check_golden("network-config", docs->network_config);
}

static void test_user_data_structure(void) {
  g_autoptr(HutchSeedDocuments) docs = build_fixture();
  g_assert_true(g_str_has_prefix(docs->user_data, "#cloud-config\n"));
  g_autoptr(Yaml) y = yaml_load(docs->user_data);
  yaml_node_t *root = y->root;

  g_assert_cmpstr(yscalar(ymap(y, root, "hostname")), ==, "dev");
  g_assert_cmpstr(yscalar(ymap(y, root, "ssh_pwauth")), ==, "false");
  g_assert_true(yplain(ymap(y, root, "ssh_pwauth")));
  g_assert_cmpstr(yscalar(ymap(y, root, "disable_root")), ==, "true");
  g_assert_cmpstr(yscalar(ymap(y, root, "ssh_deletekeys")), ==, "true");
  yaml_node_t *gen = ymap(y, root, "ssh_genkeytypes");
  g_assert_cmpuint(yseq_len(gen), ==, 1);
  g_assert_cmpstr(yscalar(yseq(y, gen, 0)), ==, "ed25519");
  yaml_node_t *keys = ymap(y, root, "ssh_keys");
  ConfigFixture f;
  config_fixture_init(&f);
  g_assert_cmpstr(yscalar(ymap(y, keys, "ed25519_private")), ==, f.config.host_key_private);
  g_assert_cmpstr(yscalar(ymap(y, keys, "ed25519_public")), ==, f.config.host_key_public);

  /* Exactly one user, no "default" user. */
  yaml_node_t *users = ymap(y, root, "users");
  g_assert_cmpuint(yseq_len(users), ==, 1);
  yaml_node_t *user = yseq(y, users, 0);
  g_assert_cmpint(user->type, ==, YAML_MAPPING_NODE);
  g_assert_cmpstr(yscalar(ymap(y, user, "name")), ==, "dev");
  g_assert_cmpstr(yscalar(ymap(y, user, "uid")), ==, "1000");
  g_assert_true(yplain(ymap(y, user, "uid")));
  /* the user's own group has the gid the host maps shares to, made before users-groups */
  g_assert_cmpstr(yscalar(ymap(y, user, "primary_group")), ==, "dev");
  yaml_node_t *bootcmd = ymap(y, root, "bootcmd");
  g_assert_cmpuint(yseq_len(bootcmd), ==, 1);
  yaml_node_t *group = yseq(y, bootcmd, 0);
  g_assert_cmpuint(yseq_len(group), ==, 6);
  g_assert_cmpstr(yscalar(yseq(y, group, 4)), ==, "dev");
  g_assert_cmpstr(yscalar(yseq(y, group, 5)), ==, "1001");
  g_assert_cmpstr(yscalar(ymap(y, user, "shell")), ==, "/bin/bash");
  g_assert_cmpstr(yscalar(ymap(y, user, "sudo")), ==, "ALL=(ALL) NOPASSWD:ALL");
  g_assert_cmpstr(yscalar(ymap(y, user, "lock_passwd")), ==, "true");
  yaml_node_t *ak = ymap(y, user, "ssh_authorized_keys");
  g_assert_cmpuint(yseq_len(ak), ==, 1);
  g_assert_cmpstr(yscalar(yseq(y, ak, 0)), ==, f.config.authorized_key);
  config_fixture_clear(&f);

  /* No package installs or mounts by cloud-init: the runner does both. */
  g_assert_null(ymap(y, root, "packages"));
  g_assert_null(ymap(y, root, "mounts"));
  yaml_node_t *runcmd = ymap(y, root, "runcmd");
  g_assert_cmpuint(yseq_len(runcmd), ==, 1);
  yaml_node_t *cmd = yseq(y, runcmd, 0);
  g_assert_cmpuint(yseq_len(cmd), ==, 2);
  g_assert_cmpstr(yscalar(yseq(y, cmd, 0)), ==, "/usr/local/lib/hutch/hutch-provision");
  g_assert_cmpstr(yscalar(yseq(y, cmd, 1)), ==, "run");

  /* The runner and the unit travel byte for byte; modes are strings, not octal numbers. */
  g_autofree char *runner_path = source_file("cloud-init/hutch-provision.sh");
  g_autofree char *runner = read_text(runner_path);
  g_assert_cmpstr(write_file_content(y, "/usr/local/lib/hutch/hutch-provision"), ==, runner);
  g_autofree char *unit_path = source_file("cloud-init/hutch-ready.service");
  g_autofree char *unit = read_text(unit_path);
  g_assert_cmpstr(write_file_content(y, "/etc/systemd/system/hutch-ready.service"), ==, unit);
  yaml_node_t *files = ymap(y, root, "write_files");
  for (guint i = 0; i < yseq_len(files); i++) {
    yaml_node_t *perm = ymap(y, yseq(y, files, i), "permissions");
    g_assert_true(g_str_has_prefix(yscalar(perm), "0"));
    g_assert_false(yplain(perm));
  }

  g_assert_cmpstr(write_file_content(y, "/var/lib/hutch/steps/steps.list"), ==,
                  "01 tools root required\n02 node user required\n03 greet root optional\n");
  g_assert_cmpstr(write_file_content(y, "/var/lib/hutch/steps/01-tools.sh"), ==,
                  "#!/bin/sh\nexec \"${HUTCH_RUNNER:-/usr/local/lib/hutch/hutch-provision}\" "
                  "install-packages vim jq build-essential\n");
  const char *node = write_file_content(y, "/var/lib/hutch/steps/02-node.sh");
  g_assert_true(g_str_has_prefix(node, "#!/bin/bash\n# A script step"));
  g_assert_cmpstr(write_file_content(y, "/etc/hutch/fstab"), ==,
                  "hutch0 /home/dev/Shared virtiofs defaults,nofail 0 0\n"
                  "hutch2 /srv/ro virtiofs defaults,nofail,ro 0 0\n");
  g_assert_cmpstr(write_file_content(y, "/etc/hutch/provision.conf"), ==,
                  "# Written by hutch: read by /usr/local/lib/hutch/hutch-provision.\n"
                  "HUTCH_USER='dev'\nHUTCH_READY_CHANNEL='org.hutch.ready.0'\n");

  g_autoptr(Yaml) meta = yaml_load(docs->meta_data);
  g_assert_cmpstr(yscalar(ymap(meta, meta->root, "instance-id")), ==,
                  "4d1b7e0a-6a43-4f8e-9b1e-0c5f2d9a7e31");
  g_assert_cmpstr(yscalar(ymap(meta, meta->root, "local-hostname")), ==, "dev");
  g_autoptr(Yaml) net = yaml_load(docs->network_config);
  g_assert_cmpstr(yscalar(ymap(net, net->root, "version")), ==, "2");
  yaml_node_t *eth = ymap(net, ymap(net, net->root, "ethernets"), "eth0");
  g_assert_cmpstr(yscalar(ymap(net, ymap(net, eth, "match"), "driver")), ==, "virtio_net");
  g_assert_cmpstr(yscalar(ymap(net, eth, "dhcp4")), ==, "true");
}

static void test_network_by_mac(void) {
  g_autoptr(HutchProfile) profile = make_profile();
  ConfigFixture f;
  config_fixture_init(&f);
  f.config.mac_address = "52:54:00:12:34:56";
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchSeedDocuments) docs = hutch_seed_build(profile, &f.config, &error);
  g_assert_no_error(error);
  config_fixture_clear(&f);
  g_autoptr(Yaml) net = yaml_load(docs->network_config);
  yaml_node_t *eth = ymap(net, ymap(net, net->root, "ethernets"), "eth0");
  yaml_node_t *mac = ymap(net, ymap(net, eth, "match"), "macaddress");
  g_assert_cmpstr(yscalar(mac), ==, "52:54:00:12:34:56");
  /* Plain, YAML 1.1 would read it as a base-60 integer. */
  g_assert_false(yplain(mac));
  g_assert_null(ymap(net, ymap(net, eth, "match"), "driver"));
  g_assert_cmpstr(yscalar(ymap(net, eth, "set-name")), ==, "eth0");
  g_assert_cmpstr(yscalar(ymap(net, eth, "dhcp4")), ==, "true");
}

/* Whatever a step's text holds comes out of the YAML byte for byte, through a literal
 * block, a quoted scalar or base64. */
static void test_content_round_trip(void) {
  static const char latin1[] = "#!/bin/sh\necho 'caf\xe9'\n";
  g_autofree char *dir = g_dir_make_tmp("hutch-seed-XXXXXX", NULL);
  g_autofree char *script = g_build_filename(dir, "latin1.sh", NULL);
  write_text(script, latin1, 0644);

  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  HutchProvisionStep *step = add_step(profile, "awkward");
  step->run = g_strdup("echo trailing   \n\tindented\r\n  lead: 'x' # not a comment\n\n\n");
  step = add_step(profile, "latin1");
  step->script = g_strdup("latin1.sh");
  step->script_path = g_strdup(script);
  ConfigFixture f;
  config_fixture_init(&f);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchSeedDocuments) docs = hutch_seed_build(profile, &f.config, &error);
  g_assert_no_error(error);
  config_fixture_clear(&f);

  g_autoptr(Yaml) y = yaml_load(docs->user_data);
  g_assert_cmpstr(write_file_content(y, "/var/lib/hutch/steps/01-awkward.sh"), ==,
                  "#!/bin/bash\nset -e\n"
                  "echo trailing   \n\tindented\r\n  lead: 'x' # not a comment\n\n\n");
  yaml_node_t *f2 = find_write_file(y, "/var/lib/hutch/steps/02-latin1.sh");
  g_assert_nonnull(f2);
  g_assert_cmpstr(yscalar(ymap(y, f2, "encoding")), ==, "b64");
  gsize len = 0;
  g_autofree guchar *decoded = g_base64_decode(yscalar(ymap(y, f2, "content")), &len);
  g_assert_cmpmem(decoded, len, latin1, strlen(latin1));
  g_unlink(script);
  g_rmdir(dir);
}

/* Values PyYAML would read as something else must come out quoted and unchanged. */
static void test_yaml_quoting(void) {
  static const char *const names[] = {"yes", "on", "n", "null", "1e3", "0755", "12:30", "-1"};
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
    g_free(profile->user_shell);
    profile->user_shell = g_strdup(names[i]);
    ConfigFixture f;
    config_fixture_init(&f);
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchSeedDocuments) docs = hutch_seed_build(profile, &f.config, &error);
    g_assert_no_error(error);
    g_autoptr(Yaml) y = yaml_load(docs->user_data);
    yaml_node_t *shell = ymap(y, yseq(y, ymap(y, y->root, "users"), 0), "shell");
    g_assert_cmpstr(yscalar(shell), ==, names[i]);
    g_assert_false(yplain(shell));
    /* No steps, env or mounts: an empty step list, no env file. */
    g_assert_cmpstr(write_file_content(y, "/var/lib/hutch/steps/steps.list"), ==, "");
    g_assert_null(find_write_file(y, "/etc/profile.d/hutch-env.sh"));
    config_fixture_clear(&f);
  }
}

/* The documents depend on the profile and the config only: built with an almost empty
 * environment and with one full of the usual suspects, they are the same. */
static void test_no_host_environment(void) {
  g_auto(GStrv) saved = g_get_environ();
  for (char **e = saved; *e; e++) {
    g_autofree char *key = g_strndup(*e, strcspn(*e, "="));
    if (strcmp(key, "HUTCH_SOURCE_DIR") != 0 && strcmp(key, "HUTCH_TEST_DATA") != 0)
      g_unsetenv(key);
  }
  g_autoptr(HutchSeedDocuments) bare = build_fixture();
  static const char *const suspects[][2] = {
      {"HUTCH_SEED_CANARY_KEY", "canary-value-8d2f61"},
      {"HOME", "/home/canary-home-5e1"},
      {"USER", "canaryuser"},
      {"EDITOR", "canary-editor-77"},
      {"SSH_AUTH_SOCK", "/tmp/canary-agent.sock"},
      {"http_proxy", "http://canary-proxy:3128"},
      {"LANG", "xx_CANARY.UTF-8"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(suspects); i++)
    g_setenv(suspects[i][0], suspects[i][1], TRUE);
  g_autoptr(HutchSeedDocuments) docs = build_fixture();
  for (gsize i = 0; i < G_N_ELEMENTS(suspects); i++)
    g_unsetenv(suspects[i][0]);
  for (char **e = saved; *e; e++) {
    g_autofree char *key = g_strndup(*e, strcspn(*e, "="));
    g_setenv(key, *e + strlen(key) + 1, TRUE);
  }

  g_assert_cmpstr(docs->meta_data, ==, bare->meta_data);
  g_assert_cmpstr(docs->user_data, ==, bare->user_data);
  g_assert_cmpstr(docs->network_config, ==, bare->network_config);
  for (gsize i = 0; i < G_N_ELEMENTS(suspects); i++) {
    g_assert_null(strstr(docs->user_data, suspects[i][1]));
    g_assert_null(strstr(docs->meta_data, suspects[i][1]));
  }

  /* The env file defines the profile's variables and nothing else. */
  g_autoptr(Yaml) y = yaml_load(docs->user_data);
  const char *env = write_file_content(y, "/etc/profile.d/hutch-env.sh");
  g_auto(GStrv) lines = g_strsplit(env, "\n", -1);
  guint exports = 0;
  for (char **l = lines; *l; l++)
    exports += g_str_has_prefix(*l, "export ");
  g_assert_cmpuint(exports, ==, 5);
}

static char *shell_output(const char *shell, const char *script, const char *arg) {
  const char *argv[] = {shell, "-c", script, "sh", arg, NULL};
  const char *envp[] = {"PATH=/usr/bin:/bin", "HOME=/nonexistent", NULL};
  g_autoptr(GError) error = NULL;
  char *out = NULL;
  int status = 0;
  g_spawn_sync(NULL, (char **)argv, (char **)envp, G_SPAWN_DEFAULT, NULL, NULL, &out, NULL, &status,
               &error);
  g_assert_no_error(error);
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  return out;
}

static void test_env_quoting(void) {
  g_autoptr(HutchSeedDocuments) docs = build_fixture();
  g_autoptr(Yaml) y = yaml_load(docs->user_data);
  g_autofree char *dir = g_dir_make_tmp("hutch-seed-XXXXXX", NULL);
  g_autofree char *file = g_build_filename(dir, "hutch-env.sh", NULL);
  write_text(file, write_file_content(y, "/etc/profile.d/hutch-env.sh"), 0644);
  const struct {
    const char *key, *value;
  } vars[] = {
      {"TRICKY", TRICKY_VALUE}, {"MULTI", "line one\nline two\n"}, {"YES", "yes"}, {"EMPTY", ""},
      {"EDITOR", "vim"},
  };
  const char *shells[] = {"/bin/sh", "/bin/bash", "/bin/dash"};
  for (gsize s = 0; s < G_N_ELEMENTS(shells); s++) {
    if (!g_file_test(shells[s], G_FILE_TEST_IS_EXECUTABLE))
      continue;
    for (gsize i = 0; i < G_N_ELEMENTS(vars); i++) {
      g_autofree char *script = g_strdup_printf(". \"$1\"; printf %%s \"$%s\"", vars[i].key);
      g_autofree char *out = shell_output(shells[s], script, file);
      g_assert_cmpstr(out, ==, vars[i].value);
    }
    /* Exported, not just set. */
    g_autofree char *out = shell_output(shells[s], ". \"$1\"; sh -c 'printf %s \"$TRICKY\"'", file);
    g_assert_cmpstr(out, ==, TRICKY_VALUE);
  }
  g_unlink(file);
  g_rmdir(dir);
}

static void expect_build_error(HutchProfile *profile, const HutchSeedConfig *config, int code,
                               const char *fragment) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchSeedDocuments) docs = hutch_seed_build(profile, config, &error);
  g_assert_null(docs);
  g_assert_error(error, HUTCH_ERROR, code);
  if (!strstr(error->message, fragment))
    g_error("error '%s' does not mention '%s'", error->message, fragment);
}

static void test_invalid_input(void) {
  ConfigFixture f;
  config_fixture_init(&f);
  g_autoptr(HutchProfile) good = make_profile();

  HutchSeedConfig c = f.config;
  c.user_name = "root";
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "user name");
  c = f.config;
  c.user_uid = 0;
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "user id");
  c = f.config;
  c.user_gid = 0;
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "group id");
  c = f.config;
  c.hostname = "bad host";
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "host name");
  c = f.config;
  c.authorized_key = "ssh-ed25519 AAAA\nssh-rsa BBBB";
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "authorized key");
  c = f.config;
  c.ready_channel = "../../etc/passwd";
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "ready channel");
  c = f.config;
  c.mac_address = "52:54:00:12:34:5g";
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "MAC address");
  c = f.config;
  g_autoptr(GPtrArray) bad_mounts = g_ptr_array_new();
  g_ptr_array_add(bad_mounts, &mounts_data[1]); /* a blank in the path breaks fstab */
  c.mounts = bad_mounts;
  expect_build_error(good, &c, HUTCH_ERROR_USAGE, "guest mount path");

  {
    g_autoptr(HutchProfile) p = make_profile();
    HutchEnvVar *var = g_ptr_array_index(p->env, 0);
    g_free(var->key);
    var->key = g_strdup("A=B; rm");
    expect_build_error(p, &f.config, HUTCH_ERROR_PROFILE, "variable name");
  }
  {
    g_autoptr(HutchProfile) p = make_profile();
    HutchProvisionStep *step = g_ptr_array_index(p->provision, 0);
    g_free(step->packages[1]);
    step->packages[1] = g_strdup("--allow-unauthenticated");
    expect_build_error(p, &f.config, HUTCH_ERROR_PROFILE, "package name");
  }
  {
    g_autoptr(HutchProfile) p = make_profile();
    HutchProvisionStep *step = g_ptr_array_index(p->provision, 1);
    g_free(step->name);
    step->name = g_strdup("../x");
    expect_build_error(p, &f.config, HUTCH_ERROR_PROFILE, "step name");
  }
  {
    g_autoptr(HutchProfile) p = make_profile();
    HutchProvisionStep *step = g_ptr_array_index(p->provision, 1);
    g_free(step->script_path);
    step->script_path = g_strdup("/nonexistent/hutch/script.sh");
    expect_build_error(p, &f.config, HUTCH_ERROR_PROFILE, "provision step 'node'");
  }
  {
    g_autoptr(HutchProfile) p = make_profile();
    HutchProvisionStep *step = g_ptr_array_index(p->provision, 2);
    step->packages = g_strsplit("vim", " ", -1);
    expect_build_error(p, &f.config, HUTCH_ERROR_PROFILE, "exactly one of");
  }
  config_fixture_clear(&f);
}

/* ---- the ISO ---------------------------------------------------------------------------- */

static GHashTable *read_iso(const char *path, const char *options) {
  GHashTable *members = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  struct archive *a = archive_read_new();
  archive_read_support_format_iso9660(a);
  if (options)
    g_assert_cmpint(archive_read_set_options(a, options), ==, ARCHIVE_OK);
  g_assert_cmpint(archive_read_open_filename(a, path, 10240), ==, ARCHIVE_OK);
  struct archive_entry *entry;
  while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
    const char *name = archive_entry_pathname(entry);
    if (archive_entry_filetype(entry) != AE_IFREG)
      continue;
    gsize size = (gsize)archive_entry_size(entry);
    char *data = g_malloc0(size + 1);
    g_assert_cmpint(archive_read_data(a, data, size), ==, (la_ssize_t)size);
    g_hash_table_insert(members, g_strdup(name), data);
  }
  archive_read_free(a);
  return members;
}

static void test_iso(void) {
  g_autoptr(HutchSeedDocuments) docs = build_fixture();
  g_autofree char *dir = g_dir_make_tmp("hutch-seed-XXXXXX", NULL);
  g_autofree char *iso = g_build_filename(dir, "seed.iso", NULL);
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_seed_write_iso(docs, iso, &error));
  g_assert_no_error(error);

  GStatBuf st;
  g_assert_cmpint(g_stat(iso, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0600);

  /* Rock Ridge names (libarchive's default), then Joliet names with Rock Ridge ignored. */
  const char *options[] = {NULL, "iso9660:!rockridge"};
  for (gsize o = 0; o < G_N_ELEMENTS(options); o++) {
    g_autoptr(GHashTable) members = read_iso(iso, options[o]);
    g_assert_cmpuint(g_hash_table_size(members), ==, 5);
    g_assert_cmpstr(g_hash_table_lookup(members, "meta-data"), ==, docs->meta_data);
    g_assert_cmpstr(g_hash_table_lookup(members, "user-data"), ==, docs->user_data);
    g_assert_cmpstr(g_hash_table_lookup(members, "network-config"), ==, docs->network_config);
    /* what a VM made from a template takes at its first boot (hutch-provision identity) */
    g_assert_cmpstr(g_hash_table_lookup(members, "hutch-host-key"), ==, docs->host_key);
    const char *identity = g_hash_table_lookup(members, "hutch-identity");
    g_assert_nonnull(identity);
    g_assert_true(g_str_has_prefix(identity, "hostname "));
    g_assert_nonnull(strstr(identity, "\nauthorized-key ssh-ed25519 "));
  }

  g_autofree char *blkid = g_find_program_in_path("blkid");
  if (!blkid && g_file_test("/usr/sbin/blkid", G_FILE_TEST_IS_EXECUTABLE))
    blkid = g_strdup("/usr/sbin/blkid");
  if (blkid) {
    const char *argv[] = {blkid, "-p", "-o", "value", "-s", "LABEL", iso, NULL};
    g_autofree char *out = NULL;
    int status = 0;
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, NULL, &status,
                 &error);
    g_assert_no_error(error);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
    g_assert_cmpstr(g_strstrip(out), ==, "cidata");
  } else {
    g_test_message("blkid not found: label not checked by blkid");
  }

  /* A failed write leaves nothing behind and reports the path. */
  g_autofree char *bad = g_build_filename(dir, "missing-dir", "seed.iso", NULL);
  g_assert_false(hutch_seed_write_iso(docs, bad, &error));
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, bad));
  g_clear_error(&error);

  g_unlink(iso);
  g_rmdir(dir);
}

/* ---- the runner ------------------------------------------------------------------------- */

static void test_runner_syntax(void) {
  g_autofree char *runner = source_file("cloud-init/hutch-provision.sh");
  const char *checks[][4] = {
      {"/bin/sh", "-n", NULL, NULL},
      {"/bin/bash", "-n", NULL, NULL},
      {"shellcheck", "-s", "sh", NULL},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(checks); i++) {
    g_autofree char *program = g_find_program_in_path(checks[i][0]);
    if (!program) {
      g_test_message("%s not found: skipped", checks[i][0]);
      continue;
    }
    const char *argv[6] = {program, checks[i][1]};
    gsize n = 2;
    if (checks[i][2])
      argv[n++] = checks[i][2];
    argv[n++] = runner;
    g_autoptr(GError) error = NULL;
    g_autofree char *out = NULL, *err = NULL;
    int status = 0;
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status,
                 &error);
    g_assert_no_error(error);
    if (!g_spawn_check_wait_status(status, NULL))
      g_error("%s %s: %s%s", checks[i][0], runner, out, err);
  }
}

/* A fake guest in a temporary directory: the runner's paths point into it, and runuser,
 * systemctl, mount and apt-get are stubs that log their arguments. */
typedef struct {
  char *dir;
  char *shell;
  GPtrArray *env;
} Guest;

static char *guest_path(Guest *g, const char *relative) {
  return g_build_filename(g->dir, relative, NULL);
}

static void guest_write(Guest *g, const char *relative, const char *text, int mode) {
  g_autofree char *path = guest_path(g, relative);
  g_autofree char *parent = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(parent, 0755), ==, 0);
  write_text(path, text, mode);
}

static char *guest_read(Guest *g, const char *relative) {
  g_autofree char *path = guest_path(g, relative);
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return g_strdup("(missing)");
  return text;
}

static gboolean guest_exists(Guest *g, const char *relative) {
  g_autofree char *path = guest_path(g, relative);
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

static void guest_setenv(Guest *g, const char *key, const char *relative) {
  g_autofree char *path = guest_path(g, relative);
  g_ptr_array_add(g->env, g_strdup_printf("%s=%s", key, path));
}

static Guest *guest_new(const char *shell) {
  Guest *g = g_new0(Guest, 1);
  g->dir = g_dir_make_tmp("hutch-runner-XXXXXX", NULL);
  g->shell = g_strdup(shell);
  g->env = g_ptr_array_new_with_free_func(g_free);
  guest_write(g, "stubs/runuser",
              "#!/bin/sh\n"
              "echo \"runuser $*\" >>\"$STUB_LOG\"\n"
              "case \"$1\" in\n"
              "  -l) exec sh -c \"$4\" ;;\n"
              "  -u) shift 3; exec \"$@\" ;;\n"
              "esac\n"
              "exit 99\n",
              0755);
  /* show -p ActiveState --value UNIT (a question, not logged): "failed" for a unit named in
   * $HUTCH_TEST_OUT.failed-units, "activating" for one in .restarting-units, else "active" */
  guest_write(
      g, "stubs/systemctl",
      "#!/bin/sh\n"
      "if [ \"$1 $2 $3 $4\" = 'show -p ActiveState --value' ]; then\n"
      "  if grep -qxF -e \"$5\" \"$HUTCH_TEST_OUT.failed-units\" 2>/dev/null; then\n"
      "    echo failed\n"
      "  elif grep -qxF -e \"$5\" \"$HUTCH_TEST_OUT.restarting-units\" 2>/dev/null; then\n"
      "    echo activating\n"
      /* restarting once only: the next question finds it active */
      "    [ ! -e \"$HUTCH_TEST_OUT.restart-ends\" ] || rm \"$HUTCH_TEST_OUT.restarting-units\"\n"
      "  elif grep -qxF -e \"$5\" \"$HUTCH_TEST_OUT.inactive-units\" 2>/dev/null; then\n"
      "    echo inactive\n"
      "  else echo active; fi\n"
      "  exit 0\n"
      "fi\n"
      "echo \"systemctl $*\" >>\"$STUB_LOG\"\n",
      0755);
  guest_write(g, "stubs/mount",
              "#!/bin/sh\n"
              "echo \"mount $*\" >>\"$STUB_LOG\"\n"
              "case \"$3\" in *broken*) exit 32 ;; esac\n",
              0755);
  guest_write(g, "stubs/apt-get",
              "#!/bin/sh\n"
              "echo \"apt-get $*\" >>\"$STUB_LOG\"\n"
              "case \"$*\" in *fail-to-install*)\n"
              "  echo 'E: Unable to locate package fail-to-install' >&2; exit 100 ;;\n"
              "esac\n",
              0755);
  /* mounted: the paths listed in $HUTCH_TEST_OUT.mounted */
  guest_write(g, "stubs/mountpoint",
              "#!/bin/sh\n[ \"$1\" = -q ] && shift\n"
              "grep -qxF -e \"$1\" \"$HUTCH_TEST_OUT.mounted\" 2>/dev/null\n",
              0755);
  guest_write(g, "stubs/umount",
              "#!/bin/sh\necho \"umount $*\" >>\"$STUB_LOG\"\n"
              "grep -vxF -e \"$1\" \"$HUTCH_TEST_OUT.mounted\" >\"$HUTCH_TEST_OUT.m\"\n"
              "mv \"$HUTCH_TEST_OUT.m\" \"$HUTCH_TEST_OUT.mounted\"\n",
              0755);
  guest_write(g, "stubs/growpart", "#!/bin/sh\necho \"growpart $*\" >>\"$STUB_LOG\"\n", 0755);
  /* ifupdown's interfaces but lo: eth0, or what $HUTCH_TEST_OUT.ifaces says */
  guest_write(g, "stubs/ifquery",
              "#!/bin/sh\n[ \"$*\" = '--list --exclude=lo' ] || exit 99\n"
              "if [ -e \"$HUTCH_TEST_OUT.ifaces\" ]; then cat \"$HUTCH_TEST_OUT.ifaces\"; "
              "else echo eth0; fi\n",
              0755);
  guest_write(g, "stubs/resize2fs",
              "#!/bin/sh\necho \"resize2fs $*\" >>\"$STUB_LOG\"\n"
              "[ ! -e \"$HUTCH_TEST_OUT.resize-fails\" ]\n",
              0755);
  /* generalise's zero fill: never the host's own disks. dd logs (with ext4's reserved clusters
   * at that moment) and makes its output file; fsstat -f says how much space is left
   * ($HUTCH_TEST_OUT.left, else none). */
  guest_write(g, "stubs/dd",
              "#!/bin/sh\n"
              "echo \"dd $* resv=$(cat \"$HUTCH_SYS_FS_EXT4\"/*/reserved_clusters)\" "
              ">>\"$STUB_LOG\"\n"
              "for a; do case $a in of=*) printf x >>\"${a#of=}\" ;; esac; done\n"
              "exit 1\n",
              0755);
  guest_write(g, "stubs/fsstat",
              "#!/bin/sh\n"
              "if [ \"$1\" = -f ]; then cat \"$HUTCH_TEST_OUT.left\" 2>/dev/null || echo '0 4096'; "
              "else exec stat \"$@\"; fi\n",
              0755);
  guest_write(g, "proc-mounts", "", 0644);
  guest_setenv(g, "HUTCH_DD", "stubs/dd");
  guest_setenv(g, "HUTCH_STAT", "stubs/fsstat");
  guest_setenv(g, "HUTCH_PROC_MOUNTS", "proc-mounts");
  guest_setenv(g, "HUTCH_SYS_FS_EXT4", "sys/fs/ext4");
  /* the root file system's disk: never the host's own */
  guest_write(g, "sys/block/vda/size", "8388608\n", 0644);
  guest_write(g, "fstab", "# host fstab\n", 0644);
  guest_write(g, "channel", "", 0644);
  g_autofree char *stubs = guest_path(g, "stubs");
  g_ptr_array_add(g->env, g_strdup_printf("PATH=%s:/usr/sbin:/usr/bin:/sbin:/bin", stubs));
  guest_setenv(g, "HOME", "root");
  guest_setenv(g, "STUB_LOG", "stub.log");
  guest_setenv(g, "HUTCH_TEST_OUT", "out");
  guest_setenv(g, "HUTCH_CONF", "etc/hutch/provision.conf");
  guest_setenv(g, "HUTCH_STEPS_DIR", "var/lib/hutch/steps");
  guest_setenv(g, "HUTCH_STATE_DIR", "var/lib/hutch");
  guest_setenv(g, "HUTCH_LOG_DIR", "var/log/hutch/steps");
  guest_setenv(g, "HUTCH_CHANNEL_PATH", "channel");
  guest_setenv(g, "HUTCH_MOUNTS", "etc/hutch/fstab");
  guest_setenv(g, "HUTCH_FSTAB", "fstab");
  guest_setenv(g, "HUTCH_CLOUD_INIT_DISABLED", "etc/cloud/cloud-init.disabled");
  guest_setenv(g, "HUTCH_USER_HOME", "home/dev");
  guest_setenv(g, "HUTCH_RUNUSER", "stubs/runuser");
  guest_setenv(g, "HUTCH_SYSTEMCTL", "stubs/systemctl");
  guest_setenv(g, "HUTCH_MOUNT", "stubs/mount");
  guest_setenv(g, "HUTCH_MOUNTPOINT", "stubs/mountpoint");
  guest_setenv(g, "HUTCH_UMOUNT", "stubs/umount");
  guest_setenv(g, "HUTCH_GROWPART", "stubs/growpart");
  guest_setenv(g, "HUTCH_RESIZE2FS", "stubs/resize2fs");
  guest_setenv(g, "HUTCH_IFQUERY", "stubs/ifquery");
  guest_setenv(g, "HUTCH_IFUPDOWN_PRE_DROPIN", "etc/systemd/system/ifupdown-pre.service.d/q.conf");
  guest_setenv(g, "HUTCH_ROOT_SYSFS", "sys/block/vda");
  g_ptr_array_add(g->env, g_strdup("HUTCH_ROOT_FSTYPE=ext4"));
  /* Never the host's own /etc/dpkg or /var/lib/man-db. */
  guest_setenv(g, "HUTCH_DPKG_CFG", "etc/dpkg/dpkg.cfg.d/hutch-provisioning");
  guest_setenv(g, "HUTCH_MANDB_FLAG", "var/lib/man-db/auto-update");
  g_ptr_array_add(g->env, g_strdup("HUTCH_CHANNEL_TIMEOUT=5"));
  g_autofree char *home = guest_path(g, "home/dev");
  g_assert_cmpint(g_mkdir_with_parents(home, 0755), ==, 0);
  g_autofree char *root = guest_path(g, "root");
  g_assert_cmpint(g_mkdir_with_parents(root, 0700), ==, 0);
  return g;
}

static void guest_free(Guest *g) {
  g_autoptr(GError) error = NULL;
  /* The temporary tree is small; a recursive delete through a child process is simplest. */
  const char *argv[] = {"rm", "-rf", "--", g->dir, NULL};
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
               &error);
  g_assert_no_error(error);
  g_free(g->dir);
  g_free(g->shell);
  g_ptr_array_unref(g->env);
  g_free(g);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Guest, guest_free)

/* Runs the runner at `runner` (relative to the guest) with the given command; returns its
 * exit status. */
static int guest_run(Guest *g, const char *runner, const char *command) {
  g_autofree char *path = guest_path(g, runner);
  const char *argv[] = {g->shell, path, command, NULL};
  g_ptr_array_add(g->env, NULL);
  g_autoptr(GError) error = NULL;
  g_autofree char *out = NULL;
  int status = 0;
  g_spawn_sync(g->dir, (char **)argv, (char **)g->env->pdata, G_SPAWN_STDERR_TO_DEV_NULL, NULL,
               NULL, &out, NULL, &status, &error);
  g_ptr_array_remove_index(g->env, g->env->len - 1);
  g_assert_no_error(error);
  g_test_message("runner output:\n%s", out);
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  return -1;
}

static void install_runner(Guest *g) {
  g_autofree char *src = source_file("cloud-init/hutch-provision.sh");
  g_autofree char *text = read_text(src);
  guest_write(g, "usr/local/lib/hutch/hutch-provision", text, 0755);
  guest_write(g, "etc/hutch/provision.conf", "HUTCH_USER='dev'\nHUTCH_READY_CHANNEL='x'\n", 0644);
}

static const char *shells_to_test[] = {"/bin/sh", "/bin/bash"};

static void test_runner_optional_failure(gconstpointer data) {
  g_autoptr(Guest) g = guest_new(data);
  install_runner(g);
  guest_write(g, "var/lib/hutch/steps/steps.list",
              "01 first root required\n02 second user optional\n03 third root required\n", 0644);
  /* The first step sees the provisioning-time speedups in place. */
  guest_write(g, "var/lib/hutch/steps/01-first.sh",
              "#!/bin/sh\necho first output\necho first >>\"$HUTCH_TEST_OUT\"\n"
              "grep -qx force-unsafe-io \"$HUTCH_DPKG_CFG\" && echo unsafe-io >>\"$HUTCH_TEST_OUT\"\n"
              "[ -e \"$HUTCH_MANDB_FLAG\" ] || echo no-mandb >>\"$HUTCH_TEST_OUT\"\n",
              0755);
  guest_write(g, "etc/dpkg/dpkg.cfg.d/keep", "", 0644);
  guest_write(g, "var/lib/man-db/auto-update", "", 0644);
  /* The reason is this run's last line saying "error", not the last line. */
  guest_write(g, "var/lib/hutch/steps/02-second.sh",
              "#!/bin/sh\necho second >>\"$HUTCH_TEST_OUT\"\n"
              "echo 'hutch-second: error: example.invalid is unreachable\t(dns)' >&2\n"
              "echo 'cleaning up'\nexit 3\n",
              0755);
  guest_write(g, "var/lib/hutch/steps/03-third.sh", "#!/bin/sh\necho third >>\"$HUTCH_TEST_OUT\"\n",
              0755);
  g_autofree char *share = guest_path(g, "home/dev/projects/Shared");
  g_autofree char *broken = guest_path(g, "mnt/broken");
  g_autofree char *fstab = g_strdup_printf("hutch0 %s virtiofs defaults,nofail 0 0\n"
                                           "hutch1 %s virtiofs defaults,nofail,ro 0 0\n",
                                           share, broken);
  guest_write(g, "etc/hutch/fstab", fstab, 0644);

  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "run"), ==, 0);
  g_autofree char *channel = guest_read(g, "channel");
  g_autofree char *expected_channel = g_strdup_printf("WARN mount %s failed\n"
                                                      "STEP 1/3 first\nOK 1 first\n"
                                                      "STEP 2/3 second\nFAIL 2 second 3 "
                                                      "hutch-second: error: example.invalid is "
                                                      "unreachable (dns)\n"
                                                      "STEP 3/3 third\nOK 3 third\n"
                                                      "READY\n",
                                                      broken);
  g_assert_cmpstr(channel, ==, expected_channel);
  g_autofree char *out = guest_read(g, "out");
  g_assert_cmpstr(out, ==, "first\nunsafe-io\nno-mandb\nsecond\nthird\n");
  g_autofree char *optional = guest_read(g, "var/lib/hutch/optional-failed");
  g_assert_cmpstr(optional, ==, "second\n");
  /* ... and they are gone once provisioning ends. */
  g_assert_false(guest_exists(g, "etc/dpkg/dpkg.cfg.d/hutch-provisioning"));
  g_assert_true(guest_exists(g, "var/lib/man-db/auto-update"));
  g_assert_false(guest_exists(g, "var/lib/man-db/auto-update.hutch-off"));
  g_autofree char *status = guest_read(g, "var/lib/hutch/status");
  g_assert_cmpstr(status, ==, "ok\n");
  g_assert_true(guest_exists(g, "etc/cloud/cloud-init.disabled"));
  /* later boots raise eth0 without waiting for every device */
  g_autofree char *dropin = guest_read(g, "etc/systemd/system/ifupdown-pre.service.d/q.conf");
  g_assert_cmpstr(dropin, ==,
                  "# written by hutch-provision: wait for eth0, not for every device\n"
                  "[Service]\nExecStart=\nExecStart=/bin/udevadm settle --timeout=120 "
                  "--exit-if-exists=/sys/class/net/eth0\n");
  g_autofree char *log1 = guest_read(g, "var/log/hutch/steps/01-first.log");
  g_assert_nonnull(strstr(log1, "first output\n"));
  g_assert_true(g_file_test(share, G_FILE_TEST_IS_DIR));
  g_autofree char *host_fstab = guest_read(g, "fstab");
  g_autofree char *expected_fstab = g_strconcat("# host fstab\n", fstab, NULL);
  g_assert_cmpstr(host_fstab, ==, expected_fstab);
  g_autofree char *stub_log = guest_read(g, "stub.log");
  g_autofree char *host_fstab_path = guest_path(g, "fstab");
  g_autofree char *runner_step2 = guest_path(g, "var/lib/hutch/steps/02-second.sh");
  g_autofree char *expected_log =
      g_strdup_printf("runuser -u dev -- mkdir -p %s\n"
                      "mount --fstab %s %s\n"
                      "mount --fstab %s %s\n"
                      "runuser -l dev -c %s\n"
                      "systemctl enable hutch-ready.service\n"
                      "systemctl is-active --quiet ssh.service\n",
                      share, host_fstab_path, share, host_fstab_path, broken, runner_step2);
  g_assert_cmpstr(stub_log, ==, expected_log);

  /* Again: the steps that succeeded are skipped, the optional failure runs again, fstab
   * keeps one copy of each line. */
  g_autofree char *ch_path = guest_path(g, "channel");
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "run"), ==, 0);
  g_autofree char *out2 = guest_read(g, "out");
  g_assert_cmpstr(out2, ==, "first\nunsafe-io\nno-mandb\nsecond\nthird\nsecond\n");
  g_autofree char *optional2 = guest_read(g, "var/lib/hutch/optional-failed");
  g_assert_cmpstr(optional2, ==, "second\n");
  g_autofree char *host_fstab2 = guest_read(g, "fstab");
  g_assert_cmpstr(host_fstab2, ==, expected_fstab);
  g_autofree char *channel2 = guest_read(g, "channel");
  g_assert_nonnull(strstr(channel2, "STEP 1/3 first\nOK 1 first\nSTEP 2/3 second\n"
                                    "FAIL 2 second 3 hutch-second: error: example.invalid is "
                                    "unreachable (dns)\nSTEP 3/3 third\nOK 3 third\nREADY\n"));

  /* Later boots: hutch-ready.service says READY. */
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *channel3 = guest_read(g, "channel");
  g_assert_cmpstr(channel3, ==, "READY\n");
  /* sshd failed at that boot: the guest says so with READY (the host then waits for SSH a
   * few seconds, not a minute) */
  guest_write(g, "out.failed-units", "ssh.service\n", 0644);
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *channel4 = guest_read(g, "channel");
  g_assert_cmpstr(channel4, ==, "WARN " HUTCH_READY_WARN_SSHD_FAILED "\nREADY\n");
  /* still being restarted by systemd when its retries' time is up: failed too */
  g_autofree char *failed_units = guest_path(g, "out.failed-units");
  g_unlink(failed_units);
  guest_write(g, "out.restarting-units", "ssh.service\n", 0644);
  g_ptr_array_add(g->env, g_strdup("HUTCH_SSHD_RETRY_WAIT=1"));
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *channel5 = guest_read(g, "channel");
  g_assert_cmpstr(channel5, ==, "WARN " HUTCH_READY_WARN_SSHD_FAILED "\nREADY\n");
  /* restarted once, then up within the wait: no warning */
  guest_write(g, "out.restart-ends", "", 0644);
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *channel6 = guest_read(g, "channel");
  g_assert_cmpstr(channel6, ==, "READY\n");
  g_assert_false(guest_exists(g, "out.restarting-units"));
  /* inactive (an sshd started by its socket): no warning */
  guest_write(g, "out.inactive-units", "ssh.service\n", 0644);
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *channel7 = guest_read(g, "channel");
  g_assert_cmpstr(channel7, ==, "READY\n");
}

static void test_runner_required_failure(gconstpointer data) {
  g_autoptr(Guest) g = guest_new(data);
  install_runner(g);
  guest_write(g, "out.ifaces", "eth0\neth1\n", 0644);
  guest_write(g, "var/lib/hutch/steps/steps.list",
              "01 first root required\n02 second root required\n03 third root optional\n", 0644);
  guest_write(g, "var/lib/hutch/steps/01-first.sh", "#!/bin/sh\necho first >>\"$HUTCH_TEST_OUT\"\n",
              0755);
  guest_write(g, "var/lib/hutch/steps/02-second.sh",
              "#!/bin/sh\necho second >>\"$HUTCH_TEST_OUT\"\necho 'gave up'\nexit 7\n", 0755);
  guest_write(g, "var/lib/hutch/steps/03-third.sh", "#!/bin/sh\necho third >>\"$HUTCH_TEST_OUT\"\n",
              0755);

  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "run"), !=, 0);
  g_autofree char *channel = guest_read(g, "channel");
  g_assert_cmpstr(channel, ==,
                  "STEP 1/3 first\nOK 1 first\nSTEP 2/3 second\nFAIL 2 second 7 gave up\nFAILED\n");
  g_autofree char *out = guest_read(g, "out");
  g_assert_cmpstr(out, ==, "first\nsecond\n");
  g_autofree char *status = guest_read(g, "var/lib/hutch/status");
  g_assert_cmpstr(status, ==, "failed\n");
  g_assert_true(guest_exists(g, "etc/cloud/cloud-init.disabled"));
  /* two interfaces (or a name that is not one): the full wait stays */
  g_assert_false(guest_exists(g, "etc/systemd/system/ifupdown-pre.service.d/q.conf"));

  g_autofree char *ch_path = guest_path(g, "channel");
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *channel2 = guest_read(g, "channel");
  g_assert_cmpstr(channel2, ==, "FAILED\n");

  /* Without a channel (a guest not started by hutch) provisioning still runs. */
  g_autofree char *step2 = guest_path(g, "var/lib/hutch/steps/02-second.sh");
  write_text(step2, "#!/bin/sh\necho fixed >>\"$HUTCH_TEST_OUT\"\n", 0755);
  g_unlink(ch_path);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "run"), ==, 0);
  g_autofree char *out2 = guest_read(g, "out");
  g_assert_cmpstr(out2, ==, "first\nsecond\nfixed\nthird\n");
  g_assert_false(guest_exists(g, "channel"));
}

/* Later boots grow the root file system when its disk grew (hutch edit --disk), once per
 * size; a failure is a warning, READY is still said. */
static void test_runner_grow_root(gconstpointer data) {
  g_autoptr(Guest) g = guest_new(data);
  install_runner(g);
  guest_write(g, "var/lib/hutch/status", "ok\n", 0644);
  g_autofree char *ch_path = guest_path(g, "channel");
  g_autofree char *log_path = guest_path(g, "stub.log");
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *log1 = guest_read(g, "stub.log");
  g_assert_cmpstr(log1, ==, "resize2fs /dev/vda\n");
  g_autofree char *size1 = guest_read(g, "var/lib/hutch/root-size");
  g_assert_cmpstr(size1, ==, "8388608\n");
  g_autofree char *channel1 = guest_read(g, "channel");
  g_assert_cmpstr(channel1, ==, "READY\n");

  /* the same size: nothing to do */
  write_text(log_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *log2 = guest_read(g, "stub.log");
  g_assert_cmpstr(log2, ==, "");

  /* grown, and resize2fs fails: a warning, READY, and the next boot tries again */
  guest_write(g, "sys/block/vda/size", "16777216\n", 0644);
  guest_write(g, "out.resize-fails", "", 0644);
  write_text(ch_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *channel3 = guest_read(g, "channel");
  g_assert_cmpstr(channel3, ==, "WARN growing the root file system (/dev/vda) failed\nREADY\n");
  g_autofree char *size3 = guest_read(g, "var/lib/hutch/root-size");
  g_assert_cmpstr(size3, ==, "8388608\n");
  g_autofree char *fails = guest_path(g, "out.resize-fails");
  g_unlink(fails);
  write_text(log_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *log4 = guest_read(g, "stub.log");
  g_assert_cmpstr(log4, ==, "resize2fs /dev/vda\n");
  g_autofree char *size4 = guest_read(g, "var/lib/hutch/root-size");
  g_assert_cmpstr(size4, ==, "16777216\n");

  /* a root on a partition: the partition grows first */
  guest_write(g, "sys/block/vdb/size", "4194304\n", 0644);
  guest_write(g, "sys/block/vdb/vdb1/partition", "1\n", 0644);
  for (guint i = 0; i < g->env->len; i++)
    if (g_str_has_prefix(g_ptr_array_index(g->env, i), "HUTCH_ROOT_SYSFS="))
      g_ptr_array_remove_index(g->env, i--);
  guest_setenv(g, "HUTCH_ROOT_SYSFS", "sys/block/vdb/vdb1");
  write_text(log_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "ready"), ==, 0);
  g_autofree char *log5 = guest_read(g, "stub.log");
  g_assert_cmpstr(log5, ==, "growpart /dev/vdb 1\nresize2fs /dev/vdb1\n");
}

/* `hutch-provision mounts TABLE`, what `hutch start` runs after `hutch edit` changed the
 * shares: hutch's lines that the new table lacks are unmounted and leave fstab (a tag that
 * now names another share among them), the others stay; the new table is mounted. */
static void test_runner_mounts(gconstpointer data) {
  g_autoptr(Guest) g = guest_new(data);
  install_runner(g);
  g_autofree char *a = guest_path(g, "home/dev/a");
  g_autofree char *b = guest_path(g, "home/dev/b");
  g_autofree char *c = guest_path(g, "home/dev/c");
  for (const char *const *dir = (const char *const[]){a, b, c, NULL}; *dir; dir++)
    g_assert_cmpint(g_mkdir_with_parents(*dir, 0755), ==, 0);
  g_autofree char *old_fstab = g_strdup_printf("# host fstab\n"
                                               "hutchfs0 %s virtiofs defaults,nofail 0 0\n"
                                               "UUID=1234 / ext4 defaults 0 1\n"
                                               "hutchfs1 %s virtiofs defaults,nofail,ro 0 0\n"
                                               "hutchfs2 %s virtiofs defaults,nofail 0 0\n",
                                               a, b, c);
  guest_write(g, "fstab", old_fstab, 0644);
  g_autofree char *mounted = g_strdup_printf("%s\n%s\n%s\n", a, b, c);
  guest_write(g, "out.mounted", mounted, 0644);
  /* a went, b moved from tag 1 to tag 0, c kept its line, d is new */
  g_autofree char *d = guest_path(g, "home/dev/d");
  g_autofree char *table = g_strdup_printf("hutchfs0 %s virtiofs defaults,nofail,ro 0 0\n"
                                           "hutchfs2 %s virtiofs defaults,nofail 0 0\n"
                                           "hutchfs1 %s virtiofs defaults,nofail 0 0\n",
                                           b, c, d);
  guest_write(g, "table", table, 0644);
  g_autofree char *table_path = guest_path(g, "table");
  g_autofree char *runner = guest_path(g, "usr/local/lib/hutch/hutch-provision");
  const char *argv[] = {g->shell, runner, "mounts", table_path, NULL};
  g_ptr_array_add(g->env, NULL);
  int status = -1;
  g_autoptr(GError) error = NULL;
  g_spawn_sync(g->dir, (char **)argv, (char **)g->env->pdata,
               G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, NULL, NULL,
               &status, &error);
  g_ptr_array_remove_index(g->env, g->env->len - 1);
  g_assert_no_error(error);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  g_autofree char *fstab = guest_read(g, "fstab");
  g_autofree char *expected_fstab = g_strdup_printf(
      "# host fstab\nUUID=1234 / ext4 defaults 0 1\nhutchfs2 %s virtiofs defaults,nofail 0 0\n"
      "hutchfs0 %s virtiofs defaults,nofail,ro 0 0\nhutchfs1 %s virtiofs defaults,nofail 0 0\n",
      c, b, d);
  g_assert_cmpstr(fstab, ==, expected_fstab);
  g_autofree char *kept_table = guest_read(g, "etc/hutch/fstab");
  g_assert_cmpstr(kept_table, ==, table);
  g_autofree char *fstab_path = guest_path(g, "fstab");
  g_autofree char *stub_log = guest_read(g, "stub.log");
  g_autofree char *expected_log = g_strdup_printf(
      "umount %s\numount %s\n"
      "mount --fstab %s %s\nrunuser -u dev -- mkdir -p %s\nmount --fstab %s %s\n",
      a, b, fstab_path, b, d, fstab_path, d);
  g_assert_cmpstr(stub_log, ==, expected_log);
  g_assert_true(g_file_test(d, G_FILE_TEST_IS_DIR));
  /* nothing is reported over the ready channel: the host is not listening then */
  g_autofree char *channel = guest_read(g, "channel");
  g_assert_cmpstr(channel, ==, "");

  /* a share that does not mount: the command fails, so that hutch says so */
  g_autofree char *broken = guest_path(g, "mnt/broken");
  g_autofree char *table2 = g_strdup_printf("hutchfs0 %s virtiofs defaults,nofail 0 0\n", broken);
  guest_write(g, "table", table2, 0644);
  g_ptr_array_add(g->env, NULL);
  g_spawn_sync(g->dir, (char **)argv, (char **)g->env->pdata,
               G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, NULL, NULL,
               &status, &error);
  g_ptr_array_remove_index(g->env, g->env->len - 1);
  g_assert_no_error(error);
  g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  g_autofree char *fstab2 = guest_read(g, "fstab");
  g_autofree char *expected_fstab2 = g_strdup_printf(
      "# host fstab\nUUID=1234 / ext4 defaults 0 1\nhutchfs0 %s virtiofs defaults,nofail 0 0\n",
      broken);
  g_assert_cmpstr(fstab2, ==, expected_fstab2);
}

/* ---- templates: generalise and identity ------------------------------------------------ */

/* What generalise and identity touch, inside the guest: /etc, /etc/ssh, /var/lib, the homes
 * and the seed; hostname, cloud-init and journalctl are stubs that log. */
static void guest_identity_setup(Guest *g) {
  guest_write(g, "stubs/hostname", "#!/bin/sh\necho \"hostname $*\" >>\"$STUB_LOG\"\n", 0755);
  guest_write(g, "stubs/cloud-init", "#!/bin/sh\necho \"cloud-init $*\" >>\"$STUB_LOG\"\n", 0755);
  guest_write(g, "stubs/journalctl", "#!/bin/sh\necho \"journalctl $*\" >>\"$STUB_LOG\"\n", 0755);
  guest_setenv(g, "HUTCH_ETC", "etc");
  guest_setenv(g, "HUTCH_SSH_DIR", "etc/ssh");
  guest_setenv(g, "HUTCH_VAR_LIB", "var/lib");
  guest_setenv(g, "HUTCH_SEED_DIR", "seed");
  guest_setenv(g, "HUTCH_HOSTNAME_CMD", "stubs/hostname");
  guest_setenv(g, "HUTCH_CLOUD_INIT_CMD", "stubs/cloud-init");
  guest_setenv(g, "HUTCH_JOURNALCTL", "stubs/journalctl");
  g_ptr_array_add(g->env, g_strdup_printf("HUTCH_HOMES=%s/root %s/home/*", g->dir, g->dir));
  g_ptr_array_add(g->env, g_strdup("HUTCH_SEED_WAIT=1"));
}

static int guest_mode(Guest *g, const char *relative) {
  g_autofree char *path = guest_path(g, relative);
  GStatBuf st;
  g_assert_cmpint(g_stat(path, &st), ==, 0);
  return st.st_mode & 07777;
}

/* `hutch template create` runs generalise in a throwaway clone: what made the source VM one
 * machine goes, its provisioning records stay, and the next boot takes an identity. */
static void test_runner_generalise(gconstpointer data) {
  g_autoptr(Guest) g = guest_new(data);
  install_runner(g);
  guest_identity_setup(g);
  static const char *const host_keys[] = {
      "etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub",
      "etc/ssh/ssh_host_rsa_key",     "etc/ssh/ssh_host_rsa_key.pub",
      "etc/ssh/ssh_host_ecdsa_key",   "etc/ssh/ssh_host_ecdsa_key.pub",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(host_keys); i++)
    guest_write(g, host_keys[i], "a host key\n", 0600);
  guest_write(g, "etc/ssh/sshd_config", "PasswordAuthentication no\n", 0644);
  guest_write(g, "etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n", 0444);
  guest_write(g, "var/lib/dbus/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n", 0644);
  guest_write(g, "var/lib/dhcp/dhclient.eth0.leases", "lease {}\n", 0644);
  guest_write(g, "var/lib/systemd/credential.secret", "a host secret\n", 0400);
  guest_write(g, "etc/hostname", "dev\n", 0644);
  static const char *const private[] = {
      "home/dev/.bash_history",
      "home/dev/.ssh/authorized_keys",
      "home/dev/.ssh/known_hosts",
      "home/dev/.viminfo",
      "root/.bash_history",
      "root/.ssh/authorized_keys",
      "root/.lesshst",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(private); i++)
    guest_write(g, private[i], "private\n", 0600);
  guest_write(g, "home/dev/notes.txt", "the user's own\n", 0644);
  guest_write(g, "var/lib/hutch/status", "ok\n", 0644);
  guest_write(g, "var/lib/hutch/done/01-tools", "", 0644);
  guest_write(g, "var/lib/hutch/optional-failed", "", 0644);
  guest_write(g, "var/lib/hutch/root-size", "8388608\n", 0644);
  guest_write(g, "var/lib/hutch/lock", "", 0644);
  guest_write(g, "var/lib/hutch/mount-failed", "/x\n", 0644);
  g_autofree char *share = guest_path(g, "home/dev/Shared");
  g_autofree char *line = g_strdup_printf("hutchfs0 %s virtiofs defaults,nofail 0 0\n", share);
  guest_write(g, "etc/hutch/fstab", line, 0644);
  g_autofree char *fstab = g_strdup_printf("# host fstab\nUUID=1234 / ext4 defaults 0 1\n%s"
                                           "hutchfs1 /x virtiofs defaults,nofail,ro 0 0\n",
                                           line);
  guest_write(g, "fstab", fstab, 0644);
  g_autofree char *mounted = g_strdup_printf("%s\n", share);
  guest_write(g, "out.mounted", mounted, 0644);
  /* the disk's file systems whose free space is zeroed: each read-write one on a block device
   * once (not a bind mount of one again, not the seed, a share or a tmpfs) */
  const char *mount_dirs[] = {"mnt/root", "mnt/bind", "mnt/efi", "mnt/seed"};
  for (gsize i = 0; i < G_N_ELEMENTS(mount_dirs); i++) {
    g_autofree char *keep = g_build_filename(mount_dirs[i], "kept", NULL);
    guest_write(g, keep, "", 0644);
  }
  guest_write(g, "sys/fs/ext4/vda1/reserved_clusters", "4096\n", 0644);
  g_autofree char *proc_mounts =
      g_strdup_printf("/dev/vda1 %1$s/mnt/root ext4 rw,relatime 0 0\n"
                      "tmpfs %1$s/mnt/tmp tmpfs rw,nosuid 0 0\n"
                      "/dev/vda1 %1$s/mnt/bind ext4 rw,relatime 0 0\n"
                      "/dev/vda15 %1$s/mnt/efi vfat rw,relatime,fmask=0022 0 0\n"
                      "/dev/sr0 %1$s/mnt/seed iso9660 ro,relatime 0 0\n"
                      "hutchfs0 %1$s/home/dev/Shared virtiofs rw,relatime 0 0\n",
                      g->dir);
  guest_write(g, "proc-mounts", proc_mounts, 0644);

  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "generalise"), ==, 0);

  for (gsize i = 0; i < G_N_ELEMENTS(host_keys); i++)
    g_assert_false(guest_exists(g, host_keys[i]));
  g_assert_true(guest_exists(g, "etc/ssh/sshd_config"));
  g_autofree char *machine_id = guest_read(g, "etc/machine-id");
  g_assert_cmpstr(machine_id, ==, "");
  g_assert_false(guest_exists(g, "var/lib/dbus/machine-id"));
  g_assert_false(guest_exists(g, "var/lib/dhcp/dhclient.eth0.leases"));
  g_assert_false(guest_exists(g, "var/lib/systemd/credential.secret"));
  for (gsize i = 0; i < G_N_ELEMENTS(private); i++)
    g_assert_false(guest_exists(g, private[i]));
  g_assert_true(guest_exists(g, "home/dev/notes.txt"));
  g_assert_false(guest_exists(g, "var/lib/hutch/root-size"));
  g_assert_false(guest_exists(g, "var/lib/hutch/lock"));
  g_assert_false(guest_exists(g, "var/lib/hutch/mount-failed"));
  g_autofree char *status = guest_read(g, "var/lib/hutch/status");
  g_assert_cmpstr(status, ==, "ok\n");
  g_assert_true(guest_exists(g, "var/lib/hutch/done/01-tools"));
  g_assert_true(guest_exists(g, "var/lib/hutch/optional-failed"));
  g_assert_true(guest_exists(g, "var/lib/hutch/identity-pending"));
  /* no hutch share line is left, mounted or not; the share table is empty */
  g_autofree char *fstab_after = guest_read(g, "fstab");
  g_assert_cmpstr(fstab_after, ==, "# host fstab\nUUID=1234 / ext4 defaults 0 1\n");
  g_autofree char *table = guest_read(g, "etc/hutch/fstab");
  g_assert_cmpstr(table, ==, "");
  g_autofree char *hostname = guest_read(g, "etc/hostname");
  g_assert_cmpstr(hostname, ==, "hutch\n");
  g_autofree char *stub_log = guest_read(g, "stub.log");
  g_autofree char *expected_log = g_strdup_printf(
      "umount %1$s\n"
      "systemctl enable hutch-identity.service\n"
      "cloud-init clean --logs\n"
      "journalctl --rotate\n"
      "journalctl --vacuum-time=1s\n"
      "dd if=/dev/zero of=%2$s/mnt/root/.hutch-zero-fill bs=4M oflag=direct status=none resv=0\n"
      "dd if=/dev/zero of=%2$s/mnt/root/.hutch-zero-fill bs=4k oflag=append,direct conv=notrunc "
      "status=none resv=0\n"
      "dd if=/dev/zero of=%2$s/mnt/root/.hutch-zero-fill bs=512 oflag=append conv=notrunc "
      "status=none resv=0\n"
      "dd if=/dev/zero of=%2$s/mnt/efi/.hutch-zero-fill bs=4M oflag=direct status=none "
      "resv=4096\n"
      "dd if=/dev/zero of=%2$s/mnt/efi/.hutch-zero-fill bs=4k oflag=append,direct conv=notrunc "
      "status=none resv=4096\n"
      "dd if=/dev/zero of=%2$s/mnt/efi/.hutch-zero-fill bs=512 oflag=append conv=notrunc "
      "status=none resv=4096\n",
      share, g->dir);
  g_assert_cmpstr(stub_log, ==, expected_log);
  /* the fills are gone, ext4's reserve is back */
  for (gsize i = 0; i < G_N_ELEMENTS(mount_dirs); i++) {
    g_autofree char *fill = g_build_filename(mount_dirs[i], ".hutch-zero-fill", NULL);
    g_autofree char *fill_dir = g_build_filename(mount_dirs[i], ".hutch-zero-fill.d", NULL);
    g_assert_false(guest_exists(g, fill));
    g_assert_false(guest_exists(g, fill_dir));
  }
  g_autofree char *reserve = guest_read(g, "sys/fs/ext4/vda1/reserved_clusters");
  g_assert_cmpstr(reserve, ==, "4096\n");
  g_autofree char *channel = guest_read(g, "channel");
  g_assert_cmpstr(channel, ==, "");

  /* a disk whose first boot would not take an identity is no template */
  g_autoptr(Guest) h = guest_new(data);
  install_runner(h);
  guest_identity_setup(h);
  guest_write(h, "stubs/systemctl", "#!/bin/sh\necho \"systemctl $*\" >>\"$STUB_LOG\"\nexit 1\n",
              0755);
  g_assert_cmpint(guest_run(h, "usr/local/lib/hutch/hutch-provision", "generalise"), !=, 0);
  g_autofree char *stub_log2 = guest_read(h, "stub.log");
  g_assert_cmpstr(stub_log2, ==, "systemctl enable hutch-identity.service\n");

  /* nor is a disk whose free space could not all be zeroed: a fill that stopped early (by a
   * block, by 10 MiB, by 4 GiB: a product mawk would print as 4.29497e+09), a file system
   * whose removed files may live on outside its free blocks, a mount point with a space */
  const struct {
    const char *left, *mount;
  } unzeroed[] = {
      {"1 4096\n", "ext4 rw"},      {"2560 4096\n", "ext4 rw"}, {"1048576 4096\n", "ext4 rw"},
      {"not numbers\n", "ext4 rw"}, {NULL, "btrfs rw"},         {NULL, "xfs rw"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(unzeroed) + 1; i++) {
    g_autoptr(Guest) k = guest_new(data);
    install_runner(k);
    guest_identity_setup(k);
    guest_write(k, "mnt/root/kept", "", 0644);
    guest_write(k, "mnt/root\\040x/kept", "", 0644);
    guest_write(k, "sys/fs/ext4/vda1/reserved_clusters", "4096\n", 0644);
    g_autofree char *mounts =
        i < G_N_ELEMENTS(unzeroed)
            ? g_strdup_printf("/dev/vda1 %s/mnt/root %s 0 0\n", k->dir, unzeroed[i].mount)
            : g_strdup_printf("/dev/vda1 %s/mnt/root\\040x ext4 rw 0 0\n", k->dir);
    guest_write(k, "proc-mounts", mounts, 0644);
    if (i < G_N_ELEMENTS(unzeroed) && unzeroed[i].left)
      guest_write(k, "out.left", unzeroed[i].left, 0644);
    g_assert_cmpint(guest_run(k, "usr/local/lib/hutch/hutch-provision", "generalise"), !=, 0);
    g_assert_false(guest_exists(k, "mnt/root/.hutch-zero-fill"));
    g_assert_false(guest_exists(k, "mnt/root/.hutch-zero-fill.d"));
    g_autofree char *kept = guest_read(k, "sys/fs/ext4/vda1/reserved_clusters");
    g_assert_cmpstr(kept, ==, "4096\n");
  }
}

#define TEST_AUTHORIZED_KEY "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeClientKeyForTests hutch@host"

/* The first boot of a VM made from a template: host key, hostname and the user's key from the
 * seed, once. */
static void test_runner_identity(gconstpointer data) {
  g_autofree char *keygen = g_find_program_in_path("ssh-keygen");
  if (!keygen) {
    g_test_skip("ssh-keygen not found");
    return;
  }
  g_autoptr(Guest) g = guest_new(data);
  install_runner(g);
  /* no HUTCH_USER: the home is HUTCH_USER_HOME and nothing is chowned */
  g_autofree char *conf = guest_path(g, "etc/hutch/provision.conf");
  g_assert_cmpint(g_unlink(conf), ==, 0);
  guest_identity_setup(g);

  g_autofree char *key_path = guest_path(g, "keygen/key");
  g_autofree char *key_dir = g_path_get_dirname(key_path);
  g_assert_cmpint(g_mkdir_with_parents(key_dir, 0700), ==, 0);
  const char *argv[] = {keygen, "-q", "-t", "ed25519", "-N", "", "-f", key_path, NULL};
  g_autoptr(GError) error = NULL;
  int wait_status = 0;
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, NULL,
               &wait_status, &error);
  g_assert_no_error(error);
  g_assert_true(g_spawn_check_wait_status(wait_status, NULL));
  g_autofree char *private_key = guest_read(g, "keygen/key");
  g_autofree char *public_key = guest_read(g, "keygen/key.pub");
  g_auto(GStrv) public_fields = g_strsplit(public_key, " ", 3);
  g_assert_cmpuint(g_strv_length(public_fields), >=, 2);

  guest_write(g, "seed/hutch-identity", "hostname newvm\nauthorized-key " TEST_AUTHORIZED_KEY "\n",
              0644);
  guest_write(g, "seed/hutch-host-key", private_key, 0644);
  guest_write(g, "var/lib/hutch/identity-pending", "", 0644);
  guest_write(g, "etc/ssh/sshd_config", "PasswordAuthentication no\n", 0644);
  guest_write(g, "etc/hostname", "hutch\n", 0644);
  guest_write(g, "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 hutch\n::1 localhost\n", 0644);
  /* a key left behind and a .ssh too open: replaced, tightened */
  guest_write(g, "home/dev/.ssh/authorized_keys", "ssh-ed25519 AAAAold old@key\n", 0644);
  g_autofree char *ssh_dir = guest_path(g, "home/dev/.ssh");
  g_assert_cmpint(g_chmod(ssh_dir, 0755), ==, 0);

  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "identity"), ==, 0);

  g_autofree char *host_key = guest_read(g, "etc/ssh/ssh_host_ed25519_key");
  g_assert_cmpstr(host_key, ==, private_key);
  g_assert_cmpint(guest_mode(g, "etc/ssh/ssh_host_ed25519_key"), ==, 0600);
  g_autofree char *host_pub = guest_read(g, "etc/ssh/ssh_host_ed25519_key.pub");
  g_auto(GStrv) host_pub_fields = g_strsplit(host_pub, " ", 3);
  g_assert_cmpuint(g_strv_length(host_pub_fields), >=, 2);
  g_assert_cmpstr(host_pub_fields[0], ==, public_fields[0]);
  g_assert_cmpstr(g_strstrip(host_pub_fields[1]), ==, g_strstrip(public_fields[1]));
  g_assert_cmpint(guest_mode(g, "etc/ssh/ssh_host_ed25519_key.pub"), ==, 0644);
  g_assert_false(guest_exists(g, "etc/ssh/ssh_host_ed25519_key.new"));
  g_assert_false(guest_exists(g, "etc/ssh/ssh_host_ed25519_key.pub.new"));
  g_autofree char *hostname = guest_read(g, "etc/hostname");
  g_assert_cmpstr(hostname, ==, "newvm\n");
  g_autofree char *stub_log = guest_read(g, "stub.log");
  g_assert_cmpstr(stub_log, ==, "hostname newvm\n");
  g_autofree char *hosts = guest_read(g, "etc/hosts");
  g_assert_cmpstr(hosts, ==, "127.0.0.1 localhost\n127.0.1.1 newvm\n::1 localhost\n");
  g_autofree char *authorized = guest_read(g, "home/dev/.ssh/authorized_keys");
  g_assert_cmpstr(authorized, ==, TEST_AUTHORIZED_KEY "\n");
  g_assert_cmpint(guest_mode(g, "home/dev/.ssh/authorized_keys"), ==, 0600);
  g_assert_cmpint(guest_mode(g, "home/dev/.ssh"), ==, 0700);
  g_assert_false(guest_exists(g, "var/lib/hutch/identity-pending"));
  g_assert_false(guest_exists(g, "var/lib/hutch/identity-failed"));

  /* hosts without a 127.0.1.1 line gets one; a host key in place is replaced */
  guest_write(g, "var/lib/hutch/identity-pending", "", 0644);
  guest_write(g, "etc/hosts", "127.0.0.1 localhost\n", 0644);
  guest_write(g, "etc/ssh/ssh_host_ed25519_key", "an old key\n", 0600);
  g_autofree char *log_path = guest_path(g, "stub.log");
  write_text(log_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "identity"), ==, 0);
  g_autofree char *hosts2 = guest_read(g, "etc/hosts");
  g_assert_cmpstr(hosts2, ==, "127.0.0.1 localhost\n127.0.1.1 newvm\n");
  g_autofree char *host_key2 = guest_read(g, "etc/ssh/ssh_host_ed25519_key");
  g_assert_cmpstr(host_key2, ==, private_key);
  g_assert_false(guest_exists(g, "var/lib/hutch/identity-pending"));

  /* later boots: no marker, nothing to do, whatever the seed says */
  guest_write(g, "seed/hutch-identity", "hostname other\nauthorized-key ssh-ed25519 AAAAother\n",
              0644);
  write_text(log_path, "", 0644);
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "identity"), ==, 0);
  g_autofree char *hostname3 = guest_read(g, "etc/hostname");
  g_assert_cmpstr(hostname3, ==, "newvm\n");
  g_autofree char *hosts3 = guest_read(g, "etc/hosts");
  g_assert_cmpstr(hosts3, ==, hosts2);
  g_autofree char *authorized3 = guest_read(g, "home/dev/.ssh/authorized_keys");
  g_assert_cmpstr(authorized3, ==, TEST_AUTHORIZED_KEY "\n");
  g_autofree char *host_key3 = guest_read(g, "etc/ssh/ssh_host_ed25519_key");
  g_assert_cmpstr(host_key3, ==, private_key);
  g_autofree char *stub_log3 = guest_read(g, "stub.log");
  g_assert_cmpstr(stub_log3, ==, "");

  /* a seed without its identity or its host key: fails, and the next boot tries again */
  static const char *const missing[] = {"seed/hutch-identity", "seed/hutch-host-key"};
  for (gsize i = 0; i < G_N_ELEMENTS(missing); i++) {
    g_autoptr(Guest) h = guest_new(data);
    install_runner(h);
    g_autofree char *h_conf = guest_path(h, "etc/hutch/provision.conf");
    g_assert_cmpint(g_unlink(h_conf), ==, 0);
    guest_identity_setup(h);
    guest_write(h, "seed/hutch-identity",
                "hostname newvm\nauthorized-key " TEST_AUTHORIZED_KEY "\n", 0644);
    guest_write(h, "seed/hutch-host-key", private_key, 0644);
    g_autofree char *gone = guest_path(h, missing[i]);
    g_assert_cmpint(g_unlink(gone), ==, 0);
    guest_write(h, "var/lib/hutch/identity-pending", "", 0644);
    guest_write(h, "etc/ssh/sshd_config", "PasswordAuthentication no\n", 0644);
    guest_write(h, "etc/hostname", "hutch\n", 0644);
    g_assert_cmpint(guest_run(h, "usr/local/lib/hutch/hutch-provision", "identity"), !=, 0);
    g_assert_true(guest_exists(h, "var/lib/hutch/identity-pending"));
    /* why, for the warning the next `ready` sends the host */
    g_autofree char *why = guest_read(h, "var/lib/hutch/identity-failed");
    g_assert_cmpstr(why, ==, "the seed holds no hutch-identity and hutch-host-key\n");
    g_assert_false(guest_exists(h, "etc/ssh/ssh_host_ed25519_key"));
    g_assert_false(guest_exists(h, "etc/ssh/ssh_host_ed25519_key.pub"));
    g_autofree char *h_hostname = guest_read(h, "etc/hostname");
    g_assert_cmpstr(h_hostname, ==, "hutch\n");
    g_assert_false(guest_exists(h, "home/dev/.ssh/authorized_keys"));
  }
}

/* The whole seed: every write_files entry of the generated user-data lands in the fake guest
 * and the runner from it runs the generated steps. */
static void test_runner_generated_seed(void) {
  g_autoptr(Guest) g = guest_new("/bin/sh");
  g_autoptr(HutchProfile) profile = make_profile();
  HutchProvisionStep *extra = add_step(profile, "broken-packages");
  extra->packages = g_strsplit("fail-to-install", " ", -1);
  extra->optional = TRUE;
  ConfigFixture f;
  config_fixture_init(&f);
  f.config.mounts = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchSeedDocuments) docs = hutch_seed_build(profile, &f.config, &error);
  g_assert_no_error(error);
  config_fixture_clear(&f);

  g_autoptr(Yaml) y = yaml_load(docs->user_data);
  yaml_node_t *files = ymap(y, y->root, "write_files");
  for (guint i = 0; i < yseq_len(files); i++) {
    yaml_node_t *file = yseq(y, files, i);
    const char *path = yscalar(ymap(y, file, "path"));
    int mode = (int)g_ascii_strtoull(yscalar(ymap(y, file, "permissions")), NULL, 8);
    g_assert_true(mode == 0644 || mode == 0755);
    guest_write(g, path + 1, yscalar(ymap(y, file, "content")), mode);
  }
  /* The runner finds the steps through HUTCH_RUNNER, which it sets itself. */
  g_assert_cmpint(guest_run(g, "usr/local/lib/hutch/hutch-provision", "run"), ==, 0);
  g_autofree char *channel = guest_read(g, "channel");
  g_assert_cmpstr(channel, ==,
                  "STEP 1/4 tools\nOK 1 tools\nSTEP 2/4 node\nOK 2 node\n"
                  "STEP 3/4 greet\nOK 3 greet\n"
                  "STEP 4/4 broken-packages\nFAIL 4 broken-packages 100 "
                  "E: Unable to locate package fail-to-install\nREADY\n");
  g_autofree char *out = guest_read(g, "out");
  g_assert_cmpstr(out, ==, "node\ngreet\n");
  g_autofree char *stub_log = guest_read(g, "stub.log");
  g_autofree char *node = guest_path(g, "var/lib/hutch/steps/02-node.sh");
  g_autofree char *expected =
      g_strdup_printf("apt-get -o DPkg::Lock::Timeout=600 update\n"
                      "apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends vim jq "
                      "build-essential\n"
                      "runuser -l dev -c %s\n"
                      "apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "
                      "fail-to-install\n"
                      "systemctl enable hutch-ready.service\n"
                      "systemctl is-active --quiet ssh.service\n",
                      node);
  g_assert_cmpstr(stub_log, ==, expected);
  g_autofree char *optional = guest_read(g, "var/lib/hutch/optional-failed");
  g_assert_cmpstr(optional, ==, "broken-packages\n");
  g_autofree char *log = guest_read(g, "var/log/hutch/steps/03-greet.log");
  g_assert_nonnull(strstr(log, "hello from run as"));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/seed/golden", test_golden);
  g_test_add_func("/seed/user-data-structure", test_user_data_structure);
  g_test_add_func("/seed/network-by-mac", test_network_by_mac);
  g_test_add_func("/seed/content-round-trip", test_content_round_trip);
  g_test_add_func("/seed/yaml-quoting", test_yaml_quoting);
  g_test_add_func("/seed/no-host-environment", test_no_host_environment);
  g_test_add_func("/seed/env-quoting", test_env_quoting);
  g_test_add_func("/seed/invalid-input", test_invalid_input);
  g_test_add_func("/seed/iso", test_iso);
  g_test_add_func("/seed/runner/syntax", test_runner_syntax);
  for (gsize i = 0; i < G_N_ELEMENTS(shells_to_test); i++) {
    if (!g_file_test(shells_to_test[i], G_FILE_TEST_IS_EXECUTABLE))
      continue;
    g_autofree char *p1 = g_strdup_printf("/seed/runner/optional-failure%s", shells_to_test[i]);
    g_test_add_data_func(p1, shells_to_test[i], test_runner_optional_failure);
    g_autofree char *p2 = g_strdup_printf("/seed/runner/required-failure%s", shells_to_test[i]);
    g_test_add_data_func(p2, shells_to_test[i], test_runner_required_failure);
    g_autofree char *p3 = g_strdup_printf("/seed/runner/grow-root%s", shells_to_test[i]);
    g_test_add_data_func(p3, shells_to_test[i], test_runner_grow_root);
    g_autofree char *p4 = g_strdup_printf("/seed/runner/mounts%s", shells_to_test[i]);
    g_test_add_data_func(p4, shells_to_test[i], test_runner_mounts);
    g_autofree char *p5 = g_strdup_printf("/seed/runner/generalise%s", shells_to_test[i]);
    g_test_add_data_func(p5, shells_to_test[i], test_runner_generalise);
    g_autofree char *p6 = g_strdup_printf("/seed/runner/identity%s", shells_to_test[i]);
    g_test_add_data_func(p6, shells_to_test[i], test_runner_identity);
  }
  g_test_add_func("/seed/runner/generated-seed", test_runner_generated_seed);
  return g_test_run();
}
