/* test-logs.c: where guest text reaches the user, past the ready channel (test-ready.c):
 * `hutch logs` (streamed, sanitised unless --raw), the reasons `hutch info` reads back, and
 * the CLI's error printer. A shut-off hutch domain on libvirt's test driver, its instance
 * directory a temporary one. */
#include "config.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include "context-private.h"
#include "instance-private.h"
#include "ready-private.h"
#include "text-private.h"

typedef struct {
  char *dir; /* the instance directory */
  HutchContext *ctx;
} Fixture;

static char *domain_xml(const char *dir, gboolean with_runstate) {
  return g_strdup_printf(
      "<domain type='test'%s><name>dev</name><memory unit='MiB'>256</memory>"
      "<os><type>hvm</type></os>"
      "<metadata><hutch:instance xmlns:hutch='https://hutch.dev/xmlns/instance/1'>"
      "<hutch:profile>p</hutch:profile><hutch:ssh-port>0</hutch:ssh-port>"
      "<hutch:instance-dir>%s</hutch:instance-dir>"
      "<hutch:runtime-dir>%s/run</hutch:runtime-dir><hutch:user>u</hutch:user>"
      "</hutch:instance></metadata>%s</domain>",
      with_runstate ? " xmlns:test='http://libvirt.org/schemas/domain/test/1.0'" : "", dir, dir,
      with_runstate ? "<test:runstate>5</test:runstate>" : "");
}

static void fixture_set_up(Fixture *f, gconstpointer data) {
  g_autoptr(GError) error = NULL;
  f->dir = g_dir_make_tmp("hutch-logs-XXXXXX", &error);
  g_assert_no_error(error);
  f->ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  virConnectPtr conn = hutch_context_connect(f->ctx, &error);
  g_assert_no_error(error);
  g_autofree char *xml = domain_xml(f->dir, FALSE);
  g_autoptr(virDomain) dom = virDomainDefineXML(conn, xml);
  g_assert_nonnull(dom);
}

static void fixture_tear_down(Fixture *f, gconstpointer data) {
  virConnectPtr conn = hutch_context_connect(f->ctx, NULL);
  g_autoptr(virDomain) dom = virDomainLookupByName(conn, "dev");
  if (dom)
    virDomainUndefine(dom);
  hutch_context_free(f->ctx);
  g_assert_true(hutch_rmtree(f->dir, NULL));
  g_free(f->dir);
}

static void write_in(const Fixture *f, const char *file, const char *data, gsize len) {
  g_autofree char *path = g_build_filename(f->dir, file, NULL);
  g_assert_true(g_file_set_contents(path, data, (gssize)len, NULL));
}

/* hutch_logs into a file; returns what it wrote. */
static char *logs_of(Fixture *f, gboolean raw, gsize *ret_len) {
  g_autofree char *out_path = g_build_filename(f->dir, "out", NULL);
  int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(fd, >=, 0);
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_logs(f->ctx, "dev", fd, raw, &error));
  g_assert_no_error(error);
  close(fd);
  char *text = NULL;
  g_assert_true(g_file_get_contents(out_path, &text, ret_len, NULL));
  return text;
}

/* A console a hostile guest wrote: escape sequences, C1 controls, invalid UTF-8, and
 * multi-byte characters across every 64 KiB boundary where hutch reads it. */
static GString *hostile_console(void) {
  GString *console = g_string_new(NULL);
  static const char *const pieces[] = {"\xe6\x97\xa5\xe6\x9c\xac",
                                       "\x1b]52;c;cm0gLXJmIH4=\x07",
                                       "\x1b[2J",
                                       "\r\n",
                                       "\x9b"
                                       "31m",
                                       "\xc2\x9b"
                                       "1;1H",
                                       "\xc0\xaf",
                                       "\xf0\x9f\x98\x80",
                                       "\xe2\x80\xae",
                                       "plain text, tabs\t",
                                       "\n"};
  for (guint i = 0; console->len < 300 * 1024; i++)
    g_string_append(console, pieces[(i * 7) % G_N_ELEMENTS(pieces)]);
  g_string_append(console, "\xe6\x97"); /* cut off at the end */
  return console;
}

static void test_logs_sanitised(Fixture *f, gconstpointer data) {
  g_autoptr(GString) console = hostile_console();
  write_in(f, HUTCH_INSTANCE_CONSOLE, console->str, console->len);
  gsize len = 0;
  g_autofree char *out = logs_of(f, FALSE, &len);
  g_autofree char *header =
      g_strdup_printf("==> console (%s/%s) <==\n", f->dir, HUTCH_INSTANCE_CONSOLE);
  g_autofree char *body = hutch_text_sanitize(console->str, (gssize)console->len, HUTCH_TEXT_LINES);
  g_autofree char *want = g_strconcat(header, body, NULL);
  g_assert_cmpuint(len, ==, strlen(want));
  g_assert_true(strcmp(out, want) == 0);
  g_assert_true(g_utf8_validate(out, (gssize)len, NULL));
  g_assert_null(strchr(out, '\x1b'));
  g_assert_null(strchr(out, '\r'));
  g_assert_null(strstr(out, "\xc2\x9b"));
  g_assert_nonnull(strstr(out, "\xe6\x97\xa5\xe6\x9c\xac"));
  g_assert_true(g_str_has_suffix(out, "??"));
}

static void test_logs_raw(Fixture *f, gconstpointer data) {
  g_autoptr(GString) console = hostile_console();
  write_in(f, HUTCH_INSTANCE_CONSOLE, console->str, console->len);
  gsize len = 0;
  g_autofree char *out = logs_of(f, TRUE, &len);
  g_autofree char *header =
      g_strdup_printf("==> console (%s/%s) <==\n", f->dir, HUTCH_INSTANCE_CONSOLE);
  g_assert_cmpuint(len, ==, strlen(header) + console->len);
  g_assert_true(memcmp(out, header, strlen(header)) == 0);
  g_assert_true(memcmp(out + strlen(header), console->str, console->len) == 0);
}

static void test_logs_no_console(Fixture *f, gconstpointer data) {
  g_autofree char *out = logs_of(f, FALSE, NULL);
  g_autofree char *want = g_strdup_printf("==> console (%s/%s) <==\n(no console output yet)\n",
                                          f->dir, HUTCH_INSTANCE_CONSOLE);
  g_assert_cmpstr(out, ==, want);
}

/* A write that fails is an error, not a silent end. */
static void test_logs_write_error(Fixture *f, gconstpointer data) {
  write_in(f, HUTCH_INSTANCE_CONSOLE, "x\n", 2);
  g_autofree char *path = g_build_filename(f->dir, "read-only", NULL);
  g_assert_true(g_file_set_contents(path, "", 0, NULL));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  g_autoptr(GError) error = NULL;
  g_assert_false(hutch_logs(f->ctx, "dev", fd, FALSE, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_FAILED);
  g_assert_true(g_str_has_prefix(error->message, "writing the logs: "));
  close(fd);
}

/* The optional-failed file as an older hutch kept it (the guest's bytes as they came) is
 * sanitised when read back, and what `info` reads of it is bounded. */
static void test_info_reasons(Fixture *f, gconstpointer data) {
  g_autoptr(GString) text = g_string_new("2 go 1 \x1b]0;pwned\x07 go.dev \x9b"
                                         "2J unreachable\n"
                                         "3 gh 100 E: \xc2\x9b"
                                         "31m no\n");
  for (guint i = 4; i < 200; i++)
    g_string_append_printf(text, "%u s%u 1 r\n", i, i);
  g_string_append(text, "MORE 5\n");
  write_in(f, HUTCH_INSTANCE_OPTIONAL_FAILED, text->str, text->len);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) info = hutch_instance_info(f->ctx, "dev", &error);
  g_assert_no_error(error);
  JsonArray *failed = json_object_get_array_member(info, "optional_failed");
  g_assert_cmpuint(json_array_get_length(failed), ==, HUTCH_READY_FAILED_MAX);
  JsonObject *go = json_array_get_object_element(failed, 0);
  g_assert_cmpint(json_object_get_int_member(go, "index"), ==, 2);
  g_assert_cmpstr(json_object_get_string_member(go, "name"), ==, "go");
  g_assert_cmpstr(json_object_get_string_member(go, "reason"), ==,
                  "?]0;pwned? go.dev ?2J unreachable");
  JsonObject *gh = json_array_get_object_element(failed, 1);
  g_assert_cmpstr(json_object_get_string_member(gh, "reason"), ==, "E: ?31m no");
  /* 198 steps, 64 listed, and the 5 the file counted */
  g_assert_cmpint(json_object_get_int_member(info, "optional_failed_more"), ==,
                  198 - HUTCH_READY_FAILED_MAX + 5);
}

static void test_info_no_more(Fixture *f, gconstpointer data) {
  write_in(f, HUTCH_INSTANCE_OPTIONAL_FAILED, "2 go 1 r\n", 9);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) info = hutch_instance_info(f->ctx, "dev", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(info, "optional_failed")), ==,
                   1);
  g_assert_false(json_object_has_member(info, "optional_failed_more"));
}

/* The units that failed in the console's last boot, for `start`'s errors: only that boot's,
 * sanitised, at most max. */
static void test_console_failures(Fixture *f, gconstpointer data) {
  g_autofree char *path = g_build_filename(f->dir, HUTCH_INSTANCE_CONSOLE, NULL);
  g_assert_null(hutch_console_failures(path, 5));
  const char *console =
      "[    0.000000] Linux version 6.1.0 (first boot)\r\n"
      "[\x1b[0;1;31mFAILED\x1b[0m] Failed to start old.service - of an earlier boot.\r\n"
      "[    0.000000] Linux version 6.1.0 (this boot)\r\n"
      "[\x1b[0;32m  OK  \x1b[0m] Started a.service.\r\n"
      "[\x1b[0;1;31mFAILED\x1b[0m] Failed to start ssh.service - OpenBSD Secure Shell server.\r\n"
      "See 'systemctl status ssh.service' for details.\r\n"
      "[\x1b[0;1;31mFAILED\x1b[0m] Failed to start ssh.service - OpenBSD Secure Shell server.\r\n"
      "[\x1b[0;1;31mFAILED\x1b[0m] Failed to start \x1b[0;1;39mb.service\x1b[0m.\r\n"
      "[\x1b[0;1;31mFAILED\x1b[0m] Failed to start c.service \x1b]0;title\x07.\r\n"
      "login:\r\n";
  write_in(f, HUTCH_INSTANCE_CONSOLE, console, strlen(console));
  g_autofree char *failures = hutch_console_failures(path, 2);
  /* colours dropped, the repeated line once, other escapes as the sanitiser leaves them */
  g_assert_cmpstr(failures, ==,
                  "\n[FAILED] Failed to start ssh.service - OpenBSD Secure Shell "
                  "server.\n[FAILED] Failed to start b.service.");
  g_autofree char *three = hutch_console_failures(path, 3);
  g_assert_true(g_str_has_suffix(three, "\n[FAILED] Failed to start c.service ?]0;title?."));
  const char *clean = "[    0.000000] Linux version 6.1.0\r\nlogin:\r\n";
  write_in(f, HUTCH_INSTANCE_CONSOLE, clean, strlen(clean));
  g_assert_null(hutch_console_failures(path, 5));
}

/* The console's last lines in `start`'s errors: sanitised, from the file's end only, each
 * line bounded. */
static void test_console_tail(Fixture *f, gconstpointer data) {
  g_autofree char *path = g_build_filename(f->dir, HUTCH_INSTANCE_CONSOLE, NULL);
  g_autofree char *missing = hutch_console_tail(path, 3);
  g_assert_cmpstr(missing, ==, "(no console log)");

  g_autoptr(GString) console = g_string_new(NULL);
  for (guint i = 0; i < 100000; i++)
    g_string_append_printf(console, "early line %u\r\n", i);
  g_string_append(console, "\x1b]0;title\x07 login: \x9b"
                           "2J\r\n");
  for (guint i = 0; i < 5000; i++)
    g_string_append(console, "\xe6\x97\xa5"); /* a 15000-byte line */
  g_string_append(console, "\r\nlast\t\xc2\x9b"
                           "H\r\n\r\n");
  write_in(f, HUTCH_INSTANCE_CONSOLE, console->str, console->len);
  g_autofree char *tail = hutch_console_tail(path, 3);
  g_auto(GStrv) lines = g_strsplit(tail, "\n", -1);
  g_assert_cmpuint(g_strv_length(lines), ==, 4);
  g_assert_cmpstr(lines[0], ==, "");
  g_assert_cmpstr(lines[1], ==, "?]0;title? login: ?2J");
  /* cut at a character boundary: 341 characters of 3 bytes */
  g_assert_cmpuint(strlen(lines[2]), ==, 1023);
  g_assert_true(g_utf8_validate(lines[2], -1, NULL));
  g_assert_cmpstr(lines[3], ==, "last\t?H");
}

/* ---- the hutch command ---------------------------------------------------------------- */

static char *hutch_binary(void) {
  const char *build = g_getenv("HUTCH_BUILD_DIR");
  g_assert_nonnull(build);
  return g_build_filename(build, "cmd", "hutch", NULL);
}

static int run_hutch(const char *const *args, char **ret_stdout, gsize *ret_len,
                     char **ret_stderr) {
  g_autofree char *hutch = hutch_binary();
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, hutch);
  for (guint i = 0; args[i]; i++)
    g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) out = NULL;
  g_autoptr(GBytes) err = NULL;
  g_autoptr(GSubprocess) proc =
      g_subprocess_newv((const char *const *)argv->pdata,
                        G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
  g_assert_no_error(error);
  g_assert_true(g_subprocess_communicate(proc, NULL, NULL, &out, &err, &error));
  g_assert_no_error(error);
  gsize len = 0, err_len = 0;
  const char *data = g_bytes_get_data(out, &len);
  const char *err_data = g_bytes_get_data(err, &err_len);
  if (ret_stdout)
    *ret_stdout = g_strndup(len ? data : "", len);
  if (ret_len)
    *ret_len = len;
  if (ret_stderr)
    *ret_stderr = g_strndup(err_len ? err_data : "", err_len);
  return g_subprocess_get_exit_status(proc);
}

/* The CLI prints every error through the sanitiser: here a name that carries an OSC 52
 * clipboard-set and a screen clear, in the message that quotes it. */
static void test_cli_error(void) {
  const char *const args[] = {"-c", "test:///default", "info",
                              "a\x1b]52;c;cm0gLXJmIH4=\x07\x9b"
                              "2J\xc2\x9b"
                              "H",
                              NULL};
  g_autofree char *err = NULL;
  g_assert_cmpint(run_hutch(args, NULL, NULL, &err), ==, 2);
  g_assert_cmpstr(err, ==,
                  "hutch: invalid name 'a?]52;c;cm0gLXJmIH4=??2J?H': use a lower-case letter "
                  "followed by up to 62 lower-case letters, digits or '-'\n");
}

/* `hutch logs` and `hutch logs --raw` end to end, on a test driver node file that holds a
 * shut-off hutch domain. */
static void test_cli_logs(Fixture *f, gconstpointer data) {
  g_autofree char *xml = domain_xml(f->dir, TRUE);
  g_autofree char *node = g_strdup_printf("<node>%s</node>", xml);
  g_autofree char *node_path = g_build_filename(f->dir, "node.xml", NULL);
  g_assert_true(g_file_set_contents(node_path, node, -1, NULL));
  g_autofree char *uri = g_strconcat("test://", node_path, NULL);
  static const char console[] = "boot\r\n\x1b]52;c;eA==\x07\x9b"
                                "2J\xe6\x97\xa5\n";
  write_in(f, HUTCH_INSTANCE_CONSOLE, console, sizeof(console) - 1);
  g_autofree char *header =
      g_strdup_printf("==> console (%s/%s) <==\n", f->dir, HUTCH_INSTANCE_CONSOLE);

  const char *const sanitised_args[] = {"-c", uri, "logs", "dev", NULL};
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint(run_hutch(sanitised_args, &out, NULL, &err), ==, 0);
  g_assert_cmpstr(err, ==, "");
  g_autofree char *want = g_strconcat(header, "boot\n?]52;c;eA==??2J\xe6\x97\xa5\n", NULL);
  g_assert_cmpstr(out, ==, want);

  const char *const raw_args[] = {"-c", uri, "logs", "--raw", "dev", NULL};
  g_autofree char *raw = NULL;
  gsize raw_len = 0;
  g_assert_cmpint(run_hutch(raw_args, &raw, &raw_len, NULL), ==, 0);
  g_autofree char *want_raw = g_strconcat(header, console, NULL);
  g_assert_cmpuint(raw_len, ==, strlen(want_raw));
  g_assert_cmpstr(raw, ==, want_raw);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_set_up, fn, fixture_tear_down)
  ADD("/logs/sanitised", test_logs_sanitised);
  ADD("/logs/raw", test_logs_raw);
  ADD("/logs/no-console", test_logs_no_console);
  ADD("/logs/write-error", test_logs_write_error);
  ADD("/logs/info-reasons", test_info_reasons);
  ADD("/logs/info-no-more", test_info_no_more);
  ADD("/logs/console-tail", test_console_tail);
  ADD("/logs/console-failures", test_console_failures);
  ADD("/logs/cli-logs", test_cli_logs);
#undef ADD
  g_test_add_func("/logs/cli-error", test_cli_error);
  return g_test_run();
}
