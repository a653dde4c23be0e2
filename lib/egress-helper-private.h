/* egress-helper-private.h: the per-VM egress helper that enforces the network policy (see
 * egress-helper.c for how). */
#pragma once

#include "context-private.h"
#include "profile-private.h"

/* In the VM's runtime directory */
#define HUTCH_EGRESS_PID "egress.pid"
#define HUTCH_EGRESS_HELPER_LOG "egress-helper.log"
#define HUTCH_EGRESS_COUNTS "egress.counts"
/* In the instance directory: one JSON line per decision (docs/json.md) */
#define HUTCH_EGRESS_LOG "egress.log"

/* Starts the helper for a VM (instead of hutch_net_start's passt) and returns once passt's
 * socket is there. The policy is the instance's policy file; ports: the profile's (TCP only
 * under a policy); envp: the helper's environment (the credential broker's env secrets come
 * from it), NULL for this process's; secrets_fd: -1, or a descriptor whose content,
 * "NAME=VALUE\0" for each env secret, the helper takes into its environment at its start (so
 * that a caller that must not hold the values, the VM's supervisor, hands them on unread). */
gboolean hutch_egress_start(HutchContext *ctx, const char *instance_dir, const char *runtime_dir,
                            guint ssh_port, GPtrArray *ports, gboolean vhost_user, char **envp,
                            int secrets_fd, GError **error);
/* The variable that names the helper's secrets descriptor */
#define HUTCH_SECRETS_FD_ENV "HUTCH_SECRETS_FD"
/* Stops the VM's helper (and with it passt) if it runs */
void hutch_egress_stop(const char *runtime_dir);
/* Makes the running helper read the instance's policy file again; FALSE when none runs */
gboolean hutch_egress_reload(const char *runtime_dir);
gboolean hutch_egress_running(const char *runtime_dir);
/* The running helper's decisions so far */
gboolean hutch_egress_counts(const char *runtime_dir, guint64 *ret_allowed, guint64 *ret_denied);

/* ---- The helper's DNS answers (pure; tests and fuzzing) ---- */

/* The address a name gets (the helper's: one of its own 198.18.0.0/16, the name kept) */
typedef guint32 (*HutchDnsAddressOf)(const char *name, gpointer data);
/* The answer to the one query in msg (len bytes, as the guest sent it: anything) written into
 * out (out_size bytes): an A query for a plain name gets the address address_of gives (TTL 60
 * s); any other type no data; a query that is not a plain name FORMERR. Returns the answer's
 * length, 0 when there is none to send (not a standard query with one question, or out is too
 * small). */
gsize hutch_dns_answer(const guint8 *msg, gsize len, guint8 *out, gsize out_size,
                       HutchDnsAddressOf address_of, gpointer data);
