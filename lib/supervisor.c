/* supervisor.c: one process per running VM, holding one SSH session to the guest and serving
 * commands over it; the client side; starting and stopping it. See supervisor-private.h. */
#define _GNU_SOURCE /* accept4, struct ucred */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <libssh2.h>

#include "context-private.h"
#include "egress-helper-private.h"
#include "forward-private.h"
#include "hostpath-private.h"
#include "instance-private.h"
#include "net-private.h"
#include "pidfile-private.h"
#include "ssh-private.h"
#include "broker-private.h"
#include "supervisor-private.h"
#include "util-private.h"

/* Reading stops while this much waits to be sent on: a slow reader slows its writer, and
 * never grows the supervisor's memory without bound. */
#define BUFFER_HIGH (256 * 1024)
/* More concurrent commands wait in the listen backlog. */
#define MAX_SLOTS 128

static const HutchHelperId supervisor_id = {.comm = HUTCH_SUPERVISOR_COMM, .recorded = TRUE};

/* ---- The supervisor ------------------------------------------------------------------- */

typedef enum {
  SLOT_REQUEST, /* connected, its request not read yet */
  SLOT_WAITING, /* its channel not open yet */
  SLOT_PTY,     /* open, its terminal being requested */
  SLOT_EXEC,    /* its command being started */
  SLOT_RUNNING,
  SLOT_CLOSING, /* the client is told (or gone); the channel being freed */
  SLOT_SPARE,   /* no client: a session channel opened ahead for the next command */
  SLOT_COPY,    /* a copy's thread has the client (the loop watches it for a hang-up) */
} SlotState;

/* The libssh2 call that left a packet half-sent: libssh2 refuses any other sending call on
 * the session until that same call is repeated and completes (as in forward.c's relay). */
typedef enum {
  OP_NONE,
  OP_OPEN,
  OP_PTY,
  OP_EXEC,
  OP_RESIZE,
  OP_READ,
  OP_WRITE,
  OP_EOF,
  OP_WAIT,
  OP_NUDGE,
  OP_CLOSE,
} Op;

typedef struct {
  guint id;
  int fd; /* the client, non-blocking; -1 once gone */
  SlotState state;
  LIBSSH2_CHANNEL *channel;
  GByteArray *in;  /* from the client, not parsed yet */
  GByteArray *out; /* frames for the client */
  GByteArray *up;  /* stdin for the channel */
  char *command;   /* NULL: a login shell */
  char *term;
  gboolean pty;
  guint cols, rows;
  gboolean resize_pending, stdin_eof, eof_sent, out_eof, err_eof;
  gboolean nudged;    /* hutch_ssh_channel_nudge sent (or tried) */
  gboolean exec_sent; /* the exec request may have reached the guest: never run it twice */
  gboolean accepted;  /* A sent */
  gboolean told;      /* the client has its answer (X, F or S), or is gone */
  double closing_since;
  double started;    /* when its command was accepted */
  struct Copy *copy; /* SLOT_COPY: its copy */
  int passed_fd;     /* a descriptor the request came with (a copy's local side), or -1 */
} Slot;

/* A port `hutch forward` added: its own thread, with its own SSH connection, relays it
 * (hutch_forward_relay), so that a guest port that never accepts stalls that forward alone,
 * never the commands on the supervisor's session. The thread owns nothing but its relay:
 * the main loop makes and frees the Forward, and joins the thread first. */
typedef struct {
  char *host_ip;
  guint host_port, guest_port;
  int listen_fd;
  int stop[2]; /* the loop writes stop[1]: the relay ends */
  GThread *thread;
  const HutchSupervisorTarget *target;
  gint finished; /* atomic: the thread is done (join it) */
} Forward;

/* `hutch cp` through the supervisor. libssh2's SFTP runs in blocking calls only, so each
 * copy is a thread of its own, on the copy session: a second SSH connection the supervisor
 * keeps between copies (a copy then costs no new connection; one copy at a time uses it, and
 * a copy that finds it busy is told to copy directly), so that a large copy never holds up
 * the commands' session. The loop keeps the
 * copy's client in its poll for a hang-up only: a client that leaves (Ctrl-C) cancels its
 * copy, and so does the supervisor's end. A cancel also shuts the copy session's socket down,
 * so that a copy blocked on a guest that stopped answering ends too. */
typedef struct {
  GMutex lock;       /* held by the copy that uses ssh (others do not wait for it) */
  HutchSsh *ssh;     /* kept between copies; NULL: the next copy connects */
  GMutex user_lock;  /* guards user and fd: a cancel never shuts down a closed socket */
  struct Copy *user; /* the copy running on ssh */
  int fd;            /* ssh's socket while a copy runs on it, else -1 */
  gint begun;        /* atomic: copies begun on it (A sent) */
  guint uses;        /* copies on ssh (under lock) */
} CopySession;

typedef struct Copy {
  CopySession *session;
  const HutchSupervisorTarget *target;
  int client_fd; /* the slot's: the thread sends A and the result; the loop closes it after */
  int done_fd;   /* the loop's pipe: written when the copy is done */
  gboolean upload, recursive;
  char *local; /* as the command named it: for messages */
  char *guest;
  /* The local side, opened by the command (its credentials, its mount namespace) and passed
   * with the request: the source of an upload, or a download's destination (local_dest.fd,
   * as hutch_ssh_local_dest_open made it). */
  int local_fd;
  HutchSshLocalDest local_dest;
  int umask_bits;
  gint cancel;   /* atomic: the client left, or the supervisor ends */
  gint finished; /* atomic: the thread is done (join it) */
  GThread *thread;
} Copy;

typedef struct {
  HutchContext *ctx;
  const char *name;
  const char *runtime_dir;
  virDomainPtr domain;
  HutchSsh *ssh; /* NULL after the session failed: the next command connects again */
  LIBSSH2_SESSION *session;
  int ssh_fd;
  int listen_fd;
  int wake[2]; /* the libvirt event thread -> the loop: "s" the domain stopped */
  int signal_fd;
  GPtrArray *slots;
  GPtrArray *forwards;                 /* Forward*: the forwarded host ports */
  GPtrArray *stopping;                 /* Forward*: removed, their threads ending */
  const HutchSupervisorTarget *target; /* how a forward's thread connects; NULL: none can */
  Slot *opening;
  HutchSshOwner owner; /* the call that must be repeated first (a Slot*, an Op) */
  guint next_id;
  guint64 commands;
  guint64 spares_taken; /* commands that ran on a channel opened ahead */
  double opening_since;
  guint abandoned;         /* channels whose close the guest never confirmed */
  gboolean no_spare;       /* the guest refused a spare channel: open on demand only */
  gboolean session_failed; /* the loop ends: the next command connects directly */
  double accept_paused_until; /* out of descriptors: the control socket waits until then */
  struct Reconnect *reconnect; /* a new session being made after the last failed */
  double session_since;        /* when the session in use began */
  guint quick_losses;          /* sessions in a row that ended soon after they began */
  gint quit_events;        /* atomic: the event thread stops */
  CopySession copy_session;
  int copy_done[2]; /* copies' threads -> the loop: one is done */
  guint connect_wait_s;   /* how long the first connect may wait for the guest's sshd */
  guint64 children_ended; /* helpers (children) that exited and were reaped */
  GPtrArray *ended;       /* char*: the last SUPERVISOR_ENDED_KEPT of them, described */
} Sup;

/* After its session failed while the domain runs (a guest reboot), how long the supervisor
 * tries to connect again before it ends. */
#define SUPERVISOR_RECONNECT_S 300
/* How often an idle session is checked: a guest that rebooted never closed it (its network
 * went down first), and only what is sent to it then gets the new guest's reset. */
#define SUPERVISOR_KEEPALIVE_S 10
/* A session that ends within this many seconds of its start is a quick loss; after more
 * than SUPERVISOR_QUICK_LOSSES of them in a row the supervisor does not connect again (each
 * try waits a second per quick loss before it). */
#define SUPERVISOR_QUICK_LOSS_S 10
#define SUPERVISOR_QUICK_LOSSES 5
/* A supervisor that started the helpers connects once its start ended; if that start ended
 * before the guest was up (killed, or not waiting), it waits as long as a start would. */
#define SUPERVISOR_BOOT_CONNECT_S 600
/* How many ended helpers the status describes (the log has them all). */
#define SUPERVISOR_ENDED_KEPT 8

#define sup_log(...) hutch_log_line(STDERR_FILENO, __VA_ARGS__)

static void copy_free(struct Copy *copy);
static void copy_cancel(struct Copy *copy);

static void slot_free(Slot *c) {
  /* a copy's thread still uses the client: joined first (the loop's end cancelled it) */
  g_clear_pointer(&c->copy, copy_free);
  if (c->passed_fd >= 0)
    close(c->passed_fd);
  if (c->fd >= 0)
    close(c->fd);
  g_byte_array_unref(c->in);
  g_byte_array_unref(c->out);
  g_byte_array_unref(c->up);
  g_free(c->command);
  g_free(c->term);
  g_free(c);
}

static Slot *slot_add(Sup *s, int fd, SlotState state) {
  Slot *c = g_new0(Slot, 1);
  c->id = ++s->next_id;
  c->fd = fd;
  c->passed_fd = -1;
  c->state = state;
  c->in = g_byte_array_new();
  c->out = g_byte_array_new();
  c->up = g_byte_array_new();
  g_ptr_array_add(s->slots, c);
  return c;
}

static void note_blocked(Sup *s, Slot *c, Op op) {
  hutch_ssh_owner_blocked(&s->owner, s->session, c, op);
}

static void op_finished(Sup *s, Slot *c, Op op) {
  hutch_ssh_owner_done(&s->owner, c, op);
}

/* The client is told that the command failed (before it ran: it connects directly); the
 * channel, if any, is freed. */
static void slot_fail(Slot *c, const char *why) {
  if (c->state == SLOT_COPY)
    return; /* its thread tells the client, on its own session */
  if (!c->told && c->fd >= 0) {
    /* F before A means "connect directly and run it there": not for a command that may
     * be running already */
    if (c->exec_sent && !c->accepted)
      hutch_frame_append(c->out, 'A', NULL, 0);
    hutch_frame_append_text(c->out, 'F', why);
  }
  c->told = TRUE;
  c->accepted = TRUE;
  if (c->state != SLOT_CLOSING)
    c->closing_since = hutch_now();
  c->state = SLOT_CLOSING;
}

/* The client left: nothing more goes to it. */
static void slot_drop_client(Slot *c) {
  if (c->state == SLOT_COPY) {
    /* its thread writes to the socket until it is joined: cancelled, closed by reap_copies */
    copy_cancel(c->copy);
    return;
  }
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  g_byte_array_set_size(c->out, 0);
  c->told = TRUE;
  if (c->state != SLOT_CLOSING)
    c->closing_since = hutch_now();
  c->state = SLOT_CLOSING;
}

/* ---- Forwarded ports ------------------------------------------------------------------ */

/* Connects (trying again for 30 s while the guest boots) unless told to stop. */
static HutchSsh *forward_connect(Forward *f, GError **error) {
  const HutchSupervisorTarget *t = f->target;
  return hutch_ssh_connect_retrying(t->port, t->user, t->client_key, t->host_key, 30, f->stop[0],
                                    NULL, NULL, error);
}

static gpointer forward_thread(gpointer data) {
  Forward *f = data;
  for (;;) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchSsh) ssh = forward_connect(f, &error);
    /* connection lines are not logged: any local user can make them, without end */
    if (ssh && hutch_forward_relay(ssh, f->listen_fd, f->guest_port, f->stop[0], -1, &error))
      break; /* told to stop */
    if (g_error_matches(error, HUTCH_ERROR, HUTCH_ERROR_HOST_KEY)) {
      sup_log("forward from %s:%u stopped: %s", f->host_ip, f->host_port, error->message);
      /* clients are refused from now on rather than left waiting in the backlog (the port
       * stays bound until the forward is removed; on Linux this ends the listening) */
      shutdown(f->listen_fd, SHUT_RDWR);
      break;
    }
    sup_log("forward from %s:%u: %s; connecting again in 5 s", f->host_ip, f->host_port,
            error ? error->message : "ended");
    struct pollfd p = {.fd = f->stop[0], .events = POLLIN};
    if (poll(&p, 1, 5000) > 0)
      break;
  }
  g_atomic_int_set(&f->finished, 1);
  return NULL;
}

static void forward_free(Forward *f) {
  if (f->thread) {
    (void)!write(f->stop[1], "x", 1);
    g_thread_join(f->thread);
  }
  for (int i = 0; i < 2; i++)
    if (f->stop[i] >= 0)
      close(f->stop[i]);
  if (f->listen_fd >= 0)
    close(f->listen_fd);
  g_free(f->host_ip);
  g_free(f);
}

static Forward *find_forward(Sup *s, guint host_port) {
  for (guint i = 0; i < s->forwards->len; i++) {
    Forward *f = g_ptr_array_index(s->forwards, i);
    if (f->host_port == host_port)
      return f;
  }
  return NULL;
}

/* Serves host_ip:host_port -> guest port; the spec file (when there is a runtime directory)
 * lets `hutch forward --list` see it and a later supervisor serve it again. */
static gboolean forward_add(Sup *s, const char *host_ip, guint host_port, guint guest_port,
                            GError **error) {
  if (!s->target) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "this supervisor cannot forward ports");
    return FALSE;
  }
  if (find_forward(s, host_port)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE, "host port %u is forwarded already",
                host_port);
    return FALSE;
  }
  g_auto(HutchFd) fd = hutch_forward_listen(host_ip, host_port, error);
  if (fd < 0)
    return FALSE;
  Forward *f = g_new0(Forward, 1);
  f->stop[0] = f->stop[1] = f->listen_fd = -1;
  f->host_ip = g_strdup(host_ip);
  f->host_port = host_port;
  f->guest_port = guest_port;
  f->target = s->target;
  if (!g_unix_open_pipe(f->stop, FD_CLOEXEC, NULL)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "pipe: %s", g_strerror(errno));
    forward_free(f);
    return FALSE;
  }
  if (s->runtime_dir) {
    g_autofree char *path = hutch_forward_file(s->runtime_dir, host_port, "spec");
    g_autofree char *spec =
        g_strdup_printf("%s %u %u %s\n", host_ip, host_port, guest_port, HUTCH_FORWARD_SUPERVISED);
    if (!hutch_write_file(path, spec, strlen(spec), 0600, error)) {
      forward_free(f);
      return FALSE;
    }
  }
  f->listen_fd = g_steal_fd(&fd);
  f->thread = g_thread_new("forward", forward_thread, f);
  g_ptr_array_add(s->forwards, f);
  sup_log("forwarding %s:%u to guest port %u", host_ip, host_port, guest_port);
  return TRUE;
}

/* Stops serving f: the port refuses at once (its listening socket is shut down), its
 * connections end with the thread, which the loop joins once it is done. */
static void forward_remove(Sup *s, Forward *f) {
  shutdown(f->listen_fd, SHUT_RDWR);
  (void)!write(f->stop[1], "x", 1);
  if (s->runtime_dir)
    hutch_forward_remove_files(s->runtime_dir, f->host_port);
  sup_log("no longer forwarding %s:%u", f->host_ip, f->host_port);
  guint index = 0;
  if (g_ptr_array_find(s->forwards, f, &index))
    g_ptr_array_add(s->stopping, g_ptr_array_steal_index(s->forwards, index));
}

/* Tells every forward's thread to end, all at once (each may take seconds to see it: a
 * connection attempt, its channels' goodbyes); freeing them joins them after. */
static void stop_forwards(Sup *s) {
  GPtrArray *lists[] = {s->forwards, s->stopping};
  for (guint k = 0; k < G_N_ELEMENTS(lists); k++)
    for (guint i = 0; i < lists[k]->len; i++) {
      Forward *f = g_ptr_array_index(lists[k], i);
      shutdown(f->listen_fd, SHUT_RDWR);
      (void)!write(f->stop[1], "x", 1);
    }
}

/* Joins the removed forwards' threads that are done. */
static void reap_forwards(Sup *s) {
  for (guint i = 0; i < s->stopping->len;) {
    Forward *f = g_ptr_array_index(s->stopping, i);
    if (g_atomic_int_get(&f->finished))
      g_ptr_array_remove_index(s->stopping, i); /* forward_free joins at once */
    else
      i++;
  }
}

/* The supervised forwards a supervisor before this one served (killed, or its SSH session
 * lost while the domain ran on): served again, or dropped when their port is taken now. */
static void adopt_forwards(Sup *s) {
  g_autoptr(GArray) ports = hutch_forward_ports(s->runtime_dir);
  for (guint i = 0; i < ports->len; i++) {
    guint host_port = g_array_index(ports, guint, i);
    g_autofree char *host_ip = NULL;
    guint guest_port = 0;
    gboolean supervised = FALSE;
    if (!hutch_forward_read_spec(s->runtime_dir, host_port, &host_ip, &guest_port, &supervised) ||
        !supervised)
      continue;
    g_autoptr(GError) error = NULL;
    if (!forward_add(s, host_ip, host_port, guest_port, &error)) {
      sup_log("forward from %s:%u not served again: %s", host_ip, host_port, error->message);
      hutch_forward_remove_files(s->runtime_dir, host_port);
    }
  }
}

void hutch_supervisor_json_set_text(JsonObject *o, const char *member, const char *text) {
  g_autofree char *clean = hutch_text_sanitize(text, -1, HUTCH_TEXT_LINES);
  json_object_set_string_member(o, member, clean);
}

char *hutch_supervisor_result_json(const GError *error) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_boolean_member(o, "ok", error == NULL);
  if (error) {
    json_object_set_int_member(o, "code", error->code);
    hutch_supervisor_json_set_text(o, "error", error->message);
  }
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  return json_to_string(node, FALSE);
}

/* A JSON answer, and the request is done. */
static void answer(Slot *c, JsonObject *o) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  g_autofree char *text = json_to_string(node, FALSE);
  hutch_frame_append_text(c->out, 'S', text);
  c->told = TRUE;
  c->state = SLOT_CLOSING;
}

static void answer_result(Slot *c, GError *error) {
  g_autofree char *text = hutch_supervisor_result_json(error);
  hutch_frame_append_text(c->out, 'S', text);
  c->told = TRUE;
  c->state = SLOT_CLOSING;
}

/* A member of the type asked for, or NULL. */
static JsonNode *member_of_type(JsonObject *o, const char *name, GType type) {
  JsonNode *node = json_object_get_member(o, name);
  return node && JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type ? node
                                                                                       : NULL;
}

/* A port number member, or 0. */
static guint port_member(JsonObject *o, const char *name) {
  JsonNode *node = member_of_type(o, name, G_TYPE_INT64);
  gint64 port = node ? json_node_get_int(node) : 0;
  return port >= 1 && port <= 65535 ? (guint)port : 0;
}

static void handle_forward(Sup *s, Slot *c, JsonObject *o, gboolean add) {
  g_autoptr(GError) error = NULL;
  guint host_port = port_member(o, "host_port"), guest_port = port_member(o, "guest_port");
  JsonNode *ip = member_of_type(o, "host_ip", G_TYPE_STRING);
  const char *host_ip = ip ? json_node_get_string(ip) : NULL;
  if (!host_port || (add && (!guest_port || !host_ip || strlen(host_ip) > 64))) {
    g_set_error(&error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "a broken forward request");
  } else if (add) {
    forward_add(s, host_ip, host_port, guest_port, &error);
  } else {
    Forward *f = find_forward(s, host_port);
    if (f)
      forward_remove(s, f);
    else
      g_set_error(&error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND, "no forward from host port %u",
                  host_port);
  }
  answer_result(c, error);
}

/* ---- Copies ---------------------------------------------------------------------------- */

#define COPY_SESSION_USES 64

/* Drops the copy session (the caller holds its lock, and no copy runs on it). */
static void copy_session_close(CopySession *cs) {
  g_clear_pointer(&cs->ssh, hutch_ssh_free);
  cs->uses = 0;
}

/* The copy that runs on the session, or none (user NULL). */
static void copy_session_use(CopySession *cs, Copy *user) {
  g_mutex_lock(&cs->user_lock);
  cs->user = user;
  cs->fd = -1;
  if (user && cs->ssh) {
    hutch_ssh_session(cs->ssh, &cs->fd);
    /* a cancel that came before (the client left while 'A' went out) found no socket to
     * shut down: the copy must not begin on a guest that may never answer its first request */
    if (g_atomic_int_get(&user->cancel) && cs->fd >= 0)
      shutdown(cs->fd, SHUT_RDWR);
  }
  g_mutex_unlock(&cs->user_lock);
}

static void copy_cancel(Copy *copy) {
  CopySession *cs = copy->session;
  g_atomic_int_set(&copy->cancel, 1);
  g_mutex_lock(&cs->user_lock);
  if (cs->user == copy && cs->fd >= 0)
    shutdown(cs->fd, SHUT_RDWR);
  g_mutex_unlock(&cs->user_lock);
}

static gboolean copy_cancelled(gpointer data) {
  Copy *copy = data;
  return g_atomic_int_get(&copy->cancel) != 0;
}

static void copy_send(Copy *copy, char type, const char *text) {
  g_autoptr(GByteArray) out = g_byte_array_new();
  hutch_frame_append_text(out, type, text);
  /* a client that left: nothing to tell (MSG_NOSIGNAL) */
  (void)hutch_send_all(copy->client_fd, out->data, out->len);
}

/* The copy session, connected again when the one kept has died (a guest reboot). */
static HutchSsh *copy_session_get(Copy *copy, GError **error) {
  CopySession *cs = copy->session;
  if (cs->ssh && !hutch_ssh_sftp_alive(cs->ssh, 5000))
    copy_session_close(cs);
  if (!cs->ssh) {
    const HutchSupervisorTarget *t = copy->target;
    cs->ssh =
        hutch_ssh_connect("127.0.0.1", t->port, t->user, t->client_key, t->host_key, 10000, error);
  }
  return cs->ssh;
}

static gpointer copy_thread(gpointer data) {
  Copy *copy = data;
  CopySession *cs = copy->session;
  g_autoptr(GError) error = NULL;
  g_unix_set_fd_nonblocking(copy->client_fd, FALSE, NULL);
  char answer_type = 'F';
  g_autofree char *answer_text = NULL;
  if (!g_mutex_trylock(&cs->lock)) {
    /* another copy runs on the session (for as long as it takes): this one does not wait */
    answer_text = g_strdup("the copy session is busy");
  } else {
    HutchSsh *ssh = copy_cancelled(copy) ? NULL : copy_session_get(copy, &error);
    if (!ssh || copy_cancelled(copy)) {
      /* before A: the client copies directly (a client that left hears nothing) */
      answer_text = g_strdup(error ? error->message : "the copy was cancelled");
    } else {
      copy_send(copy, 'A', "");
      g_atomic_int_inc(&cs->begun);
      copy_session_use(cs, copy);
      hutch_ssh_set_copy_caller(ssh, copy_cancelled, copy, copy->umask_bits);
      gboolean ok = copy->upload ? hutch_ssh_upload_fd(ssh, copy->local_fd, copy->local,
                                                       copy->guest, copy->recursive, &error)
                                 : hutch_ssh_download_to(ssh, copy->guest, &copy->local_dest,
                                                         copy->local, copy->recursive, &error);
      hutch_ssh_set_copy_caller(ssh, NULL, NULL, -1);
      copy_session_use(cs, NULL);
      /* Made again for the next copy: after a cancel (which may have shut its socket down),
       * a failure (which may have left it broken), and every COPY_SESSION_USES copies (what
       * a hostile server sent beyond its answers may wait in libssh2's queue until then). */
      if (copy_cancelled(copy) || !ok || ++cs->uses >= COPY_SESSION_USES)
        copy_session_close(cs);
      answer_type = 'S';
      answer_text = hutch_supervisor_result_json(ok ? NULL : error);
    }
    g_mutex_unlock(&cs->lock);
  }
  /* after the unlock: a command that copies again as soon as it hears finds the session free */
  copy_send(copy, answer_type, answer_text);
  g_atomic_int_set(&copy->finished, 1);
  (void)!write(copy->done_fd, "x", 1);
  return NULL;
}

static void copy_free(Copy *copy) {
  copy_cancel(copy);
  if (copy->thread)
    g_thread_join(copy->thread);
  if (copy->local_fd >= 0)
    close(copy->local_fd);
  hutch_ssh_local_dest_clear(&copy->local_dest);
  g_free(copy->local);
  g_free(copy->guest);
  g_free(copy);
}

/* {"op": "copy", "upload": BOOL, "local": TEXT, "guest": TEXT, "recursive": BOOL, "umask": N}
 * with the source's descriptor for an upload, and for a download {"inside": BOOL, "name":
 * TEXT (when not inside), "missing": BOOL, "want_dir": BOOL} with the destination's (see
 * HutchSshLocalDest). */
static void handle_copy(Sup *s, Slot *c, JsonObject *o) {
  JsonNode *upload = member_of_type(o, "upload", G_TYPE_BOOLEAN);
  JsonNode *recursive = member_of_type(o, "recursive", G_TYPE_BOOLEAN);
  JsonNode *local = member_of_type(o, "local", G_TYPE_STRING);
  JsonNode *guest = member_of_type(o, "guest", G_TYPE_STRING);
  JsonNode *umask_node = member_of_type(o, "umask", G_TYPE_INT64);
  gint64 umask_bits = umask_node ? json_node_get_int(umask_node) : -1;
  gboolean is_upload = upload && json_node_get_boolean(upload);
  gboolean inside = json_object_get_boolean_member_with_default(o, "inside", FALSE);
  JsonNode *name = member_of_type(o, "name", G_TYPE_STRING);
  const char *name_text = name ? json_node_get_string(name) : NULL;
  if (!upload || !recursive || !local || !guest || umask_bits < 0 || umask_bits > 0777 ||
      c->passed_fd < 0 || strlen(json_node_get_string(local)) > PATH_MAX ||
      strlen(json_node_get_string(guest)) > PATH_MAX ||
      (!is_upload && !inside &&
       (!name_text || !hutch_hostpath_name_is_safe(name_text, strlen(name_text))))) {
    slot_fail(c, "a broken copy request");
    return;
  }
  if (!s->target) {
    slot_fail(c, "this supervisor cannot copy");
    return;
  }
  Copy *copy = g_new0(Copy, 1);
  copy->session = &s->copy_session;
  copy->target = s->target;
  copy->client_fd = c->fd;
  copy->done_fd = s->copy_done[1];
  copy->upload = is_upload;
  copy->recursive = json_node_get_boolean(recursive);
  copy->local = g_strdup(json_node_get_string(local));
  copy->guest = g_strdup(json_node_get_string(guest));
  copy->umask_bits = (int)umask_bits;
  copy->local_fd = -1;
  copy->local_dest.fd = -1;
  if (is_upload) {
    copy->local_fd = c->passed_fd;
  } else {
    copy->local_dest = (HutchSshLocalDest){
        .fd = c->passed_fd,
        .name = inside ? NULL : g_strdup(name_text),
        .inside = inside,
        .missing = json_object_get_boolean_member_with_default(o, "missing", FALSE),
        .want_dir = json_object_get_boolean_member_with_default(o, "want_dir", FALSE)};
  }
  c->passed_fd = -1;
  copy->thread = g_thread_try_new("copy", copy_thread, copy, NULL);
  if (!copy->thread) {
    copy_free(copy);
    slot_fail(c, "cannot start a thread for the copy");
    return;
  }
  c->copy = copy;
  c->state = SLOT_COPY;
  c->told = TRUE; /* the thread tells it */
}

/* The copies whose thread is done: joined, their clients closed. */
static void reap_copies(Sup *s) {
  char drain[64];
  while (read(s->copy_done[0], drain, sizeof drain) > 0)
    ;
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *c = g_ptr_array_index(s->slots, i);
    if (c->state != SLOT_COPY || !g_atomic_int_get(&c->copy->finished))
      continue;
    g_clear_pointer(&c->copy, copy_free);
    close(c->fd);
    c->fd = -1;
    c->closing_since = hutch_now();
    c->state = SLOT_CLOSING;
  }
}

static void handle_request(Sup *s, Slot *c, const guint8 *payload, gsize len) {
  g_autoptr(JsonParser) parser = json_parser_new();
  JsonNode *root = NULL;
  if (json_parser_load_from_data(parser, (const char *)payload, (gssize)len, NULL))
    root = json_parser_get_root(parser);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonNode *op_node = o ? member_of_type(o, "op", G_TYPE_STRING) : NULL;
  const char *op = op_node ? json_node_get_string(op_node) : "";
  if (strcmp(op, "status") == 0) {
    guint running = 0, spare = 0, copying = 0;
    for (guint i = 0; i < s->slots->len; i++) {
      Slot *slot = g_ptr_array_index(s->slots, i);
      running += slot->state == SLOT_RUNNING;
      copying += slot->state == SLOT_COPY;
      spare += slot->state == SLOT_SPARE && slot->channel && s->owner.who != slot;
    }
    g_autoptr(JsonObject) status = json_object_new();
    json_object_set_int_member(status, "pid", getpid());
    json_object_set_int_member(status, "commands", (gint64)s->commands);
    json_object_set_int_member(status, "running", running);
    json_object_set_int_member(status, "spare", spare);
    json_object_set_int_member(status, "spares_taken", (gint64)s->spares_taken);
    json_object_set_int_member(status, "forwards", s->forwards->len);
    json_object_set_int_member(status, "copies", g_atomic_int_get(&s->copy_session.begun));
    json_object_set_int_member(status, "copying", copying);
    json_object_set_int_member(status, "children_ended", (gint64)s->children_ended);
    JsonArray *ended = json_array_new();
    /* a child's comm is its own to set: not necessarily UTF-8 */
    for (guint i = 0; s->ended && i < s->ended->len; i++) {
      g_autofree char *line =
          hutch_text_sanitize(g_ptr_array_index(s->ended, i), -1, HUTCH_TEXT_LINE);
      json_array_add_string_element(ended, line);
    }
    json_object_set_array_member(status, "ended", ended);
    answer(c, status);
    return;
  }
  if (strcmp(op, "forward-add") == 0 || strcmp(op, "forward-remove") == 0) {
    handle_forward(s, c, o, strcmp(op, "forward-add") == 0);
    return;
  }
  if (strcmp(op, "copy") == 0) {
    handle_copy(s, c, o);
    return;
  }
  if (strcmp(op, "exec") != 0) {
    slot_fail(c, "unknown request");
    return;
  }
  JsonNode *command = json_object_get_member(o, "command");
  if (command && JSON_NODE_HOLDS_VALUE(command) &&
      json_node_get_value_type(command) == G_TYPE_STRING) {
    c->command = g_strdup(json_node_get_string(command));
  } else if (command && !JSON_NODE_HOLDS_NULL(command)) {
    slot_fail(c, "the command is not text");
    return;
  }
  c->pty = json_object_get_boolean_member_with_default(o, "pty", FALSE);
  c->term = g_strdup(json_object_get_string_member_with_default(o, "term", "vt100"));
  if (!c->term || !*c->term || strlen(c->term) > 64) {
    g_free(c->term);
    c->term = g_strdup("vt100");
  }
  c->cols = (guint)CLAMP(json_object_get_int_member_with_default(o, "cols", 80), 1, 10000);
  c->rows = (guint)CLAMP(json_object_get_int_member_with_default(o, "rows", 24), 1, 10000);
  if (!s->session) {
    slot_fail(c, "the supervisor has no SSH session");
    return;
  }
  s->commands++;
  c->state = SLOT_WAITING;
}

/* Frames from the client. FALSE: a broken client, dropped. */
static gboolean parse_client(Sup *s, Slot *c) {
  char type;
  const guint8 *payload;
  gsize len;
  int rc;
  while ((rc = hutch_frame_peek(c->in, &type, &payload, &len)) > 0) {
    if (c->state == SLOT_REQUEST) {
      if (type != 'Q')
        return FALSE;
      handle_request(s, c, payload, len);
      if (c->state == SLOT_COPY) {
        /* its thread has the client now: nothing more is read from it */
        hutch_frame_consume(c->in, len);
        return TRUE;
      }
    } else if (type == 'I' && !c->stdin_eof) {
      g_byte_array_append(c->up, payload, (guint)len);
    } else if (type == 'E') {
      c->stdin_eof = TRUE;
    } else if (type == 'W') {
      g_autofree char *text = g_strndup((const char *)payload, len);
      guint cols = 0, rows = 0;
      if (sscanf(text, "%u %u", &cols, &rows) == 2 && cols > 0 && rows > 0 && cols <= 10000 &&
          rows <= 10000) {
        c->cols = cols;
        c->rows = rows;
        c->resize_pending = c->pty;
      }
    }
    hutch_frame_consume(c->in, len);
  }
  return rc == 0;
}

/* recv, keeping one descriptor a request may come with (SCM_RIGHTS, on its first bytes):
 * any other is closed at once. */
static ssize_t recv_passing_fd(Slot *c, guint8 *buf, gsize size) {
  struct iovec iov = {.iov_base = buf, .iov_len = size};
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(int) * 4)];
  } control;
  struct msghdr msg = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control, .msg_controllen = sizeof control};
  ssize_t n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0)
    return n;
  for (struct cmsghdr *m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m)) {
    if (m->cmsg_level != SOL_SOCKET || m->cmsg_type != SCM_RIGHTS)
      continue;
    gsize count = (m->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (gsize i = 0; i < count; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(m) + i * sizeof(int), sizeof fd);
      if (c->state == SLOT_REQUEST && c->passed_fd < 0)
        c->passed_fd = fd;
      else
        close(fd);
    }
  }
  return n;
}

/* The client's socket, which libssh2 never sees. TRUE when something moved. */
static gboolean client_io(Sup *s, Slot *c) {
  gboolean progress = FALSE;
  if (c->fd < 0 || c->state == SLOT_COPY)
    return FALSE;
  while (c->out->len > 0) {
    ssize_t n = send(c->fd, c->out->data, c->out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      g_byte_array_remove_range(c->out, 0, (guint)n);
      progress = TRUE;
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      slot_drop_client(c);
      return TRUE;
    }
    break;
  }
  if (c->state == SLOT_CLOSING && c->told && c->out->len == 0) {
    /* everything said: the client sees the end of the stream */
    close(c->fd);
    c->fd = -1;
    return TRUE;
  }
  if (c->up->len < BUFFER_HIGH && c->in->len < HUTCH_FRAME_MAX + 4 && !c->told) {
    guint8 buf[HUTCH_FRAME_CHUNK];
    ssize_t n = recv_passing_fd(c, buf, sizeof buf);
    if (n > 0) {
      g_byte_array_append(c->in, buf, (guint)n);
      if (!parse_client(s, c))
        slot_drop_client(c);
      progress = TRUE;
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      slot_drop_client(c);
      progress = TRUE;
    }
  }
  return progress;
}

/* Each op: 1 progress, 0 nothing to do now, -1 the session failed (error set). */

static int channel_failed(Sup *s, Slot *c, int rc, const char *what, GError **error) {
  if (hutch_ssh_is_channel_error(rc)) {
    g_autofree char *message = hutch_ssh_session_message(s->session);
    g_autofree char *why = g_strdup_printf("%s: %s", what, message);
    slot_fail(c, why);
    return 1;
  }
  g_autofree char *message = hutch_ssh_session_message(s->session);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "%s: %s (%d)", what, message, rc);
  return -1;
}

static int op_open(Sup *s, Slot *c, GError **error) {
  LIBSSH2_CHANNEL *channel = libssh2_channel_open_session(s->session);
  if (channel) {
    op_finished(s, c, OP_OPEN);
    s->opening = NULL;
    c->channel = channel;
    if (c->state == SLOT_WAITING)
      c->state = c->pty ? SLOT_PTY : SLOT_EXEC;
    return 1;
  }
  int rc = libssh2_session_last_errno(s->session);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_OPEN);
    return 0;
  }
  op_finished(s, c, OP_OPEN);
  s->opening = NULL;
  if (c->state == SLOT_SPARE)
    s->no_spare = TRUE;
  return channel_failed(s, c, rc, "opening a session", error);
}

static int op_pty(Sup *s, Slot *c, GError **error) {
  int rc = libssh2_channel_request_pty_ex(c->channel, c->term, (unsigned)strlen(c->term), NULL, 0,
                                          (int)c->cols, (int)c->rows, 0, 0);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_PTY);
    return 0;
  }
  op_finished(s, c, OP_PTY);
  if (c->state != SLOT_PTY)
    return 1; /* the client left meanwhile: the channel is closed */
  if (rc != 0)
    return channel_failed(s, c, rc, "requesting a terminal", error);
  c->state = SLOT_EXEC;
  return 1;
}

static int op_exec(Sup *s, Slot *c, GError **error) {
  c->exec_sent = TRUE;
  int rc =
      c->command ? libssh2_channel_exec(c->channel, c->command) : libssh2_channel_shell(c->channel);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_EXEC);
    return 0;
  }
  op_finished(s, c, OP_EXEC);
  if (c->state != SLOT_EXEC)
    return 1; /* the client left meanwhile: the channel is closed */
  if (rc != 0)
    return channel_failed(s, c, rc, "starting the command", error);
  c->state = SLOT_RUNNING;
  c->started = hutch_now();
  hutch_frame_append(c->out, 'A', NULL, 0);
  c->accepted = TRUE;
  return 1;
}

static int op_resize(Sup *s, Slot *c, GError **error) {
  (void)error;
  int rc = libssh2_channel_request_pty_size_ex(c->channel, (int)c->cols, (int)c->rows, 0, 0);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_RESIZE);
    return 0;
  }
  op_finished(s, c, OP_RESIZE);
  /* a refused resize is cosmetic */
  c->resize_pending = FALSE;
  return 1;
}

/* stdout, then stderr, into frames while the client keeps up. */
static int op_read(Sup *s, Slot *c, GError **error) {
  int progress = 0;
  for (int stream = 0; stream < 2; stream++) {
    gboolean *eof = stream ? &c->err_eof : &c->out_eof;
    while (!*eof && c->out->len < BUFFER_HIGH) {
      char buf[HUTCH_FRAME_CHUNK];
      ssize_t n = libssh2_channel_read_ex(c->channel, stream, buf, sizeof buf);
      if (n == LIBSSH2_ERROR_EAGAIN) {
        note_blocked(s, c, OP_READ);
        break;
      }
      op_finished(s, c, OP_READ);
      if (n > 0) {
        hutch_frame_append(c->out, stream ? 'R' : 'O', buf, (gsize)n);
        progress = 1;
        continue;
      }
      if (n == 0 || hutch_ssh_is_channel_error((int)n)) {
        *eof = TRUE;
        progress = 1;
        break;
      }
      g_autofree char *message = hutch_ssh_session_message(s->session);
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "reading from the guest: %s", message);
      return -1;
    }
    if (s->owner.who)
      break;
  }
  return progress;
}

static int op_write(Sup *s, Slot *c, GError **error) {
  ssize_t n = libssh2_channel_write(c->channel, (const char *)c->up->data, c->up->len);
  if (n == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_WRITE);
    return 0;
  }
  op_finished(s, c, OP_WRITE);
  if (n >= 0) {
    g_byte_array_remove_range(c->up, 0, (guint)n);
    return n > 0;
  }
  if (hutch_ssh_is_channel_error((int)n) || libssh2_channel_eof(c->channel)) {
    /* the command is gone and took its stdin with it: drop the rest */
    g_byte_array_set_size(c->up, 0);
    c->stdin_eof = c->eof_sent = TRUE;
    return 1;
  }
  g_autofree char *message = hutch_ssh_session_message(s->session);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "writing to the guest: %s", message);
  return -1;
}

static int op_eof(Sup *s, Slot *c, GError **error) {
  int rc = libssh2_channel_send_eof(c->channel);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_EOF);
    return 0;
  }
  op_finished(s, c, OP_EOF);
  if (rc == 0 || hutch_ssh_is_channel_error(rc) || libssh2_channel_eof(c->channel)) {
    c->eof_sent = TRUE;
    return 1;
  }
  g_autofree char *message = hutch_ssh_session_message(s->session);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "closing the command's input: %s", message);
  return -1;
}

/* The guest's status and close sooner (hutch_ssh_channel_nudge); an error here is met again
 * by the wait for the close. */
static int op_nudge(Sup *s, Slot *c) {
  int rc = hutch_ssh_channel_nudge(c->channel);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_NUDGE);
    return 0;
  }
  op_finished(s, c, OP_NUDGE);
  c->nudged = TRUE;
  return 0;
}

/* The output is complete: the exit status comes with the channel's close. */
static int op_wait_closed(Sup *s, Slot *c, GError **error) {
  int rc = libssh2_channel_wait_closed(c->channel);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    /* its read may have sent (a rekey): then it owns the session's output */
    note_blocked(s, c, OP_WAIT);
    if (!s->owner.who && c->eof_sent && !c->nudged)
      return op_nudge(s, c);
    return 0;
  }
  op_finished(s, c, OP_WAIT);
  if (rc == LIBSSH2_ERROR_INVAL && !libssh2_channel_eof(c->channel)) {
    /* data after EOF (the guest may send anything): read on */
    c->out_eof = c->err_eof = FALSE;
    return 1;
  }
  if (hutch_ssh_is_channel_error(rc)) {
    if (c->fd >= 0)
      hutch_frame_append_text(c->out, 'X', "255");
    c->told = TRUE;
    c->closing_since = hutch_now();
    c->state = SLOT_CLOSING;
    return 1;
  }
  if (rc != 0) {
    g_autofree char *message = hutch_ssh_session_message(s->session);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "waiting for the command: %s", message);
    return -1;
  }
  int status = hutch_ssh_channel_exit_status(s->session, c->channel);
  g_autofree char *text = g_strdup_printf("%d", status);
  if (c->fd >= 0)
    hutch_frame_append_text(c->out, 'X', text);
  c->told = TRUE;
  c->closing_since = hutch_now();
  c->state = SLOT_CLOSING;
  return 1;
}

static int op_close(Sup *s, Slot *c, GError **error) {
  int rc = libssh2_channel_free(c->channel);
  if (rc == LIBSSH2_ERROR_EAGAIN) {
    note_blocked(s, c, OP_CLOSE);
    return 0;
  }
  op_finished(s, c, OP_CLOSE);
  c->channel = NULL;
  if (rc != 0 && !hutch_ssh_is_channel_error(rc)) {
    g_autofree char *message = hutch_ssh_session_message(s->session);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "closing a channel: %s", message);
    return -1;
  }
  return 1;
}

static int run_op(Sup *s, Slot *c, Op op, GError **error) {
  switch (op) {
  case OP_OPEN:
    return op_open(s, c, error);
  case OP_PTY:
    return op_pty(s, c, error);
  case OP_EXEC:
    return op_exec(s, c, error);
  case OP_RESIZE:
    return op_resize(s, c, error);
  case OP_READ:
    return op_read(s, c, error);
  case OP_WRITE:
    return op_write(s, c, error);
  case OP_EOF:
    return op_eof(s, c, error);
  case OP_WAIT:
    return op_wait_closed(s, c, error);
  case OP_NUDGE:
    return op_nudge(s, c);
  case OP_CLOSE:
    return op_close(s, c, error);
  case OP_NONE:
    break;
  }
  return 0;
}

/* The SSH side of one slot, while no other call owns the session's output. */
static int channel_io(Sup *s, Slot *c, GError **error) {
  int progress = 0, rc;
  switch (c->state) {
  case SLOT_REQUEST:
  case SLOT_WAITING:
  case SLOT_SPARE:
  case SLOT_COPY: /* its own thread and session */
    return 0;
  case SLOT_PTY:
    return op_pty(s, c, error);
  case SLOT_EXEC:
    return op_exec(s, c, error);
  case SLOT_CLOSING:
    return c->channel ? op_close(s, c, error) : 0;
  case SLOT_RUNNING:
    break;
  }
  if (c->resize_pending && (rc = op_resize(s, c, error)) != 0) {
    if (rc < 0)
      return -1;
    progress = 1;
  }
  if (s->owner.who)
    return progress;
  if ((rc = op_read(s, c, error)) < 0)
    return -1;
  progress |= rc;
  if (s->owner.who)
    return progress;
  if (c->up->len > 0) {
    if ((rc = op_write(s, c, error)) < 0)
      return -1;
    progress |= rc;
  }
  if (s->owner.who)
    return progress;
  if (c->stdin_eof && c->up->len == 0 && !c->eof_sent) {
    if ((rc = op_eof(s, c, error)) < 0)
      return -1;
    progress |= rc;
  }
  if (s->owner.who)
    return progress;
  if (c->out_eof && c->err_eof) {
    if ((rc = op_wait_closed(s, c, error)) < 0)
      return -1;
    progress |= rc;
  }
  return progress;
}

static void accept_clients(Sup *s) {
  while (s->slots->len < MAX_SLOTS) {
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* the client stays in the backlog, and poll would say so again at once: a loop
         * that spins and logs without end. Wait a second (forwards' clients, which any
         * local user can open, are what uses the descriptors up). */
        sup_log("accept: %s; accepting again in 1 s", g_strerror(errno));
        s->accept_paused_until = hutch_now() + 1.0;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                 errno != ECONNABORTED) {
        sup_log("accept: %s", g_strerror(errno));
      }
      return;
    }
    /* the socket is 0600 in a directory of the user's (0700, or on qemu:///system 0700 with
     * QEMU's user let through); the peer's uid is checked all the same */
    struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
      sup_log("refused a client whose uid cannot be read: %s", g_strerror(errno));
      close(fd);
      continue;
    }
    if (cred.uid != getuid()) {
      sup_log("refused a client of uid %u", (unsigned)cred.uid);
      close(fd);
      continue;
    }
    slot_add(s, fd, SLOT_REQUEST);
  }
}

/* Takes ssh as the loop's session: non-blocking, with keepalives every
 * SUPERVISOR_KEEPALIVE_S (sent by the loop only while the socket's send queue is empty:
 * hutch_ssh_keepalive_when_idle). They ask for no reply, which nothing would read: what tells
 * is the reset a rebooted guest answers with. */
static void session_install(Sup *s, HutchSsh *ssh) {
  s->ssh = ssh;
  s->session = hutch_ssh_session(ssh, &s->ssh_fd);
  libssh2_session_set_blocking(s->session, 0);
  libssh2_keepalive_config(s->session, 0, SUPERVISOR_KEEPALIVE_S);
  s->session_since = hutch_now();
}

/* ---- A new session after the last failed ----------------------------------------------- */

/* A thread makes it: each try may block for the SSH timeout (10 s), which neither the loop
 * nor the supervisor's end may wait for. So the thread has what it needs of its own, and
 * whichever of it and the loop lets go last frees it. */
typedef struct Reconnect {
  gint refs;
  guint port, wait_s;
  guint delay_s; /* before the first try */
  char *user, *client_key, *host_key;
  virDomainPtr domain; /* NULL: no domain to watch (the unit tests' loop) */
  int done[2];         /* the thread writes done[1] when it is done */
  int stop[2];         /* the loop writes stop[1]: stop trying */
  HutchSsh *ssh;       /* what it made, or NULL and error */
  char *error;
} Reconnect;

static void reconnect_unref(Reconnect *r) {
  if (!g_atomic_int_dec_and_test(&r->refs))
    return;
  g_clear_pointer(&r->ssh, hutch_ssh_free);
  for (int i = 0; i < 2; i++) {
    if (r->done[i] >= 0)
      close(r->done[i]);
    if (r->stop[i] >= 0)
      close(r->stop[i]);
  }
  g_free(r->user);
  g_free(r->client_key);
  g_free(r->host_key);
  if (r->domain)
    virDomainFree(r->domain);
  g_free(r->error);
  g_free(r);
}

/* Between tries: the domain still runs (libvirt lets any thread use the domain). */
static gboolean reconnect_worth_it(gpointer data, GError **error) {
  Reconnect *r = data;
  if (!r->domain || virDomainIsActive(r->domain) == 1)
    return TRUE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE, "the domain stopped");
  return FALSE;
}

static gpointer reconnect_thread(gpointer data) {
  Reconnect *r = data;
  g_autoptr(GError) error = NULL;
  struct pollfd stop = {.fd = r->stop[0], .events = POLLIN};
  if (r->delay_s > 0 && poll(&stop, 1, (int)r->delay_s * 1000) > 0)
    g_set_error(&error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "told to stop");
  else
    r->ssh = hutch_ssh_connect_retrying(r->port, r->user, r->client_key, r->host_key, r->wait_s,
                                        r->stop[0], reconnect_worth_it, r, &error);
  if (!r->ssh)
    r->error = g_strdup(error ? error->message : "told to stop");
  (void)!write(r->done[1], "x", 1);
  reconnect_unref(r);
  return NULL;
}

static gboolean reconnect_begin(Sup *s) {
  const HutchSupervisorTarget *t = s->target;
  if (!t || t->reconnect_s == 0 || s->reconnect)
    return FALSE;
  if (s->quick_losses > SUPERVISOR_QUICK_LOSSES) {
    sup_log("not connecting again: the last %u sessions ended within %d s of their start",
            s->quick_losses, SUPERVISOR_QUICK_LOSS_S);
    return FALSE;
  }
  Reconnect *r = g_new0(Reconnect, 1);
  r->done[0] = r->done[1] = r->stop[0] = r->stop[1] = -1;
  r->refs = 2; /* the loop's and the thread's */
  /* a session that ended soon after it began (a guest that drops every login) is not made
   * again at once, and not without end */
  r->delay_s = s->quick_losses;
  r->port = t->port;
  r->wait_s = t->reconnect_s;
  r->user = g_strdup(t->user);
  r->client_key = g_strdup(t->client_key);
  r->host_key = g_strdup(t->host_key);
  if (s->domain && virDomainRef(s->domain) == 0)
    r->domain = s->domain;
  if (!g_unix_open_pipe(r->done, FD_CLOEXEC, NULL) ||
      !g_unix_open_pipe(r->stop, FD_CLOEXEC, NULL)) {
    r->refs = 1;
    reconnect_unref(r);
    return FALSE;
  }
  sup_log("connecting again (for up to %u s)", t->reconnect_s);
  s->reconnect = r;
  g_thread_unref(g_thread_new("reconnect", reconnect_thread, r));
  return TRUE;
}

/* The loop lets go of the thread: told to stop unless it is done, never waited for. */
static void reconnect_drop(Sup *s) {
  if (!s->reconnect)
    return;
  (void)!write(s->reconnect->stop[1], "x", 1);
  g_clear_pointer(&s->reconnect, reconnect_unref);
}

/* The thread is done: the loop takes its session, or ends as without one. */
static void reconnect_finished(Sup *s) {
  Reconnect *r = g_steal_pointer(&s->reconnect);
  HutchSsh *ssh = g_steal_pointer(&r->ssh);
  if (ssh) {
    sup_log("connected again");
    session_install(s, ssh);
    s->no_spare = FALSE;
    s->abandoned = 0;
  } else {
    sup_log("connecting again failed: %s", r->error);
    s->session_failed = TRUE;
  }
  reconnect_unref(r);
}

/* The session failed: every command on it ends with an error, the next one connects again. */
static void session_lost(Sup *s, GError *error) {
  sup_log("the SSH session failed: %s", error->message);
  g_autofree char *why = g_strdup_printf("the supervisor's SSH session failed: %s", error->message);
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *c = g_ptr_array_index(s->slots, i);
    c->channel = NULL; /* freed with the session */
    if (c->state != SLOT_REQUEST)
      slot_fail(c, why);
  }
  s->opening = s->owner.who = NULL;
  s->opening_since = 0; /* else the next session's first open inherits this one's deadline */
  s->owner.op = OP_NONE;
  if (hutch_now() - s->session_since < SUPERVISOR_QUICK_LOSS_S)
    s->quick_losses++;
  else
    s->quick_losses = 0;
  /* no polite goodbye on a session that failed: it could hold the loop for seconds */
  if (s->ssh_fd >= 0)
    shutdown(s->ssh_fd, SHUT_RDWR);
  g_clear_pointer(&s->ssh, hutch_ssh_free);
  s->session = NULL;
  s->ssh_fd = -1;
  /* Connecting again blocks for up to the SSH timeout, so a thread does it while the loop
   * goes on (commands meanwhile connect directly). Without it, or when it fails, the loop
   * ends once the clients have their answers, and the next command connects directly and
   * starts a new supervisor. */
  if (!reconnect_begin(s))
    s->session_failed = TRUE;
}

/* A command takes the channel opened ahead for it, when there is one: that saves the open's
 * round trip to the guest (~4 ms of a 65 ms `hutch shell NAME -- true` under TCG). */
static gboolean take_spare(Sup *s, Slot *c) {
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *spare = g_ptr_array_index(s->slots, i);
    if (spare->state != SLOT_SPARE || !spare->channel || s->owner.who == spare)
      continue;
    spare->state = SLOT_CLOSING;
    spare->told = TRUE;
    spare->closing_since = hutch_now();
    /* Nothing read the session while the spare waited: read now what the guest sent. A
     * spare it ended, or wrote to (which would pass for the command's output), is freed and
     * a new channel opened. A close without EOF cannot be seen through libssh2: the exec
     * then gets no answer, and the client connects directly after its timeout. */
    char byte;
    ssize_t n = libssh2_channel_read_ex(spare->channel, 0, &byte, 1);
    if (n == LIBSSH2_ERROR_EAGAIN &&
        (libssh2_session_block_directions(s->session) & LIBSSH2_SESSION_BLOCK_OUTBOUND)) {
      note_blocked(s, spare, OP_READ); /* its read sent (a rekey): it is repeated first */
      return FALSE;
    }
    if (n != LIBSSH2_ERROR_EAGAIN || libssh2_poll_channel_read(spare->channel, 1) > 0 ||
        libssh2_channel_eof(spare->channel))
      return FALSE;
    c->channel = spare->channel;
    spare->channel = NULL;
    s->spares_taken++;
    c->state = c->pty ? SLOT_PTY : SLOT_EXEC;
    return TRUE;
  }
  return FALSE;
}

/* A new spare channel to open, when none is there, no command is being started, and none
 * started in the last 100 ms (on a 1-vCPU guest, sshd's work for the open would delay a short
 * command's end by about what the spare saves), while few channels are open (sshd allows 10
 * a connection). */
static Slot *spare_wanted(Sup *s) {
  guint channels = 0;
  if (s->no_spare || s->session_failed)
    return NULL;
  double now = hutch_now();
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *c = g_ptr_array_index(s->slots, i);
    if (c->state == SLOT_SPARE || c->state == SLOT_WAITING || c->state == SLOT_PTY ||
        c->state == SLOT_EXEC || (c->state == SLOT_RUNNING && now - c->started < 0.1))
      return NULL;
    channels += c->channel != NULL;
  }
  /* abandoned channels may still count in sshd's limit */
  if (channels + s->abandoned >= 8 || s->slots->len >= MAX_SLOTS)
    return NULL;
  return slot_add(s, -1, SLOT_SPARE);
}

/* Whether spare_wanted put a spare off only because a command started within 100 ms: then
 * the loop looks again after that, even when nothing else happens. */
static gboolean spare_put_off(Sup *s) {
  gboolean recent = FALSE;
  if (!s->session || s->no_spare || s->session_failed)
    return FALSE;
  double now = hutch_now();
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *c = g_ptr_array_index(s->slots, i);
    if (c->state == SLOT_SPARE)
      return FALSE;
    recent |= c->state == SLOT_RUNNING && now - c->started < 0.1;
  }
  return recent;
}

/* One round over everything: 1 when something moved, 0 when all waits. */
static int sup_round(Sup *s) {
  int progress = 0, rc = 0;
  g_autoptr(GError) error = NULL;
  for (guint i = 0; i < s->slots->len; i++)
    progress |= client_io(s, g_ptr_array_index(s->slots, i));
  if (s->session) {
    if (s->owner.who)
      rc = run_op(s, s->owner.who, s->owner.op, &error);
    if (rc >= 0 && !s->owner.who && !s->opening) {
      for (guint i = 0; i < s->slots->len && !s->opening; i++) {
        Slot *c = g_ptr_array_index(s->slots, i);
        if (c->state == SLOT_WAITING && !take_spare(s, c))
          s->opening = c;
      }
      if (!s->opening)
        s->opening = spare_wanted(s);
    }
    if (rc >= 0 && !s->owner.who && s->opening) {
      if (s->opening_since == 0)
        s->opening_since = hutch_now();
      rc = op_open(s, s->opening, &error);
      if (!s->opening)
        s->opening_since = 0;
    }
    progress |= rc > 0;
    for (guint i = 0; rc >= 0 && i < s->slots->len && !s->owner.who; i++) {
      rc = channel_io(s, g_ptr_array_index(s->slots, i), &error);
      progress |= rc > 0;
    }
    if (rc < 0) {
      session_lost(s, error);
      progress = 1;
    }
  }
  /* A guest that never confirms an open or a close must not hold the supervisor: an open
   * that takes longer than any live guest needs ends the session; a channel whose close
   * never comes is forgotten (libssh2 frees it with the session), up to a bound. */
  double now = hutch_now();
  if (s->session && s->opening && s->owner.who != s->opening && s->opening_since > 0 &&
      now - s->opening_since > 30) {
    g_autoptr(GError) late = g_error_new(HUTCH_ERROR, HUTCH_ERROR_TIMEOUT,
                                         "the guest did not open a channel within 30 s");
    session_lost(s, late);
  }
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *c = g_ptr_array_index(s->slots, i);
    if (c->state == SLOT_CLOSING && c->channel && s->owner.who != c &&
        now - c->closing_since > 30) {
      c->channel = NULL;
      if (++s->abandoned > 64 && s->session) {
        g_autoptr(GError) many =
            g_error_new(HUTCH_ERROR, HUTCH_ERROR_SSH, "the guest left 64 channels unclosed");
        session_lost(s, many);
      }
    }
  }
  for (guint i = 0; i < s->slots->len;) {
    Slot *c = g_ptr_array_index(s->slots, i);
    gboolean finished = c->state == SLOT_CLOSING && !c->channel && c->fd < 0;
    /* a slot waiting for a session that is gone */
    if (!s->session && c->state == SLOT_WAITING)
      slot_fail(c, "the supervisor has no SSH session");
    if (finished && s->owner.who != c && s->opening != c) {
      slot_free(g_ptr_array_steal_index(s->slots, i));
      progress = 1;
    } else {
      i++;
    }
  }
  return progress;
}

/* Whether libssh2 holds something a round would take without touching the socket. */
static gboolean channels_ready(Sup *s) {
  if (!s->session || s->owner.who)
    return FALSE;
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *c = g_ptr_array_index(s->slots, i);
    if (c->state != SLOT_RUNNING || c->out->len >= BUFFER_HIGH)
      continue;
    if ((!c->out_eof && libssh2_poll_channel_read(c->channel, 0) > 0) ||
        (!c->err_eof && libssh2_poll_channel_read(c->channel, 1) > 0) ||
        ((!c->out_eof || !c->err_eof) && libssh2_channel_eof(c->channel)))
      return TRUE;
    if (c->up->len > 0 && libssh2_channel_window_write(c->channel) > 0)
      return TRUE;
  }
  return FALSE;
}

/* ---- libvirt events ------------------------------------------------------------------- */

static int on_lifecycle(virConnectPtr conn, virDomainPtr domain, int event, int detail,
                        void *opaque) {
  (void)conn;
  (void)domain;
  (void)detail;
  Sup *s = opaque;
  if (event == VIR_DOMAIN_EVENT_STOPPED)
    (void)!write(s->wake[1], "s", 1);
  return 0;
}

static void on_close(virConnectPtr conn, int reason, void *opaque) {
  (void)conn;
  (void)reason;
  Sup *s = opaque;
  (void)!write(s->wake[1], "c", 1);
}

static gpointer event_thread(gpointer data) {
  Sup *s = data;
  while (!g_atomic_int_get(&s->quit_events))
    if (virEventRunDefaultImpl() < 0)
      break;
  return NULL;
}

/* A timer that fires at once: virEventRunDefaultImpl returns after running it, and the event
 * thread sees quit_events. */
static void wake_event_thread(int timer, void *opaque) {
  (void)timer;
  (void)opaque;
}

/* The thread reads the Sup on serve's caller's stack: it ends before serve returns. After it,
 * no thread runs libvirt's event loop: the connection's keepalive is then answered only
 * during calls (start --foreground, which goes on with the connection, polls the domain every
 * second). */
static void stop_event_thread(Sup *s, GThread *thread) {
  g_atomic_int_set(&s->quit_events, 1);
  int timer = virEventAddTimeout(0, wake_event_thread, NULL, NULL);
  if (timer < 0)
    sup_log("waking libvirt's event loop failed: waiting for its next event");
  g_thread_join(thread);
  if (timer >= 0)
    virEventRemoveTimeout(timer);
}

/* ---- Running it ----------------------------------------------------------------------- */

static int listen_on(const char *path, GError **error) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "socket path too long: %s", path);
    return -1;
  }
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "socket: %s", g_strerror(errno));
    return -1;
  }
  g_unlink(path);
  mode_t old = umask(0177);
  int rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
  umask(old);
  if (rc < 0 || listen(fd, 32) < 0) {
    int saved = errno;
    close(fd);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "listening on %s: %s", path,
                g_strerror(saved));
    return -1;
  }
  return fd;
}

/* Whether a slot waits on something that may already sit in libssh2's queue (an open
 * confirmation, a request's reply, a close): then the loop looks again soon. */
static gboolean slot_transient(const Slot *c) {
  return c->state == SLOT_PTY || c->state == SLOT_EXEC ||
         (c->state == SLOT_CLOSING && c->channel) ||
         (c->state == SLOT_RUNNING &&
          ((c->out_eof && c->err_eof) || (c->stdin_eof && !c->eof_sent) || c->resize_pending));
}

/* Whether a slot needs what the guest sends. */
static gboolean slot_wants_ssh(const Slot *c) {
  if (c->state == SLOT_RUNNING)
    return (c->out->len < BUFFER_HIGH && (!c->out_eof || !c->err_eof)) || c->up->len > 0 ||
           slot_transient(c);
  return slot_transient(c);
}

/* The helpers this supervisor started (passt, virtiofsd, the egress helper) are its children
 * (it is their subreaper: each was started through a fork that exited, or forks itself into
 * the background); one that exits is reaped here, and named in the log while it is a zombie
 * still. (Nothing else in this process waits for a child while the loop runs.) */
static char *helper_of_pid(const char *runtime_dir, pid_t pid);

static void reap_children(Sup *s) {
  for (;;) {
    siginfo_t info = {0};
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid == 0)
      return;
    g_autofree char *comm_path = g_strdup_printf("/proc/%d/comm", (int)info.si_pid);
    g_autofree char *comm = NULL;
    if (g_file_get_contents(comm_path, &comm, NULL, NULL))
      g_strstrip(comm);
    int status = 0;
    if (waitpid(info.si_pid, &status, WNOHANG) != info.si_pid)
      return;
    s->children_ended++;
    /* which helper, by the pidfile that still names it (a helper's own, verified when it is
     * signalled; here only a name for the message) */
    g_autofree char *helper = s->runtime_dir ? helper_of_pid(s->runtime_dir, info.si_pid) : NULL;
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *when = g_date_time_format(now, "%H:%M:%S");
    g_autofree char *what = WIFSIGNALED(status)
                                ? g_strdup_printf("%s (pid %d) ended on signal %d at %s",
                                                  helper ? helper
                                                  : comm ? comm
                                                         : "?",
                                                  (int)info.si_pid, WTERMSIG(status), when)
                                : g_strdup_printf("%s (pid %d) exited with status %d at %s",
                                                  helper ? helper
                                                  : comm ? comm
                                                         : "?",
                                                  (int)info.si_pid, WEXITSTATUS(status), when);
    sup_log("a child ended: %s", what);
    if (s->ended) {
      if (s->ended->len == SUPERVISOR_ENDED_KEPT)
        g_ptr_array_remove_index(s->ended, 0);
      g_ptr_array_add(s->ended, g_steal_pointer(&what));
    }
  }
}

/* "passt", "the egress helper" or "virtiofsd of share N" when one of the VM's pidfiles names
 * pid, else NULL. */
static char *helper_of_pid(const char *runtime_dir, pid_t pid) {
  g_autoptr(GDir) dir = g_dir_open(runtime_dir, 0, NULL);
  const char *entry;
  while (dir && (entry = g_dir_read_name(dir))) {
    if (!g_str_has_suffix(entry, ".pid"))
      continue;
    g_autofree char *path = g_build_filename(runtime_dir, entry, NULL);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL) || atoi(text) != (int)pid)
      continue;
    unsigned share = 0;
    if (strcmp(entry, HUTCH_PASST_PID) == 0)
      return g_strdup("passt");
    if (strcmp(entry, HUTCH_EGRESS_PID) == 0)
      return g_strdup("the egress helper");
    if (sscanf(entry, "virtiofs-%u.pid", &share) == 1)
      return g_strdup_printf("virtiofsd of share %u", share);
  }
  return NULL;
}

/* Returns why it ended: the domain stopped (then the helpers are stopped), a signal, or the
 * end of the libvirt connection or of the SSH session (the domain may still run). */
static HutchSuperviseEnd sup_loop(Sup *s) {
  for (;;) {
    /* A bounded number of rounds, so that a busy transfer does not keep new clients, signals
     * and the stop event waiting. */
    int rc, rounds = 0;
    do
      rc = sup_round(s);
    while (rc > 0 && ++rounds < 32);
    gboolean busy = rc > 0;
    if (s->session_failed) {
      gboolean answered = TRUE;
      for (guint i = 0; i < s->slots->len; i++)
        answered &= ((Slot *)g_ptr_array_index(s->slots, i))->fd < 0;
      if (answered) {
        /* The guest's side closes when QEMU dies, often before libvirt tells: give the stop
         * event a moment, so that the helpers of a domain that is gone are stopped. */
        struct pollfd p = {.fd = s->wake[0], .events = POLLIN};
        for (int i = 0; s->domain && i < 30 && virDomainIsActive(s->domain) == 1; i++)
          poll(&p, 1, 100);
        if (s->domain && virDomainIsActive(s->domain) != 1) {
          sup_log("the domain stopped");
          return HUTCH_SUPERVISE_DOMAIN_STOPPED;
        }
        return HUTCH_SUPERVISE_LOST;
      }
    }

    g_autofree struct pollfd *pfds = g_new0(struct pollfd, s->slots->len + 6);
    nfds_t n = 0;
    gboolean accept_paused = s->accept_paused_until > hutch_now();
    pfds[n++] = (struct pollfd){
        .fd = s->listen_fd,
        .events = s->slots->len < MAX_SLOTS && !s->session_failed && !accept_paused ? POLLIN : 0};
    pfds[n++] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
    pfds[n++] = (struct pollfd){.fd = s->signal_fd, .events = POLLIN};
    nfds_t copy_done_index = n++;
    pfds[copy_done_index] = (struct pollfd){.fd = s->copy_done[0], .events = POLLIN};
    nfds_t reconnect_index = n++;
    pfds[reconnect_index] =
        (struct pollfd){.fd = s->reconnect ? s->reconnect->done[0] : -1, .events = POLLIN};
    nfds_t ssh_index = n++;
    gboolean ssh_in = s->owner.who != NULL || s->opening != NULL;
    gboolean transient = ssh_in;
    nfds_t first_slot = n;
    for (guint i = 0; i < s->slots->len; i++) {
      Slot *c = g_ptr_array_index(s->slots, i);
      ssh_in |= slot_wants_ssh(c);
      transient |= slot_transient(c);
      short events = 0;
      int fd = c->fd;
      if (c->state == SLOT_COPY) {
        /* its thread has the socket: only a hang-up is watched, until it cancelled the copy */
        events = POLLRDHUP;
        if (copy_cancelled(c->copy))
          fd = -1;
      } else if (c->fd >= 0) {
        if (c->out->len > 0)
          events |= POLLOUT;
        if (c->up->len < BUFFER_HIGH && !c->told)
          events |= POLLIN;
      }
      /* fd -1 is skipped by poll; POLLHUP and POLLERR come whatever the events */
      pfds[n++] = (struct pollfd){.fd = fd, .events = events};
    }
    pfds[ssh_index] = (struct pollfd){.fd = -1};
    if (s->session) {
      short ssh_events = POLLRDHUP;
      if (ssh_in)
        ssh_events |= POLLIN;
      if (s->owner.who ||
          (libssh2_session_block_directions(s->session) & LIBSSH2_SESSION_BLOCK_OUTBOUND))
        ssh_events |= POLLOUT;
      pfds[ssh_index] = (struct pollfd){.fd = s->ssh_fd, .events = ssh_events};
    }
    reap_forwards(s);
    int timeout = busy || channels_ready(s) ? 0 : transient ? 20 : -1;
    if (s->session && !s->owner.who && !s->opening) {
      int keepalive_ms = hutch_ssh_keepalive_when_idle(s->session, s->ssh_fd);
      if (keepalive_ms < 0) {
        g_autoptr(GError) failed =
            g_error_new(HUTCH_ERROR, HUTCH_ERROR_SSH, "sending a keepalive failed");
        session_lost(s, failed);
        continue;
      }
      timeout = timeout < 0 ? keepalive_ms : MIN(timeout, keepalive_ms);
    }
    if (s->stopping->len > 0)
      timeout = timeout < 0 ? 100 : MIN(timeout, 100); /* to join a removed forward's thread */
    if (s->opening || s->session_failed)
      timeout = timeout < 0 ? 1000 : MIN(timeout, 1000); /* the deadlines */
    if (timeout != 0 && spare_put_off(s))
      timeout = timeout < 0 ? 100 : MIN(timeout, 100);
    if (accept_paused)
      timeout = timeout < 0 ? 100 : MIN(timeout, 100); /* to accept again */
    for (guint i = 0; i < s->slots->len && timeout != 0; i++)
      if (((Slot *)g_ptr_array_index(s->slots, i))->state == SLOT_CLOSING)
        timeout = timeout < 0 ? 1000 : MIN(timeout, 1000);
    rc = poll(pfds, n, timeout);
    if (rc < 0 && errno != EINTR) {
      sup_log("poll: %s", g_strerror(errno));
      return HUTCH_SUPERVISE_LOST;
    }
    if (rc <= 0)
      continue;
    if (pfds[2].revents) {
      struct signalfd_siginfo info;
      gboolean got = read(s->signal_fd, &info, sizeof info) == sizeof info;
      if (got && info.ssi_signo == SIGCHLD) {
        reap_children(s);
        continue;
      }
      if (got)
        sup_log("stopping on signal %u", info.ssi_signo);
      return HUTCH_SUPERVISE_SIGNAL;
    }
    if (pfds[1].revents) {
      char why = 0;
      if (read(s->wake[0], &why, 1) == 1 && why == 'c') {
        /* nothing watches the domain any more: the next command starts a new supervisor */
        sup_log("the connection to libvirt closed");
        return HUTCH_SUPERVISE_LOST;
      }
      if (!s->domain)
        return HUTCH_SUPERVISE_LOST; /* hutch_supervisor_loop's stop */
      if (virDomainIsActive(s->domain) != 1) {
        sup_log("the domain stopped");
        return HUTCH_SUPERVISE_DOMAIN_STOPPED;
      }
    }
    if (pfds[reconnect_index].revents)
      reconnect_finished(s);
    if (s->session && (pfds[ssh_index].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      g_autoptr(GError) closed =
          g_error_new(HUTCH_ERROR, HUTCH_ERROR_SSH, "the guest closed the SSH connection");
      session_lost(s, closed);
    }
    for (guint i = 0; i < s->slots->len; i++) {
      Slot *c = g_ptr_array_index(s->slots, i);
      short revents = pfds[first_slot + i].revents;
      if (c->state == SLOT_COPY) {
        if (revents & (POLLRDHUP | POLLHUP | POLLERR))
          copy_cancel(c->copy); /* the client left: Ctrl-C */
        continue;
      }
      /* a client gone while nothing is read from it (its stdin backlog is full) */
      if (c->fd >= 0 && (revents & (POLLHUP | POLLERR)) && !(revents & POLLIN))
        slot_drop_client(c);
    }
    if (pfds[copy_done_index].revents)
      reap_copies(s);
    if (pfds[0].revents)
      accept_clients(s);
  }
}

/* The loop with its slots, which end with it: a client still waiting is told. */
static HutchSuperviseEnd run_loop(Sup *s) {
  s->slots = g_ptr_array_new_with_free_func((GDestroyNotify)slot_free);
  g_mutex_init(&s->copy_session.lock);
  g_mutex_init(&s->copy_session.user_lock);
  s->copy_session.fd = -1;
  if (!g_unix_open_pipe(s->copy_done, FD_CLOEXEC, NULL)) {
    sup_log("pipe: %s", g_strerror(errno));
    g_clear_pointer(&s->slots, g_ptr_array_unref);
    return HUTCH_SUPERVISE_LOST;
  }
  /* a full pipe already says it all: neither side ever waits */
  g_unix_set_fd_nonblocking(s->copy_done[0], TRUE, NULL);
  g_unix_set_fd_nonblocking(s->copy_done[1], TRUE, NULL);
  HutchSuperviseEnd end = sup_loop(s);
  /* a session made after the loop ended is not used (s->ssh, the one in use, is the
   * caller's to free, after the slots' channels) */
  reconnect_drop(s);
  for (guint i = 0; i < s->slots->len; i++) {
    Slot *c = g_ptr_array_index(s->slots, i);
    if (c->copy)
      copy_cancel(c->copy); /* all at once: freeing the slots joins them */
    if (c->fd >= 0 && !c->told) {
      slot_fail(c, "the supervisor stopped");
      ssize_t rc = send(c->fd, c->out->data, c->out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)rc;
    }
  }
  /* channels are freed with the session, which is the caller's */
  g_clear_pointer(&s->slots, g_ptr_array_unref);
  copy_session_close(&s->copy_session);
  g_mutex_clear(&s->copy_session.lock);
  g_mutex_clear(&s->copy_session.user_lock);
  for (int i = 0; i < 2; i++)
    close(s->copy_done[i]);
  return end;
}

HutchSuperviseEnd hutch_supervisor_loop(HutchSsh *ssh, const HutchSupervisorTarget *target,
                                        int listen_fd, int stop_fd) {
  g_autoptr(GPtrArray) forwards = g_ptr_array_new_with_free_func((GDestroyNotify)forward_free);
  g_autoptr(GPtrArray) stopping = g_ptr_array_new_with_free_func((GDestroyNotify)forward_free);
  Sup s = {.ssh = ssh,
           .target = target,
           .listen_fd = listen_fd,
           .wake = {stop_fd, -1},
           .signal_fd = -1,
           .forwards = forwards,
           .stopping = stopping};
  session_install(&s, ssh);
  g_unix_set_fd_nonblocking(listen_fd, TRUE, NULL);
  HutchSuperviseEnd end = run_loop(&s);
  g_clear_pointer(&s.ssh, hutch_ssh_free); /* unless the loop did, when the session failed */
  return end;
}

/* Watches the domain, connects, listens, and serves until the domain stops or a signal. */
static int serve(Sup *s, HutchSuperviseEnd *ret_end, GError **error) {
  g_autofree char *socket_path = g_build_filename(s->runtime_dir, HUTCH_SUPERVISOR_SOCKET, NULL);
  g_autofree char *pid_path = g_build_filename(s->runtime_dir, HUTCH_SUPERVISOR_PID, NULL);
  virConnectPtr conn = virDomainGetConnect(s->domain);
  int callback = virConnectDomainEventRegisterAny(conn, s->domain, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                  VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), s, NULL);
  if (callback < 0) {
    hutch_set_libvirt_error(error, "watching the domain");
    return 1;
  }
  virConnectRegisterCloseCallback(conn, on_close, s, NULL);
  virConnectSetKeepAlive(conn, 5, 3);
  GThread *events = g_thread_new("libvirt-events", event_thread, s);

  int status = 1;
  HutchSsh *ssh = hutch_instance_connect_within(s->ctx, s->name, s->connect_wait_s, error);
  if (ssh) {
    session_install(s, ssh);
    s->listen_fd = listen_on(socket_path, error);
  }
  g_autofree char *pid_text = s->listen_fd >= 0 ? hutch_pidfile_format(getpid()) : NULL;
  if (s->listen_fd >= 0 && !pid_text)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing %s: cannot read /proc/%d/stat",
                pid_path, (int)getpid());
  if (pid_text && hutch_write_file(pid_path, pid_text, strlen(pid_text), 0600, error)) {
    sup_log("serving %s on %s", s->name, socket_path);
    /* stopped between the lookup and the registration: no event will come */
    adopt_forwards(s);
    reap_children(s); /* any that exited before SIGCHLD was the loop's */
    *ret_end = virDomainIsActive(s->domain) != 1 ? HUTCH_SUPERVISE_DOMAIN_STOPPED : run_loop(s);
    /* the forwarded ports close now (their threads joined); their spec files stay for the
     * next supervisor unless the domain stopped (hutch_instance_stop_helpers) */
    stop_forwards(s);
    g_ptr_array_set_size(s->forwards, 0);
    g_ptr_array_set_size(s->stopping, 0);
    gboolean domain_stopped = *ret_end == HUTCH_SUPERVISE_DOMAIN_STOPPED;
    status = 0;
    g_unlink(socket_path);
    g_unlink(pid_path);
    if (domain_stopped) {
      sup_log("stopping the domain's helpers");
      hutch_instance_stop_helpers(s->runtime_dir);
      g_autoptr(GError) reclaim_error = NULL;
      if (!hutch_instance_system_reclaim(s->ctx, s->domain, s->name, &reclaim_error))
        sup_log("taking the VM's files back from QEMU's user: %s", reclaim_error->message);
    }
  } else if (s->listen_fd >= 0) {
    g_unlink(socket_path);
  }
  virConnectDomainEventDeregisterAny(conn, callback);
  virConnectUnregisterCloseCallback(conn, on_close);
  /* after the callbacks are gone, so that none runs once the thread ended */
  stop_event_thread(s, events);
  return status;
}

gboolean hutch_supervise_prepare(GError **error) {
  static gsize registered = 0;
  static int result = 0;
  if (g_once_init_enter(&registered)) {
    result = virEventRegisterDefaultImpl();
    g_once_init_leave(&registered, 1);
  }
  if (result < 0) {
    hutch_set_libvirt_error(error, "registering libvirt's event loop");
    return FALSE;
  }
  return TRUE;
}

/* How `hutch start` hands its VM's supervisor the helpers' start (hutch_supervisor_boot). */
typedef struct {
  int fd;         /* the start's socket: progress lines out, its closing in */
  int secrets_fd; /* for the egress helper, unread; -1: none */
  guint ssh_port;
  const char *runtime_dir;
} Boot;

/* One JSON object as one line on the boot socket. */
static void boot_send_object(const Boot *boot, JsonObject *o) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  g_autofree char *line = json_to_string(node, FALSE);
  g_autofree char *text = g_strconcat(line, "\n", NULL);
  hutch_send_all(boot->fd, (const guint8 *)text, strlen(text));
}

/* A progress event of the helpers' start, as a line on the boot socket for `hutch start` to
 * show as its own. */
static void boot_progress(const HutchProgress *progress, gpointer data) {
  const Boot *boot = data;
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_int_member(o, "kind", progress->kind);
  if (progress->phase)
    hutch_supervisor_json_set_text(o, "phase", progress->phase);
  if (progress->detail)
    hutch_supervisor_json_set_text(o, "detail", progress->detail);
  boot_send_object(boot, o);
}

/* The boot socket's last line: {"ok": true}, or {"ok": false, "error": TEXT, "code": N}. The
 * secrets' descriptor is closed here, if the helpers' start did not take it. */
static void boot_send_result(Boot *boot, const GError *error) {
  if (boot->secrets_fd >= 0)
    close(boot->secrets_fd);
  boot->secrets_fd = -1;
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_boolean_member(o, "ok", error == NULL);
  if (error) {
    hutch_supervisor_json_set_text(o, "error", error->message);
    json_object_set_int_member(o, "code",
                               error->domain == HUTCH_ERROR ? error->code : HUTCH_ERROR_FAILED);
  }
  boot_send_object(boot, o);
}

/* Starts the VM's helpers as this process's children and tells `hutch start` how that went
 * (the last line: {"ok": true}, or the error and its code); then waits until it closes its end
 * of the socket, which it does when the start is over, whatever its outcome, or when it dies.
 * TRUE when the helpers run. */
static gboolean boot_helpers(HutchContext *ctx, const char *name, Boot *boot, GError **error) {
  /* A libvirt connection of its own, closed before the wait: nothing runs libvirt's event loop
   * until the supervisor serves, so the daemon's keepalive would find an idle connection
   * unanswered and close it during a boot (30 s). It is opened before this process becomes
   * a subreaper: a session daemon it starts must not become its child (nor the QEMUs that
   * daemon starts). */
  g_autoptr(GError) local = NULL;
  gboolean ok = FALSE;
  HutchContext *boot_ctx = hutch_context_new(ctx->uri, &local);
  if (boot_ctx && hutch_context_connect(boot_ctx, &local)) {
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    hutch_context_set_helper_program(boot_ctx, ctx->helper_program);
    hutch_context_set_progress(boot_ctx, boot_progress, boot);
    ok = hutch_instance_start_helpers(boot_ctx, name, boot->ssh_port, boot->secrets_fd, &local);
  }
  if (boot_ctx)
    hutch_context_free(boot_ctx);
  if (ok)
    sup_log("started the helpers of %s as its children", name);
  boot_send_result(boot, local);
  if (ok) {
    /* from now on the pidfile names this supervisor (serve writes it again, with the same
     * text): a stop or start that meets it before it serves, still connecting, can end it.
     * (Not while it starts the helpers: a second start would end it midway, then start
     * helpers of its own beside the ones it left.) */
    g_autofree char *pid_path = g_build_filename(boot->runtime_dir, HUTCH_SUPERVISOR_PID, NULL);
    g_autofree char *pid_text = hutch_pidfile_format(getpid());
    if (pid_text)
      hutch_write_file(pid_path, pid_text, strlen(pid_text), 0600, NULL);
    /* the start sends nothing: what comes is its end */
    char byte;
    struct pollfd p = {.fd = boot->fd, .events = POLLIN};
    while ((poll(&p, 1, -1) < 0 && errno == EINTR) ||
           (!(p.revents & (POLLHUP | POLLERR)) && read(boot->fd, &byte, 1) > 0))
      ;
  }
  close(boot->fd);
  boot->fd = -1;
  if (!ok)
    g_propagate_prefixed_error(error, g_steal_pointer(&local), "starting the helpers: ");
  return ok;
}

static int supervise(HutchContext *ctx, const char *name, Boot *boot, HutchSuperviseEnd *ret_end,
                     GError **error);
static int supervise_locked(HutchContext *ctx, const char *name, Boot *boot,
                            HutchSuperviseEnd *ret_end, GError **error);

int hutch_supervise(HutchContext *ctx, const char *name, GError **error) {
  return hutch_supervise_boot(ctx, name, -1, 0, -1, error);
}

int hutch_supervise_boot(HutchContext *ctx, const char *name, int boot_fd, guint ssh_port,
                         int secrets_fd, GError **error) {
  HutchSuperviseEnd end;
  prctl(PR_SET_NAME, HUTCH_SUPERVISOR_COMM, 0, 0, 0);
  /* each forward takes up to 256 connections, which any local user can open: the soft
   * open-file limit (often 1,024) must not be what ends the user's own commands */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  /* not for the helpers it starts */
  if (boot_fd >= 0)
    fcntl(boot_fd, F_SETFD, FD_CLOEXEC);
  if (secrets_fd >= 0)
    fcntl(secrets_fd, F_SETFD, FD_CLOEXEC);
  Boot boot = {.fd = boot_fd, .secrets_fd = secrets_fd, .ssh_port = ssh_port};
  return supervise(ctx, name, boot_fd >= 0 ? &boot : NULL, &end, error);
}

int hutch_supervise_full(HutchContext *ctx, const char *name, HutchSuperviseEnd *ret_end,
                         GError **error) {
  return supervise(ctx, name, NULL, ret_end, error);
}

static int supervise(HutchContext *ctx, const char *name, Boot *boot, HutchSuperviseEnd *ret_end,
                     GError **error) {
  *ret_end = HUTCH_SUPERVISE_LOST;
  /* The event loop implementation comes before the connection that delivers events. */
  if (!hutch_supervise_prepare(error))
    return 1;
  /* one supervisor per VM: the lock first, before any helper starts */
  g_autofree char *runtime_dir = hutch_instance_runtime_dir(name);
  g_autofree char *lock_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_LOCK, NULL);
  g_auto(HutchFd) lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "opening %s: %s", lock_path,
                g_strerror(errno));
    return 1;
  }
  if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
    sup_log("another supervisor serves %s", name);
    if (boot) {
      /* `hutch start` waited for the last one to be gone: this is another start's */
      g_autoptr(GError) busy = g_error_new(
          HUTCH_ERROR, HUTCH_ERROR_STATE,
          "another supervisor of '%s' still runs (another hutch start?): try again", name);
      boot_send_result(boot, busy);
      close(boot->fd);
    }
    return 0;
  }
  if (boot)
    boot->runtime_dir = runtime_dir;
  int status = supervise_locked(ctx, name, boot, ret_end, error);
  /* the lock is still held: the pidfile is this supervisor's */
  g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_PID, NULL);
  g_unlink(pid_path);
  return status;
}

static int supervise_locked(HutchContext *ctx, const char *name, Boot *boot,
                            HutchSuperviseEnd *ret_end, GError **error) {
  if (boot && !boot_helpers(ctx, name, boot, error))
    return 1;
  /* a client that vanished must not kill us (set after the helpers' start: an ignored signal
   * stays ignored across exec) */
  signal(SIGPIPE, SIG_IGN);
  g_autoptr(HutchInstance) instance = hutch_instance_lookup(ctx, name, error);
  if (!instance)
    return 1;
  /* how a forward's thread connects: as this supervisor does (hutch_instance_connect); these
   * outlive the threads (the arrays below are freed, and their threads joined, first) */
  g_autoptr(GError) target_error = NULL;
  g_autofree char *host_key = hutch_instance_host_key(instance, &target_error);
  g_autofree char *client_key = host_key ? hutch_ssh_client_key(NULL, &target_error) : NULL;
  g_autoptr(GPtrArray) forwards = g_ptr_array_new_with_free_func((GDestroyNotify)forward_free);
  g_autoptr(GPtrArray) stopping = g_ptr_array_new_with_free_func((GDestroyNotify)forward_free);
  g_autoptr(GPtrArray) ended = g_ptr_array_new_with_free_func(g_free);
  HutchSupervisorTarget target = {.port = instance->meta->ssh_port,
                                  .user = instance->meta->guest_user,
                                  .client_key = client_key,
                                  .host_key = host_key,
                                  /* a guest reboot under TCG takes about a minute */
                                  .reconnect_s = SUPERVISOR_RECONNECT_S};
  if (!client_key)
    sup_log("forwarded ports cannot be served: %s", target_error->message);
  Sup s = {.ctx = ctx,
           .name = name,
           .runtime_dir = instance->meta->runtime_dir,
           .domain = instance->domain,
           .ssh_fd = -1,
           .listen_fd = -1,
           .wake = {-1, -1},
           .signal_fd = -1,
           .forwards = forwards,
           .stopping = stopping,
           .target = client_key ? &target : NULL,
           .ended = ended,
           /* after its own start's end the guest answers at once, unless that start ended
            * early (killed, or not waiting for the guest): then as long as a start waits */
           .connect_wait_s = boot ? SUPERVISOR_BOOT_CONNECT_S : 30};
  int status = 0;
  if (!hutch_instance_is_active(instance)) {
    sup_log("%s is not running", name);
    if (boot) {
      /* the start ended before the domain ran: its helpers go with this supervisor */
      sup_log("stopping the helpers started for it");
      hutch_instance_stop_helpers(s.runtime_dir);
    }
  } else {
    /* SIGTERM, SIGINT and SIGHUP end the loop; SIGCHLD: a helper ended */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s.signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s.signal_fd < 0 || !g_unix_open_pipe(s.wake, FD_CLOEXEC, NULL)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "signalfd or pipe: %s",
                  g_strerror(errno));
      status = 1;
    } else {
      g_unix_set_fd_nonblocking(s.wake[1], TRUE, NULL);
      status = serve(&s, ret_end, error);
      /* it ended without seeing the domain stop (before it served: the guest never answered
       * and the domain stopped meanwhile): the helpers go with the domain all the same */
      if (*ret_end != HUTCH_SUPERVISE_DOMAIN_STOPPED && virDomainIsActive(instance->domain) == 0) {
        sup_log("%s stopped: stopping its helpers", name);
        hutch_instance_stop_helpers(s.runtime_dir);
      }
    }
  }
  g_clear_pointer(&s.ssh, hutch_ssh_free);
  if (s.listen_fd >= 0)
    close(s.listen_fd);
  if (s.signal_fd >= 0)
    close(s.signal_fd);
  /* serve ended the event thread, the only writer */
  for (int i = 0; i < 2; i++)
    if (s.wake[i] >= 0)
      close(s.wake[i]);
  return status;
}

/* ---- Starting and stopping it --------------------------------------------------------- */

static void child_setup(gpointer data) {
  (void)data;
  setsid();
  hutch_unblock_signals();
}

/* The supervisor's environment: this one without the credential broker's secrets (the
 * supervisor reads what the guest sends) and without what the front set for one command's
 * fallback (not the supervisor's business). */
static GStrv supervisor_environment(const char *name) {
  GStrv envp = g_get_environ();
  g_autofree char *instance_dir = hutch_instance_dir(name);
  g_auto(GStrv) secret_vars = hutch_broker_env_names(instance_dir);
  for (char **v = secret_vars; v && *v; v++)
    envp = g_environ_unsetenv(envp, *v);
  return g_environ_unsetenv(envp, HUTCH_NO_SUPERVISOR_ENV);
}

/* The supervisor's standard streams: its log in the VM's runtime directory (a new one when the
 * old one grew past 1 MiB), appended to, for stdout and stderr; /dev/null for stdin. */
static gboolean open_supervisor_stdio(const char *runtime_dir, int *ret_log_fd, int *ret_null_fd,
                                      GError **error) {
  g_autofree char *log_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_LOG, NULL);
  GStatBuf st;
  if (g_stat(log_path, &st) == 0 && st.st_size > 1024 * 1024)
    g_unlink(log_path);
  *ret_log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  *ret_null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (*ret_log_fd < 0 || *ret_null_fd < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "opening %s: %s", log_path,
                g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

void hutch_supervisor_spawn(HutchContext *ctx, const char *name, const char *runtime_dir) {
  if (!ctx->supervisor_program)
    return;
  g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_PID, NULL);
  if (hutch_pidfile_check(pid_path, &supervisor_id) > 0)
    return;
  g_auto(HutchFd) log_fd = -1;
  g_auto(HutchFd) null_fd = -1;
  const char *argv[] = {ctx->supervisor_program, "-c", ctx->uri, "supervise", name, NULL};
  g_auto(GStrv) envp = supervisor_environment(name);
  g_autoptr(GError) error = NULL;
  if (!open_supervisor_stdio(runtime_dir, &log_fd, &null_fd, &error) ||
      !g_spawn_async_with_fds(NULL, (char **)argv, envp, G_SPAWN_DEFAULT, child_setup, NULL, NULL,
                              null_fd, log_fd, log_fd, &error))
    hutch_progress_note(ctx, "no supervisor for %s (%s): commands connect directly", name,
                        error->message);
}

gboolean hutch_supervisor_boot_possible(HutchContext *ctx) {
  return ctx->supervisor_program != NULL;
}

/* The env secrets' values ("NAME=VALUE\0" each) in an anonymous file for the egress helper,
 * or -1 when none is set. */
static int secrets_memfd(char **secret_vars, char **host_env, GError **error) {
  g_autoptr(GString) text = g_string_new(NULL);
  for (char **v = secret_vars; v && *v; v++) {
    const char *value = g_environ_getenv(host_env, *v);
    if (value)
      g_string_append_printf(text, "%s=%s%c", *v, value, 0);
  }
  int fd = -1;
  if (text->len > 0) {
    fd = memfd_create("hutch-secrets", MFD_CLOEXEC);
    GError *write_error = NULL;
    if (fd < 0 || !hutch_write_all(fd, text->str, text->len, &write_error)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "passing the secrets on: %s",
                  write_error ? write_error->message : g_strerror(errno));
      g_clear_error(&write_error);
      if (fd >= 0)
        close(fd);
      fd = -2;
    }
  }
  explicit_bzero(text->str, text->len);
  return fd;
}

/* Shows a progress line of the supervisor's helpers' start as this start's own; TRUE for the
 * last line, with *ret_ok and the error it names. */
static gboolean boot_line(HutchContext *ctx, const char *line, gboolean *ret_ok, GError **error) {
  g_autoptr(JsonParser) parser = json_parser_new();
  JsonNode *root = NULL;
  if (json_parser_load_from_data(parser, line, -1, NULL))
    root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root))
    return FALSE;
  JsonObject *o = json_node_get_object(root);
  if (json_object_has_member(o, "ok")) {
    *ret_ok = json_object_get_boolean_member_with_default(o, "ok", FALSE);
    if (!*ret_ok)
      g_set_error(error, HUTCH_ERROR,
                  (int)json_object_get_int_member_with_default(o, "code", HUTCH_ERROR_FAILED), "%s",
                  json_object_get_string_member_with_default(o, "error", "(no reason)"));
    return TRUE;
  }
  const char *phase = json_object_get_string_member_with_default(o, "phase", NULL);
  const char *detail = json_object_get_string_member_with_default(o, "detail", "");
  switch (json_object_get_int_member_with_default(o, "kind", -1)) {
  case HUTCH_PROGRESS_BEGIN:
    if (phase)
      hutch_progress_begin(ctx, phase, "%s", detail);
    break;
  case HUTCH_PROGRESS_END:
    if (phase)
      hutch_progress_end(ctx, phase, "%s", detail);
    break;
  case HUTCH_PROGRESS_NOTE:
    hutch_progress_note(ctx, "%s", detail);
    break;
  default:
    break;
  }
  return FALSE;
}

gboolean hutch_supervisor_boot(HutchContext *ctx, const char *name, const char *runtime_dir,
                               guint ssh_port, char **secret_vars, char **host_env,
                               int *ret_boot_fd, GError **error) {
  *ret_boot_fd = -1;
  g_auto(HutchFd) secrets_fd = secrets_memfd(secret_vars, host_env, error);
  if (secrets_fd == -2)
    return FALSE;
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "socketpair: %s", g_strerror(errno));
    return FALSE;
  }
  g_auto(HutchFd) ours = pair[0];
  g_auto(HutchFd) theirs = pair[1];
  g_auto(HutchFd) log_fd = -1;
  g_auto(HutchFd) null_fd = -1;
  if (!open_supervisor_stdio(runtime_dir, &log_fd, &null_fd, error))
    return FALSE;
  g_autofree char *port_text = g_strdup_printf("%u", ssh_port);
  const char *argv[] = {ctx->supervisor_program,
                        "-c",
                        ctx->uri,
                        "supervise",
                        "--boot-fd",
                        "3",
                        "--ssh-port",
                        port_text,
                        name,
                        NULL,
                        NULL,
                        NULL};
  if (secrets_fd >= 0) {
    argv[8] = "--secrets-fd";
    argv[9] = "4";
    argv[10] = name;
  }
  g_auto(GStrv) envp = supervisor_environment(name);
  int source_fds[] = {theirs, secrets_fd};
  int target_fds[] = {3, 4};
  if (!g_spawn_async_with_pipes_and_fds(NULL, argv, (const char *const *)envp, G_SPAWN_DEFAULT,
                                        child_setup, NULL, null_fd, log_fd, log_fd, source_fds,
                                        target_fds, secrets_fd >= 0 ? 2 : 1, NULL, NULL, NULL, NULL,
                                        error)) {
    g_prefix_error(error, "starting the VM's supervisor: ");
    return FALSE;
  }
  hutch_fd_close(theirs);
  theirs = -1;
  hutch_fd_close(secrets_fd);
  secrets_fd = -1;
  /* its progress, then its last line; its end without one is a failed start */
  g_autoptr(GString) pending = g_string_new(NULL);
  gboolean done = FALSE, ok = FALSE;
  while (!done) {
    char buf[4096];
    ssize_t n = read(ours, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    g_string_append_len(pending, buf, n);
    char *nl;
    while (!done && (nl = memchr(pending->str, '\n', pending->len))) {
      *nl = '\0';
      done = boot_line(ctx, pending->str, &ok, error);
      g_string_erase(pending, 0, nl - pending->str + 1);
    }
  }
  if (!done) {
    hutch_instance_stop_helpers(runtime_dir);
    g_autofree char *log_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_LOG, NULL);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                "the VM's supervisor ended before it started the helpers (see %s)", log_path);
    return FALSE;
  }
  if (!ok)
    return FALSE;
  *ret_boot_fd = ours;
  ours = -1;
  return TRUE;
}

void hutch_supervisor_wait_gone(const char *runtime_dir, guint timeout_ms) {
  g_autofree char *lock_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_LOCK, NULL);
  int fd = open(lock_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return;
  double deadline = hutch_now() + timeout_ms / 1000.0;
  while (flock(fd, LOCK_EX | LOCK_NB) < 0 && hutch_now() < deadline)
    g_usleep(50 * 1000);
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_PID, NULL);
    hutch_pidfile_kill(pid_path, &supervisor_id);
  }
  close(fd);
}

pid_t hutch_supervisor_pid(const char *runtime_dir) {
  g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_SUPERVISOR_PID, NULL);
  pid_t pid = hutch_pidfile_check(pid_path, &supervisor_id);
  if (pid > 0)
    return pid;
  /* its own answer: the one of `start --foreground` has no hutch-supervise name to check */
  g_autoptr(JsonObject) status = hutch_supervisor_status(runtime_dir);
  return status ? (pid_t)json_object_get_int_member_with_default(status, "pid", 0) : 0;
}

/* ---- The client ----------------------------------------------------------------------- */

JsonObject *hutch_supervisor_status(const char *runtime_dir) {
  g_autofree char *answer =
      hutch_supervisor_ask(runtime_dir, "{\"op\": \"status\"}", 'S', 1000, NULL);
  if (!answer)
    return NULL;
  g_autoptr(JsonParser) parser = json_parser_new();
  if (!json_parser_load_from_data(parser, answer, -1, NULL) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
    return NULL;
  return json_object_ref(json_node_get_object(json_parser_get_root(parser)));
}

gboolean hutch_supervisor_copy(const char *runtime_dir, gboolean upload, const char *local,
                               const char *guest, gboolean recursive, gboolean *ret_used,
                               GError **error) {
  *ret_used = FALSE;
  /* the request is JSON: a path that is no UTF-8 text goes the direct way */
  if (hutch_supervisor_refused_by_env() || !g_utf8_validate(local, -1, NULL) ||
      !g_utf8_validate(guest, -1, NULL))
    return FALSE;
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "op", "copy");
  json_object_set_boolean_member(o, "upload", upload);
  json_object_set_string_member(o, "local", local);
  json_object_set_string_member(o, "guest", guest);
  json_object_set_boolean_member(o, "recursive", recursive);
  json_object_set_int_member(o, "umask", hutch_ssh_process_umask());
  /* The local side is opened here, by the command, and passed: the supervisor starts from
   * what the command could open, in its working directory and mount namespace, never from
   * a path of its own (below it, it works as the same user). What cannot be opened is left
   * to the direct copy, which says why in its own words. */
  g_auto(HutchFd) source = -1;
  g_auto(HutchSshLocalDest) dest = {.fd = -1};
  if (upload) {
    source = hutch_hostpath_open(local, O_RDONLY, NULL);
    if (source < 0)
      return FALSE;
  } else {
    if (!hutch_ssh_local_dest_open(local, &dest, NULL))
      return FALSE;
    json_object_set_boolean_member(o, "inside", dest.inside);
    if (dest.name)
      json_object_set_string_member(o, "name", dest.name);
    json_object_set_boolean_member(o, "missing", dest.missing);
    json_object_set_boolean_member(o, "want_dir", dest.want_dir);
  }
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  g_autofree char *request = json_to_string(node, FALSE);
  g_autoptr(GByteArray) in = g_byte_array_new();
  char type = 0;
  const guint8 *payload = NULL;
  gsize len = 0;
  /* until A, anything wrong means: copy directly (the copy session may take the SSH
   * timeout to connect) */
  g_auto(HutchFd) fd = hutch_supervisor_request(runtime_dir, request, upload ? source : dest.fd,
                                                40000, in, &type, &payload, &len, NULL);
  if (fd < 0 || type != 'A')
    return FALSE;
  hutch_frame_consume(in, len);
  *ret_used = TRUE;
  /* then the result, however long the copy takes */
  int rc = hutch_frame_read(fd, in, -1, &type, &payload, &len);
  g_autoptr(JsonParser) parser = json_parser_new();
  JsonNode *root = NULL;
  if (rc > 0 && type == 'S' &&
      json_parser_load_from_data(parser, (const char *)payload, (gssize)len, NULL))
    root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH,
                "the supervisor went away before the copy ended");
    return FALSE;
  }
  JsonObject *result = json_node_get_object(root);
  if (json_object_get_boolean_member_with_default(result, "ok", FALSE))
    return TRUE;
  gint64 code = json_object_get_int_member_with_default(result, "code", HUTCH_ERROR_FAILED);
  g_set_error(error, HUTCH_ERROR, (int)code, "%s",
              json_object_get_string_member_with_default(result, "error", "the copy failed"));
  return FALSE;
}
