/* test-guest.c: hutch ssh-config --install: the Include line in ~/.ssh/config (a fake HOME)
 * and the generated file for the VMs of libvirt's test:///default driver. */
#include "config.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest-private.h"
#include "instance-private.h"

static char *home; /* the fake HOME, also holding the XDG directories */

static char *read_file(const char *path) {
  char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return text;
}

static char *user_config(void) {
  return g_build_filename(home, ".ssh", "config", NULL);
}

static guint mode_of(const char *path) {
  GStatBuf st;
  g_assert_cmpint(g_stat(path, &st), ==, 0);
  return st.st_mode & 07777;
}

static void reset_home(void) {
  g_autofree char *ssh = g_build_filename(home, ".ssh", NULL);
  g_autofree char *file = hutch_ssh_config_file();
  hutch_rmtree(ssh, NULL);
  g_unlink(file);
}

static void test_text(void) {
  const char *inc = "Include \"/h/.config/hutch/ssh_config\"";
  /* no file: the line alone */
  g_autofree char *empty = hutch_ssh_config_text_add(NULL, inc);
  g_assert_cmpstr(empty, ==, "Include \"/h/.config/hutch/ssh_config\"\n");
  /* above a Host * whose values would otherwise win */
  const char *agent = "# mine\nHost *\n  ForwardAgent yes\n";
  g_autofree char *added = hutch_ssh_config_text_add(agent, inc);
  g_assert_cmpstr(added, ==,
                  "Include \"/h/.config/hutch/ssh_config\"\n# mine\nHost *\n"
                  "  ForwardAgent yes\n");
  /* idempotent */
  g_assert_null(hutch_ssh_config_text_add(added, inc));
  /* a copy inside a block is conditional: it moves to the top */
  const char *below = "Host *\n  ForwardAgent yes\nInclude \"/h/.config/hutch/ssh_config\"\n";
  g_autofree char *moved = hutch_ssh_config_text_add(below, inc);
  g_assert_cmpstr(moved, ==,
                  "Include \"/h/.config/hutch/ssh_config\"\nHost *\n  ForwardAgent yes\n");
  const char *match = "User me\n  match host x\nInclude \"/h/.config/hutch/ssh_config\"\n";
  g_autofree char *moved_match = hutch_ssh_config_text_add(match, inc);
  g_assert_true(g_str_has_prefix(moved_match, "Include"));
  /* a text without a final newline keeps its last line */
  g_autofree char *no_newline = hutch_ssh_config_text_add("Port 22", inc);
  g_assert_cmpstr(no_newline, ==, "Include \"/h/.config/hutch/ssh_config\"\nPort 22\n");

  /* remove takes exactly that line */
  g_autofree char *removed = hutch_ssh_config_text_remove(added, inc);
  g_assert_cmpstr(removed, ==, agent);
  g_assert_null(hutch_ssh_config_text_remove(agent, inc));
  g_autofree char *other = hutch_ssh_config_text_remove("Include \"/elsewhere\"\n", inc);
  g_assert_null(other);

  g_assert_null(hutch_ssh_include_line("/a\"b"));
  g_autofree char *spaced = hutch_ssh_include_line("/my home/x");
  g_assert_cmpstr(spaced, ==, "Include \"/my home/x\"");
}

static void test_install_uninstall(void) {
  reset_home();
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autofree char *config = user_config();
  g_autofree char *ssh_dir = g_path_get_dirname(config);
  g_autofree char *file = hutch_ssh_config_file();
  g_autofree char *include = hutch_ssh_include_line(file);

  /* an existing config whose Host * would win over anything below it */
  g_assert_cmpint(g_mkdir_with_parents(ssh_dir, 0700), ==, 0);
  const char *mine = "Host *\n  ForwardAgent yes\n";
  g_assert_true(g_file_set_contents(config, mine, -1, NULL));
  g_autofree char *edited = NULL;
  gboolean added = FALSE;
  g_assert_true(hutch_ssh_config_install(ctx, &edited, &added, &error));
  g_assert_no_error(error);
  g_assert_true(added);
  g_assert_cmpstr(edited, ==, config);
  g_autofree char *text = read_file(config);
  g_autofree char *want = g_strdup_printf("%s\n%s", include, mine);
  g_assert_cmpstr(text, ==, want);
  g_assert_cmpuint(mode_of(config), ==, 0600);
  g_assert_cmpuint(mode_of(file), ==, 0600);
  g_autofree char *generated = read_file(file);
  g_assert_true(g_str_has_prefix(generated, "# Written by hutch"));

  /* a second install adds nothing */
  g_autofree char *again_path = NULL;
  g_assert_true(hutch_ssh_config_install(ctx, &again_path, &added, &error));
  g_assert_false(added);
  g_autofree char *again = read_file(config);
  g_assert_cmpstr(again, ==, want);

  /* uninstall takes exactly that line, and the generated file */
  gboolean removed = FALSE;
  g_autofree char *un_path = NULL;
  g_assert_true(hutch_ssh_config_uninstall(ctx, &un_path, &removed, &error));
  g_assert_no_error(error);
  g_assert_true(removed);
  g_autofree char *after = read_file(config);
  g_assert_cmpstr(after, ==, mine);
  g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
  g_autofree char *un2 = NULL;
  g_assert_true(hutch_ssh_config_uninstall(ctx, &un2, &removed, &error));
  g_assert_false(removed);
  /* with nothing installed, refresh writes nothing */
  hutch_ssh_config_refresh(ctx);
  g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
}

static void test_install_creates(void) {
  reset_home();
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autofree char *config = user_config();
  g_autofree char *ssh_dir = g_path_get_dirname(config);
  gboolean added = FALSE;
  g_assert_true(hutch_ssh_config_install(ctx, NULL, &added, &error));
  g_assert_no_error(error);
  g_assert_true(added);
  g_assert_cmpuint(mode_of(ssh_dir), ==, 0700);
  g_assert_cmpuint(mode_of(config), ==, 0600);

  /* a symlinked config (a dotfiles checkout) is edited where it points */
  g_autofree char *real = g_build_filename(home, "dotfiles-ssh-config", NULL);
  g_assert_true(g_file_set_contents(real, "Host *\n  ForwardAgent yes\n", -1, NULL));
  g_unlink(config);
  g_assert_cmpint(symlink(real, config), ==, 0);
  g_assert_true(hutch_ssh_config_install(ctx, NULL, &added, &error));
  g_assert_no_error(error);
  g_assert_true(g_file_test(config, G_FILE_TEST_IS_SYMLINK));
  g_autofree char *text = read_file(real);
  g_assert_true(g_str_has_prefix(text, "Include \""));
  g_unlink(config);
  g_unlink(real);
}

/* A hutch domain on the test driver whose instance directory has a pinned host key. */
static void define_vm(virConnectPtr conn, const char *name, const char *dir, guint port,
                      gboolean run) {
  g_autofree char *pub = g_build_filename(dir, HUTCH_INSTANCE_HOST_KEY ".pub", NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  g_assert_true(g_file_set_contents(pub, "ssh-ed25519 AAAAC3NzaFakeHostKey\n", -1, NULL));
  g_autofree char *xml = g_strdup_printf(
      "<domain type='test'><name>%s</name><memory unit='MiB'>256</memory>"
      "<os><type>hvm</type></os>"
      "<metadata><hutch:instance xmlns:hutch='https://hutch.dev/xmlns/instance/1'>"
      "<hutch:profile>p</hutch:profile><hutch:ssh-port>%u</hutch:ssh-port>"
      "<hutch:instance-dir>%s</hutch:instance-dir>"
      "<hutch:runtime-dir>/nonexistent/r</hutch:runtime-dir><hutch:user>dev</hutch:user>"
      "</hutch:instance></metadata></domain>",
      name, port, dir);
  g_autoptr(virDomain) domain = virDomainDefineXML(conn, xml);
  g_assert_nonnull(domain);
  if (run)
    g_assert_cmpint(virDomainCreate(domain), ==, 0);
}

static void undefine(virConnectPtr conn, const char *name) {
  g_autoptr(virDomain) domain = virDomainLookupByName(conn, name);
  g_assert_nonnull(domain);
  g_assert_cmpint(virDomainUndefine(domain), ==, 0);
}

static gpointer refresh_thread(gpointer ctx) {
  hutch_ssh_config_refresh(ctx);
  return NULL;
}

/* text with its first from replaced by to (which must be there) */
static char *replace_once(const char *text, const char *from, const char *to) {
  const char *at = strstr(text, from);
  g_assert_nonnull(at);
  return g_strdup_printf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
}

static void test_generated(void) {
  reset_home();
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  g_assert_no_error(error);
  g_autofree char *dir_a = g_build_filename(home, "vms", "alpha", NULL);
  g_autofree char *dir_b = g_build_filename(home, "vms", "beta", NULL);
  define_vm(conn, "alpha", dir_a, 2222, TRUE);
  define_vm(conn, "beta", dir_b, 0, FALSE);

  g_assert_true(hutch_ssh_config_install(ctx, NULL, NULL, &error));
  g_assert_no_error(error);
  g_autofree char *file = hutch_ssh_config_file();
  g_autofree char *text = read_file(file);
  /* what VS Code Remote-SSH needs, for the running VM */
  g_autofree char *known = g_build_filename(dir_a, HUTCH_INSTANCE_KNOWN_HOSTS, NULL);
  const char *want[] = {"Host alpha\n",
                        "  HostName 127.0.0.1\n",
                        "  Port 2222\n",
                        "  User dev\n",
                        "  IdentityFile \"",
                        "  StrictHostKeyChecking yes\n",
                        "  ForwardAgent no\n",
                        "# beta: stopped (hutch start beta adds it)\n",
                        NULL};
  for (guint i = 0; want[i]; i++)
    if (!strstr(text, want[i]))
      g_error("%s lacks '%s':\n%s", file, want[i], text);
  g_autofree char *known_line = g_strdup_printf("  UserKnownHostsFile \"%s\"\n", known);
  g_assert_nonnull(strstr(text, known_line));
  g_assert_null(strstr(text, "Host beta"));
  g_autofree char *pinned = read_file(known);
  g_assert_cmpstr(pinned, ==, "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaFakeHostKey\n");

  /* stop rewrites it (through the lifecycle's hook; delete's undefine flags are more than
   * the test driver takes, so a delete is an undefine and the refresh delete calls) */
  g_assert_true(hutch_instance_stop(ctx, "alpha", TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *stopped = read_file(file);
  g_assert_null(strstr(stopped, "Host alpha"));
  g_assert_nonnull(strstr(stopped, "# alpha: stopped"));
  undefine(conn, "beta");
  hutch_ssh_config_refresh(ctx);
  g_autofree char *deleted = read_file(file);
  g_assert_null(strstr(deleted, "beta"));

  /* the file holds a section for each daemon: a refresh on this one (the test driver stands
   * for the session) keeps the system daemon's as it was */
  const char *system_section = "# == VMs of qemu:///system\n\nHost sysvm\n  Port 3333\n";
  g_autofree char *with_system = g_strconcat(deleted, "\n", system_section, NULL);
  g_assert_true(g_file_set_contents(file, with_system, -1, NULL));
  hutch_ssh_config_refresh(ctx);
  g_autofree char *kept = read_file(file);
  g_assert_nonnull(strstr(kept, system_section));
  g_assert_nonnull(strstr(kept, "# == VMs of qemu:///session\n"));
  g_assert_nonnull(strstr(kept, "# alpha: stopped"));
  /* once, however often it is refreshed */
  hutch_ssh_config_refresh(ctx);
  g_autofree char *twice = read_file(file);
  g_assert_cmpstr(twice, ==, kept);

  /* the other daemon's refresh holds the file (its lock: the directory's) and writes a new
   * section meanwhile: this refresh (of a new VM, gamma) waits for it, and keeps what it
   * wrote. Without the lock, this one would have read the file first and been overwritten
   * (gamma lost), or written last (the old system section back). */
  g_autofree char *dir_g = g_build_filename(home, "vms", "gamma", NULL);
  define_vm(conn, "gamma", dir_g, 0, FALSE);
  g_autofree char *config_dir = g_path_get_dirname(file);
  int lock_fd = open(config_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(flock(lock_fd, LOCK_EX), ==, 0);
  GThread *refresh = g_thread_new("refresh", refresh_thread, ctx);
  g_usleep(300 * 1000); /* (without the lock, the refresh has read the file by now) */
  const char *newer_section = "# == VMs of qemu:///system\n\nHost sysvm\n  Port 4444\n";
  g_autofree char *replaced = replace_once(kept, "  Port 3333\n", "  Port 4444\n");
  g_assert_true(g_file_set_contents(file, replaced, -1, NULL));
  close(lock_fd);
  g_thread_join(refresh);
  g_autofree char *after = read_file(file);
  g_assert_nonnull(strstr(after, newer_section));
  g_assert_null(strstr(after, "Port 3333"));
  g_assert_nonnull(strstr(after, "# gamma: stopped"));
  undefine(conn, "gamma");

  undefine(conn, "alpha");
  g_assert_true(hutch_ssh_config_uninstall(ctx, NULL, NULL, &error));
  g_assert_no_error(error);
}

/* Each daemon's refresh keeps the other's section; an older hutch's file (no headers) held
 * the session's blocks, which a first refresh by the system daemon keeps. */
static void test_sections(void) {
  const char *both = "# Written by hutch (hutch ssh-config --install): rewritten when a VM\n"
                     "# is created, started, stopped or deleted. Edits are lost.\n\n"
                     "# == VMs of qemu:///session\n\nHost a\n  Port 1\n\n"
                     "# == VMs of qemu:///system\n\nHost b\n  Port 2\n\n\n";
  g_autofree char *for_session = hutch_ssh_config_other_sections(both, "qemu:///session");
  g_assert_cmpstr(for_session, ==, "# == VMs of qemu:///system\n\nHost b\n  Port 2\n");
  g_autofree char *for_system = hutch_ssh_config_other_sections(both, "qemu:///system");
  g_assert_cmpstr(for_system, ==, "# == VMs of qemu:///session\n\nHost a\n  Port 1\n");
  const char *old = "# Written by hutch (hutch ssh-config --install): rewritten when a VM\n"
                    "# is created, started, stopped or deleted. Edits are lost.\n\n"
                    "Host a\n  Port 1\n\n# c: stopped (hutch start c adds it)\n";
  g_autofree char *old_system = hutch_ssh_config_other_sections(old, "qemu:///system");
  g_assert_cmpstr(old_system, ==,
                  "# == VMs of qemu:///session\n\nHost a\n  Port 1\n\n"
                  "# c: stopped (hutch start c adds it)\n");
  g_autofree char *old_session = hutch_ssh_config_other_sections(old, "qemu:///session");
  g_assert_cmpstr(old_session, ==, "");
  g_autofree char *none = hutch_ssh_config_other_sections(NULL, "qemu:///system");
  g_assert_cmpstr(none, ==, "");
}

int main(int argc, char **argv) {
  /* before GLib reads and caches them */
  home = g_dir_make_tmp("hutch-test-guest-XXXXXX", NULL);
  g_assert_nonnull(home);
  g_setenv("HOME", home, TRUE);
  g_autofree char *config = g_build_filename(home, "xdg-config", NULL);
  g_autofree char *data = g_build_filename(home, "xdg-data", NULL);
  g_autofree char *runtime = g_build_filename(home, "xdg-runtime", NULL);
  g_setenv("XDG_CONFIG_HOME", config, TRUE);
  g_setenv("XDG_DATA_HOME", data, TRUE);
  g_setenv("XDG_RUNTIME_DIR", runtime, TRUE);
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  g_test_add_func("/guest/ssh-config/text", test_text);
  g_test_add_func("/guest/ssh-config/sections", test_sections);
  g_test_add_func("/guest/ssh-config/install-uninstall", test_install_uninstall);
  g_test_add_func("/guest/ssh-config/install-creates", test_install_creates);
  g_test_add_func("/guest/ssh-config/generated", test_generated);
  int status = g_test_run();
  hutch_rmtree(home, NULL);
  g_free(home);
  return status;
}
