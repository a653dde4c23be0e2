/* hutch.h: the whole public API of libhutch.
 *
 * libhutch creates, runs and removes disposable, provisioned QEMU/KVM development VMs through
 * libvirt. Objects are opaque; every fallible function takes a final GError ** that is set
 * (in the HUTCH_ERROR domain unless noted) only on failure. The library never prints.
 *
 * No libvirt, libyaml or libssh2 type appears here: they are implementation details. JSON
 * descriptions are json-glib objects whose fields are documented in docs/json.md and are
 * stable.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define HUTCH_PUBLIC __attribute__((visibility("default")))

/* Error codes of the HUTCH_ERROR domain. The CLI maps them all to exit status 1 except
 * HUTCH_ERROR_USAGE (2). Append only: the numbers are part of the ABI. */
typedef enum {
  HUTCH_ERROR_FAILED = 0,     /* anything without a more precise code */
  HUTCH_ERROR_USAGE,          /* a bad argument given by the caller (bad name, bad size) */
  HUTCH_ERROR_PROFILE,        /* a profile that cannot be read or is invalid */
  HUTCH_ERROR_NOT_FOUND,      /* no such instance, profile, image or snapshot */
  HUTCH_ERROR_EXISTS,         /* an instance of that name exists already */
  HUTCH_ERROR_LIBVIRT,        /* libvirt refused or failed */
  HUTCH_ERROR_IMAGE,          /* an image could not be built, fetched or was refused */
  HUTCH_ERROR_DIGEST,         /* a downloaded file did not match its digest */
  HUTCH_ERROR_SSH,            /* the SSH connection failed */
  HUTCH_ERROR_HOST_KEY,       /* the guest's host key is not the pinned one */
  HUTCH_ERROR_TIMEOUT,        /* the guest did not become ready in time */
  HUTCH_ERROR_PROVISION,      /* a required provisioning step failed */
  HUTCH_ERROR_NOT_HUTCH,      /* a libvirt domain that hutch did not create */
  HUTCH_ERROR_STATE,          /* the instance is in the wrong state for the operation */
  HUTCH_ERROR_PORT_IN_USE,    /* a host port to forward is taken */
  HUTCH_ERROR_HELPER,         /* passt or virtiofsd failed */
  HUTCH_ERROR_N
} HutchErrorCode;

#define HUTCH_ERROR (hutch_error_quark())
HUTCH_PUBLIC GQuark hutch_error_quark(void);

/* Call once before anything else: silences libvirt's own error printing, initialises
 * libssh2 and libcurl. */
HUTCH_PUBLIC void hutch_init(void);
HUTCH_PUBLIC const char *hutch_version(void);

/* Names of instances: [a-z][a-z0-9-]{0,62}. */
HUTCH_PUBLIC gboolean hutch_name_is_valid(const char *name, GError **error);

/* Text from a guest (which may be hostile) on its way to a terminal. */
typedef enum {
  HUTCH_TEXT_LINE = 0,       /* one line: every control character is replaced, \n and \t too */
  HUTCH_TEXT_LINES = 1 << 0, /* text of lines: \n and \t are kept, "\r\n" becomes "\n" */
} HutchTextFlags;

/* The text of len bytes (-1: up to the NUL) as valid UTF-8 that a terminal only prints:
 * C0 controls (but for what flags keep), \r, ESC, DEL, the C1 controls U+0080-U+009F (as raw
 * bytes or UTF-8 encoded) and the bidirectional override and isolate characters
 * (U+202A-U+202E, U+2066-U+2069) become '?', one per character, and so does each byte of
 * invalid UTF-8 (overlong forms, surrogates, beyond U+10FFFF, truncated sequences). Other
 * text, printable UTF-8 included, is unchanged. Never NULL; bytes NULL gives "". */
HUTCH_PUBLIC char *hutch_text_sanitize(const char *bytes, gssize len, HutchTextFlags flags);

/* ---- Profiles ------------------------------------------------------------------------- */

typedef struct _HutchProfile HutchProfile;

/* Loads a profile by name (searched in $XDG_CONFIG_HOME/hutch/profiles, the installed
 * profiles, and the source tree's profiles/ when run from a build tree) or by path (anything
 * containing a '/' or ending in .yaml), resolving `base:` chains. Errors name FILE:LINE:COL. */
HUTCH_PUBLIC HutchProfile *hutch_profile_load(const char *name_or_path, GError **error);
HUTCH_PUBLIC void hutch_profile_free(HutchProfile *profile);
HUTCH_PUBLIC const char *hutch_profile_get_name(const HutchProfile *profile);
/* The guest path of the profile's first share as written ("~/x" allowed), or NULL. */
HUTCH_PUBLIC const char *hutch_profile_get_first_share_guest(const HutchProfile *profile);

/* Command-line overrides, validated like the profile keys they stand for. */
HUTCH_PUBLIC gboolean hutch_profile_set_cpus(HutchProfile *profile, const char *cpus,
                                             GError **error);
HUTCH_PUBLIC gboolean hutch_profile_set_memory(HutchProfile *profile, const char *size,
                                               GError **error);
HUTCH_PUBLIC gboolean hutch_profile_set_disk(HutchProfile *profile, const char *size,
                                             GError **error);
/* --egress MODE: none, allowlist, public or unrestricted (network.egress). */
HUTCH_PUBLIC gboolean hutch_profile_set_egress(HutchProfile *profile, const char *mode,
                                               GError **error);

/* --share HOST:GUEST[:OPTION,...] (ro, rw, cache=MODE) and --port
 * [HOST_IP:]HOST[-END]:GUEST[-END][/tcp|/udp], added to the profile under its own rules (a share
 * with the same guest path replaces the profile's; overlapping host ports are refused). */
HUTCH_PUBLIC gboolean hutch_profile_add_share_spec(HutchProfile *profile, const char *spec,
                                                   GError **error);
HUTCH_PUBLIC gboolean hutch_profile_add_port_spec(HutchProfile *profile, const char *spec,
                                                  GError **error);

/* Drops every port forward of the profile (`--no-ports`: a second VM from a profile whose
 * ports the first one holds); --port specs added afterwards are kept. */
HUTCH_PUBLIC void hutch_profile_clear_ports(HutchProfile *profile);

/* A profile from text (`create -f -`: standard input); name is the file's name in messages,
 * and relative paths in it start at the working directory. */
HUTCH_PUBLIC HutchProfile *hutch_profile_load_text(const char *text, gsize len, const char *name,
                                                   GError **error);
/* The fully expanded profile as YAML (what `hutch profile show` prints). */
HUTCH_PUBLIC char *hutch_profile_to_yaml(const HutchProfile *profile, GError **error);
/* Where each value of the profile came from through its base chain, like
 * `git config --show-origin`: a line "FILE:LINE<TAB>KEY: VALUE" for each value ("default"
 * for a value no file sets; "FILE:LINE, FILE:LINE" for an image build several files extend),
 * list items by position (shares[0], env.NAME, ...). What `hutch profile show --origin`
 * prints. */
HUTCH_PUBLIC char *hutch_profile_to_origins(const HutchProfile *profile);

/* The profiles hutch can find: an array of {"name", "path", "shadowed"} objects. */
HUTCH_PUBLIC JsonArray *hutch_profile_list(GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchProfile, hutch_profile_free)

/* ---- Context: one libvirt connection and the user's directories ----------------------- */

typedef struct _HutchContext HutchContext;

typedef enum {
  HUTCH_PROGRESS_BEGIN,   /* a phase starts */
  HUTCH_PROGRESS_UPDATE,  /* news within a phase (fraction or detail changed) */
  HUTCH_PROGRESS_END,     /* a phase ended successfully */
  HUTCH_PROGRESS_NOTE,    /* a remark that is no phase ("creating dev from profile ...") */
} HutchProgressKind;

typedef struct {
  HutchProgressKind kind;
  const char *phase;      /* short word: image, define, boot, provision, ready, ... */
  const char *detail;     /* human text, may be NULL */
  double elapsed_s;       /* seconds since the phase began */
  double fraction;        /* 0..1, or < 0 when unknown */
} HutchProgress;

typedef void (*HutchProgressFunc)(const HutchProgress *progress, gpointer user_data);

/* uri NULL: $LIBVIRT_DEFAULT_URI, else qemu:///session. The connection is opened when first
 * needed, so profile and image operations work without libvirt. */
HUTCH_PUBLIC HutchContext *hutch_context_new(const char *uri, GError **error);
HUTCH_PUBLIC void hutch_context_free(HutchContext *ctx);
HUTCH_PUBLIC const char *hutch_context_get_uri(HutchContext *ctx);
/* Whether this process may make or start VMs: not as root (QEMU would run as root, and the
 * shares' virtiofsd without a user namespace), except on the test driver; else an error
 * saying so. What makes or starts a VM checks it before anything else (before connecting:
 * root's qemu:///session is the system daemon). */
HUTCH_PUBLIC gboolean hutch_context_check_may_run_vms(HutchContext *ctx, GError **error);
HUTCH_PUBLIC void hutch_context_set_progress(HutchContext *ctx, HutchProgressFunc func,
                                             gpointer user_data);
/* Makes this process the parent of the VM helpers it starts from now on (they are started
 * through forks that exit: it becomes their subreaper, PR_SET_CHILD_SUBREAPER), for a
 * process that supervises its VM itself (start --foreground), which must then reap them.
 * Connects to libvirt first, so that a session daemon started for the connection does not
 * become its child, nor the QEMUs that daemon starts. */
HUTCH_PUBLIC gboolean hutch_context_adopt_helpers(HutchContext *ctx, GError **error);

/* The program that runs `PROGRAM -c URI supervise NAME` (the hutch CLI): with it, start
 * gives each running VM a supervisor that holds one SSH session for shell and the like. */
HUTCH_PUBLIC void hutch_context_set_supervisor_program(HutchContext *ctx, const char *program);
/* The program run as a VM's egress helper (`PROGRAM egress-helper ...`: hutch's own binary).
 * Without one, a VM under an egress policy cannot start. */
HUTCH_PUBLIC void hutch_context_set_helper_program(HutchContext *ctx, const char *program);
/* `hutch egress-helper INSTANCE_DIR RUNTIME_DIR FORWARD... -- PASST_ARGV...`: a VM's egress
 * helper (started by the VM's supervisor, its child): passt in a network namespace of its own and
 * the proxy that enforces the instance's policy. forwards: "IP/START-END" host port ranges to relay
 * into the namespace. Returns when passt exits; 1 with error set when it could not start. */
HUTCH_PUBLIC int hutch_egress_helper_main(const char *instance_dir, const char *runtime_dir,
                                          char **forwards, char **passt_argv, GError **error);
/* `hutch supervise NAME`: the VM's supervisor, until its domain stops. 0 when it ended
 * normally (or another one serves the VM), 1 with error set otherwise. The process is named
 * hutch-supervise, by which its pidfile is verified. */
HUTCH_PUBLIC int hutch_supervise(HutchContext *ctx, const char *name, GError **error);
/* The same for the supervisor `hutch start` starts before the VM's helpers (boot_fd >= 0: see
 * hutch_supervisor_boot in lib/supervisor-private.h): it starts them, SSH on ssh_port, as its
 * children, with the egress helper's secrets from secrets_fd (or -1), then serves the VM once
 * the start closed boot_fd, or stops them if the domain does not run then. */
HUTCH_PUBLIC int hutch_supervise_boot(HutchContext *ctx, const char *name, int boot_fd,
                                      guint ssh_port, int secrets_fd, GError **error);
/* Why a supervisor ended. */
typedef enum {
  HUTCH_SUPERVISE_DOMAIN_STOPPED, /* however it was stopped; the helpers are stopped too */
  HUTCH_SUPERVISE_SIGNAL,         /* SIGTERM, SIGINT or SIGHUP (the domain still runs) */
  HUTCH_SUPERVISE_LOST, /* libvirt's connection or the SSH session ended, or another
                           supervisor serves the VM (the domain may still run) */
} HutchSuperviseEnd;
/* The same in a process that has more to do afterwards (start --foreground): libvirt's event
 * loop must be registered (hutch_supervise_prepare) before the context first connects. */
HUTCH_PUBLIC int hutch_supervise_full(HutchContext *ctx, const char *name,
                                      HutchSuperviseEnd *ret_end, GError **error);
HUTCH_PUBLIC gboolean hutch_supervise_prepare(GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchContext, hutch_context_free)

/* ---- Instances ------------------------------------------------------------------------ */

/* Creates the instance directory, overlay disk, seed and the libvirt domain (shut off).
 * On failure removes whatever it made. */
HUTCH_PUBLIC gboolean hutch_instance_create(HutchContext *ctx, const char *name,
                                            HutchProfile *profile, GError **error);
HUTCH_PUBLIC gboolean hutch_instance_exists(HutchContext *ctx, const char *name,
                                            GError **error);
/* Starts the helpers and the domain and waits until the guest is ready (wait_ready). */
HUTCH_PUBLIC gboolean hutch_instance_start(HutchContext *ctx, const char *name,
                                           gboolean wait_ready, GError **error);
/* Graceful shutdown (ACPI) with a timeout, or force (destroy). */
HUTCH_PUBLIC gboolean hutch_instance_stop(HutchContext *ctx, const char *name,
                                          gboolean force, GError **error);
/* Waits up to timeout_ms for the domain to stop (whoever stops it: the guest, virsh, another
 * hutch); *ret_stopped says whether it did. For `hutch start --foreground`. */
HUTCH_PUBLIC gboolean hutch_instance_wait_stopped(HutchContext *ctx, const char *name,
                                                  guint timeout_ms, gboolean *ret_stopped,
                                                  GError **error);
/* Removes domain, snapshots, helpers and the instance directory. A running instance needs
 * force. */
HUTCH_PUBLIC gboolean hutch_instance_delete(HutchContext *ctx, const char *name,
                                            gboolean force, GError **error);
/* stop (graceful, as hutch_instance_stop without force) then start (as hutch_instance_start).
 * A stopped VM is just started. */
HUTCH_PUBLIC gboolean hutch_instance_restart(HutchContext *ctx, const char *name,
                                             gboolean wait_ready, GError **error);

/* What `hutch edit` changes of a stopped VM; NULL (or FALSE) leaves a thing as it is. The
 * lists are NULL-terminated. Applied in this order: remove_shares (guest paths), no_ports
 * (drop every port), remove_ports ("HOST[-END][/tcp|/udp]"), cpus, memory, disk,
 * add_shares (--share specs), add_ports (--port specs). */
typedef struct {
  const char *cpus;
  const char *memory;
  const char *disk; /* only larger than the disk is now */
  const char *const *remove_shares;
  gboolean no_ports;
  const char *const *remove_ports;
  const char *const *add_shares;
  const char *const *add_ports;
} HutchEdit;

/* A new VM name from the stopped, provisioned VM source: a copy of its disk (without its
 * snapshots), its frozen profile changed by edit (may be NULL; no disk), its provisioning
 * (not run again). It gets its own UUID, MAC and pinned SSH host key; its first start gives
 * the guest that key, its hostname and a new machine-id, and the clone's share table.
 * When no VM is named source but a template is, the new VM is made on that template (an
 * overlay of its disk, its profile without shares and ports, changed by edit). */
HUTCH_PUBLIC gboolean hutch_instance_clone(HutchContext *ctx, const char *source,
                                           const char *name, const HutchEdit *edit,
                                           GError **error);

/* Changes a stopped VM: its frozen profile (what every start uses), its domain (vCPUs,
 * memory, shared folders) and its disk (grown; the guest's root file system grows at the next
 * boot). Validated like create before anything changes: a bad edit changes nothing. A running
 * VM is HUTCH_ERROR_STATE; a bad value HUTCH_ERROR_USAGE (HUTCH_ERROR_PROFILE for a share that
 * the share checks refuse); a host port taken now HUTCH_ERROR_PORT_IN_USE. */
HUTCH_PUBLIC gboolean hutch_instance_edit(HutchContext *ctx, const char *name,
                                          const HutchEdit *edit, GError **error);

/* An array of the objects hutch_instance_info returns, sorted by name, and of
 * {"name", "state": "missing", "uri", "instance_dir", "provisioned"} for each instance
 * directory whose domain libvirt does not know (docs/json.md). */
HUTCH_PUBLIC JsonArray *hutch_instance_list(HutchContext *ctx, GError **error);
/* `hutch net`: the egress policy of instance NAME, changed first when mode (none, allowlist,
 * public, unrestricted), allow or deny (destination rules, NULL-terminated; NULL for none)
 * say so. The change is saved with the instance and, when the VM runs under a policy, applied
 * at once. Returns {name, egress, allow, deny, change, allowed?, denied?} (docs/json.md). */
HUTCH_PUBLIC JsonObject *hutch_instance_net(HutchContext *ctx, const char *name,
                                            const char *mode, const char *const *allow,
                                            const char *const *deny, GError **error);
/* The VM's egress decisions, oldest first, at most max_entries (0: all kept): objects
 * {time, verdict (allow, deny, fail), name, address, port, reason}. name is the guest's. */
HUTCH_PUBLIC JsonArray *hutch_instance_net_log(HutchContext *ctx, const char *name,
                                               guint max_entries, GError **error);
HUTCH_PUBLIC JsonObject *hutch_instance_info(HutchContext *ctx, const char *name,
                                             GError **error);

/* ---- Images --------------------------------------------------------------------------- */

/* Builds (or finds in the cache) the image a profile's `image: build:` describes, or the
 * `fallback: build:` of its `image: url:`, and returns its cache key. */
HUTCH_PUBLIC char *hutch_image_build(HutchContext *ctx, HutchProfile *profile,
                                     GError **error);
/* Downloads url into the cache if its digest ("sha256:HEX" or "sha512:HEX") matches; returns
 * the cache key. */
HUTCH_PUBLIC char *hutch_image_pull(HutchContext *ctx, const char *url, const char *digest,
                                    GError **error);
HUTCH_PUBLIC JsonArray *hutch_image_list(HutchContext *ctx, GError **error);
HUTCH_PUBLIC gboolean hutch_image_remove(HutchContext *ctx, const char *key_or_name,
                                         GError **error);

/* ---- Templates (template.c) ------------------------------------------------------------ */

/* Makes template name from the stopped-for-it, provisioned VM vm: a throwaway clone of vm
 * is booted and generalised (no host keys, machine-id, cloud-init state, authorized keys,
 * shell histories or share lines of vm remain), and its disk, flattened, becomes
 * images/template-NAME with vm's profile (no shares or ports; its network policy as it is
 * now), provisioning records and broker files. A running vm is shut down for the copy and
 * started again. Nothing of a failed create remains. */
HUTCH_PUBLIC gboolean hutch_template_create(HutchContext *ctx, const char *name, const char *vm,
                                            GError **error);
/* The name of the throwaway copy template create makes for name ("tmpl-" + 12 hex digits):
 * the VM to power off when the create is interrupted. */
HUTCH_PUBLIC char *hutch_template_copy_name(const char *name);
/* [{name, source_vm, profile, user, steps: [..], size, created, used_by: [..]}] */
HUTCH_PUBLIC JsonArray *hutch_template_list(HutchContext *ctx, GError **error);
/* Refused (HUTCH_ERROR_STATE) while a VM is made on it. */
HUTCH_PUBLIC gboolean hutch_template_remove(HutchContext *ctx, const char *name,
                                            GError **error);
/* The profile a VM on template name gets (image: {template: NAME}); shares, ports and the
 * machine's size may then be changed like a profile's. */
HUTCH_PUBLIC HutchProfile *hutch_template_profile(const char *name, GError **error);

/* ---- SSH ------------------------------------------------------------------------------ */

/* Runs argv (NULL or empty: an interactive login shell with a PTY) in the guest, streaming
 * stdin/stdout/stderr. Returns the command's exit status (0-255), or -1 with error set. */
HUTCH_PUBLIC int hutch_shell(HutchContext *ctx, const char *name, const char *workdir,
                             char **argv, GError **error);
/* src and dst are local paths or NAME:PATH (exactly one of them remote). */
HUTCH_PUBLIC gboolean hutch_copy(HutchContext *ctx, const char *src, const char *dst,
                                 gboolean recursive, GError **error);
/* Writes the serial console log and, when the VM runs, cloud-init's output and each
 * provisioning step's log from inside the guest to out_fd, as they are read (in pieces:
 * nothing is held whole). The guest writes all of it: unless raw, it is sanitised like
 * hutch_text_sanitize(HUTCH_TEXT_LINES) does. A guest that cannot be reached is a line in the
 * output, not an error; failing to write to out_fd is one. */
HUTCH_PUBLIC gboolean hutch_logs(HutchContext *ctx, const char *name, int out_fd, gboolean raw,
                                 GError **error);
/* An OpenSSH client configuration block for the instance. */
HUTCH_PUBLIC char *hutch_ssh_config(HutchContext *ctx, const char *name, GError **error);
/* Writes $XDG_CONFIG_HOME/hutch/ssh_config (0600) with a Host block for every running VM,
 * kept current from then on by create, start, stop and delete, and puts one
 * `Include "THAT FILE"` line at the top of ~/.ssh/config (made 0600, ~/.ssh 0700, when
 * missing; a symlinked config is written where it points), above any Host or Match block so
 * that its values win. *ret_config: the file edited; *ret_added: FALSE when the line was
 * there already (nothing changed). */
HUTCH_PUBLIC gboolean hutch_ssh_config_install(HutchContext *ctx, char **ret_config,
                                               gboolean *ret_added, GError **error);
/* Removes exactly that line from ~/.ssh/config (*ret_removed: whether it was there) and the
 * generated file. */
HUTCH_PUBLIC gboolean hutch_ssh_config_uninstall(HutchContext *ctx, char **ret_config,
                                                 gboolean *ret_removed, GError **error);

/* Ports added to a running VM, relayed over SSH direct-tcpip by a background process per
 * forward that ends with the VM (or on remove). spec: "[HOST_IP:]HOST:GUEST", one TCP port,
 * HOST_IP 127.0.0.1 unless given. Returns once the host port listens; a taken host port is
 * HUTCH_ERROR_PORT_IN_USE naming it, a VM that is not running HUTCH_ERROR_STATE. */
HUTCH_PUBLIC gboolean hutch_forward_add(HutchContext *ctx, const char *name, const char *spec,
                                        GError **error);
/* An array of {"host_ip", "host_port", "guest_port", "pid"} (docs/json.md), by host port;
 * forwards whose process is gone are dropped. */
HUTCH_PUBLIC JsonArray *hutch_forward_list(HutchContext *ctx, const char *name, GError **error);
/* Stops the forward from host_port; none is HUTCH_ERROR_NOT_FOUND. */
HUTCH_PUBLIC gboolean hutch_forward_remove(HutchContext *ctx, const char *name, guint host_port,
                                           GError **error);

/* ---- Snapshots ------------------------------------------------------------------------ */

/* libvirt internal snapshots of the shut-off VM (libvirt 9.0 reverts no other kind). A
 * running VM is shut down gracefully, snapshotted and started again; revert restarts it when
 * it was running. Snapshot names follow the rule of VM names. Shared folders are not part of a
 * snapshot. A missing snapshot is HUTCH_ERROR_NOT_FOUND; an existing one on create
 * HUTCH_ERROR_EXISTS. */
HUTCH_PUBLIC gboolean hutch_snapshot_create(HutchContext *ctx, const char *name,
                                            const char *snapshot, const char *description,
                                            GError **error);
HUTCH_PUBLIC gboolean hutch_snapshot_revert(HutchContext *ctx, const char *name,
                                            const char *snapshot, GError **error);
HUTCH_PUBLIC gboolean hutch_snapshot_delete(HutchContext *ctx, const char *name,
                                            const char *snapshot, GError **error);
/* An array of {"name", "description", "created", "current"} (docs/json.md), oldest first. */
HUTCH_PUBLIC JsonArray *hutch_snapshot_list(HutchContext *ctx, const char *name,
                                            GError **error);

/* ---- Doctor --------------------------------------------------------------------------- */

/* Checks the host (KVM, libvirt, instance directories libvirt does not know, QEMU, passt,
 * virtiofsd, subuids, mmdebstrap, XDG_RUNTIME_DIR, free space): an array of {"check", "ok",
 * "severity", "detail", "fix"} (docs/json.md). Never fails: what cannot be checked is a failed
 * check. */
HUTCH_PUBLIC JsonArray *hutch_doctor(HutchContext *ctx);

/* ---- Another host (-c qemu+ssh://[USER@]HOST[:PORT]/session) ------------------------- */

/* hutch runs on that host too: each verb runs there through OpenSSH's client (`ssh`, with the
 * user's keys, agent, ~/.ssh/config and known_hosts), against that host's own libvirt, so
 * every guarantee of a local VM holds there (lib/remote.c, docs/architecture.md). */
typedef struct _HutchRemote HutchRemote;
/* Whether uri is a qemu+ssh:// one (any case). */
HUTCH_PUBLIC gboolean hutch_remote_uri_is_remote(const char *uri);
/* Parses qemu+ssh://[USER@]HOST[:PORT]/session|system[?keyfile=PATH]; anything else (another
 * path or parameter, a password, a host or user ssh could take for an option) is
 * HUTCH_ERROR_USAGE. The far side's program is $HUTCH_REMOTE_PROGRAM, else `hutch`. */
HUTCH_PUBLIC HutchRemote *hutch_remote_new(const char *uri, GError **error);
HUTCH_PUBLIC void hutch_remote_free(HutchRemote *remote);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchRemote, hutch_remote_free)
HUTCH_PUBLIC const char *hutch_remote_host(const HutchRemote *remote);
/* Runs `hutch -c qemu:///session ARGS...` there (ssh -t when tty), its output on ours. Its
 * standard input: input when not NULL, else ours when use_stdin (shell, run), else none (a
 * script's next command keeps ours). Returns its exit status, or -1 with error set when ssh
 * failed (its exit 255) or was killed. Ignores SIGPIPE from then on (the pipe to ssh may
 * close early). */
HUTCH_PUBLIC int hutch_remote_run(HutchRemote *remote, const char *const *args, GBytes *input,
                                  gboolean use_stdin, gboolean tty, GError **error);
/* hutch cp there: what is copied travels as a tar stream through ssh, made and written here
 * with hutch cp's own rules (links and special files skipped, nothing written through a
 * link, checked names); the far side copies from or to a directory of its own that it
 * removes. quiet: the far side's -q. */
HUTCH_PUBLIC gboolean hutch_remote_copy(HutchRemote *remote, const char *src, const char *dst,
                                        gboolean recursive, gboolean quiet, GError **error);

G_END_DECLS
