/* instance-private.h: finding a hutch instance and its files. */
#pragma once

#include "egress-private.h"

#include "context-private.h"
#include "domain-private.h"
#include "profile-private.h"
#include "ssh-private.h"

/* Files in an instance directory ($XDG_DATA_HOME/hutch/instances/NAME, 0700). */
#define HUTCH_INSTANCE_PROFILE "profile.yaml"      /* the frozen, expanded profile */
#define HUTCH_INSTANCE_SHARES "shares"             /* where each share resolved at create */
#define HUTCH_INSTANCE_DISK "disk.qcow2"           /* overlay on the cached image */
#define HUTCH_INSTANCE_SEED "seed.iso"             /* cloud-init NoCloud volume */
#define HUTCH_INSTANCE_HOST_KEY "ssh_host_ed25519_key" /* the guest's host key (+ .pub) */
#define HUTCH_INSTANCE_KNOWN_HOSTS "known_hosts"   /* the pinned key, for OpenSSH */
#define HUTCH_INSTANCE_CONSOLE "console.log"       /* the serial console */
/* "qemu:///system" for a VM of the system daemon; absent for one of the session daemon */
#define HUTCH_INSTANCE_CONNECTION "connection"
#define HUTCH_INSTANCE_PROVISIONED "provisioned"   /* stamp: first boot finished */
#define HUTCH_INSTANCE_CREATING ".creating"       /* present while create runs */
#define HUTCH_INSTANCE_OPTIONAL_FAILED "optional-failed" /* optional steps that failed */
/* stamp: `hutch edit` changed the shares; the next start gives the guest its new mount table */
#define HUTCH_INSTANCE_MOUNTS_PENDING "guest-mounts-pending"
/* a clone before its first start: its source's public host key, which the guest still has;
 * the first start gives the guest its own (the pinned one) and removes this */
#define HUTCH_INSTANCE_CLONE_PENDING "clone-pending"
#define HUTCH_INSTANCE_ORIGIN "cloned-from" /* a clone: its source's name */
/* a VM made on a template before its first start: its guest has not taken its own identity
 * yet (hutch-identity.service), so it cannot be cloned or made a template of */
#define HUTCH_INSTANCE_IDENTITY_PENDING "identity-pending"
/* the throwaway copy `hutch template create` makes: only such a VM is removed as a leftover */
#define HUTCH_INSTANCE_TEMPLATE_COPY "template-copy"

/* Runtime files ($XDG_RUNTIME_DIR/hutch/NAME, 0700) besides passt's. */
#define HUTCH_RUNTIME_READY_SOCKET "ready.sock"
#define HUTCH_RUNTIME_AGENT_SOCKET "agent.sock"

/* A hutch instance as a later process finds it: its domain and the metadata hutch put in
 * it. */
typedef struct {
  char *name;
  virDomainPtr domain;
  HutchDomainMeta *meta;
} HutchInstance;

void hutch_instance_free(HutchInstance *instance);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchInstance, hutch_instance_free)

/* Looks the instance up; HUTCH_ERROR_NOT_FOUND when there is no such domain and
 * HUTCH_ERROR_NOT_HUTCH when the domain has no hutch metadata (hutch never touches it). */
HutchInstance *hutch_instance_lookup(HutchContext *ctx, const char *name, GError **error);

/* The guest user of a profile: its name, uid and the gid of its own group (the profile's,
 * else the host user's name and uid, the gid the uid; root becomes "dev", 1000: the guest
 * user must not be the guest's root). The seed creates exactly this user and group; shares
 * map the host user to them. */
void hutch_instance_guest_user(const HutchProfile *profile, char **ret_name, guint *ret_uid,
                               guint *ret_gid);

/* The VM's first boot has ended (provisioned) and, for a VM on a template, its guest has
 * taken its own identity: only then can it be cloned or made a template of. */
gboolean hutch_instance_first_boot_done(const char *instance_dir);

/* A stopped, provisioned VM's copy for `hutch template create` to generalise: like `hutch
 * clone`, without shares, ports and the credential broker, and quietly. */
gboolean hutch_instance_clone_bare(HutchContext *ctx, const char *source, const char *name,
                                   GError **error);

/* Runs command in a running VM over a new SSH connection (pinned host key) with input on its
 * stdin; its exit status, or -1 with error. The guest's stderr in *ret_err (bounded). */
int hutch_instance_exec(HutchContext *ctx, const char *name, const char *command,
                        const char *input, char **ret_err, GError **error);

/* What an instance directory without its domain most likely means, for messages. */
#define HUTCH_INSTANCE_MISSING_HINT                                                                \
  "a libvirt session daemon started with another XDG_CONFIG_HOME (a test or benchmark run "        \
  "that kept your XDG_RUNTIME_DIR) may be serving this socket, knowing other domains than "        \
  "yours (hutch doctor checks; virsh -c qemu:///session list --all shows what it knows)"

/* The names of the instance directories in instances_dir (sorted) whose domain libvirt does
 * not know (directories a create is still working in left out). */
GPtrArray *hutch_instance_missing(HutchContext *ctx, const char *instances_dir, GError **error);

/* The instance directory of a name (whether or not it exists); its runtime directory is
 * hutch_instance_runtime_dir (client-private.h). */
char *hutch_instance_dir(const char *name);

/* The last count lines of a console log for an error message, each after a "\n" ("(no
 * console log)" when it cannot be read). The guest writes the console: its ESC [ sequences
 * (colours) are dropped, the rest is sanitised (HUTCH_TEXT_LINES), and what is read of the
 * file and kept of a line is bounded. */
char *hutch_console_tail(const char *path, guint count);
/* The lines of the console's last boot (after its last "Linux version" banner, within the
 * last 256 KiB) in which systemd says a unit failed ("FAILED", "Failed to start"), at most
 * max of them, each after a "\n" and sanitised like hutch_console_tail's; NULL when none. */
char *hutch_console_failures(const char *path, guint max);

/* Sets the text of <hutch:ELEMENT> in the domain's hutch metadata (persistent config; added
 * when missing), keeping the rest. */
gboolean hutch_instance_set_meta(virDomainPtr domain, const char *element, const char *text,
                                 GError **error);

/* Why a VM cannot have its host ports, and the way out: "host ports 127.0.0.1:8000-9000 are
 * in use by VM 'dev': give this VM other ports with --no-ports --port 3000:3000, or stop
 * 'dev'". port: the profile's port that is taken, busy_port the host port that could not be
 * bound, holder the running hutch VM that forwards it (NULL: unknown), name the VM being
 * created or started, exists whether it exists already (then the way is `hutch edit`). */
char *hutch_instance_ports_busy_message(const HutchPort *port, guint busy_port, const char *holder,
                                        const char *name, gboolean exists);

/* HUTCH_ERROR_PORT_IN_USE (with the message above) when a host port of ports cannot be bound
 * now, naming the running hutch VM that forwards it when there is one. */
gboolean hutch_instance_check_ports(HutchContext *ctx, const char *name, GPtrArray *ports,
                                    gboolean exists, GError **error);

/* The shares of a profile for an instance (hutch_share_plan with the host user's home and the
 * guest user's, /home/GUEST_USER): made at create, at every start and at edit, the same. */
GPtrArray *hutch_instance_plan_shares(const HutchProfile *profile, const char *runtime_dir,
                                      const char *guest_user_name, GError **error);

/* The VM's helpers for a start (virtiofsd per share, passt or the egress helper) with SSH on
 * ssh_port, as `hutch start` would start them: for the VM's supervisor, which starts them so
 * that they are its children. secrets_fd: the credential broker's env secrets for the egress
 * helper ("NAME=VALUE\0"...), handed on unread, or -1. Refused when the domain runs; on
 * failure nothing of them is left. */
gboolean hutch_instance_start_helpers(HutchContext *ctx, const char *name, guint ssh_port,
                                      int secrets_fd, GError **error);

/* TRUE when the domain is running (or paused). */
gboolean hutch_instance_is_active(HutchInstance *instance);

/* Stops passt, the virtiofsd instances and the forwards of the instance whose runtime
 * directory this is (each verified as the one hutch started). */
void hutch_instance_stop_helpers(const char *runtime_dir);

/* The instance's egress policy: its policy file, or (an instance from before the file, or
 * created just now) the profile's, then saved as the file. */
HutchEgressPolicy *hutch_instance_egress_policy(const char *instance_dir,
                                                const HutchProfile *profile, GError **error);

/* Whether the instance runs under TCG (emulation) rather than KVM. */
gboolean hutch_instance_is_tcg(HutchInstance *instance);

/* The vCPUs a domain gets for profile (hutch_domain_vcpus), with the notice when TCG caps
 * the profile's count (else NULL); HUTCH_TCG_MAX_CPUS sets the cap. Create and edit. */
gboolean hutch_instance_plan_vcpus(const HutchProfile *profile, gboolean tcg, guint *ret_cpus,
                                   char **ret_notice, GError **error);

/* The pinned host key line ("ssh-ed25519 AAAA...") of an instance. */
char *hutch_instance_host_key(HutchInstance *instance, GError **error);

/* An SSH session to a running instance, authenticated with the user's hutch key, the host
 * key checked against the pinned one. */
HutchSsh *hutch_instance_connect(HutchContext *ctx, const char *name, GError **error);
/* The same, waiting up to wait_s for the guest's sshd (while the domain runs). */
HutchSsh *hutch_instance_connect_within(HutchContext *ctx, const char *name, guint wait_s,
                                        GError **error);

/* The directory QEMU reaches the VM's sockets in: its runtime directory, or on
 * qemu:///system the run directory in the user's directory of the daemon that the runtime
 * directory links to (made, with the link, when missing: system-private.h). */
char *hutch_instance_qemu_runtime_dir(HutchContext *ctx, HutchInstance *instance, GError **error);

/* Whether the VM whose instance directory is dir is one of the system daemon's (its
 * "connection" record), not the session daemon's. */
gboolean hutch_instance_dir_is_system(const char *dir);

/* qemu:///system: takes the VM's disk, kernel and initrd back from a run (mode 0600, no ACL:
 * hutch_system_reclaim_files) and removes a seed copy a killed start left, saying so on ctx
 * when one of the files has a name outside the VM's directory or is not the user's. Call it
 * only while the VM is stopped (not checked). Nothing to do on the session. */
gboolean hutch_instance_system_reclaim(HutchContext *ctx, virDomainPtr domain, const char *name,
                                       GError **error);
