/* test-profile.c: the profile reader (errors with FILE:LINE:COL, base: inheritance, search
 * path), the emitter (round trip, golden file), command-line specs and the shipped
 * profiles. */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>

#include "profile-private.h"
#include "util-private.h"

static char *data_path(const char *first, ...) G_GNUC_NULL_TERMINATED;

static char *data_path(const char *first, ...) {
  va_list ap;
  va_start(ap, first);
  g_autoptr(GPtrArray) parts = g_ptr_array_new();
  g_ptr_array_add(parts, (gpointer)g_getenv("HUTCH_TEST_DATA"));
  g_ptr_array_add(parts, (gpointer) "profile");
  for (const char *part = first; part; part = va_arg(ap, const char *))
    g_ptr_array_add(parts, (gpointer)part);
  va_end(ap);
  g_ptr_array_add(parts, NULL);
  return g_build_filenamev((char **)parts->pdata);
}

static HutchProfile *load_ok(const char *path) {
  g_autoptr(GError) error = NULL;
  HutchProfile *p = hutch_profile_load_file(path, &error);
  g_assert_no_error(error);
  g_assert_nonnull(p);
  return p;
}

/* ---- Errors ----------------------------------------------------------------------------- */

typedef struct {
  const char *file;     /* under tests/data/profile/errors/ */
  const char *expected; /* the message after "PATH:" */
} ErrorCase;

static const ErrorCase error_cases[] = {
    {"syntax.yaml",
     "3:5: syntax error: did not find expected ',' or ']' (while parsing a flow sequence at "
     "line 2)"},
    {"unknown-key.yaml",
     "2:1: memroy: unknown key (valid keys: base, description, cpus, memory, disk, accel, "
     "boot_timeout, image, user, shares, ports, network, provision, env, secrets)"},
    {"unknown-nested-key.yaml",
     "3:3: user.home: unknown key (valid keys: name, uid, gid, sudo, shell)"},
    {"wrong-type.yaml", "3:3: memory: expected a size (e.g. 4GiB), got a mapping"},
    {"list-for-scalar.yaml", "1:8: accel: expected auto, kvm or tcg, got a list"},
    {"null-value.yaml", "1:6: cpus: expected a number from 1 to 256, got no value"},
    {"root-list.yaml",
     "1:1: profile: expected a mapping of profile keys (cpus, memory, ...), got a list"},
    {"dup-key.yaml", "3:1: cpus: duplicate key (first given on line 1)"},
    {"two-docs.yaml", "3:1: profile: a second YAML document (a profile is one document)"},
    {"bad-size.yaml", "3:9: memory: '4 gigs' is not a size (e.g. 4GiB)"},
    {"memory-small.yaml", "1:9: memory: '128MiB' is too small (at least 256MiB)"},
    {"disk-small.yaml", "1:7: disk: '512MiB' is too small (at least 1GiB)"},
    {"bad-accel.yaml", "2:8: accel: 'xen' is not an accelerator (auto, kvm or tcg)"},
    {"cpus-high.yaml", "1:7: cpus: '300' is out of range (1 to 256)"},
    {"cpus-zero.yaml", "1:7: cpus: '0' is out of range (1 to 256)"},
    {"cpus-word.yaml", "1:7: cpus: 'two' is not a number of CPUs (1 to 256)"},
    {"bad-bool.yaml", "2:9: user.sudo: 'maybe' is not a boolean (true or false)"},
    {"bad-duration.yaml",
     "1:15: boot_timeout: 'ten minutes' is not a duration (seconds, or e.g. 90s, 10m, 1h30m)"},
    {"bad-base-name.yaml",
     "1:7: base: 'Debian 12' is not a profile name or path (e.g. debian-12 or ./base.yaml)"},
    {"share-relative-host.yaml",
     "2:11: shares[0].host: 'VM-Shared' is a relative path (use an absolute path or one "
     "starting with ~/)"},
    {"share-relative-guest.yaml",
     "2:33: shares[0].guest: 'Shared' is a relative path (use an absolute path or one starting "
     "with ~/)"},
    {"share-dup-guest.yaml",
     "3:25: shares[1].guest: '~/Shared' is shared twice (each guest path once)"},
    {"share-missing-guest.yaml", "2:5: shares[0]: missing guest (a share needs host and guest)"},
    {"share-whole-home.yaml",
     "2:13: shares[0].host: '~' is the whole file system or home (share a directory below it)"},
    {"share-dotdot.yaml", "2:13: shares[0].host: '~/a/../b' contains '..' (use a path without it)"},
    {"port-range.yaml", "2:11: ports[0].host: '70000' is out of range (ports are 1 to 65535)"},
    {"port-zero.yaml", "2:26: ports[0].guest: '0' is out of range (ports are 1 to 65535)"},
    {"port-lengths.yaml",
     "3:12: ports[0].guest: host range has 1001 ports, guest range 11 (give ranges of the same "
     "length)"},
    {"port-backwards.yaml",
     "2:13: ports[0].host: '9000-8000' is not a range (START-END with START <= END)"},
    {"port-proto.yaml", "4:12: ports[0].proto: 'sctp' is not a protocol (tcp or udp)"},
    {"port-overlap.yaml",
     "3:5: ports[1]: host ports overlap 8000-8100/tcp, forwarded already (host ports must not "
     "overlap)"},
    {"port-spec.yaml", "3:5: ports[1]: '8081:81/icmp': 'icmp' is not a protocol (tcp or udp)"},
    {"port-host-ip.yaml",
     "2:37: ports[0].host_ip: 'localhost' is not an IP address (e.g. 127.0.0.1)"},
    {"step-as.yaml", "4:9: provision[0].as: 'admin' is not who to run as (root or user)"},
    {"step-none.yaml",
     "2:5: provision[0]: step 'tools' does nothing (give one of packages, script, run)"},
    {"step-several.yaml",
     "4:10: provision[0].run: a step has exactly one of packages, script, run (this one has "
     "packages already)"},
    {"step-dup.yaml", "4:13: provision[2].name: 'tools' names two steps (step names are unique)"},
    {"step-no-name.yaml", "2:5: provision[0]: missing name (every step has a name)"},
    {"step-bad-package.yaml",
     "3:21: provision[0].packages: '-o Dpkg::x' is not a package name (e.g. build-essential)"},
    {"env-not-scalar.yaml", "3:10: env.PATHS: expected a string, got a list"},
    {"env-bad-name.yaml",
     "2:3: env: '1FOO' is not a variable name (letters, digits, '_'; not starting with a "
     "digit)"},
    {"env-newline.yaml",
     "2:8: env.FOO: contains a line break or control character (a value is one line)"},
    {"image-two-kinds.yaml",
     "3:3: image.url: an image is one of file, url, build, template (file given already)"},
    {"image-no-digest.yaml",
     "2:3: image: url needs digest or checksums (e.g. digest: sha256:HEX, or checksums: the URL "
     "of SHA256SUMS)"},
    {"image-bad-digest.yaml",
     "3:11: image.digest: 'sha256:abc' is not a digest (sha256:64 hex digits or sha512:128 hex "
     "digits)"},
    {"image-http-sums.yaml",
     "3:14: image.checksums: 'http://example.org/SHA256SUMS' is not an https URL (e.g. "
     "https://example.org/file)"},
    {"image-digest-alone.yaml", "3:11: image.digest: only valid with url"},
    {"image-bad-kernel.yaml",
     "4:13: image.build.kernel: 'vmlinuz-6.1' is not a kernel package (linux-image-...)"},
    {"image-fallback-file.yaml",
     "4:5: image.fallback: only valid with url (an image that is not downloaded needs none)"},
    {"image-fallback-url.yaml", "5:5: image.fallback.url: unknown key (valid keys: build)"},
    {"image-fallback-empty.yaml",
     "4:13: image.fallback: missing build (a fallback is built: fallback: { build: { suite: ... "
     "} })"},
    {"image-fallback-bad-package.yaml",
     "6:24: image.fallback.build.packages: '-o Dpkg::x' is not a package name (e.g. "
     "build-essential)"},
    {"image-template-bad-name.yaml",
     "2:13: image.template: invalid name 'Bad_Name': use a lower-case letter followed by up to 62 "
     "lower-case letters, digits or '-'"},
    {"image-template-not-scalar.yaml",
     "2:13: image.template: expected a template's name, got a list"},
    {"image-template-and-file.yaml",
     "3:3: image.file: an image is one of file, url, build, template (template given already)"},
    {"share-bad-cache.yaml", "4:12: shares[0].cache: 'sometimes' is not a cache mode (auto, always "
                             "or never)"},
    {"network-bad-mode.yaml",
     "2:11: network.egress: 'open' is not an egress mode (none, allowlist, public or "
     "unrestricted)"},
    {"network-bad-rule.yaml",
     "5:7: network.allow[1]: destination 'exa mple.org': not a name (letters, digits, '-' and "
     "'.'; '*.' only in front), an address or a range"},
    {"network-bad-deny.yaml",
     "2:10: network.deny[0]: destination '[::1': an IPv6 address needs its closing ']'"},
    {"network-unknown-key.yaml",
     "3:3: network.alow: unknown key (valid keys: egress, allow, deny)"},
    {"network-not-list.yaml",
     "2:9: network.deny: expected a list of destinations (e.g. [deb.debian.org, \"*.npmjs.org\", "
     "github.com:22]), got a single value"},
    {"user-root.yaml",
     "2:9: user.name: 'root' is not a user name (lower-case letters, digits, '_', '-'; not "
     "root)"},
    {"secret-not-list.yaml", "1:10: secrets: expected a list of secrets, got a mapping"},
    {"secret-no-name.yaml",
     "2:5: secrets[0]: missing name (every secret has one: the guest's variable)"},
    {"secret-bad-name.yaml",
     "2:11: secrets[0].name: '1TOKEN' is not a variable name (letters, digits, '_', at most 64; "
     "not starting with a digit)"},
    {"secret-dup-name.yaml",
     "3:11: secrets[1].name: 'TOKEN' names two secrets (secret names are unique)"},
    {"secret-env-clash.yaml",
     "2:11: secrets[0].name: 'TOKEN' is also set in env: (the guest would get two values; keep "
     "one)"},
    {"secret-env-clash-base.yaml",
     "3:11: secrets[0].name: 'B' is also set in env: (the guest would get two values; keep "
     "one)"},
    {"secret-env-clash-derived.yaml",
     "3:3: env.ANTHROPIC_API_KEY: 'ANTHROPIC_API_KEY' is also a secret (the guest would get two "
     "values; keep one)"},
    {"secret-no-source.yaml",
     "2:5: secrets[0]: secret 'TOKEN' has no source (give one of from, command, file: where its "
     "value comes from on the host)"},
    {"secret-two-sources.yaml",
     "4:14: secrets[0].command: a secret has exactly one of from, command, file (this one has "
     "from already)"},
    {"secret-bad-from.yaml",
     "3:11: secrets[0].from: 'vault:token' is not where a secret comes from (env, env:VAR, "
     "command:CMD or file:PATH)"},
    {"secret-bad-env-var.yaml",
     "3:11: secrets[0].from: 'env:MY-TOKEN': 'MY-TOKEN' is not a variable name (letters, "
     "digits, '_', at most 128; not starting with a digit)"},
    {"secret-empty-command.yaml",
     "3:11: secrets[0].from: the command is empty (give the command that prints the secret, "
     "e.g. gh auth token)"},
    {"secret-bad-command.yaml",
     "3:14: secrets[0].command: 'pass show \"token' cannot be split into words (a quote is not "
     "closed, or a backslash ends it)"},
    {"secret-relative-file.yaml",
     "3:11: secrets[0].file: '.config/x/key' is neither absolute nor starting with ~/ (e.g. "
     "~/.config/x/key)"},
    {"secret-no-hosts.yaml",
     "2:5: secrets[0]: secret 'TOKEN' has no hosts (the names its value may be sent to, e.g. "
     "hosts: [api.example.com])"},
    {"secret-empty-hosts.yaml",
     "4:12: secrets[0].hosts: expected a list of host names (e.g. [api.example.com]), got an "
     "empty list"},
    {"secret-host-ip.yaml",
     "4:30: secrets[0].hosts[1]: '10.0.0.1' is an IP address (a secret's host is a name: the "
     "real value only goes to the name the guest asked for)"},
    {"secret-host-bad-name.yaml",
     "5:9: secrets[0].hosts[0]: 'api_example.com' is not a host name (letters, digits, '-' and "
     "'.', labels of 1 to 63, at most 253 in all; e.g. api.example.com)"},
    {"secret-host-star.yaml",
     "4:13: secrets[0].hosts[0]: 'api.*.example.com': a secret's host is one name, not a "
     "wildcard (a wildcard could be anyone's server: name each host)"},
    {"secret-host-wildcard.yaml",
     "6:9: secrets[0].hosts[1]: '*.workers.dev': a secret's host is one name, not a wildcard (a "
     "wildcard could be anyone's server: name each host)"},
    {"secret-host-port.yaml",
     "4:13: secrets[0].hosts[0]: 'api.example.com:70000' has a bad port (1 to 65535)"},
    {"secret-optional.yaml", "5:15: secrets[0].optional: 'maybe' is not a boolean (true or false)"},
    {"secret-ttl.yaml", "5:10: secrets[0].ttl: '0' is out of range (1s to 24h)"},
    {"secret-unknown-key.yaml",
     "4:5: secrets[0].host: unknown key (valid keys: name, from, command, file, hosts, optional, "
     "ttl)"},
    {"user-uid-zero.yaml", "1:25: user.uid: '0' is out of range (1 to 2147483646)"},
    {"user-gid-zero.yaml", "1:25: user.gid: '0' is out of range (1 to 2147483646)"},
};

static void assert_profile_error(const char *path, const char *expected) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) p = hutch_profile_load_file(path, &error);
  g_assert_null(p);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_cmpstr(error->message, ==, expected);
}

static void test_errors(void) {
  for (gsize i = 0; i < G_N_ELEMENTS(error_cases); i++) {
    g_autofree char *path = data_path("errors", error_cases[i].file, NULL);
    g_autofree char *expected = g_strdup_printf("%s:%s", path, error_cases[i].expected);
    assert_profile_error(path, expected);
  }
}

/* Every fixture in errors/ fails: a fixture that loads by mistake would hide a lost check. */
static void test_errors_all_fail(void) {
  g_autofree char *dir_path = data_path("errors", NULL);
  g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
  g_assert_nonnull(dir);
  const char *entry;
  guint count = 0;
  while ((entry = g_dir_read_name(dir))) {
    g_autofree char *path = g_build_filename(dir_path, entry, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchProfile) p = hutch_profile_load_file(path, &error);
    if (p)
      g_error("%s loaded, but it is an error fixture", entry);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
    /* (a cycle's error is in the file that closes it, not always this one) */
    g_assert_true(g_str_has_prefix(error->message, dir_path));
    count++;
  }
  g_assert_cmpuint(count, >=, G_N_ELEMENTS(error_cases));
}

static void test_error_base_not_found(void) {
  g_autofree char *path = data_path("errors", "base-not-found.yaml", NULL);
  g_autoptr(GPtrArray) dirs = hutch_profile_search_path();
  g_ptr_array_add(dirs, NULL);
  g_autofree char *searched = g_strjoinv(", ", (char **)dirs->pdata);
  g_autofree char *expected = g_strdup_printf(
      "%s:1:7: base: profile 'no-such-profile-anywhere' not found (searched %s)", path, searched);
  assert_profile_error(path, expected);

  g_autofree char *by_path = data_path("errors", "base-path-not-found.yaml", NULL);
  g_autofree char *missing = data_path("errors", "missing.yaml", NULL);
  g_autofree char *expected_path =
      g_strdup_printf("%s:1:7: base: './missing.yaml' not found (no file %s)", by_path, missing);
  assert_profile_error(by_path, expected_path);
}

static void test_error_cycle(void) {
  g_autofree char *a = data_path("errors", "cycle-a.yaml", NULL);
  g_autofree char *b = data_path("errors", "cycle-b.yaml", NULL);
  /* The error is in b, which closes the cycle, and names the whole chain. */
  g_autofree char *expected = g_strdup_printf(
      "%s:2:7: base: cycle: %s -> %s -> %s (a profile cannot be its own base)", b, a, b, a);
  assert_profile_error(a, expected);

  g_autofree char *self = data_path("errors", "self-base.yaml", NULL);
  g_autofree char *expected_self = g_strdup_printf(
      "%s:1:7: base: cycle: %s -> %s (a profile cannot be its own base)", self, self, self);
  assert_profile_error(self, expected_self);
}

static void test_error_missing_script(void) {
  g_autofree char *path = data_path("errors", "step-missing-script.yaml", NULL);
  /* errors/../cloud-init/scripts */
  g_autofree char *local = data_path("cloud-init", "scripts", NULL);
  g_autofree char *local_canon = g_canonicalize_filename(local, NULL);
  /* and the source tree's, which the tests name through HUTCH_SOURCE_DIR */
  g_autofree char *source =
      g_build_filename(g_getenv("HUTCH_SOURCE_DIR"), "cloud-init", "scripts", NULL);
  g_autofree char *expected = g_strdup_printf(
      "%s:3:13: provision[0].script: 'no-such-script.sh' not found (looked in %s, %s, %s)",
      path, local_canon, HUTCH_DATADIR "/cloud-init/scripts", source);
  assert_profile_error(path, expected);
}

/* A base chain of `levels` links in a temporary directory: d0 -> d1 -> ... */
static char *make_chain(const char *dir, guint levels) {
  for (guint i = 0; i <= levels; i++) {
    g_autofree char *file = g_strdup_printf("%s/d%u.yaml", dir, i);
    g_autofree char *text = i < levels ? g_strdup_printf("base: d%u.yaml\ncpus: %u\n", i + 1, i + 1)
                                       : g_strdup("cpus: 100\nmemory: 1GiB\n");
    g_assert_true(g_file_set_contents(file, text, -1, NULL));
  }
  return g_strdup_printf("%s/d0.yaml", dir);
}

static void test_error_depth(void) {
  g_autofree char *dir = g_dir_make_tmp("hutch-test-profile-XXXXXX", NULL);
  g_assert_nonnull(dir);

  g_autofree char *ok_path = make_chain(dir, 8);
  g_autoptr(HutchProfile) ok = load_ok(ok_path);
  g_assert_cmpuint(ok->cpus, ==, 1);
  g_assert_cmpuint(ok->memory, ==, 1ULL << 30);

  g_autofree char *deep = make_chain(dir, 9);
  g_autoptr(GString) chain = g_string_new(deep);
  for (guint i = 1; i <= 9; i++)
    g_string_append_printf(chain, " -> %s/d%u.yaml", dir, i);
  g_autofree char *expected =
      g_strdup_printf("%s/d8.yaml:1:7: base: more than 8 levels of base: %s", dir, chain->str);
  assert_profile_error(deep, expected);
  g_assert_true(hutch_rmtree(dir, NULL));
}

static void test_error_syntax_data(void) {
  g_autoptr(GError) error = NULL;
  /* Bad UTF-8 is the reader's error: it has an offset, no mark. */
  static const char bad[] = "cpus: 2\nenv: { A: \"\xff\" }\n";
  g_autoptr(HutchProfile) p = hutch_profile_load_data(bad, sizeof(bad) - 1, "x.yaml", &error);
  g_assert_null(p);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_true(g_str_has_prefix(error->message, "x.yaml:2:"));
  g_assert_nonnull(strstr(error->message, "syntax error: invalid"));
}

static void test_error_not_found(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) p = hutch_profile_load("no-such-profile-anywhere", &error);
  g_assert_null(p);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);
  p = hutch_profile_load("/nonexistent/x.yaml", &error);
  g_assert_null(p);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);
  p = hutch_profile_load("Bad Name", &error);
  g_assert_null(p);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
}

/* ---- Values and defaults ---------------------------------------------------------------- */

static void test_defaults(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) p = hutch_profile_load_data("", 0, "/tmp/empty.yaml", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(p->name, ==, "empty");
  g_assert_cmpstr(p->path, ==, "/tmp/empty.yaml");
  g_assert_null(p->base);
  g_assert_cmpuint(p->cpus, ==, 2);
  g_assert_cmpuint(p->memory, ==, 4ULL << 30);
  g_assert_cmpuint(p->disk, ==, 40ULL << 30);
  g_assert_cmpint(p->accel, ==, HUTCH_ACCEL_AUTO);
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_NONE);
  g_assert_null(p->user_name);
  g_assert_cmpint(p->user_uid, ==, -1);
  g_assert_cmpint(p->user_gid, ==, -1);
  g_assert_true(p->user_sudo);
  g_assert_cmpstr(p->user_shell, ==, "/bin/bash");
  g_assert_cmpuint(p->shares->len + p->ports->len + p->provision->len + p->env->len, ==, 0);
  g_assert_cmpuint(p->boot_timeout, ==, 600);
}

static void test_values(void) {
  static const struct {
    const char *yaml;
    guint cpus;
    guint64 memory;
    guint timeout;
  } cases[] = {
      {"cpus: 256\nmemory: 256MiB\nboot_timeout: 90s\n", 256, 256ULL << 20, 90},
      {"cpus: '1'\nmemory: 1G\nboot_timeout: 1h30m\n", 1, 1ULL << 30, 5400},
      {"memory: 1TiB\nboot_timeout: 45\n", 2, 1ULL << 40, 45},
      {"memory: 524288K\nboot_timeout: 10m\n", 2, 512ULL << 20, 600},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchProfile) p =
        hutch_profile_load_data(cases[i].yaml, strlen(cases[i].yaml), "v.yaml", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(p->cpus, ==, cases[i].cpus);
    g_assert_cmpuint(p->memory, ==, cases[i].memory);
    g_assert_cmpuint(p->boot_timeout, ==, cases[i].timeout);
  }
}

static void test_image_file_and_script(void) {
  g_autofree char *path = data_path("tree", "profiles", "scripted.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_autofree char *image = data_path("tree", "images", "disk.qcow2", NULL);
  g_autofree char *image_canon = g_canonicalize_filename(image, NULL);
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_FILE);
  g_assert_cmpstr(p->image.file, ==, image_canon);
  g_assert_cmpuint(p->provision->len, ==, 2);
  HutchProvisionStep *hello = g_ptr_array_index(p->provision, 0);
  g_autofree char *script = data_path("tree", "cloud-init", "scripts", "hello.sh", NULL);
  g_autofree char *script_canon = g_canonicalize_filename(script, NULL);
  g_assert_cmpstr(hello->script, ==, "hello.sh");
  g_assert_cmpstr(hello->script_path, ==, script_canon);
  g_assert_true(hello->as_user);
  HutchProvisionStep *inline_step = g_ptr_array_index(p->provision, 1);
  g_assert_cmpstr(inline_step->run, ==, "set -e\necho \"multi-line\"\n");
  g_assert_false(inline_step->as_user);
}

/* ---- Inheritance ------------------------------------------------------------------------ */

static const HutchShare *share_at(const HutchProfile *p, guint i) {
  g_assert_cmpuint(i, <, p->shares->len);
  return g_ptr_array_index(p->shares, i);
}

static const HutchProvisionStep *step_at(const HutchProfile *p, guint i) {
  g_assert_cmpuint(i, <, p->provision->len);
  return g_ptr_array_index(p->provision, i);
}

static const char *env_at(const HutchProfile *p, guint i, const char **value) {
  g_assert_cmpuint(i, <, p->env->len);
  const HutchEnvVar *var = g_ptr_array_index(p->env, i);
  *value = var->value;
  return var->key;
}

static void test_inherit_child(void) {
  g_autofree char *path = data_path("inherit", "child.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_assert_cmpstr(p->name, ==, "child");
  g_assert_cmpstr(p->base, ==, "base.yaml");
  g_assert_null(p->description); /* describes its own file only */
  /* scalars: overridden where given, inherited elsewhere */
  g_assert_cmpuint(p->cpus, ==, 1);
  g_assert_cmpuint(p->memory, ==, 8ULL << 30);
  g_assert_cmpuint(p->disk, ==, 20ULL << 30);
  g_assert_cmpint(p->accel, ==, HUTCH_ACCEL_TCG);
  g_assert_cmpuint(p->boot_timeout, ==, 600);
  g_assert_cmpstr(p->user_name, ==, "dev");
  g_assert_cmpint(p->user_uid, ==, 1500);
  g_assert_false(p->user_sudo);
  g_assert_cmpstr(p->user_shell, ==, "/bin/zsh");
  /* build packages are extended, without duplicates */
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_BUILD);
  g_assert_cmpstr(p->image.suite, ==, "bookworm");
  const char *const packages[] = {"openssh-server", "cloud-init", "git", NULL};
  g_assert_cmpstrv(p->image.packages, packages);
  /* a share with the same guest path replaces the base's in place */
  g_assert_cmpuint(p->shares->len, ==, 3);
  g_assert_cmpstr(share_at(p, 0)->host, ==, "~/a");
  g_assert_cmpstr(share_at(p, 1)->host, ==, "/srv/c");
  g_assert_cmpstr(share_at(p, 1)->guest, ==, "~/B");
  g_assert_false(share_at(p, 1)->writable); /* the child's share, with its default */
  g_assert_cmpstr(share_at(p, 2)->guest, ==, "/mnt/d");
  g_assert_true(share_at(p, 2)->create);
  /* ports are extended */
  g_assert_cmpuint(p->ports->len, ==, 2);
  const HutchPort *port = g_ptr_array_index(p->ports, 1);
  g_assert_cmpuint(port->host_start, ==, 9000);
  g_assert_cmpuint(port->host_end, ==, 9001);
  g_assert_cmpint(port->proto, ==, HUTCH_PROTO_UDP);
  /* a step of the same name replaces the base's where it stood */
  g_assert_cmpuint(p->provision->len, ==, 4);
  g_assert_cmpstr(step_at(p, 0)->name, ==, "one");
  g_assert_cmpstr(step_at(p, 1)->name, ==, "two");
  g_assert_null(step_at(p, 1)->run);
  g_assert_cmpstr(step_at(p, 1)->packages[0], ==, "htop");
  g_assert_true(step_at(p, 1)->optional);
  g_assert_cmpstr(step_at(p, 2)->name, ==, "three");
  g_assert_cmpstr(step_at(p, 3)->name, ==, "four");
  g_assert_true(step_at(p, 3)->as_user);
  /* env: replaced in place, new keys appended */
  const char *value;
  g_assert_cmpstr(env_at(p, 0, &value), ==, "A");
  g_assert_cmpstr(value, ==, "1");
  g_assert_cmpstr(env_at(p, 1, &value), ==, "B");
  g_assert_cmpstr(value, ==, "3");
  g_assert_cmpstr(env_at(p, 2, &value), ==, "C");
  g_assert_cmpstr(value, ==, "four");
  g_assert_cmpuint(p->env->len, ==, 3);
}

static void test_inherit_chain_of_three(void) {
  g_autofree char *path = data_path("inherit", "grandchild.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_assert_cmpstr(p->name, ==, "grandchild");
  g_assert_cmpuint(p->cpus, ==, 1);            /* from child */
  g_assert_cmpuint(p->memory, ==, 2ULL << 30); /* own */
  g_assert_cmpuint(p->disk, ==, 20ULL << 30);  /* from base */
  g_assert_cmpstr(p->image.suite, ==, "trixie");
  g_assert_cmpstr(p->image.mirror, ==, "http://deb.debian.org/debian");
  g_assert_cmpstr(p->image.kernel, ==, "linux-image-amd64"); /* from child */
  g_assert_cmpuint(g_strv_length(p->image.packages), ==, 3);
  g_assert_cmpuint(p->shares->len, ==, 3);
  g_assert_cmpuint(p->provision->len, ==, 5);
  g_assert_cmpstr(step_at(p, 4)->name, ==, "five");
}

static void test_inherit_replace_image(void) {
  g_autofree char *path = data_path("inherit", "replace-image.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_URL);
  g_assert_null(p->image.suite);
  g_assert_null(p->image.packages);
  g_assert_cmpstr(p->image.digest, ==,
                  "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
}

static void test_inherit_named_base(void) {
  g_autofree char *path = data_path("inherit", "named-base.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_assert_cmpstr(p->base, ==, "minimal");
  g_assert_cmpuint(p->cpus, ==, 1);
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_URL);
  g_assert_true(g_str_has_prefix(p->image.url, "https://cloud.debian.org/"));
}

/* ---- Search path ------------------------------------------------------------------------ */

static void test_search_path(void) {
  g_autofree char *old = g_strdup(g_getenv("XDG_CONFIG_HOME"));
  g_autofree char *dir = g_dir_make_tmp("hutch-test-config-XXXXXX", NULL);
  g_autofree char *profiles = g_build_filename(dir, "hutch", "profiles", NULL);
  g_assert_true(hutch_mkdir(profiles, 0700, NULL));
  g_autofree char *mine = g_build_filename(profiles, "mine.yaml", NULL);
  g_autofree char *shadow = g_build_filename(profiles, "debian-12.yaml", NULL);
  g_assert_true(g_file_set_contents(mine, "base: debian-12\nmemory: 1GiB\n", -1, NULL));
  g_assert_true(g_file_set_contents(shadow, "cpus: 7\n", -1, NULL));
  g_setenv("XDG_CONFIG_HOME", dir, TRUE);

  g_autoptr(GPtrArray) dirs = hutch_profile_search_path();
  g_assert_cmpstr(g_ptr_array_index(dirs, 0), ==, profiles);
  g_assert_cmpstr(g_ptr_array_index(dirs, 1), ==, HUTCH_DATADIR "/profiles");

  g_autoptr(GError) error = NULL;
  g_autofree char *found = hutch_profile_find("mine", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(found, ==, mine);
  g_autoptr(HutchProfile) p = hutch_profile_load("mine", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(p->cpus, ==, 7); /* the user's debian-12 shadows the shipped one */
  g_assert_cmpuint(p->memory, ==, 1ULL << 30);
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_NONE);

  g_autoptr(JsonArray) list = hutch_profile_list(&error);
  g_assert_no_error(error);
  guint debian = 0, shadowed = 0;
  const char *previous = "";
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *obj = json_array_get_object_element(list, i);
    const char *name = json_object_get_string_member(obj, "name");
    g_assert_cmpint(strcmp(previous, name), <=, 0);
    previous = name;
    if (strcmp(name, "debian-12") == 0) {
      gboolean is_shadowed = json_object_get_boolean_member(obj, "shadowed");
      /* the first is the user's and wins */
      g_assert_cmpint(is_shadowed, ==, debian > 0);
      if (!is_shadowed)
        g_assert_cmpstr(json_object_get_string_member(obj, "path"), ==, shadow);
      shadowed += is_shadowed;
      debian++;
    }
  }
  g_assert_cmpuint(debian, ==, 2);
  g_assert_cmpuint(shadowed, ==, 1);

  if (old)
    g_setenv("XDG_CONFIG_HOME", old, TRUE);
  else
    g_unsetenv("XDG_CONFIG_HOME");
  g_assert_true(hutch_rmtree(dir, NULL));
}

/* ---- Command-line overrides and specs --------------------------------------------------- */

static void test_setters(void) {
  g_autoptr(HutchProfile) p = hutch_profile_new_defaults();
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_profile_set_cpus(p, "8", &error));
  g_assert_true(hutch_profile_set_memory(p, "512MiB", &error));
  g_assert_true(hutch_profile_set_disk(p, "2T", &error));
  g_assert_no_error(error);
  g_assert_cmpuint(p->cpus, ==, 8);
  g_assert_cmpuint(p->memory, ==, 512ULL << 20);
  g_assert_cmpuint(p->disk, ==, 2ULL << 40);

  static const struct {
    int which; /* 0 cpus, 1 memory, 2 disk */
    const char *value;
    const char *message;
  } bad[] = {
      {0, "0", "cpus: '0' is out of range (1 to 256)"},
      {0, "257", "cpus: '257' is out of range (1 to 256)"},
      {0, "-1", "cpus: '-1' is not a number of CPUs (1 to 256)"},
      {0, "2x", "cpus: '2x' is not a number of CPUs (1 to 256)"},
      {1, "lots", "memory: 'lots' is not a size (e.g. 4GiB)"},
      {1, "255MiB", "memory: '255MiB' is too small (at least 256MiB)"},
      {1, "99999999999T", "memory: '99999999999T' is not a size (e.g. 4GiB)"},
      {2, "", "disk: '' is not a size (e.g. 4GiB)"},
      {2, "100M", "disk: '100M' is too small (at least 1GiB)"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) local = NULL;
    gboolean ok = bad[i].which == 0   ? hutch_profile_set_cpus(p, bad[i].value, &local)
                  : bad[i].which == 1 ? hutch_profile_set_memory(p, bad[i].value, &local)
                                      : hutch_profile_set_disk(p, bad[i].value, &local);
    g_assert_false(ok);
    g_assert_error(local, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_assert_cmpstr(local->message, ==, bad[i].message);
  }
  /* failures leave the values alone */
  g_assert_cmpuint(p->cpus, ==, 8);
  g_assert_cmpuint(p->memory, ==, 512ULL << 20);
  g_assert_cmpuint(p->disk, ==, 2ULL << 40);
}

static void test_port_parse(void) {
  static const struct {
    const char *spec;
    const char *ip;
    guint hs, he, gs, ge;
    HutchProto proto;
  } good[] = {
      {"8080", "127.0.0.1", 8080, 8080, 8080, 8080, HUTCH_PROTO_TCP},
      {"8080:80", "127.0.0.1", 8080, 8080, 80, 80, HUTCH_PROTO_TCP},
      {"5353:53/udp", "127.0.0.1", 5353, 5353, 53, 53, HUTCH_PROTO_UDP},
      {"127.0.0.2:8000-8010:9000-9010/tcp", "127.0.0.2", 8000, 8010, 9000, 9010, HUTCH_PROTO_TCP},
      {"[::1]:2222:22", "::1", 2222, 2222, 22, 22, HUTCH_PROTO_TCP},
      {"0.0.0.0:1-65535:1-65535/udp", "0.0.0.0", 1, 65535, 1, 65535, HUTCH_PROTO_UDP},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
    g_autoptr(GError) error = NULL;
    HutchPort *port = hutch_port_parse(good[i].spec, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(port->host_ip, ==, good[i].ip);
    g_assert_cmpuint(port->host_start, ==, good[i].hs);
    g_assert_cmpuint(port->host_end, ==, good[i].he);
    g_assert_cmpuint(port->guest_start, ==, good[i].gs);
    g_assert_cmpuint(port->guest_end, ==, good[i].ge);
    g_assert_cmpint(port->proto, ==, good[i].proto);
    hutch_port_free(port);
  }
  static const struct {
    const char *spec;
    const char *message;
  } bad[] = {
      {"", "invalid port forward '' is not a port forward "
           "([HOST_IP:]HOST[-END]:GUEST[-END][/tcp|/udp])"},
      {"0:80", "invalid port forward '0:80': '0' is out of range (ports are 1 to 65535)"},
      {"70000:80",
       "invalid port forward '70000:80': '70000' is out of range (ports are 1 to 65535)"},
      {"80:80/sctp", "invalid port forward '80:80/sctp': 'sctp' is not a protocol (tcp or udp)"},
      {"8000-9000:80",
       "invalid port forward '8000-9000:80': host range has 1001 ports, guest range 1 (give "
       "ranges of the same length)"},
      {"a:b", "invalid port forward 'a:b': 'a' is not a port or range (e.g. 8080 or 8000-9000)"},
      {"1:2:3:4", "invalid port forward '1:2:3:4' is not a port forward "
                  "([HOST_IP:]HOST[-END]:GUEST[-END][/tcp|/udp])"},
      {"[::1:80:80",
       "invalid port forward '[::1:80:80': unterminated IPv6 address (e.g. [::1]:8080:80)"},
      {"9000-8000:9000-8000",
       "invalid port forward '9000-8000:9000-8000': '9000-8000' is not a range (START-END with "
       "START <= END)"},
      {"300.1.1.1:80:80",
       "invalid port forward '300.1.1.1:80:80': '300.1.1.1' is not an IP address (e.g. "
       "127.0.0.1)"},
      {"1-2-3:1", "invalid port forward '1-2-3:1': '1-2-3' is not a port or range (e.g. 8080 or "
                  "8000-9000)"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) error = NULL;
    g_assert_null(hutch_port_parse(bad[i].spec, &error));
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_assert_cmpstr(error->message, ==, bad[i].message);
  }
}

static void test_share_parse(void) {
  static const struct {
    const char *spec, *host, *guest;
    gboolean writable;
    HutchShareCache cache;
  } good[] = {
      {"~/p:/mnt/p", "~/p", "/mnt/p", TRUE, HUTCH_SHARE_CACHE_AUTO},
      {"/srv/x/:~/x:ro", "/srv/x", "~/x", FALSE, HUTCH_SHARE_CACHE_AUTO},
      {"/a//b/./c:/c:rw", "/a/b/c", "/c", TRUE, HUTCH_SHARE_CACHE_AUTO},
      {"~/n:~/n:cache=always", "~/n", "~/n", TRUE, HUTCH_SHARE_CACHE_ALWAYS},
      {"~/n:~/n:ro,cache=never", "~/n", "~/n", FALSE, HUTCH_SHARE_CACHE_NEVER},
      {"~/n:~/n:cache=always,cache=auto,rw", "~/n", "~/n", TRUE, HUTCH_SHARE_CACHE_AUTO},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
    g_autoptr(GError) error = NULL;
    HutchShare *share = hutch_share_parse(good[i].spec, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(share->host, ==, good[i].host);
    g_assert_cmpstr(share->guest, ==, good[i].guest);
    g_assert_cmpint(share->writable, ==, good[i].writable);
    g_assert_cmpint(share->cache, ==, good[i].cache);
    g_assert_false(share->create);
    hutch_share_free(share);
  }
  static const struct {
    const char *spec, *message;
  } bad[] = {
      {"rel:/x", "invalid share 'rel:/x': 'rel' is a relative path (use an absolute path or one "
                 "starting with ~/)"},
      {"/x:rel", "invalid share '/x:rel': 'rel' is a relative path (use an absolute path or one "
                 "starting with ~/)"},
      {"/x:/y:maybe",
       "invalid share '/x:/y:maybe': 'maybe' is not an option (ro, rw, cache=auto|always|never)"},
      {"/x:/y:ro,cache=sometimes", "invalid share '/x:/y:ro,cache=sometimes': 'cache=sometimes' "
                                   "is not an option (ro, rw, cache=auto|always|never)"},
      {"/x:/y:ro,", "invalid share '/x:/y:ro,': '' is not an option (ro, rw, "
                    "cache=auto|always|never)"},
      {"/x", "invalid share '/x': is not a share (HOST:GUEST[:OPTION,...]: ro, rw, cache=MODE)"},
      {"/x:/y:rw:z",
       "invalid share '/x:/y:rw:z': is not a share (HOST:GUEST[:OPTION,...]: ro, rw, cache=MODE)"},
      {"~:/x", "invalid share '~:/x': '~' is the whole file system or home (share a directory "
               "below it)"},
      {"/x:~/", "invalid share '/x:~/': '~/' is the whole guest root or home (share a directory "
                "below it)"},
      {"/a/../b:/c", "invalid share '/a/../b:/c': '/a/../b' contains '..' (use a path without "
                     "it)"},
      {"~user/x:/x", "invalid share '~user/x:/x': '~user/x' is a relative path (use an absolute "
                     "path or one starting with ~/)"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) error = NULL;
    g_assert_null(hutch_share_parse(bad[i].spec, &error));
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_assert_cmpstr(error->message, ==, bad[i].message);
  }
}

static void test_add_share_port(void) {
  g_autofree char *path = data_path("inherit", "base.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_autoptr(GError) error = NULL;
  HutchShare *share = hutch_share_parse("/srv/new:~/A:ro", &error);
  g_assert_true(hutch_profile_add_share(p, share, &error));
  g_assert_cmpuint(p->shares->len, ==, 2);
  g_assert_cmpstr(share_at(p, 0)->host, ==, "/srv/new");
  HutchPort *clash = hutch_port_parse("8000:8000", &error);
  g_assert_false(hutch_profile_add_port(p, clash, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_clear_error(&error);
  hutch_port_free(clash);
  HutchPort *other_proto = hutch_port_parse("8000:8000/udp", &error);
  g_assert_true(hutch_profile_add_port(p, other_proto, &error));
  g_assert_no_error(error);
  g_assert_cmpuint(p->ports->len, ==, 2);
}

/* `hutch edit`'s removals and `--no-ports`: what matches, and errors naming what there is. */
static void test_remove_share_port(void) {
  g_autofree char *path = data_path("inherit", "base.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_autoptr(GError) error = NULL;
  HutchPort *udp = hutch_port_parse("8000:8000/udp", &error);
  g_assert_true(hutch_profile_add_port(p, udp, &error));
  g_assert_true(hutch_profile_add_port_spec(p, "[::1]:9000-9001:90-91", &error));
  g_autofree char *host0 = hutch_port_host_to_string(g_ptr_array_index(p->ports, 0));
  g_autofree char *host1 = hutch_port_host_to_string(g_ptr_array_index(p->ports, 1));
  g_autofree char *host2 = hutch_port_host_to_string(g_ptr_array_index(p->ports, 2));
  g_autofree char *guest2 = hutch_port_guest_to_string(g_ptr_array_index(p->ports, 2));
  g_assert_cmpstr(host0, ==, "127.0.0.1:8000");
  g_assert_cmpstr(host1, ==, "127.0.0.1:8000/udp");
  g_assert_cmpstr(host2, ==, "[::1]:9000-9001");
  g_assert_cmpstr(guest2, ==, "90-91");

  /* a part of a range is not the range */
  g_assert_false(hutch_profile_remove_port(p, "9000", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_cmpstr(error->message, ==,
                  "no port forward from host port 9000 to remove (forwarded: 127.0.0.1:8000, "
                  "127.0.0.1:8000/udp, [::1]:9000-9001)");
  g_clear_error(&error);
  g_assert_false(hutch_profile_remove_port(p, "80-x", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_clear_error(&error);
  g_assert_true(hutch_profile_remove_port(p, "8000/udp", &error));
  g_assert_no_error(error);
  g_assert_cmpuint(p->ports->len, ==, 2);
  g_assert_cmpint(((HutchPort *)g_ptr_array_index(p->ports, 0))->proto, ==, HUTCH_PROTO_TCP);
  /* a whole --port spec names its host side */
  g_assert_true(hutch_profile_remove_port(p, "9000-9001:90-91", &error));
  g_assert_cmpuint(p->ports->len, ==, 1);
  hutch_profile_clear_ports(p);
  g_assert_cmpuint(p->ports->len, ==, 0);
  g_assert_false(hutch_profile_remove_port(p, "8000", &error));
  g_assert_cmpstr(error->message, ==,
                  "no port forward from host port 8000 to remove (no ports are forwarded)");
  g_clear_error(&error);

  /* shares by guest path: as written, with "~" expanded, with a trailing slash */
  g_assert_false(hutch_profile_remove_share(p, "~/C", "/home/dev", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_cmpstr(error->message, ==, "no share on guest path '~/C' to remove (shared: ~/A, ~/B)");
  g_clear_error(&error);
  g_assert_false(hutch_profile_remove_share(p, "A", "/home/dev", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_true(g_str_has_prefix(error->message, "invalid guest path: 'A' is a relative path"));
  g_clear_error(&error);
  g_assert_true(hutch_profile_remove_share(p, "/home/dev/B/", "/home/dev", &error));
  g_assert_no_error(error);
  g_assert_cmpuint(p->shares->len, ==, 1);
  g_assert_cmpstr(share_at(p, 0)->guest, ==, "~/A");
  g_assert_true(hutch_profile_remove_share(p, "~/A", "/home/dev", &error));
  g_assert_cmpuint(p->shares->len, ==, 0);
  g_assert_false(hutch_profile_remove_share(p, "~/A", "/home/dev", &error));
  g_assert_cmpstr(error->message, ==,
                  "no share on guest path '~/A' to remove (no folders are shared)");
}

/* ---- YAML out --------------------------------------------------------------------------- */

static void assert_images_equal(const HutchImageSpec *a, const HutchImageSpec *b) {
  g_assert_cmpint(a->kind, ==, b->kind);
  g_assert_cmpstr(a->file, ==, b->file);
  g_assert_cmpstr(a->url, ==, b->url);
  g_assert_cmpstr(a->digest, ==, b->digest);
  g_assert_cmpstr(a->checksums, ==, b->checksums);
  g_assert_cmpstr(a->suite, ==, b->suite);
  g_assert_cmpstr(a->mirror, ==, b->mirror);
  g_assert_cmpstr(a->kernel, ==, b->kernel);
  g_assert_cmpstr(a->template, ==, b->template);
  g_assert_true((a->packages == NULL) == (b->packages == NULL));
  if (a->packages)
    g_assert_cmpstrv(a->packages, b->packages);
  g_assert_true((a->fallback == NULL) == (b->fallback == NULL));
  if (a->fallback)
    assert_images_equal(a->fallback, b->fallback);
}

static void assert_rules_equal(GPtrArray *a, GPtrArray *b) {
  g_assert_cmpuint(a->len, ==, b->len);
  for (guint i = 0; i < a->len; i++)
    g_assert_cmpstr(g_ptr_array_index(a, i), ==, g_ptr_array_index(b, i));
}

static void assert_profiles_equal(const HutchProfile *a, const HutchProfile *b) {
  g_assert_cmpstr(a->name, ==, b->name);
  g_assert_cmpstr(a->description, ==, b->description);
  g_assert_cmpuint(a->cpus, ==, b->cpus);
  g_assert_cmpuint(a->memory, ==, b->memory);
  g_assert_cmpuint(a->disk, ==, b->disk);
  g_assert_cmpint(a->accel, ==, b->accel);
  g_assert_cmpuint(a->boot_timeout, ==, b->boot_timeout);
  assert_images_equal(&a->image, &b->image);
  g_assert_cmpstr(a->user_name, ==, b->user_name);
  g_assert_cmpint(a->user_uid, ==, b->user_uid);
  g_assert_cmpint(a->user_gid, ==, b->user_gid);
  g_assert_cmpint(a->user_sudo, ==, b->user_sudo);
  g_assert_cmpstr(a->user_shell, ==, b->user_shell);
  g_assert_cmpuint(a->shares->len, ==, b->shares->len);
  for (guint i = 0; i < a->shares->len; i++) {
    const HutchShare *x = share_at(a, i), *y = share_at(b, i);
    g_assert_cmpstr(x->host, ==, y->host);
    g_assert_cmpstr(x->guest, ==, y->guest);
    g_assert_cmpint(x->writable, ==, y->writable);
    g_assert_cmpint(x->create, ==, y->create);
  }
  g_assert_cmpuint(a->ports->len, ==, b->ports->len);
  for (guint i = 0; i < a->ports->len; i++) {
    const HutchPort *x = g_ptr_array_index(a->ports, i), *y = g_ptr_array_index(b->ports, i);
    g_assert_cmpstr(x->host_ip, ==, y->host_ip);
    g_assert_cmpuint(x->host_start, ==, y->host_start);
    g_assert_cmpuint(x->host_end, ==, y->host_end);
    g_assert_cmpuint(x->guest_start, ==, y->guest_start);
    g_assert_cmpuint(x->guest_end, ==, y->guest_end);
    g_assert_cmpint(x->proto, ==, y->proto);
  }
  g_assert_cmpuint(a->provision->len, ==, b->provision->len);
  for (guint i = 0; i < a->provision->len; i++) {
    const HutchProvisionStep *x = step_at(a, i), *y = step_at(b, i);
    g_assert_cmpstr(x->name, ==, y->name);
    g_assert_true((x->packages == NULL) == (y->packages == NULL));
    if (x->packages)
      g_assert_cmpstrv(x->packages, y->packages);
    g_assert_cmpstr(x->script, ==, y->script);
    g_assert_cmpstr(x->script_path, ==, y->script_path);
    g_assert_cmpstr(x->run, ==, y->run);
    g_assert_cmpint(x->as_user, ==, y->as_user);
    g_assert_cmpint(x->optional, ==, y->optional);
  }
  g_assert_cmpint(a->egress, ==, b->egress);
  assert_rules_equal(a->egress_allow, b->egress_allow);
  assert_rules_equal(a->egress_deny, b->egress_deny);
  g_assert_cmpuint(a->secrets->len, ==, b->secrets->len);
  for (guint i = 0; i < a->secrets->len; i++) {
    const HutchSecret *x = g_ptr_array_index(a->secrets, i);
    const HutchSecret *y = g_ptr_array_index(b->secrets, i);
    g_assert_cmpstr(x->name, ==, y->name);
    g_assert_cmpint(x->source, ==, y->source);
    g_assert_cmpstr(x->from, ==, y->from);
    g_assert_cmpstrv(x->hosts, y->hosts);
    g_assert_cmpint(x->optional, ==, y->optional);
    g_assert_cmpuint(x->ttl, ==, y->ttl);
  }
  g_assert_cmpuint(a->env->len, ==, b->env->len);
  for (guint i = 0; i < a->env->len; i++) {
    const char *xv, *yv;
    g_assert_cmpstr(env_at(a, i, &xv), ==, env_at(b, i, &yv));
    g_assert_cmpstr(xv, ==, yv);
  }
}

static void assert_round_trip(const char *path) {
  g_autoptr(HutchProfile) p = load_ok(path);
  g_autoptr(GError) error = NULL;
  g_autofree char *yaml = hutch_profile_to_yaml(p, &error);
  g_assert_no_error(error);
  /* Read back as if from the same file, so that relative names resolve alike. */
  g_autoptr(HutchProfile) again = hutch_profile_load_data(yaml, strlen(yaml), p->path, &error);
  if (error)
    g_error("%s\n%s", error->message, yaml);
  assert_profiles_equal(p, again);
  g_autofree char *yaml_again = hutch_profile_to_yaml(again, &error);
  g_assert_cmpstr(yaml, ==, yaml_again);
}

static void test_round_trip(void) {
  const char *const relative[][3] = {
      {"full.yaml", NULL, NULL},
      {"inherit", "grandchild.yaml", NULL},
      {"inherit", "replace-image.yaml", NULL},
      {"tree", "profiles", "scripted.yaml"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(relative); i++) {
    g_autofree char *path = data_path(relative[i][0], relative[i][1], relative[i][2], NULL);
    assert_round_trip(path);
  }
  static const char *const shipped[] = {"default", "minimal", "debian-12", "ubuntu-24.04",
                                        "ai-dev"};
  for (gsize i = 0; i < G_N_ELEMENTS(shipped); i++) {
    g_autofree char *file = g_strconcat(shipped[i], ".yaml", NULL);
    g_autofree char *path = g_build_filename(g_getenv("HUTCH_SOURCE_DIR"), "profiles", file, NULL);
    assert_round_trip(path);
  }
}

static void check_golden(const char *text, const char *golden_name) {
  g_autofree char *golden = data_path(golden_name, NULL);
  if (g_strcmp0(g_getenv("HUTCH_REGENERATE"), "1") == 0) {
    g_assert_true(g_file_set_contents(golden, text, -1, NULL));
    return;
  }
  g_autofree char *expected = NULL;
  g_autoptr(GError) error = NULL;
  g_file_get_contents(golden, &expected, NULL, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(text, ==, expected);
}

static void test_golden(void) {
  g_autofree char *full = data_path("full.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(full);
  g_autoptr(GError) error = NULL;
  g_autofree char *yaml = hutch_profile_to_yaml(p, &error);
  g_assert_no_error(error);
  check_golden(yaml, "full.expanded.yaml");

  g_autofree char *def =
      g_build_filename(g_getenv("HUTCH_SOURCE_DIR"), "profiles", "default.yaml", NULL);
  g_autoptr(HutchProfile) d = load_ok(def);
  g_autofree char *def_yaml = hutch_profile_to_yaml(d, &error);
  g_assert_no_error(error);
  check_golden(def_yaml, "default.expanded.yaml");
}

/* ---- image: fallback: -------------------------------------------------------------------- */

static HutchProfile *load_text(const char *yaml) {
  g_autoptr(GError) error = NULL;
  HutchProfile *p = hutch_profile_load_data(yaml, strlen(yaml), "/tmp/fallback.yaml", &error);
  g_assert_no_error(error);
  return p;
}

static void test_image_fallback(void) {
  /* build: without a value is bookworm with the minimum set */
  g_autoptr(HutchProfile) p = load_text("image:\n"
                                        "  url: https://example.org/x.qcow2\n"
                                        "  checksums: https://example.org/SHA256SUMS\n"
                                        "  fallback: {build: }\n");
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_URL);
  g_assert_nonnull(p->image.fallback);
  g_assert_cmpint(p->image.fallback->kind, ==, HUTCH_IMAGE_BUILD);
  g_assert_cmpstr(p->image.fallback->suite, ==, "bookworm");
  g_assert_null(p->image.fallback->packages);
  g_assert_null(p->image.fallback->fallback);

  g_autoptr(HutchProfile) q =
      load_text("image:\n"
                "  url: https://example.org/x.qcow2\n"
                "  digest: sha256:"
                "0000000000000000000000000000000000000000000000000000000000000000\n"
                "  fallback:\n"
                "    build: {suite: trixie, packages: [vim], kernel: "
                "linux-image-amd64, mirror: http://m.example/debian}\n");
  g_assert_cmpstr(q->image.fallback->suite, ==, "trixie");
  g_assert_cmpstr(q->image.fallback->kernel, ==, "linux-image-amd64");
  g_assert_cmpstr(q->image.fallback->mirror, ==, "http://m.example/debian");
  g_assert_cmpstr(q->image.fallback->packages[0], ==, "vim");

  /* A profile's own image: replaces the base's as a whole, its fallback too. */
  g_autoptr(HutchProfile) r = load_text("base: debian-12\n"
                                        "image:\n"
                                        "  url: https://example.org/y.qcow2\n"
                                        "  checksums: https://example.org/SHA256SUMS\n");
  g_assert_cmpstr(r->image.url, ==, "https://example.org/y.qcow2");
  g_assert_null(r->image.fallback);
}

/* ---- image: template: ------------------------------------------------------------------- */

/* A template's disk: the name only, written back as it was read. */
static void test_image_template(void) {
  g_autoptr(HutchProfile) p = load_text("image: {template: base-1}\n");
  g_assert_cmpint(p->image.kind, ==, HUTCH_IMAGE_TEMPLATE);
  g_assert_cmpstr(p->image.template, ==, "base-1");
  g_assert_null(p->image.file);
  g_assert_null(p->image.url);
  g_assert_null(p->image.suite);
  g_assert_null(p->image.fallback);

  g_autoptr(GError) error = NULL;
  g_autofree char *yaml = hutch_profile_to_yaml(p, &error);
  g_assert_no_error(error);
  g_assert_nonnull(strstr(yaml, "\nimage:\n  template: base-1\n"));
  g_autoptr(HutchProfile) again = hutch_profile_load_data(yaml, strlen(yaml), p->path, &error);
  if (error)
    g_error("%s\n%s", error->message, yaml);
  assert_profiles_equal(p, again);
  g_autofree char *yaml_again = hutch_profile_to_yaml(again, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(yaml, ==, yaml_again);

  g_autofree char *origins = hutch_profile_to_origins(p);
  g_assert_nonnull(strstr(origins, "\timage: template base-1\n"));

  /* the other order of two kinds: the error is at the second, naming the first */
  static const char two[] = "image:\n  file: /x\n  template: x\n";
  g_autoptr(HutchProfile) bad = hutch_profile_load_data(two, strlen(two), "x.yaml", &error);
  g_assert_null(bad);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_cmpstr(error->message, ==,
                  "x.yaml:3:3: image.template: an image is one of file, url, build, template "
                  "(file given already)");
}

/* `profile show --origin`: each value with the file and line it came from through a chain
 * of three files (the data directory written as DATA, so that the golden file does not
 * depend on where the tree is). */
static void test_origins(void) {
  g_autofree char *path = data_path("inherit", "grandchild.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_autofree char *text = hutch_profile_to_origins(p);
  g_autofree char *dir = data_path("inherit", NULL);
  *strrchr(dir, G_DIR_SEPARATOR) = '\0';
  g_auto(GStrv) parts = g_strsplit(text, dir, -1);
  g_autofree char *relative = g_strjoinv("DATA", parts);
  check_golden(relative, "inherit/grandchild.origins");
}

/* ---- network: --------------------------------------------------------------------------- */

/* The rule texts of a list, as one string (for comparisons). */
static char *rules_text(GPtrArray *rules) {
  g_autoptr(GString) out = g_string_new(NULL);
  for (guint i = 0; i < rules->len; i++)
    g_string_append_printf(out, "%s%s", i ? " " : "", (const char *)g_ptr_array_index(rules, i));
  return g_strdup(out->str);
}

static void test_network_modes(void) {
  static const struct {
    const char *yaml;
    HutchEgressMode mode;
  } cases[] = {
      {"network:\n  egress: none\n", HUTCH_EGRESS_NONE},
      {"network:\n  egress: allowlist\n", HUTCH_EGRESS_ALLOWLIST},
      {"network:\n  egress: public\n", HUTCH_EGRESS_PUBLIC},
      {"network: {egress: unrestricted}\n", HUTCH_EGRESS_UNRESTRICTED},
      {"cpus: 1\n", HUTCH_EGRESS_UNSET},
      {"network:\n", HUTCH_EGRESS_UNSET},
      {"network: {allow: [deb.debian.org]}\n", HUTCH_EGRESS_UNSET},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(HutchProfile) p = load_text(cases[i].yaml);
    g_assert_cmpint(p->egress, ==, cases[i].mode);
  }
  /* rule texts as the rule parser normalises them, each once */
  g_autoptr(HutchProfile) p =
      load_text("network:\n"
                "  allow: [Deb.Debian.org, deb.debian.org, \"*.NPMjs.org\",\n"
                "          \"198.51.100.7/32:8080\", \"[2001:db8::1]:22\"]\n"
                "  deny: [evil.example]\n");
  g_autofree char *allow = rules_text(p->egress_allow);
  g_assert_cmpstr(allow, ==, "deb.debian.org *.npmjs.org 198.51.100.7/32:8080 [2001:db8::1]:22");
  g_autofree char *deny = rules_text(p->egress_deny);
  g_assert_cmpstr(deny, ==, "evil.example");
  g_assert_nonnull(g_hash_table_lookup(p->origins, "network.allow"));
  g_assert_null(g_hash_table_lookup(p->origins, "network.egress"));
}

static void test_network_inherit(void) {
  g_autofree char *child_path = data_path("inherit", "child.yaml", NULL);
  g_autoptr(HutchProfile) child = load_ok(child_path);
  /* egress from the base (the child does not say); lists: the base's, then the child's */
  g_assert_cmpint(child->egress, ==, HUTCH_EGRESS_ALLOWLIST);
  g_autofree char *allow = rules_text(child->egress_allow);
  g_assert_cmpstr(allow, ==, "deb.debian.org *.npmjs.org github.com:22");
  g_autofree char *deny = rules_text(child->egress_deny);
  g_assert_cmpstr(deny, ==, "evil.example bad.example");

  g_autofree char *path = data_path("inherit", "grandchild.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  /* the most derived file that says wins */
  g_assert_cmpint(p->egress, ==, HUTCH_EGRESS_PUBLIC);
  g_autofree char *allow_again = rules_text(p->egress_allow);
  g_assert_cmpstr(allow_again, ==, allow);
  g_autofree char *base = data_path("inherit", "base.yaml", NULL);
  g_autofree char *origin = g_strdup_printf("%s:7", path);
  g_assert_cmpstr(g_hash_table_lookup(p->origins, "network.egress"), ==, origin);
  g_autofree char *allow_origin = g_strdup_printf("%s:24, %s:18", base, child_path);
  g_assert_cmpstr(g_hash_table_lookup(p->origins, "network.allow"), ==, allow_origin);
}

static void test_network_policy(void) {
  g_autoptr(GError) error = NULL;
  /* unset: the default mode, no rules */
  g_autoptr(HutchProfile) empty = load_text("cpus: 1\n");
  g_autoptr(HutchEgressPolicy) def = hutch_profile_egress_policy(empty, &error);
  g_assert_no_error(error);
  g_assert_cmpint(def->mode, ==, HUTCH_EGRESS_DEFAULT);
  g_assert_cmpint(def->mode, ==, HUTCH_EGRESS_PUBLIC);
  g_assert_cmpuint(def->allow->len + def->deny->len, ==, 0);

  /* deny wins over allow: a text in both is only denied */
  g_autoptr(HutchProfile) p = load_text("network:\n"
                                        "  egress: allowlist\n"
                                        "  allow: [deb.debian.org, github.com:22, evil.example]\n"
                                        "  deny: [evil.example]\n");
  g_autoptr(HutchEgressPolicy) policy = hutch_profile_egress_policy(p, &error);
  g_assert_no_error(error);
  g_assert_cmpint(policy->mode, ==, HUTCH_EGRESS_ALLOWLIST);
  g_assert_cmpuint(policy->allow->len, ==, 2);
  const HutchEgressRule *ssh = g_ptr_array_index(policy->allow, 1);
  g_assert_cmpstr(ssh->name, ==, "github.com");
  g_assert_cmpuint(ssh->port, ==, 22);
  g_assert_cmpuint(policy->deny->len, ==, 1);
  g_assert_cmpstr(((HutchEgressRule *)g_ptr_array_index(policy->deny, 0))->text, ==,
                  "evil.example");

  /* --egress */
  g_assert_true(hutch_profile_set_egress(p, "none", &error));
  g_assert_no_error(error);
  g_assert_cmpint(p->egress, ==, HUTCH_EGRESS_NONE);
  g_assert_false(hutch_profile_set_egress(p, "unset", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_cmpstr(error->message, ==,
                  "egress: 'unset' is not an egress mode (none, allowlist, public or "
                  "unrestricted)");
  g_clear_error(&error);
  g_assert_false(hutch_profile_set_egress(p, "Public", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_cmpint(p->egress, ==, HUTCH_EGRESS_NONE);
}

/* What the writer makes of network: only what was said, and it reads back the same. */
static void test_network_yaml(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) empty = load_text("cpus: 1\n");
  g_autofree char *none = hutch_profile_to_yaml(empty, &error);
  g_assert_no_error(error);
  g_assert_null(strstr(none, "network"));

  g_autoptr(HutchProfile) p = load_text("network: {egress: none}\n");
  g_assert_true(hutch_profile_set_egress(p, "unrestricted", &error));
  g_autofree char *yaml = hutch_profile_to_yaml(p, &error);
  g_assert_no_error(error);
  g_assert_nonnull(strstr(yaml, "network:\n  egress: unrestricted\n"));
  g_autoptr(HutchProfile) again = hutch_profile_load_data(yaml, strlen(yaml), p->path, &error);
  g_assert_no_error(error);
  g_assert_cmpint(again->egress, ==, HUTCH_EGRESS_UNRESTRICTED);
}

/* ---- secrets: --------------------------------------------------------------------------- */

static const HutchSecret *secret_at(const HutchProfile *p, guint i) {
  g_assert_cmpuint(i, <, p->secrets->len);
  return g_ptr_array_index(p->secrets, i);
}

static void assert_secret(const HutchSecret *secret, const char *name, HutchSecretSource source,
                          const char *from, const char *hosts, gboolean optional, guint ttl) {
  g_assert_cmpstr(secret->name, ==, name);
  g_assert_cmpint(secret->source, ==, source);
  g_assert_cmpstr(secret->from, ==, from);
  g_autofree char *joined = g_strjoinv(" ", secret->hosts);
  g_assert_cmpstr(joined, ==, hosts);
  g_assert_cmpint(secret->optional, ==, optional);
  g_assert_cmpuint(secret->ttl, ==, ttl);
}

/* Every accepted form, as full.yaml writes them. */
static void test_secrets_forms(void) {
  g_autofree char *path = data_path("full.yaml", NULL);
  g_autoptr(HutchProfile) p = load_ok(path);
  g_assert_cmpuint(p->secrets->len, ==, 6);
  /* plain env: the host variable of the secret's own name */
  assert_secret(secret_at(p, 0), "ANTHROPIC_API_KEY", HUTCH_SECRET_ENV, "ANTHROPIC_API_KEY",
                "api.anthropic.com", TRUE, 3600);
  /* lower case, ":443" dropped, each host once */
  assert_secret(secret_at(p, 1), "OTHER", HUTCH_SECRET_ENV, "HOST_OTHER", "api.example.com", FALSE,
                0);
  assert_secret(secret_at(p, 2), "GH_TOKEN", HUTCH_SECRET_COMMAND, "gh auth token",
                "github.com api.github.com", FALSE, 12 * 3600);
  assert_secret(secret_at(p, 3), "PASS_TOKEN", HUTCH_SECRET_COMMAND, "pass show 'a b'",
                "pass.example.com:8443", FALSE, 30 * 60);
  assert_secret(secret_at(p, 4), "X", HUTCH_SECRET_FILE, "~/.config/x/key",
                "files.example.com:8443 example.com:8443", FALSE, 0);
  assert_secret(secret_at(p, 5), "_Y2", HUTCH_SECRET_FILE, "/etc/y/key", "y.example", FALSE, 90);
  g_autofree char *origin = g_strdup_printf("%s:49", path);
  g_assert_cmpstr(g_hash_table_lookup(p->origins, "secrets:ANTHROPIC_API_KEY"), ==, origin);

  /* none, and the limits of what is accepted */
  g_autoptr(HutchProfile) none = load_text("secrets:\n");
  g_assert_cmpuint(none->secrets->len, ==, 0);
  g_autoptr(HutchProfile) empty = load_text("secrets: []\n");
  g_assert_cmpuint(empty->secrets->len, ==, 0);
  g_autofree char *label = g_strnfill(63, 'a');
  g_autofree char *long_name = g_strnfill(64, 'N');
  g_autofree char *yaml = g_strdup_printf("secrets:\n"
                                          "  - name: %s\n"
                                          "    from: env:_\n"
                                          "    hosts: [%s.example, localhost:1, \"x:65535\", "
                                          "X-1.Example]\n"
                                          "    ttl: 24h\n"
                                          "    optional: yes\n",
                                          long_name, label);
  g_autoptr(HutchProfile) edge = load_text(yaml);
  g_autofree char *hosts = g_strdup_printf("%s.example localhost:1 x:65535 x-1.example", label);
  assert_secret(secret_at(edge, 0), long_name, HUTCH_SECRET_ENV, "_", hosts, TRUE, 24 * 3600);
}

/* Error cases beyond the fixtures: the checks of each field, on one line of a small file. */
static void test_secrets_errors_inline(void) {
  static const struct {
    const char *field; /* line 3 of the secret, after name and hosts */
    const char *expected;
  } field_cases[] = {
      {"from: \"command:\"",
       "x.yaml:4:11: secrets[0].from: the command is empty (give the command that prints the "
       "secret, e.g. gh auth token)"},
      {"command: \"  \"",
       "x.yaml:4:14: secrets[0].command: the command is empty (give the command that prints the "
       "secret, e.g. gh auth token)"},
      {"command: \"a \\\\\"",
       "x.yaml:4:14: secrets[0].command: 'a \\' cannot be split into words (a quote is not "
       "closed, or a backslash ends it)"},
      {"from: \"command:a 'b\"",
       "x.yaml:4:11: secrets[0].from: 'a 'b' cannot be split into words (a quote is not closed, "
       "or a backslash ends it)"},
      {"command:", "x.yaml:4:13: secrets[0].command: expected a command (e.g. gh auth token), got "
                   "no value"},
      {"file: \"~user/key\"",
       "x.yaml:4:11: secrets[0].file: '~user/key' is neither absolute nor starting with ~/ (e.g. "
       "~/.config/x/key)"},
      {"file: \"~\"", "x.yaml:4:11: secrets[0].file: '~' is neither absolute nor starting with "
                      "~/ (e.g. ~/.config/x/key)"},
      {"from: \"file:\"", "x.yaml:4:11: secrets[0].from: '' is neither absolute nor starting "
                          "with ~/ (e.g. ~/.config/x/key)"},
      {"from: \"file:key\"", "x.yaml:4:11: secrets[0].from: 'key' is neither absolute nor "
                             "starting with ~/ (e.g. ~/.config/x/key)"},
      {"from: envy", "x.yaml:4:11: secrets[0].from: 'envy' is not where a secret comes from "
                     "(env, env:VAR, command:CMD or file:PATH)"},
      {"from: \"env:\"", "x.yaml:4:11: secrets[0].from: 'env:': '' is not a variable name "
                         "(letters, digits, '_', at most 128; not starting with a digit)"},
      {"from: [env]", "x.yaml:4:11: secrets[0].from: expected env, env:VAR, command:CMD or "
                      "file:PATH, got a list"},
      {"file: /k\n    from: env",
       "x.yaml:5:11: secrets[0].from: a secret has exactly one of from, command, file (this one "
       "has file already)"},
      {"from: env\n    ttl: -5", "x.yaml:5:10: secrets[0].ttl: '-5' is not a duration (seconds, "
                                 "or e.g. 90s, 10m, 1h30m)"},
      {"from: env\n    ttl: 1 day", "x.yaml:5:10: secrets[0].ttl: '1 day' is not a duration "
                                    "(seconds, or e.g. 90s, 10m, 1h30m)"},
      {"from: env\n    ttl: 25h", "x.yaml:5:10: secrets[0].ttl: '25h' is out of range (1s to 24h)"},
      {"from: env\n    optional: 1",
       "x.yaml:5:15: secrets[0].optional: '1' is not a boolean (true or false)"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(field_cases); i++) {
    g_autofree char *yaml = g_strdup_printf("secrets:\n"
                                            "  - name: T\n"
                                            "    hosts: [a.example]\n"
                                            "    %s\n",
                                            field_cases[i].field);
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchProfile) p = hutch_profile_load_data(yaml, strlen(yaml), "x.yaml", &error);
    g_assert_null(p);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
    g_assert_cmpstr(error->message, ==, field_cases[i].expected);
  }

  static const char ip[] = " is an IP address (a secret's host is a name: the real value only "
                           "goes to the name the guest asked for)";
  static const char not_name[] = " is not a host name (letters, digits, '-' and '.', labels of 1 "
                                 "to 63, at most 253 in all; e.g. api.example.com)";
  /* a wildcard is refused before anything else is checked: it is never the fix */
  static const char star[] = ": a secret's host is one name, not a wildcard (a wildcard could be "
                             "anyone's server: name each host)";
  static const char port[] = " has a bad port (1 to 65535)";
  g_autofree char *label64 = g_strnfill(64, 'a');
  /* 4 labels of 63 and the dots: 255 */
  g_autofree char *label63 = g_strnfill(63, 'b');
  g_autofree char *too_long = g_strjoin(".", label63, label63, label63, label63, NULL);
  g_autofree char *long_label = g_strconcat(label64, ".example", NULL);
  const struct {
    const char *host;
    const char *why;
  } host_cases[] = {
      {"[::1]:443", ip},
      {"2001:db8::1", ip},
      {"127.0.0.1:8080", ip},
      {"198.51.100.7", ip},
      {"127.1", not_name},
      {"-a.example", not_name},
      {"a-.example", not_name},
      {"a..b", not_name},
      {"x.example.", not_name},
      {"exa mple.org", not_name},
      {long_label, not_name},
      {too_long, not_name},
      {"", not_name},
      {"*", star},
      {"*.example.com", star},
      {"*.Example.COM", star},
      {"*.example.com:8443", star},
      {"*.example.com:443", star},
      {"*.workers.dev", star},
      {"*.*.example", star},
      {"example.*", star},
      {"a*.example", star},
      {"example.com:0", port},
      {"example.com:", port},
      {"example.com:https", port},
      {"example.com:65536", port},
      {"*.example.com:65536", star},
      {"*.10.0.0.1", star},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(host_cases); i++) {
    g_autofree char *yaml = g_strdup_printf("secrets:\n"
                                            "  - name: T\n"
                                            "    from: env\n"
                                            "    hosts: [a.example, \"%s\"]\n",
                                            host_cases[i].host);
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchProfile) p = hutch_profile_load_data(yaml, strlen(yaml), "x.yaml", &error);
    g_assert_null(p);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
    g_autofree char *q = strlen(host_cases[i].host) > 60
                             ? g_strdup_printf("'%.60s...'", host_cases[i].host)
                             : g_strdup_printf("'%s'", host_cases[i].host);
    g_autofree char *expected =
        g_strdup_printf("x.yaml:4:24: secrets[0].hosts[1]: %s%s", q, host_cases[i].why);
    g_assert_cmpstr(error->message, ==, expected);
  }

  static const struct {
    const char *yaml, *expected;
  } other_cases[] = {
      {"secrets:\n  - name: A-B\n    from: env\n    hosts: [a.example]\n",
       "x.yaml:2:11: secrets[0].name: 'A-B' is not a variable name (letters, digits, '_', at most "
       "64; not starting with a digit)"},
      {"secrets:\n  - name: \"\"\n    from: env\n    hosts: [a.example]\n",
       "x.yaml:2:11: secrets[0].name: '' is not a variable name (letters, digits, '_', at most 64; "
       "not starting with a digit)"},
      {"secrets:\n  - name: T\n    from: env\n    hosts: a.example\n",
       "x.yaml:4:12: secrets[0].hosts: expected a list of host names (e.g. [api.example.com]), got "
       "a single value"},
      {"secrets:\n  - name: T\n    from: env\n    hosts:\n",
       "x.yaml:4:11: secrets[0].hosts: expected a list of host names (e.g. [api.example.com]), got "
       "no value"},
      {"secrets:\n  - name: T\n    from: env\n    hosts: [[a.example]]\n",
       "x.yaml:4:13: secrets[0].hosts[0]: expected a host name (NAME or NAME:PORT), got a "
       "list"},
      {"secrets:\n  - T\n",
       "x.yaml:2:5: secrets[0]: expected a mapping with name, hosts and one of from, command, "
       "file, got a single value"},
      /* env: before secrets: in the same file: the secret is named */
      {"env: {T: x}\nsecrets:\n  - {name: T, from: env, hosts: [a.example]}\n",
       "x.yaml:3:12: secrets[0].name: 'T' is also set in env: (the guest would get two values; "
       "keep one)"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(other_cases); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchProfile) p =
        hutch_profile_load_data(other_cases[i].yaml, strlen(other_cases[i].yaml), "x.yaml", &error);
    g_assert_null(p);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
    g_assert_cmpstr(error->message, ==, other_cases[i].expected);
  }
}

/* A derived file's secret replaces the base's of the same name where it stood, as a whole. */
static void test_secrets_inherit(void) {
  g_autofree char *base_path = data_path("inherit", "base.yaml", NULL);
  g_autofree char *child_path = data_path("inherit", "child.yaml", NULL);
  g_autoptr(HutchProfile) base = load_ok(base_path);
  g_assert_cmpuint(base->secrets->len, ==, 3);
  assert_secret(secret_at(base, 1), "GH_TOKEN", HUTCH_SECRET_COMMAND, "gh auth token", "github.com",
                FALSE, 3600);

  g_autofree char *grandchild_path = data_path("inherit", "grandchild.yaml", NULL);
  const char *const paths[] = {child_path, grandchild_path};
  for (guint i = 0; i < G_N_ELEMENTS(paths); i++) {
    g_autoptr(HutchProfile) p = load_ok(paths[i]);
    g_assert_cmpuint(p->secrets->len, ==, 4);
    assert_secret(secret_at(p, 0), "ANTHROPIC_API_KEY", HUTCH_SECRET_ENV, "ANTHROPIC_API_KEY",
                  "api.anthropic.com", FALSE, 0);
    /* the child's, ttl not kept from the base's */
    assert_secret(secret_at(p, 1), "GH_TOKEN", HUTCH_SECRET_ENV, "GITHUB_TOKEN",
                  "github.com api.github.com", TRUE, 0);
    assert_secret(secret_at(p, 2), "NPM_TOKEN", HUTCH_SECRET_FILE, "~/.npmrc-token",
                  "registry.npmjs.org", FALSE, 0);
    assert_secret(secret_at(p, 3), "EXTRA", HUTCH_SECRET_FILE, "/etc/extra-key",
                  "extra.example.com:8443", FALSE, 0);
    g_autofree char *replaced = g_strdup_printf("%s:21", child_path);
    g_assert_cmpstr(g_hash_table_lookup(p->origins, "secrets:GH_TOKEN"), ==, replaced);
    g_autofree char *kept = g_strdup_printf("%s:31", base_path);
    g_assert_cmpstr(g_hash_table_lookup(p->origins, "secrets:NPM_TOKEN"), ==, kept);
  }
}

/* The writer: nothing without secrets; every source written so that it reads back the same. */
static void test_secrets_yaml(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) empty = load_text("cpus: 1\n");
  g_autofree char *none = hutch_profile_to_yaml(empty, &error);
  g_assert_no_error(error);
  g_assert_null(strstr(none, "secrets"));

  g_autoptr(HutchProfile) p = load_text("secrets:\n"
                                        "  - {name: A, from: env, hosts: [a.example]}\n"
                                        "  - {name: B, from: \"env:HOST_B\", hosts: [b.example]}\n"
                                        "  - {name: C, command: \"true\", hosts: [c.example]}\n"
                                        "  - {name: D, from: \"command:x 'y z'\", hosts: "
                                        "[\"D.example:8443\"], ttl: 2m}\n"
                                        "  - {name: E, file: \"~/e: key\", hosts: [e.example], "
                                        "optional: true}\n");
  g_autofree char *yaml = hutch_profile_to_yaml(p, &error);
  g_assert_no_error(error);
  g_assert_nonnull(strstr(yaml, "secrets:\n"
                                "- name: A\n"
                                "  from: env\n"
                                "  hosts: [a.example]\n"
                                "  optional: false\n"
                                "- name: B\n"
                                "  from: env:HOST_B\n"));
  g_assert_nonnull(strstr(yaml, "  ttl: 120\n"));
  g_autoptr(HutchProfile) again = hutch_profile_load_data(yaml, strlen(yaml), p->path, &error);
  if (error)
    g_error("%s\n%s", error->message, yaml);
  assert_profiles_equal(p, again);
  g_autofree char *yaml_again = hutch_profile_to_yaml(again, &error);
  g_assert_cmpstr(yaml, ==, yaml_again);
}

/* ---- Shipped profiles ------------------------------------------------------------------- */

static void test_shipped(void) {
  g_autofree char *dir_path = g_build_filename(g_getenv("HUTCH_SOURCE_DIR"), "profiles", NULL);
  g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
  g_assert_nonnull(dir);
  const char *entry;
  guint count = 0;
  while ((entry = g_dir_read_name(dir))) {
    if (!g_str_has_suffix(entry, ".yaml"))
      continue;
    g_autofree char *path = g_build_filename(dir_path, entry, NULL);
    g_autoptr(HutchProfile) p = load_ok(path);
    g_assert_cmpint(p->image.kind, !=, HUTCH_IMAGE_NONE);
    g_assert_nonnull(p->description);
    count++;
  }
  g_assert_cmpuint(count, >=, 4);

  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) d = hutch_profile_load("default", &error);
  g_assert_no_error(error);
  g_assert_cmpstr(d->base, ==, "debian-12");
  g_assert_cmpuint(d->cpus, ==, 2);
  g_assert_cmpuint(d->memory, ==, 4ULL << 30);
  g_assert_cmpuint(d->disk, ==, 40ULL << 30);
  g_assert_cmpuint(d->shares->len, ==, 1);
  g_assert_cmpstr(share_at(d, 0)->host, ==, "~/VM-Shared");
  g_assert_cmpstr(share_at(d, 0)->guest, ==, "~/Shared");
  g_assert_true(share_at(d, 0)->writable);
  g_assert_true(share_at(d, 0)->create);
  const HutchPort *port = g_ptr_array_index(d->ports, 0);
  g_assert_cmpuint(port->host_start, ==, 8000);
  g_assert_cmpuint(port->guest_end, ==, 9000);
  g_assert_cmpstr(port->host_ip, ==, "127.0.0.1");
  g_assert_cmpstr(step_at(d, 1)->name, ==, "tools");
  g_assert_true(g_strv_contains((const char *const *)step_at(d, 1)->packages, "git"));

  /* Debian's cloud image, or where it cannot be downloaded the test guest's recipe (one
   * cache entry for both: tests/image/test-guest.yaml). */
  g_assert_cmpint(d->image.kind, ==, HUTCH_IMAGE_URL);
  g_assert_true(g_str_has_suffix(d->image.checksums, "/latest/SHA512SUMS"));
  g_assert_nonnull(d->image.fallback);
  g_autofree char *guest_path =
      g_build_filename(g_getenv("HUTCH_SOURCE_DIR"), "tests", "image", "test-guest.yaml", NULL);
  g_autoptr(HutchProfile) guest = load_ok(guest_path);
  assert_images_equal(d->image.fallback, &guest->image);

  g_autoptr(HutchProfile) m = hutch_profile_load("minimal", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(m->shares->len + m->ports->len + m->provision->len, ==, 0);
  g_assert_nonnull(m->image.checksums);
  g_assert_nonnull(m->image.fallback);

  g_autoptr(HutchProfile) u = hutch_profile_load("ubuntu-24.04", &error);
  g_assert_no_error(error);
  g_assert_true(g_str_has_suffix(u->image.checksums, "/SHA256SUMS"));

  /* network: default public, minimal none, ai-dev an allowlist; the images' profiles leave
   * it to the default */
  g_assert_cmpint(d->egress, ==, HUTCH_EGRESS_PUBLIC);
  g_assert_cmpint(m->egress, ==, HUTCH_EGRESS_NONE);
  g_assert_cmpint(u->egress, ==, HUTCH_EGRESS_UNSET);
  g_autoptr(HutchProfile) debian = hutch_profile_load("debian-12", &error);
  g_assert_no_error(error);
  g_assert_cmpint(debian->egress, ==, HUTCH_EGRESS_UNSET);
  g_assert_cmpuint(debian->egress_allow->len + debian->egress_deny->len, ==, 0);
  g_assert_cmpint(guest->egress, ==, HUTCH_EGRESS_UNSET);
  g_autoptr(HutchProfile) ai = hutch_profile_load("ai-dev", &error);
  g_assert_no_error(error);
  g_assert_cmpint(ai->egress, ==, HUTCH_EGRESS_ALLOWLIST);
  /* what its provisioning downloads from (apt, go.sh, node.sh, npm-cli.sh, docker.sh, gh.sh)
   * and the AI tools' APIs */
  static const char *const needed[] = {
      "deb.debian.org",          "security.debian.org", "go.dev",
      "dl.google.com",           "nodejs.org",          "registry.npmjs.org",
      "*.githubusercontent.com", "cli.github.com",      "download.docker.com",
      "api.anthropic.com",       "api.openai.com",      "generativelanguage.googleapis.com",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(needed); i++)
    if (!g_ptr_array_find_with_equal_func(ai->egress_allow, needed[i], g_str_equal, NULL))
      g_error("ai-dev's allow has no %s", needed[i]);
  g_assert_cmpuint(ai->egress_deny->len, ==, 0);
  g_autoptr(HutchEgressPolicy) policy = hutch_profile_egress_policy(ai, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(policy->allow->len, ==, ai->egress_allow->len);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/profile/errors/table", test_errors);
  g_test_add_func("/profile/errors/all-fixtures-fail", test_errors_all_fail);
  g_test_add_func("/profile/errors/base-not-found", test_error_base_not_found);
  g_test_add_func("/profile/errors/cycle", test_error_cycle);
  g_test_add_func("/profile/errors/depth", test_error_depth);
  g_test_add_func("/profile/errors/missing-script", test_error_missing_script);
  g_test_add_func("/profile/errors/bad-utf8", test_error_syntax_data);
  g_test_add_func("/profile/errors/not-found", test_error_not_found);
  g_test_add_func("/profile/defaults", test_defaults);
  g_test_add_func("/profile/values", test_values);
  g_test_add_func("/profile/image-file-and-script", test_image_file_and_script);
  g_test_add_func("/profile/inherit/child", test_inherit_child);
  g_test_add_func("/profile/inherit/chain-of-three", test_inherit_chain_of_three);
  g_test_add_func("/profile/inherit/replace-image", test_inherit_replace_image);
  g_test_add_func("/profile/inherit/named-base", test_inherit_named_base);
  g_test_add_func("/profile/search-path", test_search_path);
  g_test_add_func("/profile/setters", test_setters);
  g_test_add_func("/profile/port-parse", test_port_parse);
  g_test_add_func("/profile/share-parse", test_share_parse);
  g_test_add_func("/profile/add-share-port", test_add_share_port);
  g_test_add_func("/profile/remove-share-port", test_remove_share_port);
  g_test_add_func("/profile/yaml/round-trip", test_round_trip);
  g_test_add_func("/profile/yaml/golden", test_golden);
  g_test_add_func("/profile/origins", test_origins);
  g_test_add_func("/profile/shipped", test_shipped);
  g_test_add_func("/profile/image-fallback", test_image_fallback);
  g_test_add_func("/profile/image-template", test_image_template);
  g_test_add_func("/profile/network/modes", test_network_modes);
  g_test_add_func("/profile/network/inherit", test_network_inherit);
  g_test_add_func("/profile/network/policy", test_network_policy);
  g_test_add_func("/profile/network/yaml", test_network_yaml);
  g_test_add_func("/profile/secrets/forms", test_secrets_forms);
  g_test_add_func("/profile/secrets/errors-inline", test_secrets_errors_inline);
  g_test_add_func("/profile/secrets/inherit", test_secrets_inherit);
  g_test_add_func("/profile/secrets/yaml", test_secrets_yaml);
  return g_test_run();
}
