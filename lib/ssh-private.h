/* ssh-private.h: libssh2 sessions to a guest with a pinned host key. */
#pragma once

#include <libssh2.h>
#include <signal.h>
#include <termios.h>

#include "client-private.h"
#include "hutch.h"

typedef struct _HutchSsh HutchSsh;

/* Connects to host:port, checks that the server's host key is exactly pinned_host_key
 * ("ssh-ed25519 BASE64 [comment]"; a mismatch is HUTCH_ERROR_HOST_KEY, never a prompt; its
 * message names both SHA256 fingerprints) and authenticates as user with the private key file
 * (its public key is private_key + ".pub" when that exists). timeout_ms bounds the TCP
 * connection, handshake and authentication together (0: no limit); commands run after that
 * have no time limit. Refused, unreachable, timed out, handshake or authentication failures
 * are HUTCH_ERROR_SSH (a guest that is still booting gives these: retry); a pin that is no
 * valid key is HUTCH_ERROR_FAILED. */
HutchSsh *hutch_ssh_connect(const char *host, guint port, const char *user,
                            const char *private_key_path, const char *pinned_host_key,
                            guint timeout_ms, GError **error);
/* hutch_ssh_connect to a guest's sshd on 127.0.0.1:port (10 s for each try), tried again every
 * half second while the guest boots, until wait_s have passed, stop_fd (when >= 0) becomes
 * readable, or keep_trying (when given) returns FALSE, having set its own error. A host key
 * mismatch is never tried again: it is the one error that must stop everything. Otherwise the
 * last try's error is returned. */
typedef gboolean (*HutchSshKeepTrying)(gpointer data, GError **error);
HutchSsh *hutch_ssh_connect_retrying(guint port, const char *user, const char *private_key_path,
                                     const char *pinned_host_key, guint wait_s, int stop_fd,
                                     HutchSshKeepTrying keep_trying, gpointer data, GError **error);
void hutch_ssh_free(HutchSsh *ssh);

/* For a loop on a non-blocking session, called while none of its own libssh2 calls waits to
 * be repeated: sends the keepalive when it is due (libssh2_keepalive_config), but only while
 * the socket's send queue is empty, so that the small packet goes out whole (libssh2 ignores
 * EAGAIN on a keepalive, and one sent in part would have to be finished before any other
 * packet, which libssh2 then refuses). Returns the milliseconds until it should be called
 * again, or -1 when sending failed (the session is gone). */
int hutch_ssh_keepalive_when_idle(LIBSSH2_SESSION *session, int fd);
/* The libssh2 session and its socket, for code that drives channels itself (the forward
 * relay). Owned by ssh. */
LIBSSH2_SESSION *hutch_ssh_session(HutchSsh *ssh, int *ret_fd);
/* Whether libssh2 was refused memory for this session: it held 256 MiB (messages the guest
 * sent that nothing asked for; see SESSION_MEMORY_MAX in ssh.c). The session's calls fail
 * from then on; its errors say why, in hutch_ssh_over_limit_message()'s words. */
gboolean hutch_ssh_over_limit(HutchSsh *ssh);
char *hutch_ssh_over_limit_message(void);
/* What a session may hold (0: the default, 256 MiB, or less when HUTCH_SSH_SESSION_MEMORY_MIB
 * says so; tests) */
void hutch_ssh_set_session_memory_max(gsize bytes);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchSsh, hutch_ssh_free)

/* Runs command (a shell command line) streaming this process's stdin/stdout/stderr; stdin's
 * end becomes the command's EOF. With pty: requests a PTY sized like the local terminal
 * ($TERM is passed on), puts the local terminal in raw mode (restored on return) and follows
 * SIGWINCH (a process-wide handler, installed for the call). Returns the exit status (a
 * signal N: 128+N), or -1 with error set. command NULL: a login shell. A closed local
 * stdout raises SIGPIPE unless the caller ignores it (then it is an error). */
int hutch_ssh_exec_interactive(HutchSsh *ssh, const char *command, gboolean pty, GError **error);

/* ---- Many channels on one non-blocking session (the forward relay, the supervisor) ----
 *
 * A libssh2 call that returns EAGAIN having sent part of a packet must be repeated, the same
 * call on the same channel, before any other sending call on the session (else libssh2 says
 * LIBSSH2_ERROR_BAD_USE). The owner records that call: `who` (a connection) and `op` (which
 * call, the caller's own numbering; 0 is none). */
typedef struct {
  gpointer who;
  int op;
} HutchSshOwner;
/* After `op` of `who` returned EAGAIN: it owns the session's output if libssh2 is blocked
 * sending. */
void hutch_ssh_owner_blocked(HutchSshOwner *owner, LIBSSH2_SESSION *session, gpointer who, int op);
/* After `op` of `who` completed (or failed): it owns nothing any more. */
void hutch_ssh_owner_done(HutchSshOwner *owner, gpointer who, int op);
/* libssh2's last error text ("unknown libssh2 error" when it has none). */
char *hutch_ssh_session_message(LIBSSH2_SESSION *session);
/* Whether rc is about one channel (refused, closed, EOF sent...), which ends that channel
 * only; any other error is the session's. */
gboolean hutch_ssh_is_channel_error(int rc);
/* "YYYY-MM-DD HH:MM:SS message\n" to fd (-1: nowhere): the helpers' logs. */
void hutch_log_line(int fd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* The exit status of a closed channel, 0-255 (hutch_exit_status_clamp), shells' way: 128+N
 * for signal N (255 for a signal that has no name we know, like OpenSSH's client). */
int hutch_ssh_channel_exit_status(LIBSSH2_SESSION *session, LIBSSH2_CHANNEL *channel);

/* Sends one small packet on a channel whose output has ended (the guest's EOF arrived) and
 * whose close has not: it makes the guest's exit status and close arrive ~40 ms sooner.
 * Call once, after the channel's own EOF is sent, and repeat it after EAGAIN before any other
 * sending call. Returns libssh2's code (0, EAGAIN, or an error the close's wait will meet). */
int hutch_ssh_channel_nudge(LIBSSH2_CHANNEL *channel);

/* The most hutch_ssh_exec_capture keeps of each of stdout and stderr. */
#define HUTCH_SSH_CAPTURE_MAX (16u * 1024 * 1024)

/* Runs command with stdin_data (may be NULL; sent whole, then EOF) and collects stdout and
 * stderr separately (either ret_ may be NULL to discard). Returns the exit status (a signal
 * N: 128+N), or -1 with error set. A captured stream that grows beyond HUTCH_SSH_CAPTURE_MAX
 * is an error (HUTCH_ERROR_FAILED) at once: the channel is closed without waiting for the
 * command, so that a guest that sends without end neither fills memory nor holds hutch. What
 * may be larger is for hutch_ssh_exec_stream. */
int hutch_ssh_exec_capture(HutchSsh *ssh, const char *command, const char *stdin_data,
                           char **ret_stdout, char **ret_stderr, GError **error);

/* Runs command with no input and hands its stdout to func in pieces as they arrive (stderr
 * is dropped); nothing is kept. Returns the exit status, or -1 with error set (func's error
 * when func stopped it). */
int hutch_ssh_exec_stream(HutchSsh *ssh, const char *command, HutchSshOutputFunc func,
                          gpointer user_data, GError **error);

/* SFTP copies, like cp: a destination that is an existing directory receives the source
 * under its own name; directories need recursive. A downloaded file, and a directory the copy
 * makes, get the source's permission bits through the user's umask (never setuid, setgid or
 * sticky; a directory made keeps u+rwx), an existing file is truncated and takes that mode, an
 * existing directory keeps its own. Inside directories only regular files and directories
 * are copied (symbolic links and special files are skipped, as OpenSSH's sftp does). Remote
 * paths: "~", "~/x" and relative paths are in the remote home. A missing source is
 * HUTCH_ERROR_NOT_FOUND, a directory without recursive HUTCH_ERROR_USAGE.
 *
 * The guest's SFTP server is hostile (its root can replace it). Nothing it answers names or
 * moves a write or a mode change outside the destination the user named: the top-level name
 * is always the user's (a source with none of its own, "NAME:", "NAME:~", "x/..", needs a
 * destination that does not exist yet: HUTCH_ERROR_USAGE otherwise; REALPATH is never
 * asked), and directory entries must pass hutch_hostpath_name_is_safe: a listed "." or ".."
 * is skipped, any other invalid name (empty, '/', NUL) fails the copy with an error that
 * shows it escaped.
 *
 * On the host every step goes through hostpath-private.h: the local path the user named is
 * walked following only root's symbolic links (none when hutch runs as root; another link is
 * refused: "refusing to follow the symbolic link PATH ..."); below it everything is opened by
 * single names relative to directory descriptors with O_NOFOLLOW. So a download never writes
 * through a link (a destination that is one is "refusing to write through the symbolic link PATH",
 * also when a guest plants it mid-copy inside a tree in one of its shares), a FIFO or device at a
 * destination fails at once, and an upload never reads through a link swapped in during the
 * copy (an entry that changed between its lstat and its open is an error). */
gboolean hutch_ssh_upload(HutchSsh *ssh, const char *local_path, const char *remote_path,
                          gboolean recursive, GError **error);
gboolean hutch_ssh_download(HutchSsh *ssh, const char *remote_path, const char *local_path,
                            gboolean recursive, GError **error);

/* The same from a source already open (fd: a regular file or a directory, opened as
 * hutch_hostpath_open does; local_path names it in messages and gives its name). */
gboolean hutch_ssh_upload_fd(HutchSsh *ssh, int fd, const char *local_path, const char *remote_path,
                             gboolean recursive, GError **error);

/* Where a download goes, like cp, examined before the source is known (by the command, even
 * when its supervisor copies: its working directory and mount namespace, not the
 * supervisor's): a
 * destination that is an existing directory (root's links followed, see hostpath-private.h)
 * receives the source inside (inside, fd that directory); otherwise the destination's last
 * component (name) is created or replaced in its parent (fd), and a link there is refused
 * (missing: nothing is there yet; want_dir: the path ended in '/', so the source must be a
 * directory). */
typedef struct {
  int fd; /* O_PATH */
  char *name;
  gboolean inside, missing, want_dir;
} HutchSshLocalDest;
gboolean hutch_ssh_local_dest_open(const char *local_path, HutchSshLocalDest *dest, GError **error);
void hutch_ssh_local_dest_clear(HutchSshLocalDest *dest);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(HutchSshLocalDest, hutch_ssh_local_dest_clear)
/* hutch_ssh_download into a destination examined already (NULL: local_path's, now);
 * local_path names it in messages. */
gboolean hutch_ssh_download_to(HutchSsh *ssh, const char *remote_path,
                               const HutchSshLocalDest *dest, const char *local_path,
                               gboolean recursive, GError **error);

/* For a copy the supervisor serves for a command: cancelled (may be NULL), asked between
 * buffers and directory entries, stops the copy ("the copy was cancelled"); umask_bits (>= 0)
 * is the command's umask, which a download's modes go through instead of this process's. */
typedef gboolean (*HutchSshCancelled)(gpointer data);
void hutch_ssh_set_copy_caller(HutchSsh *ssh, HutchSshCancelled cancelled, gpointer data,
                               int umask_bits);
/* This process's umask (022 when /proc does not say). */
mode_t hutch_ssh_process_umask(void);
/* Whether the session still answers an SFTP request (started if need be) within timeout_ms:
 * a session kept between copies may have died with a guest reboot. */
gboolean hutch_ssh_sftp_alive(HutchSsh *ssh, guint timeout_ms);

/* The user's hutch client key, $XDG_DATA_HOME/hutch/ssh/id_ed25519 (0600, made with
 * ssh-keygen on first use). Returns the private key path; ret_public gets the public line. */
char *hutch_ssh_client_key(char **ret_public, GError **error);

/* Generates an ed25519 key pair (for a guest's host key) with ssh-keygen in a private
 * temporary directory that is removed again. ret_private: the OpenSSH private key file's text;
 * ret_public: "ssh-ed25519 BASE64 COMMENT" without a newline. Either may be NULL. */
gboolean hutch_ssh_generate_keypair(const char *comment, char **ret_private, char **ret_public,
                                    GError **error);
