/* test-supervisor.c: the supervisor's loop (one SSH session; commands, and connections to
 * forwarded ports, as channels on it; served on a Unix socket) and its client, against a
 * real, unprivileged OpenSSH sshd on 127.0.0.1 (sshd-fixture.h). Without sshd these tests fail,
 * unless HUTCH_ALLOW_SKIP=1. */
#define _GNU_SOURCE /* gettid */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>

#include "echo-fixture.h"
#include "sshd-fixture.h"
#include "ssh-private.h"
#include "supervisor-private.h"
#include "util-private.h"

static SshdFixture fx;

typedef struct {
  char *dir; /* the "runtime directory": supervisor.sock */
  int stop[2];
  GThread *thread;
  HutchSuperviseEnd end;
  gint tid;
  const char *forward_host_key; /* the pin the forwards use, when not the fixture's */
  guint reconnect_s;            /* the target's */
} Loop;

static gpointer loop_thread(gpointer data) {
  Loop *l = data;
  g_atomic_int_set(&l->tid, (gint)gettid());
  g_autoptr(GError) error = NULL;
  HutchSsh *ssh =
      hutch_ssh_connect("127.0.0.1", fx.port, g_get_user_name(), fx.key, fx.host_key, 10000,
                        &error);
  g_assert_no_error(error);
  g_autofree char *path = g_build_filename(l->dir, HUTCH_SUPERVISOR_SOCKET, NULL);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  g_assert_cmpint(listen(fd, 32), ==, 0);
  HutchSupervisorTarget target = {.port = fx.port,
                                  .user = g_get_user_name(),
                                  .client_key = fx.key,
                                  .host_key =
                                      l->forward_host_key ? l->forward_host_key : fx.host_key,
                                  .reconnect_s = l->reconnect_s};
  l->end = hutch_supervisor_loop(ssh, &target, fd, l->stop[0]);
  close(fd);
  return NULL;
}

static Loop *loop_start_full(const char *forward_host_key, guint reconnect_s) {
  Loop *l = g_new0(Loop, 1);
  l->forward_host_key = forward_host_key;
  l->reconnect_s = reconnect_s;
  l->dir = g_build_filename(fx.dir, "runtime-XXXXXX", NULL);
  g_assert_nonnull(g_mkdtemp(l->dir));
  g_assert_true(g_unix_open_pipe(l->stop, FD_CLOEXEC, NULL));
  l->thread = g_thread_new("supervisor", loop_thread, l);
  /* serving once the socket answers a status request */
  for (int i = 0; i < 200; i++) {
    g_autoptr(JsonObject) status = hutch_supervisor_status(l->dir);
    if (status)
      return l;
    g_usleep(50 * 1000);
  }
  g_assert_not_reached();
}

static Loop *loop_start_pinning(const char *forward_host_key) {
  return loop_start_full(forward_host_key, 0);
}

static Loop *loop_start(void) {
  return loop_start_full(NULL, 0);
}

static void loop_stop(Loop *l) {
  g_assert_cmpint(write(l->stop[1], "x", 1), ==, 1);
  g_thread_join(l->thread);
  g_assert_cmpint(l->end, ==, HUTCH_SUPERVISE_LOST);
  close(l->stop[0]);
  close(l->stop[1]);
  g_free(l->dir);
  g_free(l);
}

static gint64 status_member(Loop *l, const char *member) {
  g_autoptr(JsonObject) status = hutch_supervisor_status(l->dir);
  g_assert_nonnull(status);
  return json_object_get_int_member(status, member);
}

static char *temp_file(const char *name) {
  return g_build_filename(fx.dir, name, NULL);
}

/* Runs command through the supervisor with stdin from in_path (NULL: none), stdout and
 * stderr into files; returns the exit status. */
static int run(Loop *l, const char *command, const char *in_path, char **ret_out, char **ret_err) {
  g_autofree char *out_path = temp_file("out");
  g_autofree char *err_path = temp_file("err");
  int in_fd = in_path ? open(in_path, O_RDONLY | O_CLOEXEC) : -1;
  int out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(out_fd, >=, 0);
  gboolean used = FALSE;
  g_autoptr(GError) error = NULL;
  int status = hutch_supervisor_exec_fds(l->dir, command, in_fd, out_fd, err_fd, &used, &error);
  g_assert_no_error(error);
  g_assert_true(used);
  if (in_fd >= 0)
    close(in_fd);
  close(out_fd);
  close(err_fd);
  if (ret_out)
    g_assert_true(g_file_get_contents(out_path, ret_out, NULL, NULL));
  if (ret_err)
    g_assert_true(g_file_get_contents(err_path, ret_err, NULL, NULL));
  return status;
}

/* stdout and stderr apart, the exit status, a signal's status, a command the shell cannot
 * find; each one a command on the one session. */
static void test_exec(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint(run(l, "echo to-out; echo to-err >&2; exit 7", NULL, &out, &err), ==, 7);
  g_assert_cmpstr(out, ==, "to-out\n");
  g_assert_cmpstr(err, ==, "to-err\n");
  g_assert_cmpint(run(l, "kill -TERM $$", NULL, NULL, NULL), ==, 128 + 15);
  g_assert_cmpint(run(l, "exec no-such-command-anywhere", NULL, NULL, NULL), ==, 127);
  g_assert_cmpint(status_member(l, "commands"), ==, 3);
  g_assert_cmpint(status_member(l, "running"), ==, 0);
  /* a channel is opened ahead for the next command, which takes it */
  for (int i = 0; i < 500 && status_member(l, "spare") != 1; i++)
    g_usleep(10000);
  g_assert_cmpint(status_member(l, "spare"), ==, 1);
  gint64 taken = status_member(l, "spares_taken");
  g_assert_cmpint(run(l, "exit 4", NULL, NULL, NULL), ==, 4);
  g_assert_cmpint(status_member(l, "spares_taken"), ==, taken + 1);
  loop_stop(l);
}

/* Bytes arrive exactly, both ways, more than the supervisor buffers. */
static void test_bulk(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_autofree char *in_path = temp_file("in");
  gsize size = 3 * 1024 * 1024 + 17;
  g_autofree char *data = g_malloc(size);
  for (gsize i = 0; i < size; i++)
    data[i] = (char)g_random_int();
  g_assert_true(g_file_set_contents(in_path, data, (gssize)size, NULL));
  g_autofree char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (guchar *)data, size);
  g_autofree char *out = NULL;
  g_assert_cmpint(run(l, "sha256sum | cut -d' ' -f1", in_path, &out, NULL), ==, 0);
  g_autofree char *expected = g_strdup_printf("%s\n", sum);
  g_assert_cmpstr(out, ==, expected);
  /* and back: cat echoes it all, while stdin is still arriving */
  g_autofree char *echoed = NULL;
  gsize echoed_len = 0;
  g_assert_cmpint(run(l, "cat", in_path, NULL, NULL), ==, 0);
  g_autofree char *out_path = temp_file("out");
  g_assert_true(g_file_get_contents(out_path, &echoed, &echoed_len, NULL));
  g_assert_cmpuint(echoed_len, ==, size);
  g_assert_true(memcmp(echoed, data, size) == 0);
  loop_stop(l);
}

typedef struct {
  Loop *loop;
  int index;
  char *out;
  int status;
} Concurrent;

static gpointer concurrent_thread(gpointer data) {
  Concurrent *c = data;
  g_autofree char *out_path = g_strdup_printf("%s/conc-%d", fx.dir, c->index);
  int out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_autofree char *command = g_strdup_printf("sleep 0.3; echo command-%d", c->index);
  gboolean used = FALSE;
  g_autoptr(GError) error = NULL;
  c->status = hutch_supervisor_exec_fds(c->loop->dir, command, -1, out_fd, -1, &used, &error);
  close(out_fd);
  g_file_get_contents(out_path, &c->out, NULL, NULL);
  return NULL;
}

/* Several commands at once on the one session, each with its own output. */
static void test_concurrent(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  Concurrent runs[8];
  GThread *threads[8];
  for (int i = 0; i < 8; i++) {
    runs[i] = (Concurrent){.loop = l, .index = i};
    threads[i] = g_thread_new("client", concurrent_thread, &runs[i]);
  }
  for (int i = 0; i < 8; i++) {
    g_thread_join(threads[i]);
    g_autofree char *expected = g_strdup_printf("command-%d\n", i);
    g_assert_cmpint(runs[i].status, ==, 0);
    g_assert_cmpstr(runs[i].out, ==, expected);
    g_free(runs[i].out);
  }
  g_assert_cmpint(status_member(l, "commands"), ==, 8);
  loop_stop(l);
}

/* A client that leaves while its command runs: the channel is closed, the next command runs,
 * and nothing stays counted as running. */
static void test_client_leaves(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_autofree char *path = g_build_filename(l->dir, HUTCH_SUPERVISOR_SOCKET, NULL);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
  g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  const char request[] = "{\"op\": \"exec\", \"command\": \"sleep 30\"}";
  guint8 head[4] = {'Q', 0, 0, (guint8)(sizeof request - 1)};
  g_assert_cmpint(send(fd, head, 4, 0), ==, 4);
  g_assert_cmpint(send(fd, request, sizeof request - 1, 0), ==, (int)sizeof request - 1);
  guint8 answer[4];
  g_assert_cmpint(recv(fd, answer, 4, MSG_WAITALL), ==, 4);
  g_assert_cmpint(answer[0], ==, 'A');
  g_assert_cmpint(status_member(l, "running"), ==, 1);
  close(fd);
  int running = 1;
  for (int i = 0; i < 100 && running; i++) {
    g_usleep(50 * 1000);
    running = (int)status_member(l, "running");
  }
  g_assert_cmpint(running, ==, 0);
  g_autofree char *out = NULL;
  g_assert_cmpint(run(l, "echo still", NULL, &out, NULL), ==, 0);
  g_assert_cmpstr(out, ==, "still\n");
  loop_stop(l);
}

/* A broken request: refused with F, so the client connects directly; the loop goes on. */
static void test_bad_request(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_autofree char *path = g_build_filename(l->dir, HUTCH_SUPERVISOR_SOCKET, NULL);
  const char *requests[] = {"{\"op\": \"exec\", \"command\": 42}", "not json", "{\"op\": \"x\"}"};
  for (gsize i = 0; i < G_N_ELEMENTS(requests); i++) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
    gsize len = strlen(requests[i]);
    guint8 head[4] = {'Q', 0, 0, (guint8)len};
    g_assert_cmpint(send(fd, head, 4, 0), ==, 4);
    g_assert_cmpint(send(fd, requests[i], len, 0), ==, (gssize)len);
    guint8 answer[4];
    g_assert_cmpint(recv(fd, answer, 4, MSG_WAITALL), ==, 4);
    g_assert_cmpint(answer[0], ==, 'F');
    close(fd);
  }
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);
  loop_stop(l);
}

/* A supervisor with nothing to do uses no CPU (the loop waits in poll). */
static void test_idle(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);
  g_autofree char *stat_path =
      g_strdup_printf("/proc/self/task/%d/stat", g_atomic_int_get(&l->tid));
  guint64 ticks[2];
  for (int i = 0; i < 2; i++) {
    if (i)
      g_usleep(2 * G_USEC_PER_SEC);
    g_autofree char *stat = NULL;
    g_assert_true(g_file_get_contents(stat_path, &stat, NULL, NULL));
    g_auto(GStrv) fields = g_strsplit(strrchr(stat, ')') + 2, " ", -1);
    /* utime and stime: fields 14 and 15, the 12th and 13th after the state */
    ticks[i] = g_ascii_strtoull(fields[11], NULL, 10) + g_ascii_strtoull(fields[12], NULL, 10);
  }
  g_test_message("supervisor thread: %" G_GUINT64_FORMAT " ticks in 2 s idle", ticks[1] - ticks[0]);
  g_assert_cmpuint(ticks[1] - ticks[0], <, 20);
  loop_stop(l);
}

/* No supervisor: the client says so without an error, and the caller connects directly. */
static void test_none(void) {
  g_autofree char *dir = g_dir_make_tmp("hutch-nosup-XXXXXX", NULL);
  gboolean used = TRUE;
  g_autoptr(GError) error = NULL;
  g_assert_cmpint(hutch_supervisor_exec_fds(dir, "true", -1, -1, -1, &used, &error), ==, -1);
  g_assert_false(used);
  g_assert_no_error(error);
  g_assert_null(hutch_supervisor_status(dir));
  g_rmdir(dir);
}

/* Any exit status a guest's sshd sends becomes 0-255: outside that range, 255. */
static void test_exit_status_clamp(void) {
  g_assert_cmpint(hutch_exit_status_clamp(0), ==, 0);
  g_assert_cmpint(hutch_exit_status_clamp(1), ==, 1);
  g_assert_cmpint(hutch_exit_status_clamp(255), ==, 255);
  g_assert_cmpint(hutch_exit_status_clamp(256), ==, 255);
  g_assert_cmpint(hutch_exit_status_clamp(-1), ==, 255);
  g_assert_cmpint(hutch_exit_status_clamp(G_MININT32), ==, 255);
  g_assert_cmpint(hutch_exit_status_clamp(G_MAXUINT32), ==, 255);
  g_assert_cmpint(hutch_exit_status_clamp(G_MAXINT64), ==, 255);
  g_assert_cmpint(hutch_exit_status_clamp(G_MININT64), ==, 255);
}

/* A stand-in for a supervisor (same uid): answers one exec request with A and X status. */
typedef struct {
  int listen_fd;
  char type;        /* the frame after A: 'X' by default */
  const char *text; /* its payload */
} FakeSupervisor;

/* A listening socket where a supervisor of the runtime directory dir would be. */
static int fake_supervisor_listen(const char *dir) {
  g_autofree char *path = g_build_filename(dir, HUTCH_SUPERVISOR_SOCKET, NULL);
  int listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
  g_assert_cmpint(bind(listen_fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  g_assert_cmpint(listen(listen_fd, 4), ==, 0);
  return listen_fd;
}

static void fake_supervisor_end(int listen_fd, const char *dir) {
  close(listen_fd);
  g_autofree char *path = g_build_filename(dir, HUTCH_SUPERVISOR_SOCKET, NULL);
  g_unlink(path);
  g_rmdir(dir);
}

static gpointer fake_supervisor_thread(gpointer data) {
  FakeSupervisor *f = data;
  int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  g_autoptr(GByteArray) in = g_byte_array_new();
  char type = 0;
  const guint8 *payload;
  gsize len;
  g_assert_cmpint(hutch_frame_read(fd, in, 10000, &type, &payload, &len), ==, 1);
  g_assert_cmpint(type, ==, 'Q');
  g_autoptr(GByteArray) out = g_byte_array_new();
  hutch_frame_append(out, 'A', NULL, 0);
  hutch_frame_append_text(out, f->type ? f->type : 'X', f->text);
  g_assert_true(hutch_send_all(fd, out->data, out->len));
  /* until the client closes (an exec's sends E first) */
  char drain[256];
  while (read(fd, drain, sizeof drain) > 0)
    ;
  close(fd);
  return NULL;
}

/* What the client makes of an exit status it is sent: 0-255, or an error (never -1 without
 * one, which crashed the callers that print the error). */
static void test_exit_status_from_supervisor(void) {
  g_autofree char *dir = g_dir_make_tmp("hutch-fakesup-XXXXXX", NULL);
  int listen_fd = fake_supervisor_listen(dir);
  const struct {
    const char *sent;
    int want; /* -1: an error */
  } cases[] = {
      {"0", 0},
      {"7", 7},
      {"255", 255},
      {"256", 255},
      {"-1", 255},
      {"4294967295", 255},
      {"-2147483648", 255},
      {"99999999999999999999", 255},
      {"x", -1},
      {"", -1},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    FakeSupervisor f = {.listen_fd = listen_fd, .text = cases[i].sent};
    GThread *thread = g_thread_new("fake-supervisor", fake_supervisor_thread, &f);
    gboolean used = FALSE;
    g_autoptr(GError) error = NULL;
    int status = hutch_supervisor_exec_fds(dir, "true", -1, -1, -1, &used, &error);
    g_thread_join(thread);
    g_test_message("X \"%s\": %d", cases[i].sent, status);
    g_assert_true(used);
    g_assert_cmpint(status, ==, cases[i].want);
    if (cases[i].want < 0)
      g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH);
    else
      g_assert_no_error(error);
  }
  fake_supervisor_end(listen_fd, dir);
}

/* A copy's error that names a guest's file in bytes that are not UTF-8 reaches the client as
 * the copy's error (it was "the supervisor went away before the copy ended": the answer was
 * no JSON the client could parse). */
static void test_result_json(void) {
  g_autoptr(GError) sent = g_error_new_literal(
      HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
      "downloading from u@h:1: reading the directory /home/u/\xff\xfe\x1b[2J: No such file");
  const char *shown = "downloading from u@h:1: reading the directory /home/u/???[2J: No such file";
  g_autofree char *text = hutch_supervisor_result_json(sent);
  g_assert_true(g_utf8_validate(text, -1, NULL));
  g_autoptr(JsonParser) parser = json_parser_new();
  g_assert_true(json_parser_load_from_data(parser, text, -1, NULL));
  JsonObject *o = json_node_get_object(json_parser_get_root(parser));
  g_assert_false(json_object_get_boolean_member(o, "ok"));
  g_assert_cmpint(json_object_get_int_member(o, "code"), ==, HUTCH_ERROR_NOT_FOUND);
  g_assert_cmpstr(json_object_get_string_member(o, "error"), ==, shown);
  g_autofree char *ok = hutch_supervisor_result_json(NULL);
  g_assert_cmpstr(ok, ==, "{\"ok\":true}");
  g_autoptr(JsonObject) lines = json_object_new();
  hutch_supervisor_json_set_text(lines, "detail", "one\ntwo\xc3");
  g_assert_cmpstr(json_object_get_string_member(lines, "detail"), ==, "one\ntwo?");

  /* and through the client, from a stand-in supervisor */
  g_autofree char *dir = g_dir_make_tmp("hutch-fakesup-XXXXXX", NULL);
  int listen_fd = fake_supervisor_listen(dir);
  FakeSupervisor f = {.listen_fd = listen_fd, .type = 'S', .text = text};
  GThread *thread = g_thread_new("fake-supervisor", fake_supervisor_thread, &f);
  g_autofree char *local = g_build_filename(dir, "dest", NULL);
  gboolean used = FALSE;
  g_autoptr(GError) error = NULL;
  g_assert_false(hutch_supervisor_copy(dir, FALSE, local, "guest-file", FALSE, &used, &error));
  g_thread_join(thread);
  g_assert_true(used);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_assert_cmpstr(error->message, ==, shown);
  fake_supervisor_end(listen_fd, dir);
}

/* ---- Forwarded ports ------------------------------------------------------------------ */

/* The supervisor's answer to a forward request, parsed. */
static JsonObject *ask(Loop *l, const char *request) {
  g_autofree char *answer = hutch_supervisor_ask(l->dir, request, 'S', 10000, NULL);
  g_assert_nonnull(answer);
  g_autoptr(JsonParser) parser = json_parser_new();
  g_assert_true(json_parser_load_from_data(parser, answer, -1, NULL));
  return json_object_ref(json_node_get_object(json_parser_get_root(parser)));
}

static void assert_refused(Loop *l, const char *request, int code) {
  g_autoptr(JsonObject) o = ask(l, request);
  g_assert_false(json_object_get_boolean_member(o, "ok"));
  g_assert_cmpint(json_object_get_int_member(o, "code"), ==, code);
  g_test_message("%s: %s", request, json_object_get_string_member(o, "error"));
}

/* A port nothing listens on (bound and closed again). */
static guint dead_port(void) {
  guint port = 0;
  close(listen_loopback(&port));
  return port;
}

static gboolean port_refuses(guint port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {
      .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
  int saved = errno;
  close(fd);
  return rc < 0 && saved == ECONNREFUSED;
}

/* The "guest" service: an echo server in a thread of its own on a port of 127.0.0.1. */
typedef struct {
  Server server;
  int stop[2];
  GThread *thread;
  guint port;
} Echo;

static void echo_start(Echo *e) {
  g_assert_true(g_unix_open_pipe(e->stop, FD_CLOEXEC, NULL));
  e->server = (Server){.stop_r = e->stop[0], .listen_fd = listen_loopback(&e->port)};
  e->thread = g_thread_new("server", echo_server, &e->server);
}

static void echo_stop(Echo *e) {
  g_assert_cmpint(write(e->stop[1], "x", 1), ==, 1);
  g_thread_join(e->thread);
  close(e->server.listen_fd);
  close(e->stop[0]);
  close(e->stop[1]);
}

/* A forward-add request from 127.0.0.1:host_port to guest_port. */
static char *forward_add_request(guint host_port, guint guest_port) {
  return g_strdup_printf("{\"op\": \"forward-add\", \"host_ip\": \"127.0.0.1\", "
                         "\"host_port\": %u, \"guest_port\": %u}",
                         host_port, guest_port);
}

/* Forwarded ports on the supervisor's one session: byte-exact connections at once, beside
 * commands; a port refused in the guest closes that connection only; a taken or repeated port
 * and a broken request are refused with their code; removing one closes the port. */
static void test_forward(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  Echo echo;
  echo_start(&echo);
  guint guest_port = echo.port;

  guint host_port = dead_port();
  g_autofree char *add = forward_add_request(host_port, guest_port);
  g_autoptr(JsonObject) added = ask(l, add);
  g_assert_true(json_object_get_boolean_member(added, "ok"));
  g_assert_cmpint(status_member(l, "forwards"), ==, 1);

  /* five connections (2 MiB each: beyond any window and buffer) and three commands at once */
  Client clients[5];
  GThread *threads[5];
  for (guint i = 0; i < 5; i++) {
    clients[i] = (Client){.port = host_port, .len = 2 * 1024 * 1024 + i * 7, .seed = 10 + i};
    threads[i] = g_thread_new("client", client_thread, &clients[i]);
  }
  Concurrent runs[3];
  GThread *commands[3];
  for (int i = 0; i < 3; i++) {
    runs[i] = (Concurrent){.loop = l, .index = i};
    commands[i] = g_thread_new("command", concurrent_thread, &runs[i]);
  }
  for (guint i = 0; i < 5; i++) {
    g_thread_join(threads[i]);
    g_assert_true(clients[i].ok);
  }
  for (int i = 0; i < 3; i++) {
    g_thread_join(commands[i]);
    g_autofree char *expected = g_strdup_printf("command-%d\n", i);
    g_assert_cmpint(runs[i].status, ==, 0);
    g_assert_cmpstr(runs[i].out, ==, expected);
    g_free(runs[i].out);
  }

  /* refused: the same port again, a port taken on the host, broken requests */
  assert_refused(l, add, HUTCH_ERROR_PORT_IN_USE);
  guint taken_port = 0;
  int taken = listen_loopback(&taken_port);
  g_autofree char *add_taken = forward_add_request(taken_port, guest_port);
  assert_refused(l, add_taken, HUTCH_ERROR_PORT_IN_USE);
  close(taken);
  assert_refused(l, "{\"op\": \"forward-add\", \"host_port\": 0, \"guest_port\": 80}",
                 HUTCH_ERROR_USAGE);
  assert_refused(l, "{\"op\": \"forward-add\", \"host_port\": 8080, \"guest_port\": \"80\"}",
                 HUTCH_ERROR_USAGE);
  assert_refused(l,
                 "{\"op\": \"forward-add\", \"host_ip\": \"not an address\", "
                 "\"host_port\": 8080, \"guest_port\": 80}",
                 HUTCH_ERROR_USAGE);

  /* nothing listens on the guest's side: each connection closes, the forward stays */
  guint refused_host = dead_port();
  g_autofree char *add_refused = forward_add_request(refused_host, dead_port());
  g_autoptr(JsonObject) added_refused = ask(l, add_refused);
  g_assert_true(json_object_get_boolean_member(added_refused, "ok"));
  for (int i = 0; i < 3; i++) {
    GByteArray *back = exchange(refused_host, (const guint8 *)"hello", 5);
    g_assert_cmpuint(back->len, ==, 0);
    g_byte_array_unref(back);
  }
  Client after = {.port = host_port, .len = 100000, .seed = 99};
  client_thread(&after);
  g_assert_true(after.ok);
  g_assert_cmpint(status_member(l, "forwards"), ==, 2);

  /* a guest port whose server never accepts (its backlog full): the connections to it stall,
   * the commands on the session do not */
  guint stalled_port = 0;
  int stalled = listen_loopback(&stalled_port);
  g_assert_cmpint(listen(stalled, 0), ==, 0);
  guint stalled_host = dead_port();
  g_autofree char *add_stalled = forward_add_request(stalled_host, stalled_port);
  g_autoptr(JsonObject) added_stalled = ask(l, add_stalled);
  g_assert_true(json_object_get_boolean_member(added_stalled, "ok"));
  int waiting[6];
  for (int i = 0; i < 6; i++)
    waiting[i] = connect_loopback(stalled_host);
  g_usleep(G_USEC_PER_SEC);
  gint64 t0 = g_get_monotonic_time();
  g_autofree char *alive = NULL;
  g_assert_cmpint(run(l, "echo alive", NULL, &alive, NULL), ==, 0);
  g_assert_cmpstr(alive, ==, "alive\n");
  g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
  client_thread(&after);
  g_assert_true(after.ok);
  for (int i = 0; i < 6; i++)
    close(waiting[i]);
  close(stalled);

  /* removed: the port refuses at once; removing it again is NOT_FOUND */
  g_autofree char *remove =
      g_strdup_printf("{\"op\": \"forward-remove\", \"host_port\": %u}", host_port);
  g_autoptr(JsonObject) removed = ask(l, remove);
  g_assert_true(json_object_get_boolean_member(removed, "ok"));
  g_assert_true(port_refuses(host_port));
  assert_refused(l, remove, HUTCH_ERROR_NOT_FOUND);
  g_assert_cmpint(status_member(l, "forwards"), ==, 2);
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);

  /* the loop's end closes the rest */
  loop_stop(l);
  g_assert_true(port_refuses(refused_host));
  echo_stop(&echo);
}

/* A forward whose SSH connection meets another host key than the pinned one stops for good
 * (no new try every 5 s): its port refuses connections instead of leaving them waiting. */
static void test_forward_host_key(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  /* another valid ed25519 key: the client's own public key */
  g_autofree char *pub_path = g_strconcat(fx.key, ".pub", NULL);
  g_autofree char *other_key = NULL;
  g_assert_true(g_file_get_contents(pub_path, &other_key, NULL, NULL));
  g_strchomp(other_key);
  g_assert_true(g_str_has_prefix(other_key, "ssh-ed25519 "));
  Loop *l = loop_start_pinning(other_key);
  guint host_port = dead_port();
  g_autofree char *add = forward_add_request(host_port, dead_port());
  g_autoptr(JsonObject) added = ask(l, add);
  g_assert_true(json_object_get_boolean_member(added, "ok"));
  gboolean refused = FALSE;
  for (int i = 0; i < 100 && !refused; i++) {
    refused = port_refuses(host_port);
    if (!refused)
      g_usleep(100 * 1000);
  }
  g_assert_true(refused);
  /* the commands on the supervisor's own session go on */
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);
  loop_stop(l);
}

static double cpu_seconds(void) {
  struct rusage usage;
  g_assert_cmpint(getrusage(RUSAGE_SELF, &usage), ==, 0);
  return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

/* Lowers the soft open-file limit to 64 above what is open and opens /dev/null until none is
 * left; fill_release closes them and restores the limit. */
typedef struct {
  struct rlimit saved;
  GArray *fds;
} Filled;

static Filled fill_descriptors(void) {
  Filled f = {.fds = g_array_new(FALSE, FALSE, sizeof(int))};
  g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &f.saved), ==, 0);
  int lowest_free = open("/dev/null", O_RDONLY | O_CLOEXEC);
  g_assert_cmpint(lowest_free, >=, 0);
  close(lowest_free);
  struct rlimit low = {.rlim_cur = (rlim_t)lowest_free + 64, .rlim_max = f.saved.rlim_max};
  g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &low), ==, 0);
  /* twice: a descriptor another thread closes just after the first round (a connection of
   * the test before ending) is taken too */
  for (int round = 0; round < 2; round++) {
    for (;;) {
      int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        g_assert_cmpint(errno, ==, EMFILE);
        break;
      }
      g_array_append_val(f.fds, fd);
    }
    if (round == 0)
      g_usleep(500 * 1000);
  }
  return f;
}

static void fill_release(Filled *f) {
  for (guint i = 0; i < f->fds->len; i++)
    close(g_array_index(f->fds, int, i));
  g_array_unref(f->fds);
  g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &f->saved), ==, 0);
}

/* With no descriptor left, connects client (a socket made before) to addr and watches this
 * process's CPU time for 1.5 s: an accept loop that spins on EMFILE spends it all. */
static void assert_no_spin(int client, const struct sockaddr *addr, socklen_t len) {
  Filled filled = fill_descriptors();
  g_assert_cmpint(connect(client, addr, len), ==, 0);
  double cpu_before = cpu_seconds();
  g_usleep(1500 * 1000);
  double spent = cpu_seconds() - cpu_before;
  fill_release(&filled);
  g_test_message("CPU time while out of descriptors: %.3f s in 1.5 s", spent);
  g_assert_cmpfloat(spent, <, 0.5);
}

/* Out of descriptors (forwards' clients, which any local user can open, use them up): a
 * client of the control socket, and one of a forwarded port, wait in the backlog without an
 * accept loop spinning, and are served once descriptors are free again. */
static void test_out_of_descriptors(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_autofree char *path = g_build_filename(l->dir, HUTCH_SUPERVISOR_SOCKET, NULL);
  int client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(client, >=, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
  assert_no_spin(client, (struct sockaddr *)&addr, sizeof addr);
  close(client);
  g_assert_cmpint(status_member(l, "forwards"), ==, 0);
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);

  /* a forwarded port: its relay's accept */
  Echo echo;
  echo_start(&echo);
  guint guest_port = echo.port;
  guint host_port = dead_port();
  g_autofree char *add = forward_add_request(host_port, guest_port);
  g_autoptr(JsonObject) added = ask(l, add);
  g_assert_true(json_object_get_boolean_member(added, "ok"));
  Client first = {.port = host_port, .len = 1000, .seed = 5};
  client_thread(&first); /* the forward's SSH connection is up */
  g_assert_true(first.ok);
  int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in in = {.sin_family = AF_INET,
                           .sin_port = htons(host_port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_no_spin(tcp, (struct sockaddr *)&in, sizeof in);
  close(tcp);
  Client after = {.port = host_port, .len = 100000, .seed = 6};
  client_thread(&after);
  g_assert_true(after.ok);
  loop_stop(l);
  echo_stop(&echo);
}

static int parent_of(const char *pid) {
  g_autofree char *path = g_build_filename("/proc", pid, "stat", NULL);
  g_autofree char *stat = NULL;
  int ppid = 0;
  if (!g_file_get_contents(path, &stat, NULL, NULL))
    return 0;
  const char *after_comm = strrchr(stat, ')');
  if (!after_comm || sscanf(after_comm + 1, " %*c %d", &ppid) != 1)
    return 0;
  return ppid;
}

/* The processes of the fixture's SSH connections: those under the listening sshd (fx.pid is
 * `timeout`, whose child that is). */
static GArray *connection_pids(void) {
  g_autoptr(GArray) tree = g_array_new(FALSE, FALSE, sizeof(int));
  int top = fx.pid, listener = 0;
  g_autoptr(GDir) first = g_dir_open("/proc", 0, NULL);
  g_assert_nonnull(first);
  for (const char *entry; !listener && (entry = g_dir_read_name(first));)
    if (g_ascii_isdigit(entry[0]) && parent_of(entry) == top)
      listener = atoi(entry);
  g_assert_cmpint(listener, >, 0);
  g_array_append_val(tree, top);
  g_array_append_val(tree, listener);
  for (guint known = 0; known != tree->len;) {
    known = tree->len;
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    g_assert_nonnull(proc);
    const char *entry;
    while ((entry = g_dir_read_name(proc))) {
      if (!g_ascii_isdigit(entry[0]))
        continue;
      int pid = atoi(entry), ppid = parent_of(entry);
      gboolean seen = FALSE, child = FALSE;
      for (guint i = 0; i < tree->len; i++) {
        seen |= g_array_index(tree, int, i) == pid;
        child |= g_array_index(tree, int, i) == ppid;
      }
      if (child && !seen)
        g_array_append_val(tree, pid);
    }
  }
  g_array_remove_range(tree, 0, 2);
  return g_steal_pointer(&tree);
}

/* Sends sig to each of pids (connection_pids; SIGKILL ends them as a guest reboot does);
 * returns how many got it. */
static guint signal_pids(GArray *pids, int sig) {
  guint signalled = 0;
  for (guint i = 0; i < pids->len; i++)
    signalled += kill(g_array_index(pids, int, i), sig) == 0;
  return signalled;
}

/* Runs `true` through the supervisor (a thread's function): whether it took and ran it. */
static gpointer command_thread(gpointer data) {
  Loop *l = data;
  gboolean used = FALSE;
  int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  int status = hutch_supervisor_exec_fds(l->dir, "true", -1, null_fd, null_fd, &used, NULL);
  close(null_fd);
  return GINT_TO_POINTER(used && status == 0);
}

/* Tries `true` through the supervisor every 200 ms until it takes and runs it. */
static gboolean served_within_20s(Loop *l) {
  for (int i = 0; i < 100; i++) {
    if (GPOINTER_TO_INT(command_thread(l)))
      return TRUE;
    g_usleep(200 * 1000);
  }
  return FALSE;
}

/* Its session ended (the guest rebooted): the supervisor connects again by itself, and
 * serves commands on the new session; meanwhile a command is told to connect directly. */
static void test_reconnect(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start_full(NULL, 20);
  g_autofree char *before = NULL;
  g_assert_cmpint(run(l, "echo before", NULL, &before, NULL), ==, 0);
  g_assert_cmpstr(before, ==, "before\n");
  g_autoptr(GArray) pids = connection_pids();
  guint killed = signal_pids(pids, SIGKILL);
  g_test_message("ended %u SSH connections", killed);
  g_assert_cmpuint(killed, >=, 1);
  g_assert_true(served_within_20s(l));
  g_autofree char *after = NULL;
  g_assert_cmpint(run(l, "echo after", NULL, &after, NULL), ==, 0);
  g_assert_cmpstr(after, ==, "after\n");
  loop_stop(l);
}

/* Out of descriptors when the session fails: the reconnect cannot even make its pipes, and
 * the loop ends as without a reconnect, closing no descriptor it does not own (fd 0). */
static void test_reconnect_out_of_descriptors(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  if (fcntl(0, F_GETFD) < 0)
    g_assert_cmpint(open("/dev/null", O_RDONLY), ==, 0);
  Loop *l = loop_start_full(NULL, 20);
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);
  g_autoptr(GArray) pids = connection_pids();
  g_assert_cmpuint(pids->len, >=, 1);
  Filled filled = fill_descriptors();
  signal_pids(pids, SIGKILL);
  g_thread_join(l->thread); /* no reconnect: the loop ends */
  int fd0 = fcntl(0, F_GETFD);
  fill_release(&filled);
  g_assert_cmpint(fd0, >=, 0);
  g_assert_cmpint(l->end, ==, HUTCH_SUPERVISE_LOST);
  close(l->stop[0]);
  close(l->stop[1]);
  g_free(l->dir);
  g_free(l);
}

/* The session ends while a channel open waits (the guest's sshd stopped: the open's 30 s
 * deadline ends the session): the next session's opens get deadlines of their own, and
 * commands are served on it (the first version kept the old deadline: every new session
 * was ended at once, without end). */
static void test_reconnect_after_open_deadline(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start_full(NULL, 120);
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);
  for (int i = 0; i < 100 && status_member(l, "spare") == 0; i++)
    g_usleep(50 * 1000);
  g_assert_cmpint(status_member(l, "spare"), ==, 1);
  g_autoptr(GArray) pids = connection_pids();
  signal_pids(pids, SIGSTOP);
  /* one command takes the spare channel, the other's open waits */
  GThread *a = g_thread_new("a", command_thread, l);
  g_usleep(200 * 1000);
  GThread *b = g_thread_new("b", command_thread, l);
  g_thread_join(a);
  g_thread_join(b);
  signal_pids(pids, SIGKILL);
  g_assert_true(served_within_20s(l));
  loop_stop(l);
}

/* ---- Copies ---------------------------------------------------------------------------- */

static void write_bytes(const char *path, gsize len, guint seed, int mode) {
  g_autofree guint8 *data = g_malloc(len);
  GRand *rand = g_rand_new_with_seed(seed);
  for (gsize i = 0; i < len; i++)
    data[i] = (guint8)g_rand_int(rand);
  g_rand_free(rand);
  g_assert_true(g_file_set_contents(path, (const char *)data, (gssize)len, NULL));
  g_assert_cmpint(g_chmod(path, mode), ==, 0);
}

static void assert_same_file(const char *a, const char *b) {
  g_autofree char *x = NULL, *y = NULL;
  gsize xl = 0, yl = 0;
  g_assert_true(g_file_get_contents(a, &x, &xl, NULL));
  g_assert_true(g_file_get_contents(b, &y, &yl, NULL));
  g_assert_cmpuint(xl, ==, yl);
  g_assert_true(memcmp(x, y, xl) == 0);
}

static int mode_of(const char *path) {
  GStatBuf st;
  g_assert_cmpint(g_stat(path, &st), ==, 0);
  return st.st_mode & 07777;
}

/* hutch_supervisor_copy that the supervisor must take; returns its result. */
static gboolean copy_through(Loop *l, gboolean upload, const char *local, const char *guest,
                             gboolean recursive, GError **error) {
  gboolean used = FALSE;
  gboolean ok = hutch_supervisor_copy(l->dir, upload, local, guest, recursive, &used, error);
  g_assert_true(used);
  return ok;
}

/* A copy request sent by hand with passed (a descriptor, or -1: none); returns the socket once
 * the first frame's type is read. */
static int copy_request(Loop *l, const char *request, int passed, char *ret_type) {
  int fd = hutch_supervisor_connect(l->dir);
  g_assert_cmpint(fd, >=, 0);
  g_autoptr(GByteArray) out = g_byte_array_new();
  hutch_frame_append_text(out, 'Q', request);
  struct iovec iov = {.iov_base = out->data, .iov_len = out->len};
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (passed >= 0) {
    msg.msg_control = &control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *m = CMSG_FIRSTHDR(&msg);
    m->cmsg_level = SOL_SOCKET;
    m->cmsg_type = SCM_RIGHTS;
    m->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(m), &passed, sizeof passed);
  }
  g_assert_cmpint(sendmsg(fd, &msg, MSG_NOSIGNAL), ==, (gssize)out->len);
  guint8 head[4];
  g_assert_cmpint(recv(fd, head, 4, MSG_WAITALL), ==, 4);
  *ret_type = (char)head[0];
  return fd;
}

/* Files and trees both ways through the copy session, relative local paths, errors with
 * the codes a direct copy gives, and the caller's umask (not the supervisor's). */
/* A download request into fx.dir/NAME (not there yet), with that directory passed. */
static int download_request(Loop *l, const char *guest, const char *name, int umask_bits,
                            char *ret_type) {
  int dir = open(fx.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint(dir, >=, 0);
  g_autofree char *request =
      g_strdup_printf("{\"op\": \"copy\", \"upload\": false, \"local\": \"%s\", \"guest\": \"%s\", "
                      "\"recursive\": false, \"umask\": %d, \"inside\": false, \"name\": \"%s\", "
                      "\"missing\": true, \"want_dir\": false}",
                      name, guest, umask_bits, name);
  int fd = copy_request(l, request, dir, ret_type);
  close(dir);
  return fd;
}

static void test_copy(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_autoptr(GError) error = NULL;
  g_autofree char *local = temp_file("copy-src.bin");
  write_bytes(local, 3 * 1024 * 1024 + 17, 7, 0640);
  g_assert_true(copy_through(l, TRUE, local, "~/copy-up.bin", FALSE, &error));
  g_assert_no_error(error);
  g_autofree char *in_home = g_build_filename(fx.home, "copy-up.bin", NULL);
  assert_same_file(local, in_home);
  g_assert_cmpint(mode_of(in_home), ==, 0640);

  /* back down, to a path relative to this process's directory (not the supervisor's) */
  g_autofree char *here = g_get_current_dir();
  g_assert_cmpint(chdir(fx.dir), ==, 0);
  g_assert_true(copy_through(l, FALSE, "copy-back.bin", "copy-up.bin", FALSE, &error));
  g_assert_no_error(error);
  g_assert_cmpint(chdir(here), ==, 0);
  g_autofree char *back = temp_file("copy-back.bin");
  assert_same_file(local, back);

  /* a tree, up and down */
  g_autofree char *tree = temp_file("copy-tree");
  g_autofree char *sub = g_build_filename(tree, "sub", NULL);
  g_assert_cmpint(g_mkdir_with_parents(sub, 0755), ==, 0);
  g_autofree char *leaf = g_build_filename(sub, "leaf.txt", NULL);
  write_bytes(leaf, 1000, 8, 0644);
  g_assert_true(copy_through(l, TRUE, tree, "~/copy-tree", TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *tree_back = temp_file("copy-tree-back");
  g_assert_true(copy_through(l, FALSE, tree_back, "copy-tree", TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *leaf_back = g_build_filename(tree_back, "sub", "leaf.txt", NULL);
  assert_same_file(leaf, leaf_back);

  /* the errors of a direct copy, with their codes */
  g_assert_false(copy_through(l, FALSE, back, "no-such-file", FALSE, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_test_message("missing: %s", error->message);
  g_clear_error(&error);
  g_assert_false(copy_through(l, TRUE, tree, "~/copy-tree2", FALSE, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_clear_error(&error);
  g_assert_cmpint(status_member(l, "copies"), ==, 6);
  /* commands still run on the main session */
  g_autofree char *out = NULL;
  g_assert_cmpint(run(l, "echo after", NULL, &out, NULL), ==, 0);
  g_assert_cmpstr(out, ==, "after\n");

  /* the caller's umask: 077 asked while this process (the supervisor's) has 022 */
  mode_t old = umask(022);
  g_autofree char *masked = temp_file("copy-masked.bin");
  char type = 0;
  int fd = download_request(l, "copy-up.bin", "copy-masked.bin", 077, &type);
  g_assert_cmpint(type, ==, 'A');
  g_autoptr(GByteArray) in = g_byte_array_new();
  const guint8 *payload;
  gsize len;
  g_assert_cmpint(hutch_frame_read(fd, in, 10000, &type, &payload, &len), ==, 1);
  g_assert_cmpint(type, ==, 'S');
  close(fd);
  umask(old);
  g_assert_cmpint(mode_of(masked), ==, 0600);

  /* broken requests are refused before A: the client would copy directly */
  struct {
    const char *request;
    gboolean with_fd;
  } broken[] = {
      {"{\"op\": \"copy\", \"upload\": true, \"local\": \"x\", \"guest\": \"x\", "
       "\"recursive\": false, \"umask\": 18}",
       FALSE}, /* no descriptor */
      {"{\"op\": \"copy\", \"upload\": true, \"local\": \"x\", \"guest\": \"x\", "
       "\"recursive\": false, \"umask\": 4096}",
       TRUE},
      {"{\"op\": \"copy\", \"upload\": 1, \"local\": \"x\", \"guest\": \"x\", "
       "\"recursive\": false, \"umask\": 18}",
       TRUE},
      {"{\"op\": \"copy\", \"upload\": true, \"local\": \"x\", \"recursive\": false, "
       "\"umask\": 18}",
       TRUE},
      {"{\"op\": \"copy\", \"upload\": false, \"local\": \"x\", \"guest\": \"x\", "
       "\"recursive\": false, \"umask\": 18, \"name\": \"../escaped\"}",
       TRUE},
      {"{\"op\": \"copy\", \"upload\": false, \"local\": \"x\", \"guest\": \"x\", "
       "\"recursive\": false, \"umask\": 18}",
       TRUE}, /* a download into no name, not inside */
  };
  for (guint i = 0; i < G_N_ELEMENTS(broken); i++) {
    int dir = open(fx.dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    fd = copy_request(l, broken[i].request, broken[i].with_fd ? dir : -1, &type);
    close(dir);
    g_assert_cmpint(type, ==, 'F');
    close(fd);
  }
  g_assert_cmpint(status_member(l, "copies"), ==, 7);
  loop_stop(l);
}

/* The processes in after that are not in before. */
static GArray *new_pids(GArray *before, GArray *after) {
  GArray *added = g_array_new(FALSE, FALSE, sizeof(int));
  for (guint i = 0; i < after->len; i++) {
    int pid = g_array_index(after, int, i);
    gboolean old = FALSE;
    for (guint j = 0; j < before->len; j++)
      old |= g_array_index(before, int, j) == pid;
    if (!old)
      g_array_append_val(added, pid);
  }
  return added;
}

/* A download of a sparse file of size bytes (the server reads it fast) from the fixture's
 * home into fx.dir, stalled as a guest would stall it: the copy session's sshd processes
 * (what the copy adds to the settled main session's, whose processes go to *ret_main: the
 * fixture runs SFTP in the connection's own processes, internal-sftp) are stopped right after
 * A, and so before the copy's end (checked: else a test proves nothing). Returns the copy's
 * client socket; *ret_copy has the stopped processes. */
static int stalled_download(Loop *l, const char *name, off_t size, GArray **ret_main,
                            GArray **ret_copy) {
  g_autofree char *big = g_build_filename(fx.home, name, NULL);
  int big_fd = open(big, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint(big_fd, >=, 0);
  g_assert_cmpint(ftruncate(big_fd, size), ==, 0);
  close(big_fd);
  g_assert_cmpint(run(l, "true", NULL, NULL, NULL), ==, 0);
  for (int i = 0; i < 100 && status_member(l, "spare") == 0; i++)
    g_usleep(50 * 1000);
  *ret_main = connection_pids();
  char type = 0;
  int fd = download_request(l, name, name, 022, &type);
  g_assert_cmpint(type, ==, 'A');
  g_autoptr(GArray) all = connection_pids();
  *ret_copy = new_pids(*ret_main, all);
  g_assert_cmpuint(signal_pids(*ret_copy, SIGSTOP), >=, 1);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  g_assert_cmpint(poll(&p, 1, 500), ==, 0);
  return fd;
}

/* A copy that the guest stalls (its SSH server's processes stopped mid-transfer) ends when
 * its client leaves (Ctrl-C): the copy session's socket is shut down, and the next copy gets
 * a new session. Meanwhile another copy is told to copy directly, not kept waiting. Without
 * the cancel's shutdown the stalled copy would never end. */
static void test_copy_cancelled(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start();
  g_autofree char *after = g_build_filename(fx.home, "copy-after.txt", NULL);
  g_assert_true(g_file_set_contents(after, "after\n", -1, NULL));
  /* 1 GiB: only what came before the stop is written */
  g_autoptr(GArray) main_pids = NULL;
  g_autoptr(GArray) servers = NULL;
  int fd = stalled_download(l, "copy-big.bin", 1024 * 1024 * 1024, &main_pids, &servers);
  char type = 0;

  /* meanwhile another copy is told at once to copy directly */
  g_autofree char *local = temp_file("copy-after.txt");
  int second_fd = download_request(l, "copy-after.txt", "copy-after.txt", 022, &type);
  g_assert_cmpint(type, ==, 'F');
  close(second_fd);
  /* (the refused copy's slot may take a moment to go) */
  gint64 copying = 2;
  for (int i = 0; i < 100 && copying > 1; i++) {
    copying = status_member(l, "copying");
    if (copying > 1)
      g_usleep(20 * 1000);
  }
  g_assert_cmpint(copying, ==, 1);

  close(fd); /* Ctrl-C */
  for (int i = 0; i < 200 && copying > 0; i++) {
    g_usleep(100 * 1000);
    copying = status_member(l, "copying");
  }
  g_assert_cmpint(copying, ==, 0);
  /* the next copy gets a new session */
  g_autoptr(GError) error = NULL;
  g_assert_true(copy_through(l, FALSE, local, "copy-after.txt", FALSE, &error));
  g_assert_no_error(error);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(local, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "after\n");
  signal_pids(servers, SIGKILL);
  g_autofree char *big = g_build_filename(fx.home, "copy-big.bin", NULL);
  g_unlink(big);
  g_autofree char *stalled = temp_file("copy-big.bin");
  g_unlink(stalled);
  loop_stop(l);
}

/* The main session lost (the guest's sshd processes of it killed) while a copy runs on the
 * copy session: the copy goes on to its end and its client gets the result, on a socket the
 * loop never closed under the copy's thread (the first version failed the copy and closed
 * it, and the thread later wrote into whatever reused the number); meanwhile the supervisor
 * connects again and serves commands. */
static void test_copy_main_lost(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  Loop *l = loop_start_full(NULL, 120);
  g_autoptr(GArray) main_pids = NULL;
  g_autoptr(GArray) copy_pids = NULL;
  int fd = stalled_download(l, "copy-main-lost.bin", 256 * 1024 * 1024, &main_pids, &copy_pids);
  char type = 0;
  struct pollfd p = {.fd = fd, .events = POLLIN};

  g_assert_cmpuint(signal_pids(main_pids, SIGKILL), >=, 1);
  g_assert_true(served_within_20s(l));    /* the main session was lost and made again */
  g_assert_cmpint(poll(&p, 1, 0), ==, 0); /* the copy's client heard nothing meanwhile */
  signal_pids(copy_pids, SIGCONT);
  g_autoptr(GByteArray) in = g_byte_array_new();
  const guint8 *payload;
  gsize len;
  g_assert_cmpint(hutch_frame_read(fd, in, 120000, &type, &payload, &len), ==, 1);
  g_assert_cmpint(type, ==, 'S');
  g_autofree char *result = g_strndup((const char *)payload, len);
  g_assert_nonnull(strstr(result, "\"ok\":true"));
  close(fd);
  g_autofree char *local = temp_file("copy-main-lost.bin");
  GStatBuf st;
  g_assert_cmpint(g_stat(local, &st), ==, 0);
  g_assert_cmpint(st.st_size, ==, 256 * 1024 * 1024);
  g_unlink(local);
  g_autofree char *big = g_build_filename(fx.home, "copy-main-lost.bin", NULL);
  g_unlink(big);
  loop_stop(l);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  sshd_fixture_start(&fx, "supervisor", "the supervisor tests");
  g_test_add_func("/supervisor/none", test_none);
  g_test_add_func("/supervisor/exit-status-clamp", test_exit_status_clamp);
  g_test_add_func("/supervisor/exit-status-from-supervisor", test_exit_status_from_supervisor);
  g_test_add_func("/supervisor/result-json", test_result_json);
  g_test_add_func("/supervisor/exec", test_exec);
  g_test_add_func("/supervisor/bulk", test_bulk);
  g_test_add_func("/supervisor/concurrent", test_concurrent);
  g_test_add_func("/supervisor/client-leaves", test_client_leaves);
  g_test_add_func("/supervisor/bad-request", test_bad_request);
  g_test_add_func("/supervisor/idle", test_idle);
  g_test_add_func("/supervisor/forward", test_forward);
  g_test_add_func("/supervisor/forward-host-key", test_forward_host_key);
  g_test_add_func("/supervisor/out-of-descriptors", test_out_of_descriptors);
  g_test_add_func("/supervisor/reconnect", test_reconnect);
  g_test_add_func("/supervisor/reconnect-out-of-descriptors", test_reconnect_out_of_descriptors);
  g_test_add_func("/supervisor/reconnect-after-open-deadline", test_reconnect_after_open_deadline);
  g_test_add_func("/supervisor/copy", test_copy);
  g_test_add_func("/supervisor/copy-cancelled", test_copy_cancelled);
  g_test_add_func("/supervisor/copy-main-lost", test_copy_main_lost);
  int rc = g_test_run();
  sshd_fixture_stop(&fx);
  return rc;
}
