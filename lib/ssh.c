/* ssh.c: libssh2 sessions to a guest with a pinned host key: exec, PTY shell, SFTP copies,
 * and the ed25519 keys hutch makes with ssh-keygen. See ssh-private.h. */
#define _GNU_SOURCE /* O_PATH */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>
#include <libssh2.h>
#include <libssh2_sftp.h>
#include <stddef.h>

#include "hostpath-private.h"
#include "ssh-private.h"
#include "util-private.h"

struct _HutchSsh {
  int fd;
  LIBSSH2_SESSION *session;
  LIBSSH2_SFTP *sftp; /* started on first use */
  char *where;        /* "user@host:port", for messages */
  /* for copies served by the supervisor (hutch_ssh_set_copy_caller) */
  HutchSshCancelled cancelled;
  gpointer cancelled_data;
  gboolean caller_umask_set;
  mode_t caller_umask;
  /* what libssh2 holds for this session (session_alloc), and whether it asked for more than
   * SESSION_MEMORY_MAX (atomics: a session's owner may hand it to another thread) */
  gsize held;
  gint over_limit;
};

void hutch_ssh_set_copy_caller(HutchSsh *ssh, HutchSshCancelled cancelled, gpointer data,
                               int umask_bits) {
  ssh->cancelled = cancelled;
  ssh->cancelled_data = data;
  ssh->caller_umask_set = umask_bits >= 0;
  ssh->caller_umask = umask_bits >= 0 ? (mode_t)umask_bits & 0777 : 0;
}

/* Whether the copy should stop (between buffers and directory entries). */
static gboolean copy_cancelled(HutchSsh *ssh, GError **error) {
  if (!ssh->cancelled || !ssh->cancelled(ssh->cancelled_data))
    return FALSE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "the copy was cancelled");
  return TRUE;
}

LIBSSH2_SESSION *hutch_ssh_session(HutchSsh *ssh, int *ret_fd) {
  *ret_fd = ssh->fd;
  return ssh->session;
}

/* ---- What a session may hold --------------------------------------------------------- */

/* libssh2 keeps every message it cannot place until a call asks for it: an SSH message of a
 * type it does not handle (the session's packet list) and an SFTP reply to a request that
 * was never made (the SFTP packet list) stay until the session ends. A guest's SSH or SFTP
 * server that sends them without end would grow the process reading them without end, the
 * supervisor above all, which keeps its sessions for the VM's life. So every session's
 * allocations go through these functions, which count what the session holds and refuse one
 * past SESSION_MEMORY_MAX: the libssh2 call fails (LIBSSH2_ERROR_ALLOC), the session's owner
 * ends it as it ends any failed one, which frees all of it, and the error says why. What a
 * session holds in use is far below: packets of at most 35 KB, and per channel whose reader
 * is behind at most its window (2 MiB) of unread data. */
#define SESSION_MEMORY_MAX ((gsize)256 * 1024 * 1024)
static gsize session_memory_max = SESSION_MEMORY_MAX;

void hutch_ssh_set_session_memory_max(gsize bytes) {
  session_memory_max = bytes ? bytes : SESSION_MEMORY_MAX;
}

/* HUTCH_SSH_SESSION_MEMORY_MIB lowers the limit (an attack test need not send 256 MiB);
 * nothing raises it. Read once, at the first connection. */
static void session_memory_max_from_env(void) {
  static gsize done = 0;
  if (!g_once_init_enter(&done))
    return;
  const char *mib = g_getenv("HUTCH_SSH_SESSION_MEMORY_MIB");
  guint64 value = 0;
  if (mib && session_memory_max == SESSION_MEMORY_MAX &&
      g_ascii_string_to_unsigned(mib, 10, 1, SESSION_MEMORY_MAX >> 20, &value, NULL))
    session_memory_max = (gsize)value << 20;
  g_once_init_leave(&done, 1);
}

/* before each block: its size (a whole max_align_t, so that the block stays aligned) */
typedef union {
  gsize size;
  max_align_t align;
} SessionBlock;

/* Counts n more bytes for ssh unless that passes the limit */
static gboolean session_take(HutchSsh *ssh, gsize n) {
  gsize max = session_memory_max;
  if (n > max || __atomic_add_fetch(&ssh->held, n, __ATOMIC_RELAXED) > max) {
    if (n <= max)
      __atomic_sub_fetch(&ssh->held, n, __ATOMIC_RELAXED);
    g_atomic_int_set(&ssh->over_limit, TRUE);
    return FALSE;
  }
  return TRUE;
}

static LIBSSH2_ALLOC_FUNC(session_alloc) {
  HutchSsh *ssh = *abstract;
  if (!session_take(ssh, count))
    return NULL;
  SessionBlock *block = malloc(sizeof *block + count);
  if (!block) {
    __atomic_sub_fetch(&ssh->held, count, __ATOMIC_RELAXED);
    return NULL;
  }
  block->size = count;
  return block + 1;
}

static LIBSSH2_FREE_FUNC(session_free) {
  if (!ptr)
    return;
  HutchSsh *ssh = *abstract; /* (read first: the session itself is freed this way too) */
  SessionBlock *block = (SessionBlock *)ptr - 1;
  __atomic_sub_fetch(&ssh->held, block->size, __ATOMIC_RELAXED);
  free(block);
}

static LIBSSH2_REALLOC_FUNC(session_realloc) {
  if (!ptr)
    return session_alloc(count, abstract);
  HutchSsh *ssh = *abstract;
  SessionBlock *block = (SessionBlock *)ptr - 1;
  gsize old = block->size;
  if (count > old && !session_take(ssh, count - old))
    return NULL;
  SessionBlock *moved = realloc(block, sizeof *block + count);
  if (!moved) {
    if (count > old)
      __atomic_sub_fetch(&ssh->held, count - old, __ATOMIC_RELAXED);
    return NULL;
  }
  if (count < old)
    __atomic_sub_fetch(&ssh->held, old - count, __ATOMIC_RELAXED);
  moved->size = count;
  return moved + 1;
}

gboolean hutch_ssh_over_limit(HutchSsh *ssh) {
  return ssh && g_atomic_int_get(&ssh->over_limit);
}

char *hutch_ssh_over_limit_message(void) {
  return g_strdup_printf(
      "the guest's SSH server sent more than hutch keeps for a session (%" G_GSIZE_FORMAT
      " MiB of messages nothing asked for): the session was ended",
      session_memory_max / (1024 * 1024));
}

/* The owner of a session hutch_ssh_connect made, NULL for any other */
static HutchSsh *session_owner(LIBSSH2_SESSION *session) {
  void **abstract = session ? libssh2_session_abstract(session) : NULL;
  return abstract ? *abstract : NULL;
}

/* Big enough that 10 MiB transfers are not dominated by per-call overhead. */
#define COPY_BUFFER_SIZE (256 * 1024)
#define CHANNEL_BUFFER_SIZE (64 * 1024)
#define KEEPALIVE_SECONDS 30

static void set_session_error(LIBSSH2_SESSION *session, GError **error, int code, const char *fmt,
                              ...) G_GNUC_PRINTF(4, 5);

static void set_session_error(LIBSSH2_SESSION *session, GError **error, int code, const char *fmt,
                              ...) {
  char *message = NULL;
  g_autofree char *over =
      hutch_ssh_over_limit(session_owner(session)) ? hutch_ssh_over_limit_message() : NULL;
  if (over)
    message = over;
  else if (!session || libssh2_session_last_error(session, &message, NULL, 0) == 0 || !message ||
           !*message)
    message = "unknown libssh2 error";
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *context = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, HUTCH_ERROR, code, "%s: %s", context, message);
}

static gint64 remaining_ms(gint64 deadline) {
  if (deadline == 0)
    return -1;
  gint64 left = (deadline - g_get_monotonic_time()) / 1000;
  return left > 0 ? left : 0;
}

/* ---- Keys and fingerprints ------------------------------------------------------------ */

/* The key type a public key blob names in its first field (RFC 4253 6.6). */
static char *blob_key_type(const guchar *blob, gsize len) {
  if (len < 4)
    return NULL;
  guint32 n =
      ((guint32)blob[0] << 24) | ((guint32)blob[1] << 16) | ((guint32)blob[2] << 8) | blob[3];
  if (n == 0 || n > len - 4)
    return NULL;
  return g_strndup((const char *)blob + 4, n);
}

/* Like OpenSSH: "SHA256:" and the unpadded base64 of the blob's SHA-256. */
static char *fingerprint(const guchar *blob, gsize len) {
  g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
  g_checksum_update(sum, blob, len);
  guint8 digest[32];
  gsize digest_len = sizeof digest;
  g_checksum_get_digest(sum, digest, &digest_len);
  g_autofree char *b64 = g_base64_encode(digest, digest_len);
  gsize n = strlen(b64);
  while (n > 0 && b64[n - 1] == '=')
    b64[--n] = '\0';
  return g_strconcat("SHA256:", b64, NULL);
}

/* Parses "TYPE BASE64 [comment]" into the type and the decoded blob, checking that the blob
 * names the same type (g_base64_decode accepts anything, so this is the real validation). */
static gboolean parse_public_key(const char *line, char **ret_type, guchar **ret_blob,
                                 gsize *ret_len, GError **error) {
  g_auto(GStrv) words = g_strsplit_set(line ? line : "", " \t\r\n", -1);
  const char *fields[2] = {NULL, NULL};
  guint found = 0;
  for (guint i = 0; words[i] && found < 2; i++)
    if (*words[i])
      fields[found++] = words[i];
  if (found < 2) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "invalid public key '%s': expected \"TYPE BASE64 [COMMENT]\"", line ? line : "");
    return FALSE;
  }
  gsize len = 0;
  g_autofree guchar *blob = g_base64_decode(fields[1], &len);
  g_autofree char *blob_type = blob ? blob_key_type(blob, len) : NULL;
  if (!blob_type || strcmp(blob_type, fields[0]) != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "invalid public key: its data is not a %s key", fields[0]);
    return FALSE;
  }
  *ret_type = g_strdup(fields[0]);
  *ret_len = len;
  *ret_blob = g_steal_pointer(&blob);
  return TRUE;
}

/* The host key algorithms to offer: the pinned key's type first, so that a server with several
 * host keys shows us the one we pinned, then the others this libssh2 supports. Only supported
 * names: libssh2 1.10 drops unknown ones with an overlapping memcpy (undefined behaviour). */
static char *hostkey_preference(LIBSSH2_SESSION *session, const char *pinned_type) {
  static const char *const wanted[] = {
      "ssh-ed25519",
      "ecdsa-sha2-nistp256",
      "ecdsa-sha2-nistp384",
      "ecdsa-sha2-nistp521",
      "rsa-sha2-512",
      "rsa-sha2-256",
      "ssh-rsa",
  };
  const char **algs = NULL;
  int n_algs = libssh2_session_supported_algs(session, LIBSSH2_METHOD_HOSTKEY, &algs);
  g_autoptr(GString) pref = g_string_new(NULL);
  for (gsize i = 0; i <= G_N_ELEMENTS(wanted); i++) {
    const char *name = i == 0 ? pinned_type : wanted[i - 1];
    if (i > 0 && strcmp(name, pinned_type) == 0)
      continue;
    for (int j = 0; j < n_algs; j++) {
      if (strcmp(algs[j], name) == 0) {
        g_string_append_printf(pref, "%s%s", pref->len ? "," : "", name);
        break;
      }
    }
  }
  if (algs)
    libssh2_free(session, (void *)algs);
  return g_string_free(g_steal_pointer(&pref), FALSE);
}

/* ---- Connecting ----------------------------------------------------------------------- */

static int tcp_connect(const char *host, guint port, gint64 deadline, GError **error) {
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  struct addrinfo *addrs = NULL;
  g_autofree char *service = g_strdup_printf("%u", port);
  int rc = getaddrinfo(host, service, &hints, &addrs);
  if (rc != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "resolving %s: %s", host, gai_strerror(rc));
    return -1;
  }
  int last_errno = ECONNREFUSED;
  int fd = -1;
  for (struct addrinfo *ai = addrs; ai && fd < 0; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
      break;
    if (errno != EINPROGRESS) {
      last_errno = errno;
      close(fd);
      fd = -1;
      continue;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int n;
    do
      n = poll(&pfd, 1, (int)remaining_ms(deadline));
    while (n < 0 && errno == EINTR);
    int soerr = 0;
    socklen_t soerr_len = sizeof soerr;
    if (n == 0)
      soerr = ETIMEDOUT;
    else if (n < 0)
      soerr = errno;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &soerr_len) < 0)
      soerr = errno;
    if (soerr != 0) {
      last_errno = soerr;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(addrs);
  if (fd < 0)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "connecting to %s port %u: %s", host, port,
                g_strerror(last_errno));
  return fd;
}

static gboolean check_host_key(LIBSSH2_SESSION *session, const char *where, const char *pinned_type,
                               const guchar *pinned, gsize pinned_len, GError **error) {
  size_t len = 0;
  int type = 0;
  const char *key = libssh2_session_hostkey(session, &len, &type);
  if (!key) {
    set_session_error(session, error, HUTCH_ERROR_SSH, "reading the host key of %s", where);
    return FALSE;
  }
  if (len == pinned_len && memcmp(key, pinned, len) == 0)
    return TRUE;
  g_autofree char *offered_type = blob_key_type((const guchar *)key, len);
  g_autofree char *offered_fp = fingerprint((const guchar *)key, len);
  g_autofree char *pinned_fp = fingerprint(pinned, pinned_len);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HOST_KEY,
              "host key of %s does not match the pinned key: the server offered %s %s, "
              "hutch expected %s %s. The VM's host key changed, or someone may be "
              "intercepting the connection (possible attack); not connecting",
              where, offered_type ? offered_type : "(unknown type)", offered_fp, pinned_type,
              pinned_fp);
  return FALSE;
}

HutchSsh *hutch_ssh_connect(const char *host, guint port, const char *user,
                            const char *private_key_path, const char *pinned_host_key,
                            guint timeout_ms, GError **error) {
  hutch_init();
  gint64 deadline = timeout_ms ? g_get_monotonic_time() + (gint64)timeout_ms * 1000 : 0;
  g_autoptr(HutchSsh) ssh = g_new0(HutchSsh, 1);
  ssh->fd = -1;
  ssh->where = g_strdup_printf("%s@%s:%u", user, host, port);

  /* Parse the pin before touching the network: a bad pin is a bug, not a network error. */
  g_autofree char *pinned_type = NULL;
  g_autofree guchar *pinned = NULL;
  gsize pinned_len = 0;
  if (!parse_public_key(pinned_host_key, &pinned_type, &pinned, &pinned_len, error)) {
    g_prefix_error(error, "connecting to %s: pinned host key: ", ssh->where);
    return NULL;
  }

  ssh->fd = tcp_connect(host, port, deadline, error);
  if (ssh->fd < 0)
    return NULL;
  /* Small packets go at once, as OpenSSH does for its sessions: with Nagle, a request sent
   * while the previous one is not yet acknowledged waits for the guest's delayed ACK. */
  int one = 1;
  setsockopt(ssh->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  session_memory_max_from_env();
  ssh->session = libssh2_session_init_ex(session_alloc, session_free, session_realloc, ssh);
  if (!ssh->session) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "connecting to %s: out of memory", ssh->where);
    return NULL;
  }
  g_autofree char *pref = hostkey_preference(ssh->session, pinned_type);
  gsize type_len = strlen(pinned_type);
  if (strncmp(pref, pinned_type, type_len) != 0 ||
      (pref[type_len] != '\0' && pref[type_len] != ',') ||
      libssh2_session_method_pref(ssh->session, LIBSSH2_METHOD_HOSTKEY, pref) != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH,
                "connecting to %s: the pinned host key's type %s is not supported by libssh2",
                ssh->where, pinned_type);
    return NULL;
  }
  /* The socket stays non-blocking: libssh2's blocking mode then waits with poll() and its
   * own timeout, which is what bounds the handshake. */
  libssh2_session_set_blocking(ssh->session, 1);
  libssh2_session_set_timeout(ssh->session, deadline ? (long)MAX(remaining_ms(deadline), 1) : 0);
  if (libssh2_session_handshake(ssh->session, ssh->fd) != 0) {
    set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "SSH handshake with %s", ssh->where);
    return NULL;
  }
  if (!check_host_key(ssh->session, ssh->where, pinned_type, pinned, pinned_len, error))
    return NULL;

  g_autofree char *public_key_path = g_strconcat(private_key_path, ".pub", NULL);
  libssh2_session_set_timeout(ssh->session, deadline ? (long)MAX(remaining_ms(deadline), 1) : 0);
  if (libssh2_userauth_publickey_fromfile(
          ssh->session, user,
          g_file_test(public_key_path, G_FILE_TEST_EXISTS) ? public_key_path : NULL,
          private_key_path, NULL) != 0) {
    set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "authenticating to %s with the key %s",
                      ssh->where, private_key_path);
    return NULL;
  }
  /* Commands and copies may take as long as they take; keepalives notice a dead peer. */
  libssh2_session_set_timeout(ssh->session, 0);
  libssh2_keepalive_config(ssh->session, 1, KEEPALIVE_SECONDS);
  return g_steal_pointer(&ssh);
}

int hutch_ssh_keepalive_when_idle(LIBSSH2_SESSION *session, int fd) {
  int queued = 0;
  if ((libssh2_session_block_directions(session) & LIBSSH2_SESSION_BLOCK_OUTBOUND) ||
      ioctl(fd, SIOCOUTQ, &queued) < 0 || queued > 0)
    return 1000;
  int next = 0;
  if (libssh2_keepalive_send(session, &next) < 0)
    return -1;
  return next > 0 ? next * 1000 : 1000;
}

HutchSsh *hutch_ssh_connect_retrying(guint port, const char *user, const char *private_key_path,
                                     const char *pinned_host_key, guint wait_s, int stop_fd,
                                     HutchSshKeepTrying keep_trying, gpointer data,
                                     GError **error) {
  gint64 deadline = g_get_monotonic_time() + (gint64)wait_s * G_USEC_PER_SEC;
  for (;;) {
    g_autoptr(GError) local = NULL;
    HutchSsh *ssh = hutch_ssh_connect("127.0.0.1", port, user, private_key_path, pinned_host_key,
                                      10000, &local);
    if (ssh)
      return ssh;
    if (g_error_matches(local, HUTCH_ERROR, HUTCH_ERROR_HOST_KEY) ||
        g_get_monotonic_time() > deadline) {
      g_propagate_error(error, g_steal_pointer(&local));
      return NULL;
    }
    if (keep_trying && !keep_trying(data, error))
      return NULL;
    struct pollfd p = {.fd = stop_fd, .events = POLLIN};
    int ready;
    do
      ready = poll(&p, stop_fd >= 0 ? 1 : 0, 500);
    while (ready < 0 && errno == EINTR);
    if (ready > 0) {
      g_propagate_error(error, g_steal_pointer(&local));
      return NULL;
    }
  }
}

void hutch_ssh_free(HutchSsh *ssh) {
  if (!ssh)
    return;
  if (ssh->session) {
    /* A polite goodbye, but never hang on a dead peer. */
    libssh2_session_set_blocking(ssh->session, 1);
    libssh2_session_set_timeout(ssh->session, 2000);
    if (ssh->sftp)
      libssh2_sftp_shutdown(ssh->sftp);
    libssh2_session_disconnect(ssh->session, "hutch: done");
    if (libssh2_session_free(ssh->session) != 0 && ssh->fd >= 0) {
      /* libssh2 keeps the session when a channel's close does not complete within the
       * timeout (a guest that never confirms it; libssh2 1.11 also waits out the output of a
       * command that is still writing). Once the socket is shut down every read and send
       * fails at once, and the second free completes. */
      shutdown(ssh->fd, SHUT_RDWR);
      libssh2_session_free(ssh->session);
    }
  }
  if (ssh->fd >= 0)
    close(ssh->fd);
  g_free(ssh->where);
  g_free(ssh);
}

/* ---- Channels ------------------------------------------------------------------------- */

/* Where a channel's input comes from and where its output goes: a buffer and strings
 * (capture), a function (stream), or file descriptors (interactive). */
typedef struct {
  int in_fd; /* -1: in_data */
  const char *in_data;
  gsize in_len;
  int out_fd, err_fd; /* -1: out_func for stdout, else the GStrings (NULL: discard) */
  HutchSshOutputFunc out_func;
  gpointer out_data;
  GString *out, *err;
  int winch_fd; /* readable when the local terminal was resized, or -1 */
  int tty_fd;   /* the terminal whose size the PTY follows, or -1 */
} ChannelIo;

static gboolean deliver(int fd, HutchSshOutputFunc func, gpointer func_data, GString *sink,
                        const char *what, const char *data, gsize len, GError **error) {
  if (fd >= 0)
    return hutch_write_all(fd, data, len, error);
  if (func)
    return func(data, len, func_data, error);
  if (!sink)
    return TRUE;
  /* The guest decides how much it sends: a captured output has a bound. */
  if (len > HUTCH_SSH_CAPTURE_MAX - sink->len) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "the command's %s is larger than %u MiB: it was stopped", what,
                HUTCH_SSH_CAPTURE_MAX / (1024 * 1024));
    return FALSE;
  }
  g_string_append_len(sink, data, (gssize)len);
  return TRUE;
}

static int signal_number(const char *name) {
  /* RFC 4254 6.10 names, with Linux's numbers (the guests are Linux). */
  static const struct {
    const char *name;
    int number;
  } signals[] = {
      {"HUP", 1},   {"INT", 2},   {"QUIT", 3},  {"ILL", 4},   {"TRAP", 5},
      {"ABRT", 6},  {"BUS", 7},   {"FPE", 8},   {"KILL", 9},  {"USR1", 10},
      {"SEGV", 11}, {"USR2", 12}, {"PIPE", 13}, {"ALRM", 14}, {"TERM", 15},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(signals); i++)
    if (strcmp(signals[i].name, name) == 0)
      return signals[i].number;
  return -1;
}

/* The command's exit status, shells' way: 128+N for signal N (255 for a signal we cannot
 * name, like OpenSSH's client). */
void hutch_ssh_owner_blocked(HutchSshOwner *owner, LIBSSH2_SESSION *session, gpointer who, int op) {
  if (libssh2_session_block_directions(session) & LIBSSH2_SESSION_BLOCK_OUTBOUND) {
    owner->who = who;
    owner->op = op;
  } else {
    hutch_ssh_owner_done(owner, who, op);
  }
}

void hutch_ssh_owner_done(HutchSshOwner *owner, gpointer who, int op) {
  if (owner->who == who && owner->op == op) {
    owner->who = NULL;
    owner->op = 0;
  }
}

char *hutch_ssh_session_message(LIBSSH2_SESSION *session) {
  if (hutch_ssh_over_limit(session_owner(session)))
    return hutch_ssh_over_limit_message();
  char *message = NULL;
  libssh2_session_last_error(session, &message, NULL, 0);
  return g_strdup(message && *message ? message : "unknown libssh2 error");
}

gboolean hutch_ssh_is_channel_error(int rc) {
  return (rc <= LIBSSH2_ERROR_CHANNEL_OUTOFORDER && rc >= LIBSSH2_ERROR_CHANNEL_EOF_SENT) ||
         rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED;
}

void hutch_log_line(int fd, const char *fmt, ...) {
  if (fd < 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_autoptr(GDateTime) now = g_date_time_new_now_local();
  g_autofree char *stamp = g_date_time_format(now, "%F %T");
  g_autofree char *line = g_strdup_printf("%s %s\n", stamp, message);
  ssize_t rc = write(fd, line, strlen(line));
  (void)rc;
}

int hutch_ssh_channel_exit_status(LIBSSH2_SESSION *session, LIBSSH2_CHANNEL *channel) {
  char *signame = NULL;
  size_t signame_len = 0;
  if (libssh2_channel_get_exit_signal(channel, &signame, &signame_len, NULL, NULL, NULL, NULL) ==
          0 &&
      signame) {
    g_autofree char *name = g_strndup(signame, signame_len);
    libssh2_free(session, signame);
    int number = signal_number(name);
    return number > 0 ? 128 + number : 255;
  }
  return hutch_exit_status_clamp(libssh2_channel_get_exit_status(channel));
}

/* Why: sshd sets TCP_NODELAY only for a session with a terminal. For a command without one,
 * its channel EOF goes out in a segment of its own, and the exit status and close that follow
 * a moment later wait (Nagle) for that segment's ACK, which the host side delays: 40 ms per
 * command, measured with strace of the supervisor (EOF, then 41 ms, then status and close).
 * Any packet from us carries the ACK at once. A one-byte window adjustment is the smallest
 * harmless one: it only lets the guest send one byte more. OpenSSH's client gets the same
 * effect from the packet it sends when the guest's EOF arrives. */
int hutch_ssh_channel_nudge(LIBSSH2_CHANNEL *channel) {
  return libssh2_channel_receive_window_adjust2(channel, 1, 1, NULL);
}

/* Waits until the session's socket can make progress in the direction libssh2 is blocked on,
 * or one of the extra descriptors is readable, or the keepalive is due. Returns the revents of
 * the extra descriptors in extra_revents. */
static gboolean channel_wait(HutchSsh *ssh, const int *extra_fds, short *extra_revents,
                             guint n_extra, GError **error) {
  struct pollfd pfds[4];
  guint n = 0;
  int dirs = libssh2_session_block_directions(ssh->session);
  /* Inbound always: window adjustments and data can arrive whatever we are blocked on. */
  pfds[n++] = (struct pollfd){
      .fd = ssh->fd, .events = POLLIN | ((dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND) ? POLLOUT : 0)};
  for (guint i = 0; i < n_extra; i++) {
    pfds[n++] = (struct pollfd){.fd = extra_fds[i], .events = extra_fds[i] >= 0 ? POLLIN : 0};
    extra_revents[i] = 0;
  }
  int next_keepalive = 0;
  libssh2_keepalive_send(ssh->session, &next_keepalive);
  int rc = poll(pfds, n, next_keepalive > 0 ? next_keepalive * 1000 : -1);
  if (rc < 0 && errno != EINTR) {
    int saved = errno;
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH, "waiting for %s: %s", ssh->where,
                g_strerror(saved));
    return FALSE;
  }
  for (guint i = 0; rc > 0 && i < n_extra; i++)
    extra_revents[i] = pfds[i + 1].revents;
  return TRUE;
}

/* Moves data between the channel and io until the remote side has closed the channel.
 * The session must be non-blocking. Returns the exit status or -1. */
static int channel_pump(HutchSsh *ssh, LIBSSH2_CHANNEL *channel, const ChannelIo *io,
                        GError **error) {
  g_autofree char *buf = g_malloc(CHANNEL_BUFFER_SIZE);
  g_autofree char *in_buf = io->in_fd >= 0 ? g_malloc(CHANNEL_BUFFER_SIZE) : NULL;
  const char *pending = io->in_fd >= 0 ? NULL : io->in_data;
  gsize pending_len = io->in_fd >= 0 ? 0 : io->in_len;
  gboolean in_eof = io->in_fd < 0, in_ready = FALSE, eof_sent = FALSE;
  gboolean out_eof = FALSE, err_eof = FALSE, resize_pending = FALSE;
  gboolean nudge_pending = FALSE, nudged = FALSE;

  for (;;) {
    gboolean progress = FALSE;
    ssize_t n;

    /* Before forwarding input, so that keys typed after a resize reach a resized PTY. */
    if (resize_pending && !nudge_pending) {
      guint cols, rows;
      hutch_terminal_size(io->tty_fd, &cols, &rows);
      int rc = libssh2_channel_request_pty_size_ex(channel, (int)cols, (int)rows, 0, 0);
      /* A refused resize is cosmetic: keep going. */
      if (rc != LIBSSH2_ERROR_EAGAIN)
        resize_pending = FALSE;
    }

    while (!out_eof && (n = libssh2_channel_read(channel, buf, CHANNEL_BUFFER_SIZE)) != 0) {
      if (n == LIBSSH2_ERROR_EAGAIN)
        break;
      if (n < 0) {
        set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "reading from %s", ssh->where);
        return -1;
      }
      if (!deliver(io->out_fd, io->out_func, io->out_data, io->out, "output", buf, (gsize)n, error))
        return -1;
      progress = TRUE;
    }
    if (!out_eof && n == 0)
      out_eof = TRUE;
    while (!err_eof && (n = libssh2_channel_read_stderr(channel, buf, CHANNEL_BUFFER_SIZE)) != 0) {
      if (n == LIBSSH2_ERROR_EAGAIN)
        break;
      if (n < 0) {
        set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "reading from %s", ssh->where);
        return -1;
      }
      if (!deliver(io->err_fd, NULL, NULL, io->err, "error output", buf, (gsize)n, error))
        return -1;
      progress = TRUE;
    }
    if (!err_eof && n == 0)
      err_eof = TRUE;

    if (io->in_fd >= 0 && in_ready && pending_len == 0 && !in_eof) {
      in_ready = FALSE;
      ssize_t got = read(io->in_fd, in_buf, CHANNEL_BUFFER_SIZE);
      if (got > 0) {
        pending = in_buf;
        pending_len = (gsize)got;
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        /* An unreadable stdin (closed, EIO after a hangup) ends the input like EOF does. */
        in_eof = TRUE;
      }
    }
    while (pending_len > 0 && !eof_sent) {
      n = libssh2_channel_write(channel, pending, pending_len);
      if (n == LIBSSH2_ERROR_EAGAIN)
        break;
      if (n < 0) {
        if (!libssh2_channel_eof(channel)) {
          set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "writing to %s", ssh->where);
          return -1;
        }
        /* The command is gone and took its stdin with it: drop the rest. */
        pending_len = 0;
        in_eof = eof_sent = TRUE;
        break;
      }
      pending += n;
      pending_len -= (gsize)n;
      progress = TRUE;
    }
    if (in_eof && pending_len == 0 && !eof_sent) {
      int rc = libssh2_channel_send_eof(channel);
      if (rc == 0 || (rc != LIBSSH2_ERROR_EAGAIN && libssh2_channel_eof(channel)))
        eof_sent = TRUE;
      else if (rc != LIBSSH2_ERROR_EAGAIN) {
        set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "closing input to %s", ssh->where);
        return -1;
      }
    }

    /* a half-sent nudge is finished first: libssh2 takes no other packet before it, and the
     * loop must not end with it pending (the channel's free would then fail) */
    if (nudge_pending)
      nudge_pending = hutch_ssh_channel_nudge(channel) == LIBSSH2_ERROR_EAGAIN;
    if (out_eof && err_eof && !nudge_pending) {
      /* The output is complete, but the command may still be running (and reading stdin):
       * the exit status comes with the channel's close. */
      int rc = libssh2_channel_wait_closed(channel);
      if (rc == 0)
        break;
      if (rc != LIBSSH2_ERROR_EAGAIN) {
        set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "waiting for %s", ssh->where);
        return -1;
      }
      if (eof_sent && !nudged) {
        nudged = TRUE;
        nudge_pending = hutch_ssh_channel_nudge(channel) == LIBSSH2_ERROR_EAGAIN;
      }
    }
    if (progress)
      continue;

    int extra[2] = {in_eof || pending_len > 0 ? -1 : io->in_fd, io->winch_fd};
    short revents[2];
    if (!channel_wait(ssh, extra, revents, 2, error))
      return -1;
    if (revents[0])
      in_ready = TRUE;
    if (revents[1]) {
      char drain[64];
      while (read(io->winch_fd, drain, sizeof drain) > 0)
        ;
      resize_pending = TRUE;
    }
  }
  return hutch_ssh_channel_exit_status(ssh->session, channel);
}

/* Opens a session channel, optionally with a PTY, and starts command (NULL: a shell), then
 * pumps io through it non-blocking. */
static int channel_run(HutchSsh *ssh, const char *command, gboolean pty, const ChannelIo *io,
                       GError **error) {
  libssh2_session_set_blocking(ssh->session, 1);
  LIBSSH2_CHANNEL *channel = libssh2_channel_open_session(ssh->session);
  if (!channel) {
    set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "opening a session on %s", ssh->where);
    return -1;
  }
  int status = -1;
  if (pty) {
    const char *term = g_getenv("TERM");
    if (!term || !*term)
      term = "vt100";
    guint cols, rows;
    hutch_terminal_size(io->tty_fd, &cols, &rows);
    if (libssh2_channel_request_pty_ex(channel, term, (unsigned)strlen(term), NULL, 0, (int)cols,
                                       (int)rows, 0, 0) != 0) {
      set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "requesting a terminal on %s",
                        ssh->where);
      goto out;
    }
  }
  int rc = command ? libssh2_channel_exec(channel, command) : libssh2_channel_shell(channel);
  if (rc != 0) {
    set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "starting %s on %s",
                      command ? "the command" : "a shell", ssh->where);
    goto out;
  }
  libssh2_session_set_blocking(ssh->session, 0);
  status = channel_pump(ssh, channel, io, error);
out:
  libssh2_session_set_blocking(ssh->session, 1);
  libssh2_channel_free(channel);
  return status;
}

int hutch_ssh_exec_capture(HutchSsh *ssh, const char *command, const char *stdin_data,
                           char **ret_stdout, char **ret_stderr, GError **error) {
  g_autoptr(GString) out = ret_stdout ? g_string_new(NULL) : NULL;
  g_autoptr(GString) err = ret_stderr ? g_string_new(NULL) : NULL;
  ChannelIo io = {
      .in_fd = -1,
      .in_data = stdin_data ? stdin_data : "",
      .in_len = stdin_data ? strlen(stdin_data) : 0,
      .out_fd = -1,
      .err_fd = -1,
      .out = out,
      .err = err,
      .winch_fd = -1,
      .tty_fd = -1,
  };
  int status = channel_run(ssh, command, FALSE, &io, error);
  if (status < 0)
    return -1;
  if (ret_stdout)
    *ret_stdout = g_string_free(g_steal_pointer(&out), FALSE);
  if (ret_stderr)
    *ret_stderr = g_string_free(g_steal_pointer(&err), FALSE);
  return status;
}

int hutch_ssh_exec_stream(HutchSsh *ssh, const char *command, HutchSshOutputFunc func,
                          gpointer user_data, GError **error) {
  ChannelIo io = {
      .in_fd = -1,
      .in_data = "",
      .out_fd = -1,
      .err_fd = -1,
      .out_func = func,
      .out_data = user_data,
      .winch_fd = -1,
      .tty_fd = -1,
  };
  return channel_run(ssh, command, FALSE, &io, error);
}

int hutch_ssh_exec_interactive(HutchSsh *ssh, const char *command, gboolean pty, GError **error) {
  HutchTerminal terminal;
  hutch_terminal_enter(&terminal, pty);
  ChannelIo io = {
      .in_fd = STDIN_FILENO,
      .out_fd = STDOUT_FILENO,
      .err_fd = STDERR_FILENO,
      .winch_fd = terminal.winch_fd,
      .tty_fd = terminal.tty_fd,
  };
  int status = channel_run(ssh, command, pty, &io, error);
  /* Every path out of channel_run comes through here. */
  hutch_terminal_leave(&terminal);
  return status;
}

/* ---- SFTP ----------------------------------------------------------------------------- */

static const char *sftp_status_text(unsigned long code) {
  switch (code) {
  case LIBSSH2_FX_EOF:
    return "end of file";
  case LIBSSH2_FX_NO_SUCH_FILE:
    return "No such file or directory";
  case LIBSSH2_FX_PERMISSION_DENIED:
    return "Permission denied";
  case LIBSSH2_FX_FAILURE:
    return "failure (it may exist already or be of the wrong type)";
  case LIBSSH2_FX_BAD_MESSAGE:
    return "bad message";
  case LIBSSH2_FX_NO_CONNECTION:
    return "no connection";
  case LIBSSH2_FX_CONNECTION_LOST:
    return "connection lost";
  case LIBSSH2_FX_OP_UNSUPPORTED:
    return "operation not supported";
  case LIBSSH2_FX_INVALID_HANDLE:
    return "invalid handle";
  case LIBSSH2_FX_NO_SUCH_PATH:
    return "No such file or directory";
  case LIBSSH2_FX_FILE_ALREADY_EXISTS:
    return "File exists";
  case LIBSSH2_FX_WRITE_PROTECT:
    return "write protected";
  case LIBSSH2_FX_NO_MEDIA:
    return "no media";
  case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM:
    return "No space left on device";
  case LIBSSH2_FX_QUOTA_EXCEEDED:
    return "Disk quota exceeded";
  case LIBSSH2_FX_UNKNOWN_PRINCIPAL:
    return "unknown principal";
  case LIBSSH2_FX_LOCK_CONFLICT:
    return "lock conflict";
  case LIBSSH2_FX_DIR_NOT_EMPTY:
    return "Directory not empty";
  case LIBSSH2_FX_NOT_A_DIRECTORY:
    return "Not a directory";
  case LIBSSH2_FX_INVALID_FILENAME:
    return "invalid file name";
  case LIBSSH2_FX_LINK_LOOP:
    return "Too many levels of symbolic links";
  default:
    return "unknown SFTP error";
  }
}

static unsigned long sftp_status(HutchSsh *ssh) {
  if (!ssh->sftp || libssh2_session_last_errno(ssh->session) != LIBSSH2_ERROR_SFTP_PROTOCOL)
    return LIBSSH2_FX_OK;
  return libssh2_sftp_last_error(ssh->sftp);
}

static void set_sftp_error(HutchSsh *ssh, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void set_sftp_error(HutchSsh *ssh, GError **error, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *context = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  unsigned long status = sftp_status(ssh);
  if (status == LIBSSH2_FX_OK || hutch_ssh_over_limit(ssh)) {
    set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "%s", context);
    return;
  }
  int code = status == LIBSSH2_FX_NO_SUCH_FILE || status == LIBSSH2_FX_NO_SUCH_PATH
                 ? HUTCH_ERROR_NOT_FOUND
                 : HUTCH_ERROR_SSH;
  g_set_error(error, HUTCH_ERROR, code, "%s: %s", context, sftp_status_text(status));
}

static void set_local_error(GError **error, int saved_errno, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void set_local_error(GError **error, int saved_errno, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *context = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, HUTCH_ERROR,
              saved_errno == ENOENT ? HUTCH_ERROR_NOT_FOUND : HUTCH_ERROR_FAILED, "%s: %s", context,
              g_strerror(saved_errno));
}

static LIBSSH2_SFTP *get_sftp(HutchSsh *ssh, GError **error) {
  libssh2_session_set_blocking(ssh->session, 1);
  if (!ssh->sftp) {
    ssh->sftp = libssh2_sftp_init(ssh->session);
    if (!ssh->sftp)
      set_session_error(ssh->session, error, HUTCH_ERROR_SSH, "starting SFTP on %s", ssh->where);
  }
  return ssh->sftp;
}

gboolean hutch_ssh_sftp_alive(HutchSsh *ssh, guint timeout_ms) {
  libssh2_session_set_timeout(ssh->session, (long)timeout_ms);
  LIBSSH2_SFTP_ATTRIBUTES attrs;
  gboolean alive = get_sftp(ssh, NULL) && libssh2_sftp_stat(ssh->sftp, ".", &attrs) == 0;
  libssh2_session_set_timeout(ssh->session, 0);
  return alive;
}

/* SFTP resolves relative paths against its start directory, the remote home: "~" and "~/x"
 * become "." and "x". */
static char *remote_path(const char *path) {
  if (!path || !*path || strcmp(path, "~") == 0)
    return g_strdup(".");
  if (g_str_has_prefix(path, "~/")) {
    const char *rest = path + 2;
    while (*rest == '/')
      rest++;
    return g_strdup(*rest ? rest : ".");
  }
  return g_strdup(path);
}

static char *remote_join(const char *dir, const char *name) {
  if (strcmp(dir, ".") == 0)
    return g_strdup(name);
  return g_str_has_suffix(dir, "/") ? g_strconcat(dir, name, NULL)
                                    : g_strconcat(dir, "/", name, NULL);
}

/* The longest file name we take from the server. */
#define SFTP_NAME_MAX 4096
/* How deep a copied tree may go (OpenSSH's sftp stops at 64): a server that lists a
 * directory inside every directory must not exhaust our stack or descriptors. */
#define COPY_MAX_DEPTH 128

/* The name a remote source is copied as into an existing local directory: the last component
 * of the path the user typed. "NAME:", "NAME:~", "x/." and "x/.." have none of their own, and
 * hutch never lets the guest choose one (its REALPATH answer could say ".bashrc" or ".ssh",
 * scp's CVE-2019-6111): the user names a destination that does not exist yet instead. */
static char *remote_basename(const char *path, const char *typed, const char *local_path,
                             GError **error) {
  g_autofree char *base = g_path_get_basename(path);
  if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "'%s' has no name of its own to copy it as (hutch does not let the guest choose "
                "one): name a destination that does not exist yet, e.g. %s/NEW",
                typed, local_path);
    return NULL;
  }
  if (!hutch_hostpath_name_is_safe(base, strlen(base))) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "%s has no name to copy it as", typed);
    return NULL;
  }
  return g_steal_pointer(&base);
}

static char *local_basename(const char *path, GError **error) {
  g_autofree char *canonical = g_canonicalize_filename(path, NULL);
  g_autofree char *base = g_path_get_basename(canonical);
  if (strcmp(base, "/") == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "%s has no name to copy it as", path);
    return NULL;
  }
  return g_steal_pointer(&base);
}

/* Returns 1 when path exists (attrs filled), 0 when it does not, -1 on error. */
static int remote_stat(HutchSsh *ssh, const char *path, LIBSSH2_SFTP_ATTRIBUTES *attrs,
                       GError **error) {
  if (libssh2_sftp_stat(ssh->sftp, path, attrs) == 0)
    return 1;
  unsigned long status = sftp_status(ssh);
  if (status == LIBSSH2_FX_NO_SUCH_FILE || status == LIBSSH2_FX_NO_SUCH_PATH)
    return 0;
  set_sftp_error(ssh, error, "reading %s", path);
  return -1;
}

static gboolean remote_chmod(HutchSsh *ssh, LIBSSH2_SFTP_HANDLE *handle, const char *path,
                             const char *path_shown, unsigned long mode, GError **error) {
  LIBSSH2_SFTP_ATTRIBUTES attrs = {.flags = LIBSSH2_SFTP_ATTR_PERMISSIONS,
                                   .permissions = mode & 0777};
  int rc = handle ? libssh2_sftp_fsetstat(handle, &attrs)
                  : libssh2_sftp_setstat(ssh->sftp, path, &attrs);
  if (rc != 0) {
    set_sftp_error(ssh, error, "setting the mode of %s", path_shown);
    return FALSE;
  }
  return TRUE;
}

/* Modes are copied without setuid, setgid and sticky bits: a file from the guest must not
 * become a setuid program of the host user, and the reverse is no more useful.
 *
 * Local files are only ever reached through descriptors (hostpath-private.h): the source
 * the user named is opened with the walker, everything below it by single names with
 * O_NOFOLLOW, so a link a guest swaps into a share during an upload is never read through,
 * and a download never writes outside the destination the user named. shown (the local
 * path) and remote_shown are only for messages: below the paths the user typed, every name in
 * them is in hutch_hostpath_name_display's form, since the guest chooses those (in the guest,
 * or in a share) and a raw newline would add lines of its own to hutch's output. */
static gboolean upload_file(HutchSsh *ssh, int fd, const char *shown, const char *remote,
                            const char *remote_shown, mode_t mode, GError **error) {
  if (copy_cancelled(ssh, error))
    return FALSE; /* before the open, which truncates */
  LIBSSH2_SFTP_HANDLE *handle = libssh2_sftp_open(
      ssh->sftp, remote, LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_TRUNC, mode & 0777);
  if (!handle) {
    set_sftp_error(ssh, error, "creating %s", remote_shown);
    return FALSE;
  }
  g_autofree char *buf = g_malloc(COPY_BUFFER_SIZE);
  gboolean ok = TRUE;
  for (;;) {
    if (copy_cancelled(ssh, error)) {
      ok = FALSE;
      break;
    }
    ssize_t n = read(fd, buf, COPY_BUFFER_SIZE);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      set_local_error(error, errno, "reading %s", shown);
      ok = FALSE;
      break;
    }
    if (n == 0)
      break;
    /* libssh2_sftp_write may take part of the buffer; it wants the rest in the next call. */
    for (ssize_t off = 0; ok && off < n;) {
      ssize_t w = libssh2_sftp_write(handle, buf + off, (size_t)(n - off));
      if (w < 0) {
        set_sftp_error(ssh, error, "writing %s", remote_shown);
        ok = FALSE;
      } else {
        off += w;
      }
    }
    if (!ok)
      break;
  }
  /* The open mode only applies to new files, and through the server's umask. */
  ok = ok && remote_chmod(ssh, handle, remote, remote_shown, mode, error);
  if (libssh2_sftp_close_handle(handle) != 0 && ok) {
    set_sftp_error(ssh, error, "closing %s", remote_shown);
    ok = FALSE;
  }
  return ok;
}

static gboolean upload_dir(HutchSsh *ssh, int fd, const char *shown, const char *remote,
                           const char *remote_shown, mode_t mode, guint depth, GError **error);

/* One entry of a local directory being uploaded: decided by its lstat (like OpenSSH's sftp,
 * only directories and regular files are copied; links and special files are skipped), then
 * opened by name without following a link and checked to be the same file. */
static gboolean upload_entry(HutchSsh *ssh, int dirfd, const char *name, const char *shown,
                             const char *remote, const char *remote_shown, guint depth,
                             GError **error) {
  struct stat st;
  if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
    set_local_error(error, errno, "reading %s", shown);
    return FALSE;
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    return TRUE;
  g_auto(HutchFd) fd = S_ISDIR(st.st_mode)
                           ? hutch_hostpath_open_child_dir(dirfd, name, &st, shown, error)
                           : hutch_hostpath_open_child_file(dirfd, name, &st, shown, error);
  if (fd < 0)
    return FALSE;
  return S_ISDIR(st.st_mode)
             ? upload_dir(ssh, fd, shown, remote, remote_shown, st.st_mode, depth + 1, error)
             : upload_file(ssh, fd, shown, remote, remote_shown, st.st_mode, error);
}

static gboolean upload_dir(HutchSsh *ssh, int fd, const char *shown, const char *remote,
                           const char *remote_shown, mode_t mode, guint depth, GError **error) {
  if (depth > COPY_MAX_DEPTH) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "%s: more than %d directory levels (refusing to copy deeper)", shown,
                COPY_MAX_DEPTH);
    return FALSE;
  }
  /* Made writable for us first; the real mode comes once the contents are in. */
  if (libssh2_sftp_mkdir(ssh->sftp, remote, (mode & 0777) | 0700) != 0) {
    LIBSSH2_SFTP_ATTRIBUTES attrs;
    int exists = remote_stat(ssh, remote, &attrs, NULL);
    if (exists != 1 || !LIBSSH2_SFTP_S_ISDIR(attrs.permissions)) {
      set_sftp_error(ssh, error, "creating the directory %s", remote_shown);
      return FALSE;
    }
  }
  /* fdopendir takes the descriptor it is given: a duplicate, so that fd stays ours. */
  int listing_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  DIR *dir = listing_fd >= 0 ? fdopendir(listing_fd) : NULL;
  if (!dir) {
    set_local_error(error, errno, "reading the directory %s", shown);
    if (listing_fd >= 0)
      close(listing_fd);
    return FALSE;
  }
  gboolean ok = TRUE;
  for (;;) {
    errno = 0;
    struct dirent *entry = readdir(dir);
    if (!entry) {
      if (errno != 0) {
        set_local_error(error, errno, "reading the directory %s", shown);
        ok = FALSE;
      }
      break;
    }
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
      continue;
    if (copy_cancelled(ssh, error)) {
      ok = FALSE;
      break;
    }
    g_autofree char *entry_shown =
        hutch_hostpath_name_display(entry->d_name, strlen(entry->d_name));
    g_autofree char *local_child = g_build_filename(shown, entry_shown, NULL);
    g_autofree char *remote_child = remote_join(remote, entry->d_name);
    g_autofree char *remote_child_shown = remote_join(remote_shown, entry_shown);
    if (!upload_entry(ssh, fd, entry->d_name, local_child, remote_child, remote_child_shown, depth,
                      error)) {
      ok = FALSE;
      break;
    }
  }
  closedir(dir);
  return ok && remote_chmod(ssh, NULL, remote, remote_shown, mode, error);
}

gboolean hutch_ssh_upload(HutchSsh *ssh, const char *local_path, const char *remote_path_arg,
                          gboolean recursive, GError **error) {
  if (!get_sftp(ssh, error))
    return FALSE;
  /* Only directories and regular files open, and only through root's links. */
  g_auto(HutchFd) fd = hutch_hostpath_open(local_path, O_RDONLY, error);
  if (fd < 0) {
    g_prefix_error(error, "uploading: ");
    return FALSE;
  }
  return hutch_ssh_upload_fd(ssh, fd, local_path, remote_path_arg, recursive, error);
}

gboolean hutch_ssh_upload_fd(HutchSsh *ssh, int fd, const char *local_path,
                             const char *remote_path_arg, gboolean recursive, GError **error) {
  if (!get_sftp(ssh, error))
    return FALSE;
  struct stat st;
  if (fstat(fd, &st) < 0) {
    set_local_error(error, errno, "%s", local_path);
    g_prefix_error(error, "uploading: ");
    return FALSE;
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "uploading %s: not a regular file or directory", local_path);
    return FALSE;
  }
  if (S_ISDIR(st.st_mode) && !recursive) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "uploading %s: it is a directory (copy it recursively)", local_path);
    return FALSE;
  }
  g_autofree char *target = remote_path(remote_path_arg);
  LIBSSH2_SFTP_ATTRIBUTES attrs;
  int exists = remote_stat(ssh, target, &attrs, error);
  if (exists < 0) {
    g_prefix_error(error, "uploading %s to %s: ", local_path, ssh->where);
    return FALSE;
  }
  if (exists && LIBSSH2_SFTP_S_ISDIR(attrs.permissions)) {
    /* Like cp: into an existing directory, under the source's name. */
    g_autofree char *base = local_basename(local_path, error);
    if (!base)
      return FALSE;
    g_autofree char *inside = remote_join(target, base);
    g_free(target);
    target = g_steal_pointer(&inside);
  }
  gboolean ok = S_ISDIR(st.st_mode)
                    ? upload_dir(ssh, fd, local_path, target, target, st.st_mode, 0, error)
                    : upload_file(ssh, fd, local_path, target, target, st.st_mode, error);
  if (!ok)
    g_prefix_error(error, "uploading %s to %s: ", local_path, ssh->where);
  return ok;
}

mode_t hutch_ssh_process_umask(void) {
  /* Read, not set: umask(2) would change it for every thread for a moment. */
  g_autofree char *status = NULL;
  const char *line;
  if (g_file_get_contents("/proc/self/status", &status, NULL, NULL) &&
      (line = strstr(status, "\nUmask:")))
    return (mode_t)g_ascii_strtoull(line + 7, NULL, 8) & 0777;
  return 022;
}

/* What a downloaded file or a directory hutch made gets of the guest's mode: its permission
 * bits through the user's umask, as if the user had made it (the guest must not make a file
 * of the user's world-writable), never setuid, setgid or sticky. A copy the supervisor
 * serves has its caller's umask. */
static mode_t local_mode(HutchSsh *ssh, unsigned long guest_mode) {
  mode_t umask_bits = ssh->caller_umask_set ? ssh->caller_umask : hutch_ssh_process_umask();
  return (mode_t)(guest_mode & 0777) & ~umask_bits;
}

/* Writes the remote file to name below dirfd, under a temporary name renamed over it once
 * complete (never into an existing file's inode, never through a link, never into a FIFO or
 * device; a failed or cancelled copy leaves what was there), with the remote mode through
 * the umask (local_mode). */
static gboolean download_file(HutchSsh *ssh, const char *remote, const char *remote_shown,
                              int dirfd, const char *name, const char *shown, unsigned long mode,
                              GError **error) {
  /* Remote first, so that a missing source leaves no temporary file behind. */
  LIBSSH2_SFTP_HANDLE *handle = libssh2_sftp_open(ssh->sftp, remote, LIBSSH2_FXF_READ, 0);
  if (!handle) {
    set_sftp_error(ssh, error, "opening %s", remote_shown);
    return FALSE;
  }
  if (copy_cancelled(ssh, error)) {
    libssh2_sftp_close_handle(handle);
    return FALSE;
  }
  g_auto(HutchHostpathNewFile) file = HUTCH_HOSTPATH_NEW_FILE_INIT;
  if (!hutch_hostpath_new_file_begin(dirfd, name, shown, &file, error)) {
    libssh2_sftp_close_handle(handle);
    return FALSE;
  }
  g_autofree char *buf = g_malloc(COPY_BUFFER_SIZE);
  gboolean ok = TRUE;
  for (;;) {
    if (copy_cancelled(ssh, error)) {
      ok = FALSE;
      break;
    }
    ssize_t n = libssh2_sftp_read(handle, buf, COPY_BUFFER_SIZE);
    if (n < 0) {
      set_sftp_error(ssh, error, "reading %s", remote_shown);
      ok = FALSE;
      break;
    }
    if (n == 0)
      break;
    if (!hutch_write_all(file.fd, buf, (gsize)n, error)) {
      g_prefix_error(error, "%s: ", shown);
      ok = FALSE;
      break;
    }
  }
  libssh2_sftp_close_handle(handle);
  if (ok && fchmod(file.fd, local_mode(ssh, mode)) < 0) {
    set_local_error(error, errno, "setting the mode of %s", shown);
    ok = FALSE;
  }
  /* on failure, file's cleanup removes the temporary file */
  return ok && hutch_hostpath_new_file_commit(&file, shown, error);
}

/* Makes (or reuses) the directory name below dirfd and fills it; everything below is
 * created relative to its descriptor, so a directory the guest swaps for a link meanwhile
 * leads nowhere. Every name the server lists is checked: "." and ".." (which servers list)
 * are skipped, any other invalid name fails the copy. */
static gboolean download_dir(HutchSsh *ssh, const char *remote, const char *remote_shown, int dirfd,
                             const char *name, const char *shown, unsigned long mode, guint depth,
                             GError **error) {
  if (depth > COPY_MAX_DEPTH) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "%s: more than %d directory levels (refusing to copy deeper)", remote_shown,
                COPY_MAX_DEPTH);
    return FALSE;
  }
  gboolean created = FALSE;
  g_auto(HutchFd) fd = hutch_hostpath_make_child_dir(dirfd, name, 0700, &created, shown, error);
  if (fd < 0)
    return FALSE;
  LIBSSH2_SFTP_HANDLE *handle = libssh2_sftp_opendir(ssh->sftp, remote);
  if (!handle) {
    set_sftp_error(ssh, error, "opening the directory %s", remote_shown);
    return FALSE;
  }
  gboolean ok = TRUE;
  g_autofree char *entry = g_malloc(SFTP_NAME_MAX);
  for (;;) {
    LIBSSH2_SFTP_ATTRIBUTES attrs = {0};
    int n = libssh2_sftp_readdir(handle, entry, SFTP_NAME_MAX - 1, &attrs);
    if (n < 0) {
      set_sftp_error(ssh, error, "reading the directory %s", remote_shown);
      ok = FALSE;
      break;
    }
    if (n == 0)
      break;
    if (copy_cancelled(ssh, error)) {
      ok = FALSE;
      break;
    }
    entry[n] = '\0';
    /* By length: ".\0x" is no "." but an invalid name. */
    if ((n == 1 && entry[0] == '.') || (n == 2 && entry[0] == '.' && entry[1] == '.'))
      continue;
    if (!hutch_hostpath_name_is_safe(entry, (gsize)n)) {
      g_autofree char *bad = hutch_hostpath_name_display(entry, (gsize)n);
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                  "reading the directory %s: the guest's SFTP server listed an invalid file "
                  "name \"%s\" (refusing to copy)",
                  remote_shown, bad);
      ok = FALSE;
      break;
    }
    if (!(attrs.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS))
      continue;
    g_autofree char *entry_shown = hutch_hostpath_name_display(entry, (gsize)n);
    g_autofree char *remote_child = remote_join(remote, entry);
    g_autofree char *remote_child_shown = remote_join(remote_shown, entry_shown);
    g_autofree char *local_child = g_build_filename(shown, entry_shown, NULL);
    /* readdir reports lstat() attributes, so links are seen as links and skipped, as in
     * OpenSSH's sftp. */
    if (LIBSSH2_SFTP_S_ISDIR(attrs.permissions))
      ok = download_dir(ssh, remote_child, remote_child_shown, fd, entry, local_child,
                        attrs.permissions, depth + 1, error);
    else if (LIBSSH2_SFTP_S_ISREG(attrs.permissions))
      ok = download_file(ssh, remote_child, remote_child_shown, fd, entry, local_child,
                         attrs.permissions, error);
    if (!ok)
      break;
  }
  libssh2_sftp_closedir(handle);
  /* A directory that was there keeps its mode: the guest does not get to open it up. */
  if (ok && created && fchmod(fd, local_mode(ssh, mode) | 0700) < 0) {
    set_local_error(error, errno, "setting the mode of %s", shown);
    ok = FALSE;
  }
  return ok;
}

void hutch_ssh_local_dest_clear(HutchSshLocalDest *dest) {
  if (dest->fd >= 0)
    close(dest->fd);
  dest->fd = -1;
  g_clear_pointer(&dest->name, g_free);
}

gboolean hutch_ssh_local_dest_open(const char *local_path, HutchSshLocalDest *dest,
                                   GError **error) {
  *dest = (HutchSshLocalDest){.fd = -1};
  g_autofree char *name = NULL;
  g_auto(HutchFd) parent = hutch_hostpath_open_parent(local_path, &name, error);
  if (parent < 0)
    return FALSE;
  dest->want_dir = g_str_has_suffix(local_path, "/");
  struct stat st;
  if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno != ENOENT) {
      set_local_error(error, errno, "%s", local_path);
      return FALSE;
    }
    dest->missing = TRUE;
  } else if (S_ISLNK(st.st_mode)) {
    if (!hutch_hostpath_link_is_trusted(&st, geteuid())) {
      hutch_hostpath_refuse_link(error, "write through", local_path, geteuid());
      return FALSE;
    }
    /* A system link (/tmp -> private/tmp): fine to go into, never to write through. */
    g_auto(HutchFd) target = hutch_hostpath_open(local_path, O_PATH, error);
    struct stat target_st;
    if (target < 0 || fstat(target, &target_st) < 0) {
      if (target >= 0)
        set_local_error(error, errno, "%s", local_path);
      return FALSE;
    }
    if (!S_ISDIR(target_st.st_mode)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                  "refusing to write through the symbolic link %s", local_path);
      return FALSE;
    }
    dest->inside = TRUE;
    dest->fd = g_steal_fd(&target);
    return TRUE;
  } else if (S_ISDIR(st.st_mode)) {
    dest->fd = openat(parent, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dest->fd < 0) {
      set_local_error(error, errno, "%s", local_path);
      return FALSE;
    }
    dest->inside = TRUE;
    return TRUE;
  } else if (dest->want_dir) {
    set_local_error(error, ENOTDIR, "%s", local_path);
    return FALSE;
  }
  dest->name = g_steal_pointer(&name);
  dest->fd = g_steal_fd(&parent);
  return TRUE;
}

gboolean hutch_ssh_download(HutchSsh *ssh, const char *remote_path_arg, const char *local_path,
                            gboolean recursive, GError **error) {
  return hutch_ssh_download_to(ssh, remote_path_arg, NULL, local_path, recursive, error);
}

gboolean hutch_ssh_download_to(HutchSsh *ssh, const char *remote_path_arg,
                               const HutchSshLocalDest *prepared, const char *local_path,
                               gboolean recursive, GError **error) {
  if (!get_sftp(ssh, error))
    return FALSE;
  g_autofree char *source = remote_path(remote_path_arg);
  LIBSSH2_SFTP_ATTRIBUTES attrs;
  int exists = remote_stat(ssh, source, &attrs, error);
  if (exists == 0)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND, "%s: No such file or directory",
                remote_path_arg);
  if (exists != 1) {
    g_prefix_error(error, "downloading from %s: ", ssh->where);
    return FALSE;
  }
  gboolean is_dir = LIBSSH2_SFTP_S_ISDIR(attrs.permissions);
  if (is_dir && !recursive) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "downloading %s: it is a directory (copy it recursively)", remote_path_arg);
    return FALSE;
  }
  if (!is_dir && !LIBSSH2_SFTP_S_ISREG(attrs.permissions)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "downloading %s: not a regular file or directory", remote_path_arg);
    return FALSE;
  }
  /* the destination, examined now (or by the command that asked the supervisor, from its
   * working directory and in its mount namespace) */
  g_auto(HutchSshLocalDest) opened = {.fd = -1};
  if (!prepared && !hutch_ssh_local_dest_open(local_path, &opened, error)) {
    g_prefix_error(error, "downloading %s from %s: ", remote_path_arg, ssh->where);
    return FALSE;
  }
  const HutchSshLocalDest *dest = prepared ? prepared : &opened;
  if (dest->missing && dest->want_dir && !is_dir) {
    set_local_error(error, ENOENT, "%s", local_path);
    g_prefix_error(error, "downloading %s from %s: ", remote_path_arg, ssh->where);
    return FALSE;
  }
  int dirfd = dest->fd;
  gboolean inside = dest->inside;
  g_autofree char *name = inside ? NULL : g_strdup(dest->name);
  g_autofree char *shown = NULL;
  if (inside) {
    name = remote_basename(source, remote_path_arg, local_path, error);
    if (!name) {
      g_prefix_error(error, "downloading from %s: ", ssh->where);
      return FALSE;
    }
    shown = g_build_filename(local_path, name, NULL);
  } else {
    shown = g_strdup(local_path);
  }
  gboolean ok =
      is_dir ? download_dir(ssh, source, source, dirfd, name, shown, attrs.permissions, 0, error)
             : download_file(ssh, source, source, dirfd, name, shown, attrs.permissions, error);
  if (!ok)
    g_prefix_error(error, "downloading %s from %s to %s: ", remote_path_arg, ssh->where,
                   local_path);
  return ok;
}

/* ---- Keys ----------------------------------------------------------------------------- */

static gboolean run_ssh_keygen(const char *const *argv, char **ret_stdout, GError **error) {
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  int wait_status = 0;
  g_autoptr(GError) local_error = NULL;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL,
                    NULL, NULL, &out, &err, &wait_status, &local_error)) {
    if (g_error_matches(local_error, G_SPAWN_ERROR, G_SPAWN_ERROR_NOENT))
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                  "ssh-keygen is missing: install openssh-client");
    else
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "running ssh-keygen: %s",
                  local_error->message);
    return FALSE;
  }
  if (!g_spawn_check_wait_status(wait_status, NULL)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "ssh-keygen failed: %s", g_strstrip(err));
    return FALSE;
  }
  if (ret_stdout)
    *ret_stdout = g_steal_pointer(&out);
  return TRUE;
}

static gboolean keygen_into(const char *path, const char *comment, GError **error) {
  const char *argv[] = {"ssh-keygen", "-q",    "-t", "ed25519", "-N", "",
                        "-C",         comment, "-f", path,      NULL};
  return run_ssh_keygen(argv, NULL, error);
}

gboolean hutch_ssh_generate_keypair(const char *comment, char **ret_private, char **ret_public,
                                    GError **error) {
  g_autoptr(GError) local_error = NULL;
  /* g_dir_make_tmp makes it 0700: the private key never sits where others can read it. */
  g_autofree char *dir = g_dir_make_tmp("hutch-keygen-XXXXXX", &local_error);
  if (!dir) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "generating a key pair: %s",
                local_error->message);
    return FALSE;
  }
  g_autofree char *path = g_build_filename(dir, "key", NULL);
  g_autofree char *public_path = g_strconcat(path, ".pub", NULL);
  g_autofree char *private_text = NULL;
  g_autofree char *public_text = NULL;
  gboolean ok = keygen_into(path, comment ? comment : "hutch", error) &&
                g_file_get_contents(path, &private_text, NULL, &local_error) &&
                g_file_get_contents(public_path, &public_text, NULL, &local_error);
  if (!ok && local_error)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s", local_error->message);
  hutch_rmtree(dir, NULL);
  if (!ok) {
    g_prefix_error(error, "generating a key pair: ");
    return FALSE;
  }
  if (ret_private)
    *ret_private = g_steal_pointer(&private_text);
  if (ret_public)
    *ret_public = g_strdup(g_strstrip(public_text));
  return TRUE;
}

/* Makes the key in a temporary directory beside it and links it into place, so that two
 * hutch processes starting at once end up with one key. */
static gboolean create_client_key(const char *dir, const char *path, GError **error) {
  g_autofree char *tmp = g_build_filename(dir, ".new-XXXXXX", NULL);
  if (!g_mkdtemp_full(tmp, 0700)) {
    set_local_error(error, errno, "creating a directory in %s", dir);
    return FALSE;
  }
  g_autofree char *tmp_key = g_build_filename(tmp, "id_ed25519", NULL);
  g_autofree char *tmp_pub = g_strconcat(tmp_key, ".pub", NULL);
  g_autofree char *pub = g_strconcat(path, ".pub", NULL);
  gboolean ok = keygen_into(tmp_key, "hutch", error);
  if (ok && link(tmp_key, path) == 0) {
    if (g_rename(tmp_pub, pub) < 0) {
      set_local_error(error, errno, "creating %s", pub);
      ok = FALSE;
    }
  } else if (ok && errno != EEXIST) {
    set_local_error(error, errno, "creating %s", path);
    ok = FALSE;
  }
  hutch_rmtree(tmp, NULL);
  return ok;
}

char *hutch_ssh_client_key(char **ret_public, GError **error) {
  g_autofree char *data_dir = hutch_data_dir();
  g_autofree char *dir = g_build_filename(data_dir, "ssh", NULL);
  g_autofree char *path = g_build_filename(dir, "id_ed25519", NULL);
  g_autofree char *pub = g_strconcat(path, ".pub", NULL);
  g_autoptr(GError) local_error = NULL;

  if (!hutch_mkdir(dir, 0700, &local_error)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "the hutch SSH key: %s",
                local_error->message);
    return NULL;
  }
  if (!g_file_test(path, G_FILE_TEST_EXISTS) && !create_client_key(dir, path, error)) {
    g_prefix_error(error, "creating the hutch SSH key %s: ", path);
    return NULL;
  }
  if (g_chmod(path, 0600) < 0) {
    set_local_error(error, errno, "the hutch SSH key: %s", path);
    return NULL;
  }
  /* A lost .pub (or a racing creator that has not renamed it yet) is derived again. */
  if (!g_file_test(pub, G_FILE_TEST_EXISTS)) {
    const char *argv[] = {"ssh-keygen", "-y", "-f", path, NULL};
    g_autofree char *line = NULL;
    if (!run_ssh_keygen(argv, &line, error) ||
        !hutch_write_file(pub, line, strlen(line), 0644, &local_error)) {
      if (local_error)
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s", local_error->message);
      g_prefix_error(error, "the hutch SSH key %s: ", path);
      return NULL;
    }
  }
  if (ret_public) {
    g_autofree char *text = NULL;
    if (!g_file_get_contents(pub, &text, NULL, &local_error)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "the hutch SSH key: %s",
                  local_error->message);
      return NULL;
    }
    *ret_public = g_strdup(g_strstrip(text));
  }
  return g_steal_pointer(&path);
}
