/* supervisor-private.h: one process per running VM that holds one authenticated SSH session
 * to the guest and serves commands over it.
 *
 * `hutch supervise NAME` (started detached by `hutch start`, or by the first `hutch shell`
 * that finds a running VM without one) connects once, with the pinned host key, and serves
 * a Unix socket in the VM's runtime directory (supervisor.sock, 0600, same user only, checked
 * with SO_PEERCRED). A command through it opens a channel on that session instead of a new
 * connection: no TCP, key exchange or authentication per command. It watches the domain
 * through libvirt's event API and exits when the domain stops (whoever stopped it), stopping
 * the helpers (passt, virtiofsd, forwards) that ran when it started. One runs per VM
 * (supervisor.lock); supervisor.pid ("PID START") names it; supervisor.log has its events.
 *
 * The socket's protocol, frames of [type: 1 byte][length: 3 bytes, big-endian][payload]:
 *   client:     Q request (JSON: {"op": "exec", "command": TEXT|null, "pty": BOOL, "term": TEXT,
 *               "cols": N, "rows": N} or {"op": "status"}), I stdin bytes, E end of stdin,
 *               W terminal size ("COLS ROWS")
 *   supervisor: A the command runs, O stdout bytes, R stderr bytes, X exit status (decimal),
 *               F failure (text; before A the client connects directly instead), S status
 *               (JSON: {"pid": N, "commands": N, "running": N})
 * A client that goes away closes its channel. */
#pragma once

#include "hutch.h"
#include "ssh-private.h"

#define HUTCH_SUPERVISOR_SOCKET "supervisor.sock"
#define HUTCH_SUPERVISOR_PID "supervisor.pid"
#define HUTCH_SUPERVISOR_LOCK "supervisor.lock"
#define HUTCH_SUPERVISOR_LOG "supervisor.log"
/* its process name (PR_SET_NAME), by which its pidfile is verified */
#define HUTCH_SUPERVISOR_COMM "hutch-supervise"

/* The supervisor's loop on an established session, which it takes (and frees), serving
 * listen_fd (a listening Unix socket, made non-blocking) until stop_fd is readable or the
 * session fails (HUTCH_SUPERVISE_LOST either way). For the unit tests; the supervisor runs the
 * same loop. */
HutchSuperviseEnd hutch_supervisor_loop(HutchSsh *ssh, int listen_fd, int stop_fd);

/* Starts `PROGRAM -c URI supervise NAME` detached (its own session, stdin /dev/null, output
 * to supervisor.log), when the context has a supervisor program
 * (hutch_context_set_supervisor_program) and none serves the VM yet. Failing is not an error
 * for the caller: commands then connect directly. */
void hutch_supervisor_spawn(HutchContext *ctx, const char *name, const char *runtime_dir);

/* Runs command (NULL: a login shell) through the VM's supervisor with this process's stdin,
 * stdout and stderr, like hutch_ssh_exec_interactive. *ret_used is FALSE (and -1 returned,
 * error unset) when no supervisor took it: the caller connects directly. Otherwise returns
 * the exit status, or -1 with error set. */
int hutch_supervisor_exec(const char *runtime_dir, const char *command, gboolean pty,
                          gboolean *ret_used, GError **error);

/* The same with no input, stdout handed to func as it arrives and stderr dropped, like
 * hutch_ssh_exec_stream (for `hutch logs`). */
/* The same with the given descriptors (in_fd -1: no input; err_fd -1: stderr dropped), for
 * the unit tests. */
int hutch_supervisor_exec_fds(const char *runtime_dir, const char *command, int in_fd,
                              int out_fd, int err_fd, gboolean *ret_used, GError **error);

int hutch_supervisor_exec_stream(const char *runtime_dir, const char *command,
                                 HutchSshOutputFunc func, gpointer user_data, gboolean *ret_used,
                                 GError **error);

/* {"pid": N, "commands": N, "running": N} from the VM's supervisor, or NULL when none answers
 * within a second. */
JsonObject *hutch_supervisor_status(const char *runtime_dir);

/* Waits (up to timeout_ms) until no supervisor holds the VM's lock (one whose domain just
 * stopped exits at once), and stops one that is still there then, verified by its pidfile.
 * For start: a new start's helpers must never meet an old supervisor. */
void hutch_supervisor_wait_gone(const char *runtime_dir, guint timeout_ms);
