/* guest-private.h: OpenSSH's view of the instances (hutch ssh-config --install). */
#pragma once

#include "context-private.h"

/* A side of hutch cp: "NAME:PATH" -> name and path ("NAME:" -> "."), when NAME is a valid
 * instance name; FALSE for a local path. A path with a '/' before the ':' is local
 * ("./a:b"). */
gboolean hutch_copy_split(const char *spec, char **ret_name, char **ret_path);
/* hutch cp's two sides: exactly one is NAME:PATH (else HUTCH_ERROR_USAGE); its name and path,
 * and whether the copy is from the VM. */
gboolean hutch_copy_sides(const char *src, const char *dst, char **ret_name, char **ret_path,
                          gboolean *ret_from_vm, GError **error);

/* $XDG_CONFIG_HOME/hutch/ssh_config: a Host block for each running VM, a comment for each
 * stopped one. */
char *hutch_ssh_config_file(void);

/* Rewrites that file when it exists (ssh-config --install made it): called after create,
 * start, stop and delete. Best effort: a failure is a progress note, never the operation's
 * error. */
void hutch_ssh_config_refresh(HutchContext *ctx);

/* `Include "PATH"`, or NULL when OpenSSH could not read PATH back (a '"' or a newline). */
char *hutch_ssh_include_line(const char *path);

/* ~/.ssh/config's text (NULL: no file) with the include line first, before any Host or Match
 * line (OpenSSH keeps the first value it reads), other copies of it removed; NULL when it is
 * there already, above every Host and Match. Pure. */
char *hutch_ssh_config_text_add(const char *text, const char *include);
/* The text without the include line; NULL when it has none. Pure. */
char *hutch_ssh_config_text_remove(const char *text, const char *include);

/* The sections of an ssh_config file's text that belong to daemons other than own
 * ("qemu:///session" or "qemu:///system"), each from its header line ("# == VMs of URI")
 * to the next; a file without headers (an older hutch's) holds the session's blocks. */
char *hutch_ssh_config_other_sections(const char *text, const char *own);
