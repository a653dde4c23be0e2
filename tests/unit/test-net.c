/* Unit tests for net.c: the passt command line and host port checks. */
#include "config.h"

#include <arpa/inet.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net-private.h"
#include "util-private.h"

static HutchPort *port(const char *ip, guint16 hs, guint16 he, guint16 gs, guint16 ge,
                       HutchProto proto) {
  HutchPort *p = g_new0(HutchPort, 1);
  p->host_ip = g_strdup(ip);
  p->host_start = hs;
  p->host_end = he;
  p->guest_start = gs;
  p->guest_end = ge;
  p->proto = proto;
  return p;
}

static void test_passt_argv_defaults(void) {
  g_auto(GStrv) argv = hutch_net_passt_argv("passt", "/run/h/dev", 2222, NULL, FALSE, FALSE);
  g_autofree char *line = g_strjoinv(" ", argv);
  g_assert_cmpstr(line, ==,
                  "passt --one-off --no-map-gw --quiet --socket /run/h/dev/passt.socket "
                  "--pid /run/h/dev/passt.pid --log-file /run/h/dev/passt.log "
                  "-t 127.0.0.1/2222:22 -u none");
}

static void test_passt_argv_ports(void) {
  g_autoptr(GPtrArray) ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  g_ptr_array_add(ports, port("127.0.0.1", 8000, 9000, 8000, 9000, HUTCH_PROTO_TCP));
  g_ptr_array_add(ports, port("127.0.0.1", 5353, 5353, 53, 53, HUTCH_PROTO_UDP));
  g_auto(GStrv) argv = hutch_net_passt_argv("/usr/bin/passt", "/r", 40000, ports, FALSE, FALSE);
  g_autofree char *line = g_strjoinv(" ", argv);
  g_assert_nonnull(strstr(line, " -t 127.0.0.1/40000:22 -t 127.0.0.1/8000-9000:8000-9000 "
                                "-u 127.0.0.1/5353:53"));
  /* with a UDP forward there is no "-u none" */
  g_assert_null(strstr(line, "-u none"));
  /* the gateway must never map to the host's loopback */
  g_assert_true(g_strv_contains((const char *const *)argv, "--no-map-gw"));
}

static void test_passt_argv_vhost_user(void) {
  g_auto(GStrv) argv = hutch_net_passt_argv("passt", "/r", 2222, NULL, FALSE, TRUE);
  g_autofree char *line = g_strjoinv(" ", argv);
  /* the same socket, now vhost-user's, and no repair socket beside it */
  g_assert_nonnull(strstr(line, " --socket /r/passt.socket "));
  g_assert_nonnull(strstr(line, " --vhost-user "));
  /* the repair socket is turned off exactly where this passt would make one */
  g_assert_true((strstr(line, " --vhost-user --repair-path none ") != NULL) ==
                hutch_net_passt_has_repair_path());
  g_assert_true(g_strv_contains((const char *const *)argv, "--one-off"));
  g_assert_true(g_strv_contains((const char *const *)argv, "--no-map-gw"));
  g_auto(GStrv) stream = hutch_net_passt_argv("passt", "/r", 2222, NULL, TRUE, FALSE);
  g_assert_false(g_strv_contains((const char *const *)stream, "--vhost-user"));
}

static void test_help_has_vhost_user(void) {
  /* passt 2025-05's usage (Debian 13) and 2023's (Debian 12, none) */
  g_assert_true(hutch_net_help_has_option(
      "  -s, --socket, --socket-path PATH\tUNIX domain socket path\n"
      "  --vhost-user\t\tEnable vhost-user mode\n"
      "  --print-capabilities\tprint back-end capabilities in JSON format,\n"
      "    only meaningful for vhost-user mode\n",
      "--vhost-user"));
  g_assert_false(hutch_net_help_has_option(
      "  -s, --socket PATH\tUNIX domain socket path\n  -1, --one-off\tQuit after handling one "
      "single client\n",
      "--vhost-user"));
  /* a mention in prose, or a longer option, is not the option */
  g_assert_false(
      hutch_net_help_has_option("only meaningful for vhost-user mode\n", "--vhost-user"));
  g_assert_false(hutch_net_help_has_option("--vhost-user-foo\n", "--vhost-user"));
  g_assert_false(hutch_net_help_has_option("x--vhost-user\n", "--vhost-user"));
  /* --repair-path came later (2025-02): asked for separately */
  const char *repair = "  --repair-path PATH\tpath for passt-repair(1)\n"
                       "    default: append '.repair' to UNIX domain path\n";
  g_assert_true(hutch_net_help_has_option(repair, "--repair-path"));
  g_assert_false(hutch_net_help_has_option(repair, "--vhost-user"));
  g_assert_false(hutch_net_help_has_option(NULL, "--vhost-user"));
}

/* HUTCH_PASST_VHOST_USER: 0 and unset take what they say, 1 only where passt has the mode,
 * anything else is refused; a passt that prints no help (true) offers nothing. */
static void test_vhost_user_override(void) {
  g_setenv("HUTCH_PASST", "true", TRUE);
  g_autoptr(GError) error = NULL;
  gboolean vhost_user = TRUE;
  g_unsetenv("HUTCH_PASST_VHOST_USER");
  g_assert_true(hutch_net_vhost_user(&vhost_user, &error));
  g_assert_no_error(error);
  g_assert_false(vhost_user);
  g_setenv("HUTCH_PASST_VHOST_USER", "0", TRUE);
  vhost_user = TRUE;
  g_assert_true(hutch_net_vhost_user(&vhost_user, &error));
  g_assert_false(vhost_user);
  g_setenv("HUTCH_PASST_VHOST_USER", "1", TRUE);
  g_assert_false(hutch_net_vhost_user(&vhost_user, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER);
  g_assert_nonnull(strstr(error->message, "has no vhost-user mode"));
  g_clear_error(&error);
  g_setenv("HUTCH_PASST_VHOST_USER", "yes", TRUE);
  g_assert_false(hutch_net_vhost_user(&vhost_user, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_unsetenv("HUTCH_PASST_VHOST_USER");
  g_unsetenv("HUTCH_PASST");
}

static void test_free_port_and_in_use(void) {
  g_autoptr(GError) error = NULL;
  guint free_port = hutch_net_free_port(&error);
  g_assert_no_error(error);
  g_assert_cmpuint(free_port, >, 0);

  /* hold a port, then ask for it */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  g_assert_cmpint(listen(fd, 1), ==, 0);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&addr, &len), ==, 0);
  guint16 taken = ntohs(addr.sin_port);

  g_autoptr(GPtrArray) ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  g_ptr_array_add(ports, port("127.0.0.1", taken, taken, 80, 80, HUTCH_PROTO_TCP));
  guint busy = 0;
  g_assert_true(hutch_net_find_busy_port(ports, &busy) == g_ptr_array_index(ports, 0));
  g_assert_cmpuint(busy, ==, taken);
  /* a range that holds it: the first port that cannot be bound is named */
  if (taken > 1) {
    g_ptr_array_add(ports, port("127.0.0.1", taken - 1, taken, 80, 81, HUTCH_PROTO_TCP));
    g_ptr_array_remove_index(ports, 0);
    busy = 0;
    g_assert_true(hutch_net_find_busy_port(ports, &busy) == g_ptr_array_index(ports, 0));
    g_assert_true(busy == taken || busy == taken - 1u);
  }
  close(fd);
  g_assert_null(hutch_net_find_busy_port(ports, &busy));
  g_assert_null(hutch_net_find_busy_port(NULL, &busy));
}

/* A port whose last connection the server closed first sits in TIME_WAIT for a minute: it is
 * free for passt (SO_REUSEADDR), so the check says so (it said "in use"). */
static void test_time_wait_is_free(void) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  g_assert_cmpint(bind(listener, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  g_assert_cmpint(listen(listener, 1), ==, 0);
  g_assert_cmpint(getsockname(listener, (struct sockaddr *)&addr, &len), ==, 0);
  guint16 port_number = ntohs(addr.sin_port);
  int client = socket(AF_INET, SOCK_STREAM, 0);
  g_assert_cmpint(connect(client, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  int served = accept(listener, NULL, NULL);
  g_assert_cmpint(served, >=, 0);
  close(listener);
  /* the server's side closes first: its end of the connection goes to TIME_WAIT */
  close(served);
  char c;
  g_assert_cmpint(read(client, &c, 1), ==, 0);
  close(client);
  /* without SO_REUSEADDR the port cannot be bound now */
  int plain = socket(AF_INET, SOCK_STREAM, 0);
  g_assert_cmpint(bind(plain, (struct sockaddr *)&addr, sizeof(addr)), <, 0);
  close(plain);
  g_autoptr(GPtrArray) ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  g_ptr_array_add(ports, port("127.0.0.1", port_number, port_number, 80, 80, HUTCH_PROTO_TCP));
  guint busy = 0;
  g_assert_null(hutch_net_find_busy_port(ports, &busy));
}

/* An IPv6 host address: passt takes it without brackets; the port check binds it as IPv6. */
static void test_ipv6_host_ip(void) {
  g_autoptr(GPtrArray) ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  g_ptr_array_add(ports, port("::1", 18080, 18080, 80, 80, HUTCH_PROTO_TCP));
  g_auto(GStrv) argv = hutch_net_passt_argv("passt", "/r", 40000, ports, FALSE, FALSE);
  g_autofree char *line = g_strjoinv(" ", argv);
  g_assert_nonnull(strstr(line, " -t ::1/18080:80 "));

  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
    if (fd >= 0)
      close(fd);
    g_test_skip("no IPv6 loopback here");
    return;
  }
  socklen_t len = sizeof(addr);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&addr, &len), ==, 0);
  guint16 taken = ntohs(addr.sin6_port);
  close(fd);

  /* free: no error (it failed as "in use" when bound as IPv4) */
  g_autoptr(GPtrArray) free_ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  g_ptr_array_add(free_ports, port("::1", taken, taken, 80, 80, HUTCH_PROTO_TCP));
  g_ptr_array_add(free_ports, port("::1", taken, taken, 53, 53, HUTCH_PROTO_UDP));
  guint busy = 0;
  g_assert_null(hutch_net_find_busy_port(free_ports, &busy));

  /* taken */
  fd = socket(AF_INET6, SOCK_STREAM, 0);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  g_assert_cmpint(listen(fd, 1), ==, 0);
  const HutchPort *held = hutch_net_find_busy_port(free_ports, &busy);
  g_assert_nonnull(held);
  g_assert_cmpuint(busy, ==, taken);
  /* the message names it as an IPv6 address */
  g_autofree char *message = hutch_port_host_to_string(held);
  g_autofree char *needle = g_strdup_printf("[::1]:%u", taken);
  g_assert_cmpstr(message, ==, needle);
  close(fd);
}

/* A child running program with argv[0] set to argv0 (sleep reads only its other arguments). */
static pid_t spawn_as(const char *program, const char *argv0) {
  const char *argv[] = {program, argv0, "30", NULL};
  GPid pid = 0;
  g_assert_true(g_spawn_async(NULL, (char **)argv, NULL,
                              G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_FILE_AND_ARGV_ZERO, NULL, NULL,
                              &pid, NULL));
  return pid;
}

static void write_pid(const char *pidfile, pid_t pid) {
  g_autofree char *text = g_strdup_printf("%d\n", (int)pid);
  g_assert_true(g_file_set_contents(pidfile, text, -1, NULL));
}

/* signalled: reaped with its signal; not: still running */
static gboolean was_terminated(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return FALSE;
  }
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM;
}

/* hutch_net_stop signals only this VM's passt: the program hutch runs as passt, with this
 * runtime directory's pidfile on its command line. Here "passt" is a copy of sleep. */
static void test_stop_only_own_passt(void) {
  g_autofree char *dir = g_dir_make_tmp("hutch-net-XXXXXX", NULL);
  g_autofree char *passt = g_build_filename(dir, "passt", NULL);
  g_autofree char *sleep_text = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents("/bin/sleep", &sleep_text, &len, NULL));
  g_assert_true(g_file_set_contents(passt, sleep_text, (gssize)len, NULL));
  g_assert_cmpint(g_chmod(passt, 0755), ==, 0);
  g_setenv("HUTCH_PASST", passt, TRUE);
  g_autofree char *runtime = g_build_filename(dir, "vm", NULL);
  g_assert_cmpint(g_mkdir(runtime, 0700), ==, 0);
  g_autofree char *pidfile = g_build_filename(runtime, HUTCH_PASST_PID, NULL);
  g_autofree char *other = g_build_filename(dir, "other-vm", HUTCH_PASST_PID, NULL);

  /* a stale pidfile naming another program (with the right argument, even) */
  pid_t sleeper = spawn_as("/bin/sleep", pidfile);
  write_pid(pidfile, sleeper);
  hutch_net_stop(runtime);
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  g_assert_false(was_terminated(sleeper));

  /* another VM's passt */
  pid_t other_vm = spawn_as(passt, other);
  write_pid(pidfile, other_vm);
  hutch_net_stop(runtime);
  g_assert_false(was_terminated(other_vm));

  /* this VM's */
  pid_t own = spawn_as(passt, pidfile);
  write_pid(pidfile, own);
  hutch_net_stop(runtime);
  g_assert_true(was_terminated(own));

  g_unsetenv("HUTCH_PASST");
  hutch_rmtree(dir, NULL);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/net/passt-argv/defaults", test_passt_argv_defaults);
  g_test_add_func("/net/passt-argv/ports", test_passt_argv_ports);
  g_test_add_func("/net/passt-argv/vhost-user", test_passt_argv_vhost_user);
  g_test_add_func("/net/passt-help/vhost-user", test_help_has_vhost_user);
  g_test_add_func("/net/vhost-user-override", test_vhost_user_override);
  g_test_add_func("/net/ports/free-and-in-use", test_free_port_and_in_use);
  g_test_add_func("/net/time-wait-is-free", test_time_wait_is_free);
  g_test_add_func("/net/ports/ipv6", test_ipv6_host_ip);
  g_test_add_func("/net/stop-only-own-passt", test_stop_only_own_passt);
  return g_test_run();
}
