/* forward.c: `hutch forward`, ports added to a running VM over SSH direct-tcpip. See
 * forward-private.h. */
#define _GNU_SOURCE /* POLLRDHUP, accept4 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>
#include <libssh2.h>

#include "client-private.h"
#include "forward-files-private.h"
#include "forward-private.h"
#include "instance-private.h"
#include "pidfile-private.h"
#include "supervisor-private.h"
#include "util-private.h"

/* Per direction and connection: large enough that one read fills an SSH packet. */
#define RELAY_BUFFER_SIZE (64 * 1024)
/* More concurrent connections wait in the listen backlog. */
#define MAX_CONNECTIONS 256
/* a channel whose close the guest has not confirmed after this is forgotten; this many
 * forgotten end the session */
#define CLOSE_DEADLINE_S 30
#define ABANDONED_MAX 64
/* How long `hutch forward` waits for the helper to report. */
#define READY_TIMEOUT_MS 90000
/* How long the helper keeps trying to reach a guest that is still booting. */
#define CONNECT_WAIT_S 30
/* How often an idle relay's session is checked. */
#define RELAY_KEEPALIVE_S 10
/* Lines any local user can cause (a connection's end, accept failing) logged per run: the
 * helper's log is never truncated while it runs, and a client connecting in a loop would
 * grow it without end. (The supervisor's forwards log none.) */
#define RELAY_CONNECTION_LINES_MAX 100

/* ---- Spec ----------------------------------------------------------------------------- */

HutchPort *hutch_forward_parse(const char *spec, GError **error) {
  HutchPort *port = hutch_port_parse(spec, error);
  if (!port)
    return NULL;
  const char *why = NULL;
  if (port->proto != HUTCH_PROTO_TCP)
    why = "only TCP can be added to a running VM (UDP ports go into the profile)";
  else if (port->host_start != port->host_end || port->guest_start != port->guest_end)
    why = "one port at a time (ranges go into the profile)";
  else if (!strchr(spec[0] == '[' ? strchr(spec, ']') + 2 : spec, ':'))
    /* "PORT" alone means PORT:PORT for --port; here both sides are asked for */
    why = "expected [HOST_IP:]HOST:GUEST";
  if (why) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "invalid port forward '%s': %s", spec, why);
    hutch_port_free(port);
    return NULL;
  }
  return port;
}

/* ---- The relay ------------------------------------------------------------------------ */

typedef enum {
  CONN_WAITING, /* accepted, its channel not open yet */
  CONN_OPEN,
  CONN_CLOSING, /* client socket closed, channel being closed */
} ConnState;

/* The libssh2 call that left a packet half-sent: libssh2 refuses (LIBSSH2_ERROR_BAD_USE) any
 * other sending call on the session until that same call is repeated and completes. */
typedef enum {
  OP_NONE,
  OP_OPEN,
  OP_READ,
  OP_WRITE,
  OP_EOF,
  OP_CLOSE,
} Op;

typedef struct {
  guint id;
  int fd;
  ConnState state;
  LIBSSH2_CHANNEL *channel;
  char *peer_host;
  guint peer_port;
  char *up; /* client -> guest */
  gsize up_off, up_len;
  char *down; /* guest -> client */
  gsize down_off, down_len;
  gboolean client_eof, eof_sent, guest_eof, client_shut, done;
  guint64 bytes_up, bytes_down;
  double closing_since; /* when it became CONN_CLOSING */
} Conn;

typedef struct {
  LIBSSH2_SESSION *session;
  int ssh_fd;
  int listen_fd;
  guint guest_port;
  int log_fd;
  GPtrArray *conns;    /* Conn*, in order of acceptance */
  Conn *opening;       /* the one channel being opened (libssh2 opens one at a time) */
  HutchSshOwner owner; /* the call that must be repeated first (a Conn*, an Op) */
  guint next_id;
  double accept_paused_until; /* out of descriptors: no accept until then */
  guint abandoned;            /* channels whose close the guest never confirmed */
  guint connection_lines;     /* logged so far (RELAY_CONNECTION_LINES_MAX) */
} Relay;

#define relay_log(r, ...) hutch_log_line((r)->log_fd, __VA_ARGS__)

/* Whether a line a client caused may still be logged; the first one refused says so. */
static gboolean connection_line_allowed(Relay *r) {
  if (r->connection_lines < RELAY_CONNECTION_LINES_MAX) {
    r->connection_lines++;
    return TRUE;
  }
  if (r->connection_lines == RELAY_CONNECTION_LINES_MAX) {
    r->connection_lines++;
    relay_log(r, "further connection lines not logged (%d logged)", RELAY_CONNECTION_LINES_MAX);
  }
  return FALSE;
}

static void conn_free(Conn *c) {
  if (c->fd >= 0)
    close(c->fd);
  g_free(c->peer_host);
  g_free(c->up);
  g_free(c->down);
  g_free(c);
}

static void set_relay_error(Relay *r, GError **error, int rc, const char *what) {
  g_autofree char *message = hutch_ssh_session_message(r->session);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "%s: %s (%d)", what, message, rc);
}

static void note_blocked(Relay *r, Conn *c, Op op) {
  hutch_ssh_owner_blocked(&r->owner, r->session, c, op);
}

static void op_finished(Relay *r, Conn *c, Op op) {
  hutch_ssh_owner_done(&r->owner, c, op);
}

/* The connection is over: the client socket goes now, the channel is closed politely. */
static void conn_finish(Relay *r, Conn *c, const char *why) {
  if (c->state == CONN_CLOSING)
    return;
  if (connection_line_allowed(r))
    relay_log(r,
              "connection %u from %s:%u closed (%s; %" G_GUINT64_FORMAT
              " bytes in, %" G_GUINT64_FORMAT " bytes out)",
              c->id, c->peer_host, c->peer_port, why, c->bytes_up, c->bytes_down);
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->state = CONN_CLOSING;
  c->closing_since = hutch_now();
  /* a channel being opened is closed once it is open: libssh2 finishes one open at a time */
  if (!c->channel && r->opening != c)
    c->done = TRUE;
}

/* poll said the client's socket failed or hung up while nothing was read from it (the
 * upload buffer full, or the client's EOF in): a reset that recv would have reported, the
 * connection's end. */
static void conn_hung_up(Relay *r, Conn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  conn_finish(r, c, err ? g_strerror(err) : "the client hung up");
}

/* Each op: 1 progress, 0 nothing to do now, -1 the session failed (error set). */

static int op_open(Relay *r, Conn *c, GError **error) {
  LIBSSH2_CHANNEL *channel = libssh2_channel_direct_tcpip_ex(
      r->session, "127.0.0.1", (int)r->guest_port, c->peer_host, (int)c->peer_port);
  if (channel) {
    op_finished(r, c, OP_OPEN);
    c->channel = channel;
    r->opening = NULL;
    /* a client that left meanwhile: the channel is closed again at once */
    if (c->state == CONN_WAITING)
      c->state = CONN_OPEN;
    return 1;
  }
  int rc = libssh2_session_last_errno(r->session);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(r, c, OP_OPEN);
    return 0;
  }
  op_finished(r, c, OP_OPEN);
  if (hutch_ssh_is_channel_error(rc)) {
    g_autofree char *message = hutch_ssh_session_message(r->session);
    g_autofree char *why =
        g_strdup_printf("the guest refused 127.0.0.1:%u: %s", r->guest_port, message);
    r->opening = NULL;
    conn_finish(r, c, why);
    c->done = TRUE;
    return 1;
  }
  set_relay_error(r, error, rc, "opening a channel");
  return -1;
}

static int op_read(Relay *r, Conn *c, GError **error) {
  ssize_t n = libssh2_channel_read(c->channel, c->down, RELAY_BUFFER_SIZE);
  if (n == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(r, c, OP_READ);
    return 0;
  }
  op_finished(r, c, OP_READ);
  if (n > 0) {
    c->down_off = 0;
    c->down_len = (gsize)n;
    c->bytes_down += (guint64)n;
    return 1;
  }
  if (n == 0 || hutch_ssh_is_channel_error((int)n)) {
    /* 0 is the guest's EOF (or a closed channel): what came before it is delivered */
    c->guest_eof = TRUE;
    return 1;
  }
  set_relay_error(r, error, (int)n, "reading from the guest");
  return -1;
}

static int op_write(Relay *r, Conn *c, GError **error) {
  ssize_t n = libssh2_channel_write(c->channel, c->up + c->up_off, c->up_len - c->up_off);
  if (n == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(r, c, OP_WRITE);
    return 0;
  }
  op_finished(r, c, OP_WRITE);
  if (n >= 0) {
    c->up_off += (gsize)n;
    c->bytes_up += (guint64)n;
    return n > 0;
  }
  if (hutch_ssh_is_channel_error((int)n)) {
    /* the guest's side is gone: nothing more goes there, but what it sent still goes out */
    c->up_off = c->up_len = 0;
    c->client_eof = c->eof_sent = TRUE;
    return 1;
  }
  set_relay_error(r, error, (int)n, "writing to the guest");
  return -1;
}

static int op_eof(Relay *r, Conn *c, GError **error) {
  int rc = libssh2_channel_send_eof(c->channel);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(r, c, OP_EOF);
    return 0;
  }
  op_finished(r, c, OP_EOF);
  if (rc == 0 || hutch_ssh_is_channel_error(rc)) {
    c->eof_sent = TRUE;
    return 1;
  }
  set_relay_error(r, error, rc, "closing the guest's input");
  return -1;
}

static int op_close(Relay *r, Conn *c, GError **error) {
  int rc = libssh2_channel_free(c->channel);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(r, c, OP_CLOSE);
    return 0;
  }
  op_finished(r, c, OP_CLOSE);
  c->channel = NULL;
  c->done = TRUE;
  if (rc != 0 && !hutch_ssh_is_channel_error(rc)) {
    set_relay_error(r, error, rc, "closing a channel");
    return -1;
  }
  return 1;
}

static int run_op(Relay *r, Conn *c, Op op, GError **error) {
  switch (op) {
  case OP_OPEN:
    return op_open(r, c, error);
  case OP_READ:
    return op_read(r, c, error);
  case OP_WRITE:
    return op_write(r, c, error);
  case OP_EOF:
    return op_eof(r, c, error);
  case OP_CLOSE:
    return op_close(r, c, error);
  case OP_NONE:
    break;
  }
  return 0;
}

/* The client's socket, which libssh2 never sees: always safe to serve. */
static gboolean client_io(Relay *r, Conn *c) {
  gboolean progress = FALSE;
  if (c->state == CONN_CLOSING)
    return FALSE;
  if (c->down_off < c->down_len) {
    ssize_t n =
        send(c->fd, c->down + c->down_off, c->down_len - c->down_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->down_off += (gsize)n;
      progress = TRUE;
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      conn_finish(r, c, g_strerror(errno));
      return TRUE;
    }
  }
  if (c->guest_eof && c->down_off == c->down_len && !c->client_shut) {
    shutdown(c->fd, SHUT_WR);
    c->client_shut = TRUE;
    progress = TRUE;
  }
  if (c->up_off == c->up_len && !c->client_eof) {
    ssize_t n = recv(c->fd, c->up, RELAY_BUFFER_SIZE, MSG_DONTWAIT);
    if (n > 0) {
      c->up_off = 0;
      c->up_len = (gsize)n;
      progress = TRUE;
    } else if (n == 0) {
      c->client_eof = TRUE;
      progress = TRUE;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      conn_finish(r, c, g_strerror(errno));
      return TRUE;
    }
  }
  if (c->client_shut && c->eof_sent) {
    conn_finish(r, c, "done");
    progress = TRUE;
  }
  return progress;
}

/* The SSH side of one connection, while no other call owns the session's output. */
static int channel_io(Relay *r, Conn *c, GError **error) {
  int progress = 0, rc;
  if (c->state == CONN_CLOSING)
    return c->channel ? op_close(r, c, error) : 0;
  if (c->state != CONN_OPEN)
    return 0;
  if (c->down_off == c->down_len && !c->guest_eof) {
    if ((rc = op_read(r, c, error)) < 0)
      return -1;
    progress |= rc;
  }
  if (r->owner.who)
    return progress;
  if (c->up_off < c->up_len) {
    if ((rc = op_write(r, c, error)) < 0)
      return -1;
    progress |= rc;
  }
  if (r->owner.who)
    return progress;
  if (c->client_eof && c->up_off == c->up_len && !c->eof_sent) {
    if ((rc = op_eof(r, c, error)) < 0)
      return -1;
    progress |= rc;
  }
  return progress;
}

static void accept_clients(Relay *r) {
  while (r->conns->len < MAX_CONNECTIONS) {
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    int fd = accept4(r->listen_fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* the client stays in the backlog and poll would say so again at once: wait */
        int saved = errno;
        if (connection_line_allowed(r))
          relay_log(r, "accept: %s; accepting again in 1 s", g_strerror(saved));
        r->accept_paused_until = hutch_now() + 1.0;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                 errno != ECONNABORTED) {
        int saved = errno;
        if (connection_line_allowed(r))
          relay_log(r, "accept: %s", g_strerror(saved));
      }
      return;
    }
    char host[NI_MAXHOST] = "?", service[NI_MAXSERV] = "0";
    getnameinfo((struct sockaddr *)&addr, len, host, sizeof host, service, sizeof service,
                NI_NUMERICHOST | NI_NUMERICSERV);
    Conn *c = g_new0(Conn, 1);
    c->id = ++r->next_id;
    c->fd = fd;
    c->state = CONN_WAITING;
    c->peer_host = g_strdup(host);
    c->peer_port = (guint)g_ascii_strtoull(service, NULL, 10);
    c->up = g_malloc(RELAY_BUFFER_SIZE);
    c->down = g_malloc(RELAY_BUFFER_SIZE);
    g_ptr_array_add(r->conns, c);
  }
}

/* One round over everything. Returns 1 when something moved, 0 when all waits, -1 when the
 * session failed. */
static int relay_round(Relay *r, GError **error) {
  int progress = 0, rc;
  if (r->owner.who) {
    if ((rc = run_op(r, r->owner.who, r->owner.op, error)) < 0)
      return -1;
    progress |= rc;
  }
  for (guint i = 0; i < r->conns->len; i++)
    progress |= client_io(r, g_ptr_array_index(r->conns, i));
  if (!r->owner.who && !r->opening) {
    for (guint i = 0; i < r->conns->len && !r->opening; i++) {
      Conn *c = g_ptr_array_index(r->conns, i);
      if (c->state == CONN_WAITING)
        r->opening = c;
    }
  }
  if (!r->owner.who && r->opening) {
    if ((rc = op_open(r, r->opening, error)) < 0)
      return -1;
    progress |= rc;
  }
  for (guint i = 0; i < r->conns->len && !r->owner.who; i++) {
    if ((rc = channel_io(r, g_ptr_array_index(r->conns, i), error)) < 0)
      return -1;
    progress |= rc;
  }
  /* A guest that never confirms a channel's close must not keep its connection (buffers, a
   * place among MAX_CONNECTIONS, polls every 20 ms) for ever: as in the supervisor, the
   * channel is forgotten after CLOSE_DEADLINE_S (libssh2 frees it with the session), and
   * ABANDONED_MAX forgotten ones end the session. */
  double now = hutch_now();
  for (guint i = 0; i < r->conns->len; i++) {
    Conn *c = g_ptr_array_index(r->conns, i);
    if (c->state != CONN_CLOSING || !c->channel || r->owner.who == c ||
        now - c->closing_since <= CLOSE_DEADLINE_S)
      continue;
    relay_log(r, "connection %u: the guest did not confirm the channel's close in %d s", c->id,
              CLOSE_DEADLINE_S);
    c->channel = NULL;
    c->done = TRUE;
    if (++r->abandoned >= ABANDONED_MAX) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "the guest left %d channels unclosed",
                  ABANDONED_MAX);
      return -1;
    }
  }
  for (guint i = 0; i < r->conns->len;) {
    Conn *c = g_ptr_array_index(r->conns, i);
    if (c->done && r->owner.who != c && r->opening != c) {
      g_ptr_array_remove_index(r->conns, i);
      progress = 1;
    } else {
      i++;
    }
  }
  return progress;
}

/* Whether libssh2 holds something a round would take without touching the socket (reading
 * one channel drains the socket into every channel's queue). */
static gboolean channels_ready(Relay *r) {
  if (r->owner.who)
    return FALSE;
  for (guint i = 0; i < r->conns->len; i++) {
    Conn *c = g_ptr_array_index(r->conns, i);
    if (c->state != CONN_OPEN)
      continue;
    if (c->down_off == c->down_len && !c->guest_eof &&
        (libssh2_poll_channel_read(c->channel, 0) > 0 || libssh2_channel_eof(c->channel)))
      return TRUE;
    if (c->up_off < c->up_len && libssh2_channel_window_write(c->channel) > 0)
      return TRUE;
  }
  return FALSE;
}

static void relay_shutdown(Relay *r) {
  /* A last goodbye per channel, 2 s for all of them (a guest that confirms no close must
   * not hold a stop for a second per channel); what is left goes with the session, which is
   * the caller's. */
  libssh2_session_set_blocking(r->session, 1);
  double deadline = hutch_now() + 2;
  for (guint i = 0; i < r->conns->len; i++) {
    Conn *c = g_ptr_array_index(r->conns, i);
    long left_ms = (long)((deadline - hutch_now()) * 1000);
    if (c->channel && left_ms > 0) {
      libssh2_session_set_timeout(r->session, left_ms);
      libssh2_channel_free(c->channel);
    }
    c->channel = NULL;
  }
  libssh2_session_set_blocking(r->session, 0);
  libssh2_session_set_timeout(r->session, 0);
  g_ptr_array_set_size(r->conns, 0);
}

gboolean hutch_forward_relay(HutchSsh *ssh, int listen_fd, guint guest_port, int stop_fd,
                             int log_fd, GError **error) {
  int ssh_fd = -1;
  LIBSSH2_SESSION *session = hutch_ssh_session(ssh, &ssh_fd);
  g_autoptr(GPtrArray) conns = g_ptr_array_new_with_free_func((GDestroyNotify)conn_free);
  Relay r = {
      .session = session,
      .ssh_fd = ssh_fd,
      .listen_fd = listen_fd,
      .guest_port = guest_port,
      .log_fd = log_fd,
      .conns = conns,
  };
  g_unix_set_fd_nonblocking(listen_fd, TRUE, NULL);
  libssh2_session_set_blocking(r.session, 0);
  /* an idle relay checks its session (a rebooted guest never closed it): no reply asked, the
   * new guest's reset is what tells */
  libssh2_keepalive_config(r.session, 0, RELAY_KEEPALIVE_S);
  gboolean ok = TRUE;

  for (;;) {
    /* A bounded number of rounds, so that a busy transfer does not keep new connections
     * and SIGTERM waiting: then a look at the descriptors without waiting. */
    int rc, rounds = 0;
    do
      rc = relay_round(&r, error);
    while (rc > 0 && ++rounds < 32);
    gboolean busy = rc > 0;
    if (rc < 0) {
      ok = FALSE;
      break;
    }

    /* Wait: the listener, each client in the direction it can make progress, the SSH socket
     * for what libssh2 waits on (and for its peer hanging up, always). */
    g_autofree struct pollfd *pfds = g_new0(struct pollfd, r.conns->len + 3);
    g_autofree Conn **polled = g_new0(Conn *, r.conns->len + 3); /* by pfds index */
    nfds_t n = 0;
    gboolean ssh_in = r.owner.who != NULL, transient = r.owner.who != NULL || r.opening != NULL;
    gboolean accept_paused = r.accept_paused_until > hutch_now();
    pfds[n++] = (struct pollfd){
        .fd = r.listen_fd, .events = r.conns->len < MAX_CONNECTIONS && !accept_paused ? POLLIN : 0};
    pfds[n++] = (struct pollfd){.fd = stop_fd, .events = POLLIN};
    nfds_t ssh_index = n++;
    for (guint i = 0; i < r.conns->len; i++) {
      Conn *c = g_ptr_array_index(r.conns, i);
      short events = 0;
      if (c->state == CONN_CLOSING) {
        transient = TRUE;
        ssh_in = TRUE;
        continue;
      }
      if (c->down_off < c->down_len)
        events |= POLLOUT;
      if (c->up_off == c->up_len && !c->client_eof)
        events |= POLLIN;
      if (c->state == CONN_OPEN && ((c->down_off == c->down_len && !c->guest_eof) ||
                                    c->up_off < c->up_len || (c->client_eof && !c->eof_sent)))
        ssh_in = TRUE;
      /* poll reports POLLHUP whatever events asks, and a socket we shut down for writing has
       * it as soon as the client's FIN is in too: with nothing to ask, such a socket would wake
       * us at once for ever (the next recv, when the upload buffer drains, tells its end) */
      if (events == 0 && c->client_shut)
        continue;
      polled[n] = c;
      pfds[n++] = (struct pollfd){.fd = c->fd, .events = events};
    }
    if (r.opening)
      ssh_in = TRUE;
    short ssh_events = POLLRDHUP;
    if (ssh_in)
      ssh_events |= POLLIN;
    if (r.owner.who ||
        (libssh2_session_block_directions(r.session) & LIBSSH2_SESSION_BLOCK_OUTBOUND))
      ssh_events |= POLLOUT;
    pfds[ssh_index] = (struct pollfd){.fd = r.ssh_fd, .events = ssh_events};

    /* Channel opens and closes finish on packets a read of another channel may already have
     * queued: look again soon rather than wait for the socket. */
    int timeout = busy || channels_ready(&r) ? 0 : transient ? 20 : -1;
    if (accept_paused)
      timeout = timeout < 0 ? 100 : MIN(timeout, 100); /* to accept again */
    if (!r.owner.who && !r.opening) {
      int keepalive_ms = hutch_ssh_keepalive_when_idle(r.session, r.ssh_fd);
      if (keepalive_ms < 0) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "sending a keepalive failed");
        ok = FALSE;
        break;
      }
      timeout = timeout < 0 ? keepalive_ms : MIN(timeout, keepalive_ms);
    }
    rc = poll(pfds, n, timeout);
    if (rc < 0 && errno != EINTR) {
      int saved = errno;
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "waiting: %s", g_strerror(saved));
      ok = FALSE;
      break;
    }
    if (rc > 0 && stop_fd >= 0 && pfds[1].revents) {
      relay_log(&r, "stopping");
      break;
    }
    if (rc > 0 && (pfds[ssh_index].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH,
                  "the SSH connection was closed (the VM stopped?)");
      ok = FALSE;
      break;
    }
    /* A client that reset its connection while nothing is read from it: poll reports that
     * (POLLERR, POLLHUP) whatever events asks, at once and for ever; no recv would see it. */
    for (nfds_t i = 0; rc > 0 && i < n; i++)
      if (polled[i] && !(pfds[i].events & POLLIN) &&
          (pfds[i].revents & (POLLERR | POLLHUP | POLLNVAL)))
        conn_hung_up(&r, polled[i]);
    if (rc > 0 && pfds[0].revents)
      accept_clients(&r);
  }
  if (!ok)
    relay_log(&r, "%s", (*error)->message);
  relay_shutdown(&r);
  return ok;
}

int hutch_forward_listen(const char *ip, guint port, GError **error) {
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
  struct addrinfo *ai = NULL;
  g_autofree char *service = g_strdup_printf("%u", port);
  int rc = getaddrinfo(ip, service, &hints, &ai);
  if (rc != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "host address %s: %s", ip, gai_strerror(rc));
    return -1;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  int saved = 0;
  /* SO_REUSEADDR: a port in TIME_WAIT from an earlier forward is free; a listening one is
   * still refused */
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0)
    saved = errno;
  freeaddrinfo(ai);
  if (saved) {
    if (fd >= 0)
      close(fd);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE,
                "host port tcp %s:%u is in use (or cannot be bound: %s): free it or forward "
                "another host port",
                ip, port, g_strerror(saved));
    return -1;
  }
  return fd;
}

/* What the helper needs, gathered before the fork (the child never touches libvirt). */
typedef struct {
  const char *runtime_dir;
  const char *name;
  guint ssh_port;
  const char *user;
  const char *client_key;
  const char *host_key;
  const HutchPort *port;
  int listen_fd;
  int log_fd;
  int status_fd;
} Helper;

static void report(int fd, const char *text) {
  gsize len = strlen(text);
  while (len > 0) {
    ssize_t n = write(fd, text, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    text += n;
    len -= (gsize)n;
  }
}

static void report_error(int fd, GError *error) {
  g_autofree char *text = g_strdup_printf("E%d %s", error->code, error->message);
  report(fd, text);
}

static HutchSsh *helper_connect(const Helper *h, GError **error) {
  HutchSsh *ssh = hutch_ssh_connect_retrying(h->ssh_port, h->user, h->client_key, h->host_key,
                                             CONNECT_WAIT_S, -1, NULL, NULL, error);
  if (!ssh)
    g_prefix_error(error, "connecting to '%s': ", h->name);
  return ssh;
}

/* The detached helper (the grandchild of `hutch forward`): never returns. */
static G_GNUC_NORETURN void helper_main(Helper *h) {
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0 ||
      dup2(h->log_fd, STDERR_FILENO) < 0)
    _exit(127);
  /* the caller's other descriptors (its libvirt connection) must not stay open here */
  int keep[] = {h->listen_fd, h->status_fd};
  if (hutch_keep_only_fds(keep, G_N_ELEMENTS(keep)) < 0)
    _exit(127);
  h->listen_fd = keep[0];
  h->status_fd = keep[1];
  h->log_fd = STDERR_FILENO;
  prctl(PR_SET_NAME, HUTCH_FORWARD_COMM, 0, 0, 0);
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  sigprocmask(SIG_BLOCK, &stop_signals, NULL);
  int stop_fd = signalfd(-1, &stop_signals, SFD_CLOEXEC | SFD_NONBLOCK);

  g_autoptr(GError) error = NULL;
  guint host_port = h->port->host_start;
  g_autofree char *pidfile = hutch_forward_file(h->runtime_dir, host_port, "pid");
  g_autofree char *specfile = hutch_forward_file(h->runtime_dir, host_port, "spec");
  g_autofree char *pid_text = hutch_pidfile_format(getpid());
  g_autofree char *spec_text =
      g_strdup_printf("%s %u %u\n", h->port->host_ip, host_port, h->port->guest_start);
  g_autoptr(HutchSsh) ssh = NULL;
  if (stop_fd < 0)
    g_set_error(&error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "signalfd: %s", g_strerror(errno));
  else if (!pid_text)
    g_set_error(&error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "reading /proc/%d/stat", (int)getpid());
  /* the pid first: a spec without a live pid is stale to hutch_forward_list_dir */
  else if (hutch_write_file(pidfile, pid_text, strlen(pid_text), 0600, &error) &&
           hutch_write_file(specfile, spec_text, strlen(spec_text), 0600, &error))
    ssh = helper_connect(h, &error);
  if (!ssh) {
    g_printerr("%s\n", error->message);
    report_error(h->status_fd, error);
    hutch_forward_remove_files(h->runtime_dir, host_port);
    _exit(1);
  }
  g_printerr("forwarding %s:%u to guest port %u of '%s' (pid %d)\n", h->port->host_ip, host_port,
             h->port->guest_start, h->name, (int)getpid());
  report(h->status_fd, "OK");
  close(h->status_fd);

  gboolean ok =
      hutch_forward_relay(ssh, h->listen_fd, h->port->guest_start, stop_fd, STDERR_FILENO, &error);
  /* the files are ours only while they name this process */
  g_autofree char *now = NULL;
  if (g_file_get_contents(pidfile, &now, NULL, NULL) && strcmp(now, pid_text) == 0)
    hutch_forward_remove_files(h->runtime_dir, host_port);
  g_clear_pointer(&ssh, hutch_ssh_free);
  _exit(ok ? 0 : 1);
}

/* Forks the helper (twice, so that it is nobody's child and in a session of its own) and
 * waits for its report. */
static gboolean spawn_helper(Helper *h, GError **error) {
  int status_pipe[2];
  if (!g_unix_open_pipe(status_pipe, FD_CLOEXEC, NULL)) {
    int saved = errno;
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "pipe: %s", g_strerror(saved));
    return FALSE;
  }
  h->status_fd = status_pipe[1];
  /* what is buffered must not be written twice by the children */
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    int saved = errno;
    close(status_pipe[0]);
    close(status_pipe[1]);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "fork: %s", g_strerror(saved));
    return FALSE;
  }
  if (pid == 0) {
    close(status_pipe[0]);
    if (setsid() < 0)
      _exit(127);
    hutch_unblock_signals();
    pid_t grandchild = fork();
    if (grandchild < 0)
      _exit(127);
    if (grandchild > 0)
      _exit(0);
    helper_main(h);
  }
  close(status_pipe[1]);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
    ;

  g_autoptr(GString) message = g_string_new(NULL);
  gint64 deadline = g_get_monotonic_time() + (gint64)READY_TIMEOUT_MS * 1000;
  for (;;) {
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    struct pollfd pfd = {.fd = status_pipe[0], .events = POLLIN};
    int rc = left > 0 ? poll(&pfd, 1, (int)left) : 0;
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc <= 0)
      break;
    char buf[1024];
    ssize_t n = read(status_pipe[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    g_string_append_len(message, buf, n);
  }
  close(status_pipe[0]);
  if (strcmp(message->str, "OK") == 0)
    return TRUE;
  if (message->str[0] == 'E') {
    char *text = NULL;
    gint64 code = g_ascii_strtoll(message->str + 1, &text, 10);
    if (code < 0 || code >= HUTCH_ERROR_N)
      code = HUTCH_ERROR_FAILED;
    g_set_error(error, HUTCH_ERROR, (int)code, "%s", text && *text == ' ' ? text + 1 : text);
    return FALSE;
  }
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
              "the forward's helper did not start (see %s/forward-%u.log)", h->runtime_dir,
              h->port->host_start);
  return FALSE;
}

/* ---- Through the supervisor ----------------------------------------------------------- */

/* Asks the VM's supervisor (request: JSON). 1: done; 0: no supervisor answered, so the
 * caller does it itself; -1: the supervisor refused it, error set from its answer. */
static int ask_supervisor(const char *runtime_dir, JsonObject *request, GError **error) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), request);
  g_autofree char *text = json_to_string(node, FALSE);
  gboolean reached = FALSE;
  g_autofree char *answer = hutch_supervisor_ask(runtime_dir, text, 'S', 10000, &reached);
  if (!answer && reached) {
    /* it may still do it: doing it here too would race it */
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "the VM's supervisor did not answer within 10 s (see %s/supervisor.log)",
                runtime_dir);
    return -1;
  }
  if (!answer)
    return 0;
  g_autoptr(JsonParser) parser = json_parser_new();
  JsonObject *o = NULL;
  if (json_parser_load_from_data(parser, answer, -1, NULL) &&
      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
    o = json_node_get_object(json_parser_get_root(parser));
  if (o && json_object_get_boolean_member_with_default(o, "ok", FALSE))
    return 1;
  gint64 code = o ? json_object_get_int_member_with_default(o, "code", HUTCH_ERROR_FAILED)
                  : HUTCH_ERROR_FAILED;
  if (code < 0 || code >= HUTCH_ERROR_N)
    code = HUTCH_ERROR_FAILED;
  const char *why = o ? json_object_get_string_member_with_default(o, "error", NULL) : NULL;
  g_set_error(error, HUTCH_ERROR, (int)code, "%s",
              why ? why : "the supervisor gave an answer hutch does not understand");
  return -1;
}

/* As ask_supervisor; HUTCH_NO_SUPERVISOR set: 0 without asking (a helper of its own). */
static int supervisor_forward_add(const char *runtime_dir, const HutchPort *port, GError **error) {
  if (hutch_supervisor_refused_by_env())
    return 0;
  g_autoptr(JsonObject) request = json_object_new();
  json_object_set_string_member(request, "op", "forward-add");
  json_object_set_string_member(request, "host_ip", port->host_ip);
  json_object_set_int_member(request, "host_port", port->host_start);
  json_object_set_int_member(request, "guest_port", port->guest_start);
  return ask_supervisor(runtime_dir, request, error);
}

static int supervisor_forward_remove(const char *runtime_dir, guint host_port, GError **error) {
  g_autoptr(JsonObject) request = json_object_new();
  json_object_set_string_member(request, "op", "forward-remove");
  json_object_set_int_member(request, "host_port", host_port);
  return ask_supervisor(runtime_dir, request, error);
}

/* ---- Public API ----------------------------------------------------------------------- */

static HutchInstance *running_instance(HutchContext *ctx, const char *name, GError **error) {
  HutchInstance *instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  if (!hutch_instance_is_active(instance) || instance->meta->ssh_port == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "'%s' is not running (hutch start %s)", name,
                name);
    hutch_instance_free(instance);
    return NULL;
  }
  return instance;
}

static gboolean forward_add(HutchContext *ctx, const char *name, const HutchPort *port,
                            GError **error) {
  g_autoptr(HutchInstance) instance = running_instance(ctx, name, error);
  if (!instance)
    return FALSE;
  const char *runtime_dir = instance->meta->runtime_dir;
  /* on qemu:///system the runtime directory is a link (made again if it went) to one whose
   * mode and ACL let QEMU's user in, which hutch_mkdir's chmod through the link would undo */
  if (hutch_context_is_system(ctx)) {
    g_autofree char *run_dir = hutch_instance_qemu_runtime_dir(ctx, instance, error);
    if (!run_dir)
      return FALSE;
  } else if (!hutch_mkdir(runtime_dir, 0700, error)) {
    return FALSE;
  }
  if (hutch_forward_pid(runtime_dir, port->host_start) > 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE,
                "host port %u is forwarded to '%s' already (hutch forward %s --remove %u)",
                port->host_start, name, name, port->host_start);
    return FALSE;
  }
  /* a helper's stale files go; a supervised forward's record is the supervisor's (it may only
   * be slow to answer), and it says if that port is taken */
  gboolean supervised = FALSE;
  hutch_forward_read_spec(runtime_dir, port->host_start, NULL, NULL, &supervised);
  if (!supervised)
    hutch_forward_remove_files(runtime_dir, port->host_start);
  /* the VM's supervisor serves it; without one, a helper of its own */
  int served = supervisor_forward_add(runtime_dir, port, error);
  if (served != 0)
    return served > 0;
  /* none answered: one starts for what comes next (it serves the supervised forwards of the
   * one before it again, as after `hutch shell`), this forward gets a helper now */
  hutch_supervisor_spawn(ctx, name, runtime_dir);
  g_autofree char *host_key = hutch_instance_host_key(instance, error);
  if (!host_key)
    return FALSE;
  g_autofree char *client_key = hutch_ssh_client_key(NULL, error);
  if (!client_key)
    return FALSE;
  g_auto(HutchFd) listen_fd = hutch_forward_listen(port->host_ip, port->host_start, error);
  if (listen_fd < 0)
    return FALSE;
  g_autofree char *log_path = hutch_forward_file(runtime_dir, port->host_start, "log");
  g_auto(HutchFd) log_fd =
      open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (log_fd < 0) {
    int saved = errno;
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "creating %s: %s", log_path,
                g_strerror(saved));
    return FALSE;
  }
  Helper helper = {
      .runtime_dir = runtime_dir,
      .name = name,
      .ssh_port = instance->meta->ssh_port,
      .user = instance->meta->guest_user,
      .client_key = client_key,
      .host_key = host_key,
      .port = port,
      .listen_fd = listen_fd,
      .log_fd = log_fd,
  };
  return spawn_helper(&helper, error);
}

gboolean hutch_forward_add(HutchContext *ctx, const char *name, const char *spec, GError **error) {
  HutchPort *port = hutch_forward_parse(spec, error);
  if (!port)
    return FALSE;
  gboolean ok = forward_add(ctx, name, port, error);
  if (!ok)
    g_prefix_error(error, "forwarding %s to '%s': ", spec, name);
  hutch_port_free(port);
  return ok;
}

JsonArray *hutch_forward_list(HutchContext *ctx, const char *name, GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return NULL;
  return hutch_forward_list_dir(instance->meta->runtime_dir);
}

gboolean hutch_forward_remove(HutchContext *ctx, const char *name, guint host_port,
                              GError **error) {
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return FALSE;
  const char *runtime_dir = instance->meta->runtime_dir;
  gboolean supervised = FALSE;
  hutch_forward_read_spec(runtime_dir, host_port, NULL, NULL, &supervised);
  if (supervised) {
    /* asked whatever its status says (it may be slow to answer); no supervisor at all: the
     * record goes, so that the next one does not serve it again */
    g_autoptr(GError) local = NULL;
    if (supervisor_forward_remove(runtime_dir, host_port, &local) < 0 &&
        !g_error_matches(local, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND)) {
      g_propagate_prefixed_error(error, g_steal_pointer(&local),
                                 "removing the forward from host port %u: ", host_port);
      return FALSE;
    }
    hutch_forward_remove_files(runtime_dir, host_port);
    return TRUE;
  }
  if (hutch_forward_pid(runtime_dir, host_port) <= 0) {
    /* a helper that is gone: nothing serves it */
    hutch_forward_remove_files(runtime_dir, host_port);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND,
                "'%s' has no forward from host port %u (hutch forward %s --list)", name, host_port,
                name);
    return FALSE;
  }
  hutch_forward_stop(runtime_dir, host_port);
  return TRUE;
}
