/* echo-fixture.c: sockets on 127.0.0.1, an echo server in threads and clients that check
 * what comes back, for the tests of forwarded ports (test-forward, test-supervisor). See
 * echo-fixture.h. */
#define _GNU_SOURCE /* accept4 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>

#include "echo-fixture.h"

/* ---- Sockets -------------------------------------------------------------------------- */

int listen_loopback(guint *ret_port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  g_assert_cmpint(listen(fd, 64), ==, 0);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&addr, &len), ==, 0);
  *ret_port = ntohs(addr.sin_port);
  return fd;
}

int connect_loopback(guint port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  struct sockaddr_in addr = {
      .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  return fd;
}

gboolean write_all(int fd, const char *data, gsize len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return FALSE;
    data += n;
    len -= (gsize)n;
  }
  return TRUE;
}

/* The "guest" service: echoes each connection until EOF, then closes it. */
static gpointer echo_connection(gpointer data) {
  int fd = GPOINTER_TO_INT(data);
  char buf[16384];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
    if (!write_all(fd, buf, (gsize)n))
      break;
  shutdown(fd, SHUT_WR);
  close(fd);
  return NULL;
}

gpointer echo_server(gpointer data) {
  Server *s = data;
  GPtrArray *threads = g_ptr_array_new();
  for (;;) {
    struct pollfd pfds[2] = {{.fd = s->listen_fd, .events = POLLIN},
                             {.fd = s->stop_r, .events = POLLIN}};
    if (poll(pfds, 2, -1) < 0 && errno == EINTR)
      continue;
    if (pfds[1].revents)
      break;
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
      g_ptr_array_add(threads, g_thread_new("echo", echo_connection, GINT_TO_POINTER(fd)));
    else if (errno == EMFILE || errno == ENFILE)
      g_usleep(100 * 1000); /* a test that used up the descriptors: do not spin meanwhile */
  }
  for (guint i = 0; i < threads->len; i++)
    g_thread_join(g_ptr_array_index(threads, i));
  g_ptr_array_free(threads, TRUE);
  return NULL;
}

/* A client: sends data and reads concurrently until the relay closes; returns what came
 * back. */
GByteArray *exchange(guint port, const guint8 *data, gsize len) {
  int fd = connect_loopback(port);
  g_unix_set_fd_nonblocking(fd, TRUE, NULL);
  GByteArray *back = g_byte_array_new();
  gsize sent = 0;
  gboolean shut = FALSE;
  char buf[32768];
  for (;;) {
    if (sent == len && !shut) {
      shutdown(fd, SHUT_WR);
      shut = TRUE;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0)};
    int rc = poll(&pfd, 1, 30000);
    g_assert_cmpint(rc, >, 0);
    if (pfd.revents & POLLOUT) {
      ssize_t n = send(fd, data + sent, MIN(len - sent, 65536), MSG_NOSIGNAL);
      if (n > 0)
        sent += (gsize)n;
    }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        break;
      if (n > 0)
        g_byte_array_append(back, (guint8 *)buf, (guint)n);
    }
  }
  close(fd);
  return back;
}

gpointer client_thread(gpointer data) {
  Client *c = data;
  g_autoptr(GRand) rand = g_rand_new_with_seed(c->seed);
  g_autofree guint8 *payload = g_malloc(c->len);
  for (gsize i = 0; i < c->len; i++)
    payload[i] = (guint8)g_rand_int(rand);
  GByteArray *back = exchange(c->port, payload, c->len);
  c->ok = back->len == c->len && memcmp(back->data, payload, c->len) == 0;
  if (!c->ok)
    g_printerr("# client %u: sent %zu bytes, got %u back\n", c->seed, c->len, back->len);
  g_byte_array_unref(back);
  return NULL;
}
