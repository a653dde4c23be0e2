/* echo-fixture.h: what the tests of forwarded ports share: sockets on 127.0.0.1, an echo
 * server (the "guest" service) and clients that check what comes back. Failures are
 * assertions. */
#pragma once

#include <glib.h>

/* A listening TCP socket on 127.0.0.1, on a port the kernel picks (*ret_port). */
int listen_loopback(guint *ret_port);
/* A connected TCP socket to 127.0.0.1:port. */
int connect_loopback(guint port);
/* Sends all of data (MSG_NOSIGNAL); FALSE when the peer is gone. */
gboolean write_all(int fd, const char *data, gsize len);

/* The echo server: a thread (echo_server, data: the Server) that accepts on listen_fd and
 * echoes each connection in a thread of its own until EOF, until stop_r is readable. */
typedef struct {
  int listen_fd;
  int stop_r;
} Server;
gpointer echo_server(gpointer data);

/* Connects to 127.0.0.1:port, sends data (then SHUT_WR) while reading, until the peer closes;
 * returns what came back. */
GByteArray *exchange(guint port, const guint8 *data, gsize len);

/* A client of the echo server through a forward (client_thread, data: the Client): len
 * pseudo-random bytes from seed; ok when exactly they came back. */
typedef struct {
  guint port;
  gsize len;
  guint32 seed;
  gboolean ok;
} Client;
gpointer client_thread(gpointer data);
