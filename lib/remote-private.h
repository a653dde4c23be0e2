/* remote-private.h: the pieces of lib/remote.c that the unit tests reach. */
#pragma once

#include "hutch.h"

/* words, each quoted for a POSIX shell (the far side's login shell reads the command line
 * that ssh sends), joined by spaces. */
char *hutch_remote_command_line(const char *const *words);

/* ssh's argv to run command_line on the remote host: `ssh -e none -T|-t [-n] [-p PORT]
 * [-i KEY] -- [USER@]HOST COMMAND_LINE` (-n: no_stdin). */
GStrv hutch_remote_ssh_argv(const HutchRemote *remote, gboolean tty, gboolean no_stdin,
                            const char *command_line);

/* The far side's command line for args: the remote hutch program, `-c` its own libvirt URI
 * (qemu:///session or qemu:///system), then args. */
char *hutch_remote_hutch_line(const HutchRemote *remote, const char *const *args);

/* A tar stream (POSIX pax) of the local path src on out_fd: src's own name (base) and, for a
 * directory (recursive only), everything below it that is a directory or a regular file, as
 * hutch cp uploads them (links and special files skipped, nothing followed but what
 * hutch_hostpath_open follows; modes without setuid, setgid and sticky bits). ret_base: the
 * name the stream's first entry has. */
gboolean hutch_remote_tar_write(int out_fd, const char *src, gboolean recursive, char **ret_base,
                                GError **error);

/* Writes the tar stream on in_fd, whose entries all start with the name base, to the local
 * path dst as hutch cp downloads: into dst when it is a directory (or ends in '/'), else as
 * dst. Only directories and regular files; every name checked
 * (hutch_hostpath_name_is_safe), nothing written through a link root does not own, modes
 * without setuid, setgid and sticky bits. */
gboolean hutch_remote_tar_extract(int in_fd, const char *base, const char *dst, GError **error);
