/* forward-files-private.h: the files `hutch forward`'s helpers keep in an instance's runtime
 * directory (forward-HOSTPORT.pid "PID START", .spec "HOST_IP HOST GUEST", .log), and stopping
 * those helpers. Apart from forward.c (which starts them and needs the instance) so that
 * instance.c can stop and list them without the two modules calling each other. */
#pragma once

#include <json-glib/json-glib.h>
#include <sys/types.h>

/* The process name (prctl PR_SET_NAME) by which a pidfile's process is recognised. */
#define HUTCH_FORWARD_COMM "hutch-forward"

/* runtime_dir/forward-HOST_PORT.SUFFIX */
char *hutch_forward_file(const char *runtime_dir, guint host_port, const char *suffix);

/* The pid of the forward helper of host_port, verified (its name and recorded start time),
 * or 0. */
pid_t hutch_forward_pid(const char *runtime_dir, guint host_port);

/* Removes host_port's pid and spec files (not its log). */
void hutch_forward_remove_files(const char *runtime_dir, guint host_port);

/* Stops host_port's helper (only the verified one) and removes its files. */
void hutch_forward_stop(const char *runtime_dir, guint host_port);

/* What hutch_forward_list returns, for the instance whose runtime directory this is (for
 * `hutch info`); stale files are removed on the way. */
JsonArray *hutch_forward_list_dir(const char *runtime_dir);

/* Stops every forward process of the instance whose runtime directory this is and removes
 * their pid and spec files (not the logs). For stop and delete. */
void hutch_forward_stop_all(const char *runtime_dir);
