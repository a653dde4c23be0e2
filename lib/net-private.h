/* net-private.h: the per-VM passt process (user-mode networking and port forwards).
 *
 * hutch runs passt itself rather than through libvirt: Debian's libvirt 9.0 has the passt
 * backend patched out, slirp ignores <portForward>, and libvirt's own passt launcher does not
 * pass --no-map-gw, which would let the guest reach the host's 127.0.0.1 services. */
#pragma once

#include "profile-private.h"

/* File names inside the instance's runtime directory. */
#define HUTCH_PASST_SOCKET "passt.socket"
#define HUTCH_PASST_PID "passt.pid"
#define HUTCH_PASST_LOG "passt.log"

/* The guest's addresses when passt runs in the egress helper's namespace */
#define HUTCH_SANDBOX_GUEST_ADDRESS "10.0.2.15"
#define HUTCH_SANDBOX_GATEWAY "10.0.2.2"
#define HUTCH_SANDBOX_DNS "10.0.2.3"

/* The passt command line for a VM (argv, NULL-terminated): --one-off --no-map-gw, the SSH
 * forward 127.0.0.1/ssh_port:22 and one -t/-u per profile port. sandboxed: for the egress
 * helper's namespace (egress-helper.c). vhost_user: passt serves the NIC's virtqueues
 * (--vhost-user) instead of a stream of frames, without a repair socket where the passt
 * found would make one (the one impure part: it asks passt's --help). */
GStrv hutch_net_passt_argv(const char *passt, const char *runtime_dir, guint ssh_port,
                           GPtrArray *ports, gboolean sandboxed, gboolean vhost_user);

/* Whether passt's vhost-user mode is used for the VMs started now (*ret_vhost_user):
 * $HUTCH_PASST_VHOST_USER "0" or "1" when set (1 is an error where passt lacks the mode, as
 * is any other value), else whether the passt found offers --vhost-user (passt 2024-11 and
 * later; Debian 13's, not Debian 12's; asked once per process). */
gboolean hutch_net_vhost_user(gboolean *ret_vhost_user, GError **error);

/* Whether passt's --help text offers option (a whole word: "--vhost-user" is not
 * "--vhost-user-foo", nor found in "vhost-user mode"). Pure, for tests. */
gboolean hutch_net_help_has_option(const char *help, const char *option);

/* Whether the passt found has --repair-path (2025-02 and later; asked once per process). */
gboolean hutch_net_passt_has_repair_path(void);

/* The passt program: $HUTCH_PASST, else "passt" on PATH */
const char *hutch_net_find_passt(void);

/* Stops the passt whose --pid is pidfile, if it still runs and is hutch's (pidfile-private.h) */
void hutch_net_stop_passt(const char *pidfile);

/* The first port of ports with a host port that cannot be bound now (*ret_port: that one), or
 * NULL when all can. instance.c says who holds it and what to do. */
const HutchPort *hutch_net_find_busy_port(GPtrArray *ports, guint *ret_port);

/* A TCP port on 127.0.0.1 that is free now (the kernel picks it). */
guint hutch_net_free_port(GError **error);

/* Starts passt for a VM and returns once its socket exists (passt daemonizes itself; its pid
 * is in runtime_dir/passt.pid). */
gboolean hutch_net_start(const char *runtime_dir, guint ssh_port, GPtrArray *ports,
                         gboolean vhost_user, GError **error);

/* Stops the VM's passt if it still runs (it exits by itself when QEMU disconnects) and
 * removes its files. */
void hutch_net_stop(const char *runtime_dir);
