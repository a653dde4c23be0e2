/* supervisor-private.h: one process per running VM that holds one authenticated SSH session
 * to the guest and serves commands over it.
 *
 * `hutch supervise NAME` (started detached by `hutch start` before the VM's helpers, which it
 * starts as its children and reaps, see hutch_supervisor_boot; or by the first `hutch shell`
 * or `hutch cp` that finds a running VM without one, which adopts the helpers by their
 * verified pidfiles) connects once, with the pinned host key, and
 * serves a Unix socket in the VM's runtime directory (supervisor.sock, 0600, same user only,
 * checked with SO_PEERCRED). A command through it opens a channel on that session instead of a new
 * connection: no TCP, key exchange or authentication per command. A `hutch cp` is an SFTP
 * copy in a thread of its own, on a second connection kept between copies (supervisor.c,
 * "Copies"). A port `hutch forward`
 * adds is relayed by a thread of the supervisor with an SSH connection of its own (a guest port
 * that never accepts must not hold the commands' session; forward-files-private.h has the
 * record it keeps). It watches the domain
 * through libvirt's event API and exits when the domain stops (whoever stopped it), stopping
 * the helpers (passt, virtiofsd, forwards) that ran when it started. One runs per VM
 * (supervisor.lock); supervisor.pid ("PID START") names it; supervisor.log has its events.
 *
 * The socket's protocol and the client's side are in client-private.h. */
#pragma once

#include "hutch.h"
#include "client-private.h"
#include "ssh-private.h"

#define HUTCH_SUPERVISOR_PID "supervisor.pid"
#define HUTCH_SUPERVISOR_LOCK "supervisor.lock"
#define HUTCH_SUPERVISOR_LOG "supervisor.log"
/* its process name (PR_SET_NAME), by which its pidfile is verified */
#define HUTCH_SUPERVISOR_COMM "hutch-supervise"

/* How the supervisor's forward threads connect to the guest's sshd on 127.0.0.1 (each its own
 * connection, like the supervisor's). */
typedef struct {
  guint port;
  const char *user;
  const char *client_key; /* the private key file */
  const char *host_key;   /* the pinned public host key line */
  /* the supervisor's own session failed (the guest rebooted, its sshd restarted): how long it
   * tries to connect again, serving forwards and answering requests meanwhile (commands then
   * connect directly); 0: its loop ends, as when that does not succeed either */
  guint reconnect_s;
} HutchSupervisorTarget;

/* The supervisor's loop on an established session, which it takes (and frees), serving
 * listen_fd (a listening Unix socket, made non-blocking) until stop_fd is readable or the
 * session fails and is not made again (HUTCH_SUPERVISE_LOST either way); forwarded ports, and
 * a new session, connect to target (NULL: forward requests are refused). For the unit tests;
 * the supervisor runs the same loop. */
HutchSuperviseEnd hutch_supervisor_loop(HutchSsh *ssh, const HutchSupervisorTarget *target,
                                        int listen_fd, int stop_fd);

/* Starts `PROGRAM -c URI supervise NAME` detached (its own session, stdin /dev/null, output
 * to supervisor.log), when the context has a supervisor program
 * (hutch_context_set_supervisor_program) and none serves the VM yet. Failing is not an error
 * for the caller: commands then connect directly. */
void hutch_supervisor_spawn(HutchContext *ctx, const char *name, const char *runtime_dir);

/* Whether this context starts the VM's supervisor before its helpers (it has a supervisor
 * program), so that they are its children: then hutch_supervisor_boot starts them. */
gboolean hutch_supervisor_boot_possible(HutchContext *ctx);

/* For `hutch start`: starts the VM's supervisor (`PROGRAM -c URI supervise --boot-fd 3
 * --ssh-port PORT [--secrets-fd 4] NAME`, detached as hutch_supervisor_spawn does), which
 * starts the VM's helpers (hutch_instance_start_helpers) as its children, SSH on ssh_port.
 * Its progress is shown as this start's; its error is this function's. The env secrets named
 * by secret_vars, with their values in host_env (a g_get_environ() taken before they were
 * unset), go to the egress helper in an anonymous file the supervisor hands on unread.
 * On success *ret_boot_fd is this end of the boot socket: close it when the start is over
 * (whatever its outcome); the supervisor then serves the VM if its domain runs, and stops
 * the helpers if not. */
gboolean hutch_supervisor_boot(HutchContext *ctx, const char *name, const char *runtime_dir,
                               guint ssh_port, char **secret_vars, char **host_env,
                               int *ret_boot_fd, GError **error);

/* The status of the VM's supervisor ({"pid": N, "commands": N, "running": N, "spare": N,
 * "spares_taken": N, "forwards": N, "connections": N}), or NULL when none answers within a
 * second. */
JsonObject *hutch_supervisor_status(const char *runtime_dir);

/* Copies through the VM's supervisor, on its copy session (no new connection), as
 * hutch_ssh_upload or hutch_ssh_download would: the local side (local, as the user named it)
 * is opened here and its descriptor passed, and downloads get this process's umask. *ret_used is
 * FALSE (FALSE returned, error unset) when no supervisor took it: the caller copies directly.
 * Otherwise returns whether the copy succeeded; the error is the copy's own. This process's leaving
 * (Ctrl-C) cancels the copy. */
gboolean hutch_supervisor_copy(const char *runtime_dir, gboolean upload, const char *local,
                               const char *guest, gboolean recursive, gboolean *ret_used,
                               GError **error);

/* Sets member of o to text as it may go into JSON: json-glib writes a string's bytes as they
 * are, and text that is not UTF-8 (an error naming a guest's file, a guest's sshd message)
 * makes the reader's parser reject the whole answer. Sanitised as the CLI would print it
 * (hutch_text_sanitize, HUTCH_TEXT_LINES: invalid bytes and control characters become '?'). */
void hutch_supervisor_json_set_text(JsonObject *o, const char *member, const char *text);

/* A request's result as the supervisor answers it (the copy's and the forwards'): {"ok": true},
 * or {"ok": false, "code": N, "error": TEXT} for error. */
char *hutch_supervisor_result_json(const GError *error);

/* The pid the VM's supervisor gives in its status answer, or 0 when none answers. */
pid_t hutch_supervisor_pid(const char *runtime_dir);

/* Waits (up to timeout_ms) until no supervisor holds the VM's lock (one whose domain just
 * stopped exits at once), and stops one that is still there then, verified by its pidfile.
 * For start: a new start's helpers must never meet an old supervisor. */
void hutch_supervisor_wait_gone(const char *runtime_dir, guint timeout_ms);
