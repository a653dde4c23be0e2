/* ssh-private.h: libssh2 sessions to a guest with a pinned host key. */
#pragma once

#include "hutch.h"

typedef struct _HutchSsh HutchSsh;

/* Connects to host:port, checks that the server's host key is exactly pinned_host_key
 * ("ssh-ed25519 BASE64 [comment]"; a mismatch is HUTCH_ERROR_HOST_KEY, never a prompt) and
 * authenticates as user with the private key file (its public key is private_key + ".pub").
 * timeout_ms bounds the connection and handshake. */
HutchSsh *hutch_ssh_connect(const char *host, guint port, const char *user,
                            const char *private_key_path, const char *pinned_host_key,
                            guint timeout_ms, GError **error);
void hutch_ssh_free(HutchSsh *ssh);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchSsh, hutch_ssh_free)

/* Runs command (a shell command line) streaming this process's stdin/stdout/stderr. With
 * pty: requests a PTY sized like the local terminal, puts the local terminal in raw mode
 * (restored on return) and follows SIGWINCH. Returns the exit status (signals: 128+N), or -1
 * with error set. command NULL with pty: a login shell. */
int hutch_ssh_exec_interactive(HutchSsh *ssh, const char *command, gboolean pty,
                               GError **error);

/* Runs command with stdin_data (may be NULL) and collects output. Returns the exit status,
 * or -1 with error set. */
int hutch_ssh_exec_capture(HutchSsh *ssh, const char *command, const char *stdin_data,
                           char **ret_stdout, char **ret_stderr, GError **error);

/* SFTP copies; modes are kept; recursive for directories. */
gboolean hutch_ssh_upload(HutchSsh *ssh, const char *local_path, const char *remote_path,
                          gboolean recursive, GError **error);
gboolean hutch_ssh_download(HutchSsh *ssh, const char *remote_path, const char *local_path,
                            gboolean recursive, GError **error);

/* A POSIX shell command line that runs argv exactly (each word single-quoted as needed). */
char *hutch_shell_quote_argv(char *const *argv);

/* The user's hutch client key, $XDG_DATA_HOME/hutch/ssh/id_ed25519 (0600, made with
 * ssh-keygen on first use). Returns the private key path; ret_public gets the public line. */
char *hutch_ssh_client_key(char **ret_public, GError **error);

/* Generates an ed25519 key pair (for a guest's host key). */
gboolean hutch_ssh_generate_keypair(const char *comment, char **ret_private,
                                    char **ret_public, GError **error);
