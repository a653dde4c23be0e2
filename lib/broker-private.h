/* broker-private.h: the credential broker. The real value of a profile's secret stays on
 * the host; the guest holds a placeholder, and the egress helper's proxy puts the value in
 * place of the placeholder in requests to the secret's hosts only, which it intercepts with
 * a certificate authority of the VM's own (see broker.c). */
#pragma once

#include "egress-private.h"
#include "profile-private.h"

/* In the instance directory: the secrets' definitions and placeholders (no value), the
 * VM's CA key (0600, never in the guest) and certificate */
#define HUTCH_BROKER_FILE "broker.json"
#define HUTCH_BROKER_CA_KEY "broker-ca.key"
#define HUTCH_BROKER_CA_CERT "broker-ca.crt"
/* In the guest: the CA certificate (in the system store once update-ca-certificates ran) */
#define HUTCH_BROKER_GUEST_CA "/usr/local/share/ca-certificates/hutch-broker.crt"
#define HUTCH_BROKER_GUEST_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
/* how long a command: secret may run */
#define HUTCH_BROKER_COMMAND_TIMEOUT_S 10
/* the longest value a secret may have */
#define HUTCH_BROKER_MAX_VALUE 8191

/* ---- At create (the CLI's side) ---- */

/* Refuses secrets the policy cannot serve: a mode other than allowlist or public, or a host
 * the policy does not allow on its port. HUTCH_ERROR_PROFILE naming the secret and host. */
gboolean hutch_broker_check(const HutchProfile *profile, const HutchEgressPolicy *policy,
                            GError **error);
/* For a profile with secrets: makes the VM's CA (key, certificate, name-constrained to the
 * secrets' hosts) and a random placeholder per secret, and writes them into instance_dir.
 * Returns the CA certificate (PEM) and the guest's variables ("NAME=PLACEHOLDER", NULL-
 * terminated); both NULL when the profile has no secrets. An optional secret whose source
 * has nothing now (an unset variable, a missing file or program) is left out: ret_notes
 * says so (NULL-terminated, may be empty). */
gboolean hutch_broker_create(const HutchProfile *profile, const char *vm_name,
                             const char *instance_dir, char **ret_ca_pem, char ***ret_env,
                             char ***ret_notes, GError **error);
/* The host variables the instance's env secrets come from (NULL-terminated, maybe empty):
 * left out of the environment of every process hutch starts for the VM but the egress
 * helper (virtiofsd and the supervisor parse what the guest sends) */
char **hutch_broker_env_names(const char *instance_dir);
/* The secrets' names and placeholders of an instance, for `hutch info`: a JSON array, or
 * NULL when it has none. */
JsonArray *hutch_broker_describe(const char *instance_dir);

/* ---- In the egress helper ---- */

typedef struct _HutchBroker HutchBroker;

/* What the broker logs: verdict "inject" (the real value went in), "keep" (a placeholder
 * was left: this destination is not among its secret's hosts), "fail", "note". Called from
 * the broker's threads. */
typedef void (*HutchBrokerLog)(const char *verdict, const char *name, const char *address,
                               guint port, const char *reason, gpointer data);

/* Reads the instance's broker file and fetches every secret's value (env: this process's
 * environment, whose copy is then wiped; command; file) into locked memory that is left out
 * of core dumps and of forks. NULL without error when the instance has no secrets.
 * extra_trust: a PEM file whose CAs the upstream may also present (tests), or NULL. */
HutchBroker *hutch_broker_load(const char *instance_dir, const char *extra_trust,
                               HutchBrokerLog log, gpointer log_data, GError **error);
void hutch_broker_free(HutchBroker *broker);
/* Zeroes the values (at exit, while threads may still hold the broker: it is not freed) */
void hutch_broker_wipe(HutchBroker *broker);
/* How soon after a fetch a 401 may make a command secret be fetched again (default 10 s;
 * tests) */
void hutch_broker_set_refetch_interval(HutchBroker *broker, guint ms);
/* Whether connections to name:port are intercepted (some secret names this host) */
gboolean hutch_broker_intercepts(HutchBroker *broker, const char *name, guint port);
/* Opens the TCP connection to name:port that the policy allows (the egress helper's side:
 * resolving, checking every address, logging the decision). Returns the descriptor, or -1
 * with *ret_reason; *ret_address: the address connected to (or tried). Called from the
 * broker's threads. */
typedef int (*HutchBrokerConnect)(const char *name, guint port, char **ret_address,
                                  char **ret_reason, gpointer data);

/* Serves one intercepted connection to its end (blocking: run it in a thread of its own):
 * TLS with the guest under a certificate for name (the name the guest looked up), the
 * request head read and its placeholders replaced, then the upstream connected through
 * connect and its certificate verified for name, and the request sent. An upstream that
 * cannot be reached or verified gets the guest a 502 that says why. Closes guest_fd. */
void hutch_broker_serve(HutchBroker *broker, int guest_fd, const char *name, guint port,
                        HutchBrokerConnect connect, gpointer connect_data);
/* Scans what the guest sends unintercepted (plain HTTP) for placeholders, to log them */
void hutch_broker_note_plain(HutchBroker *broker, const guint8 *data, gsize len, const char *name,
                             const char *address, guint port);

/* ---- The request head's rewrite (pure; tests) ---- */

typedef struct {
  const char *secret;      /* the secret's name */
  const char *placeholder; /* what the guest sends */
  const char *value;       /* the real value, or NULL: not for this destination */
  gboolean used;           /* out: value went in */
  gboolean kept;           /* out: the placeholder was seen and left */
} HutchBrokerSwap;

/* head: a request line and its header lines (CRLF only), up to and including the empty
 * line. Returns the head with every placeholder that has a value replaced in the values of
 * the credential headers only (hutch_broker_credential_headers(); inside "Authorization:
 * Basic" too), and left (marked kept) anywhere else; "Connection: close" in place of the
 * request's own connection headers (one request per intercepted connection) unless it
 * upgrades the connection ("Connection: upgrade" and "Upgrade:"); and, when any value may go
 * in, "Accept-Encoding: identity" in place of the request's own (the answer is read for the
 * value). NULL when head is not a request head. */
char *hutch_broker_rewrite_head(const char *head, gsize len, HutchBrokerSwap *swaps, guint n_swaps,
                                gsize *ret_len);
/* The filter of an intercepted answer against the values that went into its request (a
 * server that echoes a key back, in an error message say, would hand it to the guest): chunk
 * is appended to held, the answer's bytes not yet given to the guest, and the result is how
 * many of held's first bytes may go to the guest now. That is all of them but an end that
 * is the start of a value (split across chunks: the next chunk tells), so that not even a
 * value's first bytes reach the guest; when a used value is in held, only the bytes before
 * it, with *ret_echoed naming its secret (the connection ends there). A value of 8 bytes or
 * more counts in base64 too (at any alignment: the broker puts values into "Authorization:
 * Basic" that way), with the 4 characters before its encoded form, which may encode its first
 * bytes. At the answer's end, or when the upstream sends nothing more for a while, what is
 * still held may go. Only swaps marked used with a value count. */
gsize hutch_broker_answer_filter(const HutchBrokerSwap *swaps, guint n, GByteArray *held,
                                 const guint8 *chunk, gsize len, const char **ret_echoed);
/* The header names whose values get secrets, ", "-separated (for messages and docs) */
const char *hutch_broker_credential_headers(void);
/* Whether the request is for name:port and nothing else: an origin-form target ("/..." or
 * "*") and exactly one Host header, naming name or name:port. Else *ret_why. */
gboolean hutch_broker_request_is_for(const char *head, gsize len, const char *name, guint port,
                                     char **ret_why);
/* Whether host (a secret's "NAME", "*.NAME", with ":PORT" or not) covers name:port */
gboolean hutch_broker_host_matches(const char *host, const char *name, guint port);
