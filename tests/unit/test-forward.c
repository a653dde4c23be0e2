/* test-forward.c: `hutch forward`'s spec parsing, and its relay against a real, unprivileged
 * OpenSSH sshd on 127.0.0.1 (sshd-fixture.h) that forwards direct-tcpip channels to an
 * echo server the test runs. Without sshd the relay tests fail, unless HUTCH_ALLOW_SKIP=1. */
#define _GNU_SOURCE /* accept4 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>

#include "echo-fixture.h"
#include "forward-private.h"
#include "sshd-fixture.h"
#include "util-private.h"

#define TIMEOUT_MS 10000

static SshdFixture fx;

/* ---- A relay in a thread -------------------------------------------------------------- */

typedef struct {
  HutchSsh *ssh;
  int listen_fd;
  guint guest_port;
  int stop_r;
  int log_fd; /* > 0: the relay's log goes there */
  gboolean ok;
  GError *error;
} RelayRun;

static gpointer relay_thread(gpointer data) {
  RelayRun *run = data;
  int log_fd = run->log_fd > 0 ? run->log_fd : g_test_verbose() ? STDERR_FILENO : -1;
  run->ok = hutch_forward_relay(run->ssh, run->listen_fd, run->guest_port, run->stop_r, log_fd,
                                &run->error);
  return NULL;
}

static HutchSsh *connect_ssh(guint port) {
  g_autoptr(GError) error = NULL;
  HutchSsh *ssh = hutch_ssh_connect("127.0.0.1", port, g_get_user_name(), fx.key, fx.host_key,
                                    TIMEOUT_MS, &error);
  g_assert_no_error(error);
  return ssh;
}

/* ---- Tests ---------------------------------------------------------------------------- */

static void test_parse(void) {
  static const struct {
    const char *spec;
    const char *ip;
    guint host, guest;
  } good[] = {
      {"8080:80", "127.0.0.1", 8080, 80},
      {"0.0.0.0:8080:80", "0.0.0.0", 8080, 80},
      {"127.0.0.2:9000:9000/tcp", "127.0.0.2", 9000, 9000},
      {"[::1]:8443:443", "::1", 8443, 443},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
    g_autoptr(GError) error = NULL;
    HutchPort *port = hutch_forward_parse(good[i].spec, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(port->host_ip, ==, good[i].ip);
    g_assert_cmpuint(port->host_start, ==, good[i].host);
    g_assert_cmpuint(port->host_end, ==, good[i].host);
    g_assert_cmpuint(port->guest_start, ==, good[i].guest);
    hutch_port_free(port);
  }
  static const struct {
    const char *spec;
    const char *why;
  } bad[] = {
      {"8080", "HOST:GUEST"},
      {"[::1]:8080", "HOST:GUEST"},
      {"8080:80/udp", "only TCP"},
      {"8080-8081:80-81", "one port"},
      {"x:80", "invalid port forward"},
      {"70000:80", "invalid port forward"},
      {"8080:0", "invalid port forward"},
      {"1.2.3:8080:80", "invalid port forward"},
      {"", "invalid port forward"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) error = NULL;
    HutchPort *port = hutch_forward_parse(bad[i].spec, &error);
    g_assert_null(port);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    if (!strstr(error->message, bad[i].why))
      g_test_fail_printf("'%s': \"%s\" does not say \"%s\"", bad[i].spec, error->message,
                         bad[i].why);
  }
}

/* Several connections at once, each a few MiB both ways, byte-exact. */
static void test_relay_concurrent(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  int stop[2], server_stop[2];
  g_assert_true(g_unix_open_pipe(stop, FD_CLOEXEC, NULL));
  g_assert_true(g_unix_open_pipe(server_stop, FD_CLOEXEC, NULL));
  Server server = {.stop_r = server_stop[0]};
  guint guest_port = 0, host_port = 0;
  server.listen_fd = listen_loopback(&guest_port);
  GThread *server_thread = g_thread_new("server", echo_server, &server);

  RelayRun run = {.ssh = connect_ssh(fx.port), .guest_port = guest_port, .stop_r = stop[0]};
  run.listen_fd = listen_loopback(&host_port);
  GThread *relay = g_thread_new("relay", relay_thread, &run);

  /* one small, then five at once (3 MiB each: beyond any window and buffer) */
  Client first = {.port = host_port, .len = 10, .seed = 1};
  client_thread(&first);
  g_assert_true(first.ok);
  Client clients[5];
  GThread *threads[5];
  for (guint i = 0; i < 5; i++) {
    clients[i] = (Client){.port = host_port, .len = 3 * 1024 * 1024 + i * 7, .seed = 10 + i};
    threads[i] = g_thread_new("client", client_thread, &clients[i]);
  }
  for (guint i = 0; i < 5; i++) {
    g_thread_join(threads[i]);
    g_assert_true(clients[i].ok);
  }
  /* and the relay is still there for another */
  Client last = {.port = host_port, .len = 100000, .seed = 99};
  client_thread(&last);
  g_assert_true(last.ok);

  g_assert_cmpint(write(stop[1], "x", 1), ==, 1);
  g_thread_join(relay);
  g_assert_no_error(run.error);
  g_assert_true(run.ok);

  g_assert_cmpint(write(server_stop[1], "x", 1), ==, 1);
  g_thread_join(server_thread);
  hutch_ssh_free(run.ssh);
  close(run.listen_fd);
  close(server.listen_fd);
  for (int i = 0; i < 2; i++) {
    close(stop[i]);
    close(server_stop[i]);
  }
}

/* Nothing listens on the guest port: the client's connection closes, the relay carries on. */
static void test_relay_refused(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  guint dead_port = 0, host_port = 0;
  int dead = listen_loopback(&dead_port);
  close(dead);
  int stop[2];
  g_assert_true(g_unix_open_pipe(stop, FD_CLOEXEC, NULL));
  RelayRun run = {.ssh = connect_ssh(fx.port), .guest_port = dead_port, .stop_r = stop[0]};
  run.listen_fd = listen_loopback(&host_port);
  GThread *relay = g_thread_new("relay", relay_thread, &run);
  for (int i = 0; i < 3; i++) {
    GByteArray *back = exchange(host_port, (const guint8 *)"hello", 5);
    g_assert_cmpuint(back->len, ==, 0);
    g_byte_array_unref(back);
  }
  g_assert_cmpint(write(stop[1], "x", 1), ==, 1);
  g_thread_join(relay);
  g_assert_no_error(run.error);
  g_assert_true(run.ok);
  hutch_ssh_free(run.ssh);
  close(run.listen_fd);
  close(stop[0]);
  close(stop[1]);
}

static double cpu_seconds(void) {
  struct rusage usage;
  g_assert_cmpint(getrusage(RUSAGE_SELF, &usage), ==, 0);
  return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

/* A client that resets its connection while the relay reads nothing from it (its upload
 * buffer full: the guest port never accepts, its backlog taken): the connection ends, and the
 * relay does not spin on the POLLHUP poll keeps reporting (it did, at 100% CPU, for ever). */
static void test_relay_client_reset(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  /* a guest port whose one backlog place is taken: sshd's connection to it never completes */
  guint stalled_port = 0, host_port = 0;
  int stalled = listen_loopback(&stalled_port);
  g_assert_cmpint(listen(stalled, 0), ==, 0);
  int filler = connect_loopback(stalled_port);
  int stop[2], log[2];
  g_assert_true(g_unix_open_pipe(stop, FD_CLOEXEC, NULL));
  g_assert_true(g_unix_open_pipe(log, FD_CLOEXEC, NULL));
  g_assert_true(g_unix_set_fd_nonblocking(log[0], TRUE, NULL));
  RelayRun run = {
      .ssh = connect_ssh(fx.port), .guest_port = stalled_port, .stop_r = stop[0], .log_fd = log[1]};
  run.listen_fd = listen_loopback(&host_port);
  GThread *relay = g_thread_new("relay", relay_thread, &run);

  /* more than the relay's 64 KiB upload buffer holds, then a reset */
  int client = connect_loopback(host_port);
  g_autofree char *data = g_malloc0(100000);
  g_assert_true(write_all(client, data, 100000));
  g_usleep(300 * 1000);
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  g_assert_cmpint(setsockopt(client, SOL_SOCKET, SO_LINGER, &reset, sizeof reset), ==, 0);
  close(client);
  g_usleep(200 * 1000);

  double before = cpu_seconds();
  g_usleep(2 * G_USEC_PER_SEC);
  double used = cpu_seconds() - before;
  g_test_message("CPU in 2 s after the reset: %.3f s", used);
  g_assert_cmpfloat(used, <, 0.5);

  g_assert_cmpint(write(stop[1], "x", 1), ==, 1);
  g_thread_join(relay);
  g_assert_no_error(run.error);
  g_assert_true(run.ok);
  char text[4096];
  ssize_t len = read(log[0], text, sizeof text - 1);
  g_assert_cmpint(len, >, 0);
  text[len] = '\0';
  g_test_message("%s", text);
  g_assert_nonnull(strstr(text, "connection 1 from 127.0.0.1:"));
  g_assert_nonnull(strstr(text, "closed (Connection reset by peer;"));
  hutch_ssh_free(run.ssh);
  close(run.listen_fd);
  close(filler);
  close(stalled);
  for (int i = 0; i < 2; i++) {
    close(stop[i]);
    close(log[i]);
  }
}

/* The helper's log (never truncated while it runs) takes the first 100 connection lines of
 * a run, then one line saying the rest are not logged: a local user connecting in a loop
 * does not grow it without end. */
static void test_relay_log_bounded(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  guint dead_port = 0, host_port = 0;
  close(listen_loopback(&dead_port));
  int stop[2], log[2];
  g_assert_true(g_unix_open_pipe(stop, FD_CLOEXEC, NULL));
  g_assert_true(g_unix_open_pipe(log, FD_CLOEXEC, NULL));
  g_assert_true(g_unix_set_fd_nonblocking(log[0], TRUE, NULL));
  RelayRun run = {
      .ssh = connect_ssh(fx.port), .guest_port = dead_port, .stop_r = stop[0], .log_fd = log[1]};
  run.listen_fd = listen_loopback(&host_port);
  GThread *relay = g_thread_new("relay", relay_thread, &run);
  for (int i = 0; i < 120; i++) {
    int client = connect_loopback(host_port);
    char byte;
    /* until the relay closes it (the guest refused the channel) */
    g_assert_cmpint(recv(client, &byte, 1, 0), ==, 0);
    close(client);
  }
  g_assert_cmpint(write(stop[1], "x", 1), ==, 1);
  g_thread_join(relay);
  g_assert_no_error(run.error);
  g_autoptr(GString) text = g_string_new(NULL);
  char chunk[4096];
  ssize_t n;
  while ((n = read(log[0], chunk, sizeof chunk)) > 0)
    g_string_append_len(text, chunk, n);
  g_auto(GStrv) lines = g_strsplit(text->str, "\n", -1);
  guint connection_lines = 0, notes = 0;
  for (guint i = 0; lines[i]; i++) {
    if (strstr(lines[i], " connection ") && strstr(lines[i], " closed ("))
      connection_lines++;
    if (strstr(lines[i], "further connection lines not logged (100 logged)"))
      notes++;
  }
  g_assert_cmpuint(connection_lines, ==, 100);
  g_assert_cmpuint(notes, ==, 1);
  g_assert_nonnull(strstr(text->str, "stopping"));
  hutch_ssh_free(run.ssh);
  close(run.listen_fd);
  for (int i = 0; i < 2; i++) {
    close(stop[i]);
    close(log[i]);
  }
}

/* A TCP proxy between the relay and sshd, to cut the SSH connection under it. */
typedef struct {
  int listen_fd;
  guint target;
  int stop_r;
} Proxy;

static gpointer proxy_thread(gpointer data) {
  Proxy *p = data;
  int a = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  int b = connect_loopback(p->target);
  char buf[16384];
  for (;;) {
    struct pollfd pfds[3] = {{.fd = a, .events = POLLIN},
                             {.fd = b, .events = POLLIN},
                             {.fd = p->stop_r, .events = POLLIN}};
    if (poll(pfds, 3, -1) < 0)
      continue;
    if (pfds[2].revents)
      break;
    if (pfds[0].revents) {
      ssize_t n = recv(a, buf, sizeof buf, 0);
      if (n <= 0 || !write_all(b, buf, (gsize)n))
        break;
    }
    if (pfds[1].revents) {
      ssize_t n = recv(b, buf, sizeof buf, 0);
      if (n <= 0 || !write_all(a, buf, (gsize)n))
        break;
    }
  }
  close(a);
  close(b);
  return NULL;
}

/* The VM stops: passt closes the SSH connection, and the relay ends with an error. */
static void test_relay_session_dies(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  int proxy_stop[2];
  g_assert_true(g_unix_open_pipe(proxy_stop, FD_CLOEXEC, NULL));
  guint proxy_port = 0, host_port = 0, guest_port = 0;
  Proxy proxy = {.target = fx.port, .stop_r = proxy_stop[0]};
  proxy.listen_fd = listen_loopback(&proxy_port);
  GThread *proxy_t = g_thread_new("proxy", proxy_thread, &proxy);
  int server_stop[2];
  g_assert_true(g_unix_open_pipe(server_stop, FD_CLOEXEC, NULL));
  Server server = {.stop_r = server_stop[0]};
  server.listen_fd = listen_loopback(&guest_port);
  GThread *server_thread = g_thread_new("server", echo_server, &server);

  RelayRun run = {.ssh = connect_ssh(proxy_port), .guest_port = guest_port, .stop_r = -1};
  run.listen_fd = listen_loopback(&host_port);
  GThread *relay = g_thread_new("relay", relay_thread, &run);
  Client one = {.port = host_port, .len = 50000, .seed = 5};
  client_thread(&one);
  g_assert_true(one.ok);

  gint64 cut = g_get_monotonic_time();
  g_assert_cmpint(write(proxy_stop[1], "x", 1), ==, 1);
  g_thread_join(proxy_t);
  g_thread_join(relay);
  g_assert_false(run.ok);
  g_assert_error(run.error, HUTCH_ERROR, HUTCH_ERROR_SSH);
  g_assert_cmpint(g_get_monotonic_time() - cut, <, 5 * G_USEC_PER_SEC);
  g_clear_error(&run.error);

  g_assert_cmpint(write(server_stop[1], "x", 1), ==, 1);
  g_thread_join(server_thread);
  hutch_ssh_free(run.ssh);
  close(run.listen_fd);
  close(server.listen_fd);
  close(proxy.listen_fd);
  for (int i = 0; i < 2; i++) {
    close(proxy_stop[i]);
    close(server_stop[i]);
  }
}

/* stop_all kills only a process that calls itself hutch-forward, and removes the files. */
static void test_stop_all(void) {
  g_autofree char *dir = g_build_filename(fx.dir, "runtime", NULL);
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_mkdir(dir, 0700, &error));
  /* a pid that is alive but not ours: this very test */
  g_autofree char *pid_text = g_strdup_printf("%d\n", (int)getpid());
  g_autofree char *pidfile = g_build_filename(dir, "forward-8080.pid", NULL);
  g_autofree char *specfile = g_build_filename(dir, "forward-8080.spec", NULL);
  g_autofree char *other = g_build_filename(dir, "passt.pid", NULL);
  g_assert_true(hutch_write_file(pidfile, pid_text, strlen(pid_text), 0600, &error));
  g_assert_true(hutch_write_file(specfile, "127.0.0.1 8080 80\n", 18, 0600, &error));
  g_assert_true(hutch_write_file(other, pid_text, strlen(pid_text), 0600, &error));
  hutch_forward_stop_all(dir);
  g_assert_false(g_file_test(pidfile, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(specfile, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(other, G_FILE_TEST_EXISTS));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  signal(SIGPIPE, SIG_IGN);
  sshd_fixture_start(&fx, "forward", "the relay tests");

  g_test_add_func("/forward/parse", test_parse);
  g_test_add_func("/forward/relay-concurrent", test_relay_concurrent);
  g_test_add_func("/forward/relay-refused", test_relay_refused);
  g_test_add_func("/forward/relay-client-reset", test_relay_client_reset);
  g_test_add_func("/forward/relay-log-bounded", test_relay_log_bounded);
  g_test_add_func("/forward/relay-session-dies", test_relay_session_dies);
  g_test_add_func("/forward/stop-all", test_stop_all);
  return g_test_run();
}
