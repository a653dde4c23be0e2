/* client-private.h: what a command needs to reach a running VM through its supervisor, in
 * GLib alone.
 *
 * libhutch uses it, and so does the lean front (cmd/front.c: the `hutch` users run), which
 * serves `hutch shell NAME -- CMD` from this module without loading libvirt, libssh2,
 * GnuTLS or json-glib: mapping their 60-odd libraries took longer than the command itself
 * through the supervisor (docs/performance.md). So nothing here may call into them.
 *
 * The supervisor's socket protocol (supervisor-private.h has the supervisor's side), frames
 * of [type: 1 byte][length: 3 bytes, big-endian][payload]:
 *   client:     Q request (JSON: {"op": "exec", "command": TEXT|null, "pty": BOOL, "term": TEXT,
 *               "cols": N, "rows": N}, {"op": "status"}, {"op": "forward-add", "host_ip":
 *               TEXT, "host_port": N, "guest_port": N}, {"op": "forward-remove",
 *               "host_port": N} or {"op": "copy", ...} with a descriptor (supervisor.c,
 *               handle_copy)), I stdin bytes, E end of stdin,
 *               W terminal size ("COLS ROWS")
 *   supervisor: A the command runs, O stdout bytes, R stderr bytes, X exit status (decimal),
 *               F failure (text; before A the client connects directly instead), S status
 *               (JSON: {"pid": N, "commands": N, "running": N, "spare": N, "forwards": N,
 *               ...}) or a forward or copy request's result (JSON: {"ok": BOOL, "code":
 *               HutchError, "error": TEXT}); a copy gets A when it begins (F before it: copy
 *               directly), then that result
 * A client that goes away closes its channel. */
#pragma once

#include <signal.h>
#include <termios.h>

#include "hutch.h"

#define HUTCH_SUPERVISOR_SOCKET "supervisor.sock"

/* Set (to anything but "") in a command's environment, commands connect directly and never
 * through a supervisor. The front sets it when it hands `shell` to the full CLI after its
 * supervisor did not take the command, so that the same wait is not repeated. */
#define HUTCH_NO_SUPERVISOR_ENV "HUTCH_NO_SUPERVISOR"
/* Whether HUTCH_NO_SUPERVISOR_ENV is set in this process's environment. */
gboolean hutch_supervisor_refused_by_env(void);

/* One read from a channel or a socket. */
#define HUTCH_FRAME_CHUNK (32 * 1024)
/* A frame's payload at most (the length field has 3 bytes). */
#define HUTCH_FRAME_MAX (1024 * 1024)

void hutch_frame_append(GByteArray *out, char type, const void *data, gsize len);
void hutch_frame_append_text(GByteArray *out, char type, const char *text);
/* The first whole frame of in: 1 with *type, *payload (pointing into in) and *len; 0 when
 * incomplete; -1 when it is too long (a broken peer). */
int hutch_frame_peek(GByteArray *in, char *type, const guint8 **payload, gsize *len);
/* Drops the first frame (of payload length len) from in. */
void hutch_frame_consume(GByteArray *in, gsize len);

/* $XDG_RUNTIME_DIR/hutch, and a VM's runtime directory in it (its sockets and pidfiles). */
char *hutch_runtime_dir(void);
char *hutch_instance_runtime_dir(const char *name);

/* A POSIX shell command line that runs argv exactly (each word single-quoted unless it is
 * made only of [A-Za-z0-9_+,./:@%-]). NULL or empty argv: "". */
char *hutch_shell_quote_argv(char *const *argv);
/* What `hutch shell` runs: argv (NULL or empty: a login shell), in workdir when set. NULL
 * for the guest's login shell in the user's home. */
char *hutch_shell_command(char *const *argv, const char *workdir);
/* Whether `hutch shell` gives the command a terminal: when stdin is one, for the interactive
 * shell, and for a command when stdout is one too (so `hutch shell dev -- vim` works and
 * `... -- cat < file` stays byte-exact). Like ssh, none when stdin is no terminal:
 * `hutch shell dev < script` runs the script and ends at its end (a PTY would wait for a ^D
 * that never comes). */
gboolean hutch_shell_wants_pty(gboolean interactive);

/* The local side of an interactive session: with pty, the terminal (stdin, else stdout) in
 * raw mode and a SIGWINCH handler that makes winch_fd readable; restored by leave. Without
 * pty, or without a terminal, nothing changes (tty_fd and winch_fd are -1). One at a time. */
typedef struct {
  int tty_fd;   /* the terminal whose size the PTY follows, or -1 */
  int winch_fd; /* readable when that terminal was resized (drain it), or -1 */
  gboolean raw, winch;
  struct termios saved_termios;
  struct sigaction saved_action;
} HutchTerminal;
void hutch_terminal_enter(HutchTerminal *t, gboolean pty);
void hutch_terminal_leave(HutchTerminal *t);
/* The terminal's size (80x24 when fd is no terminal). */
void hutch_terminal_size(int fd, guint *ret_cols, guint *ret_rows);

/* Receives output as it arrives; returns FALSE with error set to stop the command. */
/* Writes all of data to fd, waiting out EINTR and a descriptor someone made non-blocking. */
gboolean hutch_write_all(int fd, const void *data, gsize len, GError **error);

typedef gboolean (*HutchSshOutputFunc)(const char *data, gsize len, gpointer user_data,
                                       GError **error);

/* Runs command (NULL: a login shell) through the VM's supervisor with this process's stdin,
 * stdout and stderr, like hutch_ssh_exec_interactive. *ret_used is FALSE (and -1 returned,
 * error unset) when no supervisor took it (none answers, it failed before the command ran,
 * or HUTCH_NO_SUPERVISOR_ENV is set): the caller connects directly. Otherwise returns the
 * exit status, or -1 with error set. */
int hutch_supervisor_exec(const char *runtime_dir, const char *command, gboolean pty,
                          gboolean *ret_used, GError **error);

/* The same with the given descriptors (in_fd -1: no input; err_fd -1: stderr dropped), for
 * the unit tests. */
int hutch_supervisor_exec_fds(const char *runtime_dir, const char *command, int in_fd, int out_fd,
                              int err_fd, gboolean *ret_used, GError **error);

/* The same with no input, stdout handed to func as it arrives and stderr dropped, like
 * hutch_ssh_exec_stream (for `hutch logs`). */
int hutch_supervisor_exec_stream(const char *runtime_dir, const char *command,
                                 HutchSshOutputFunc func, gpointer user_data, gboolean *ret_used,
                                 GError **error);

/* A command's exit status as hutch hands it on (hutch shell exits with it): 0-255. The SSH
 * protocol carries a 32-bit status and a hostile guest's sshd can send any: 0xFFFFFFFF
 * reaches us as -1, which callers take for "failed, see the error" (there is none), and
 * exit() would keep only the low byte of 256 (a success). Any value outside 0-255 becomes
 * 255, what ssh(1) exits with when it cannot give the command's status. Applied where a status
 * comes in: from the guest (hutch_ssh_channel_exit_status) and from the supervisor (X). */
int hutch_exit_status_clamp(gint64 status);

/* The VM's supervisor socket, connected and checked to be of this user (blocking), or -1. */
int hutch_supervisor_connect(const char *runtime_dir);
/* Sends all of data on a socket (no SIGPIPE). */
gboolean hutch_send_all(int fd, const guint8 *data, gsize len);
/* Reads from fd into buf until one whole frame is there (then as hutch_frame_peek), or -1
 * when timeout_ms (-1: no limit) passes or the peer is gone. */
int hutch_frame_read(int fd, GByteArray *buf, int timeout_ms, char *type, const guint8 **payload,
                     gsize *len);

/* Connects, sends request (JSON) as a Q frame, with passed_fd (unless -1) on its first bytes
 * (SCM_RIGHTS), and reads the first frame of the answer into in (up to timeout_ms): returns
 * the socket with *type, *payload and *len as hutch_frame_peek gives them, or -1 (then
 * *ret_sent, may be NULL, says whether the request went out). */
int hutch_supervisor_request(const char *runtime_dir, const char *request, int passed_fd,
                             int timeout_ms, GByteArray *in, char *type, const guint8 **payload,
                             gsize *len, gboolean *ret_sent);

/* Sends request (a Q frame's JSON) and returns the payload of the answer when it is a frame
 * of type answer_type, or NULL when no supervisor answers so within timeout_ms; then
 * *ret_reached (may be NULL) says whether a supervisor took the request all the same (it may
 * still act on it). */
char *hutch_supervisor_ask(const char *runtime_dir, const char *request, char answer_type,
                           int timeout_ms, gboolean *ret_reached);
