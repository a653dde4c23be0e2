/* forward-files-private.h: the files of `hutch forward`'s forwards in an instance's runtime
 * directory, and stopping them. A forward is served by the VM's supervisor (then its only file
 * is forward-HOSTPORT.spec, "HOST_IP HOST GUEST supervisor") or, when no supervisor answered,
 * by a helper process of its own (forward-HOSTPORT.spec "HOST_IP HOST GUEST",
 * forward-HOSTPORT.pid "PID START", forward-HOSTPORT.log). Apart from forward.c (which starts
 * them and needs the instance) so that instance.c and the supervisor can stop, list and adopt
 * them without the modules calling each other. */
#pragma once

#include <json-glib/json-glib.h>
#include <sys/types.h>

/* The process name (prctl PR_SET_NAME) by which a pidfile's process is recognised. */
#define HUTCH_FORWARD_COMM "hutch-forward"

/* runtime_dir/forward-HOST_PORT.SUFFIX */
char *hutch_forward_file(const char *runtime_dir, guint host_port, const char *suffix);

/* The spec file's last word for a forward that the supervisor serves. */
#define HUTCH_FORWARD_SUPERVISED "supervisor"

/* host_port's spec file: its host address, guest port and whether the supervisor serves it.
 * FALSE when there is none or it is broken. */
gboolean hutch_forward_read_spec(const char *runtime_dir, guint host_port, char **ret_host_ip,
                                 guint *ret_guest_port, gboolean *ret_supervised);

/* The host ports that have a spec file in runtime_dir, in ascending order. */
GArray *hutch_forward_ports(const char *runtime_dir);

/* The process serving host_port's forward, verified (its name and recorded start time): its
 * helper, or the VM's supervisor for a supervised forward; 0 when none is alive. */
pid_t hutch_forward_pid(const char *runtime_dir, guint host_port);

/* Removes host_port's pid and spec files (not its log). */
void hutch_forward_remove_files(const char *runtime_dir, guint host_port);

/* Stops host_port's helper (only the verified one; a supervised forward ends with its
 * supervisor or through its request) and removes its files. */
void hutch_forward_stop(const char *runtime_dir, guint host_port);

/* What hutch_forward_list returns, for the instance whose runtime directory this is (for
 * `hutch info`); a helper's stale files are removed on the way. A supervised forward whose
 * supervisor is gone is listed with pid 0 and keeps its file: the next supervisor serves it
 * again. */
JsonArray *hutch_forward_list_dir(const char *runtime_dir);

/* Stops every forward helper of the instance whose runtime directory this is and removes
 * every forward's pid and spec files (not the logs). For stop and delete. */
void hutch_forward_stop_all(const char *runtime_dir);
