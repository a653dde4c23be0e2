/* broker.c: the credential broker (see broker-private.h).
 *
 * At create, hutch makes the VM a certificate authority of its own (ECDSA P-256, name-
 * constrained to the secrets' hosts, so that its key could vouch for nothing else) and one
 * random placeholder per secret; the guest gets the CA certificate in its trust stores and
 * the placeholders in its environment. The values are never written anywhere.
 *
 * The egress helper loads the broker when it starts: it fetches each value (from its own
 * environment, which `hutch start` passed on, from a command, or a file) into a memory
 * region that is locked, left out of core dumps and wiped in forked children (passt, the
 * commands it runs); the environment's copy is overwritten. The helper makes itself non-
 * dumpable, so that the user's other processes cannot read its memory either.
 *
 * A guest connection to a secret's host (the name the guest looked up, through hutch's own
 * DNS: never the SNI or the Host header the guest sends) is served by a thread of its own:
 * TLS with the guest under a certificate for the name, signed by the VM's CA; the request
 * head read whole, its placeholders replaced, "Connection: close" put in (so each request
 * is seen: the client opens a connection for the next one); then the upstream connected as
 * the policy allows and its certificate verified against the host's trust store for that
 * name (no fallback of any kind), and only then the request sent; from there bytes pass
 * both ways untouched. Every other connection is relayed by the egress helper as before,
 * never intercepted. */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <json-glib/json-glib.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker-private.h"
#include "text-private.h"
#include "util-private.h"

extern char **environ;

/* the longest request head the broker reads */
#define MAX_HEAD (64 * 1024)
#define TLS_TIMEOUT_MS 30000
#define IDLE_TIMEOUT_MS (10 * 60 * 1000)
/* How long an answer's end that starts like a value is held for the upstream's next bytes
 * (hutch_broker_answer_filter): one answer's records follow each other within
 * milliseconds */
#define ANSWER_HOLD_MS 500
/* a command secret is fetched again after a 401 at most this often */
#define REFETCH_MIN_S 10
/* a certificate the broker made for a name is made again after this long (it is valid 90
 * days) */
#define LEAF_RENEW_S (30 * 24 * 3600)
#define PLACEHOLDER_PREFIX "hutch-placeholder-"

/* ---- Host names ------------------------------------------------------------------------ */

gboolean hutch_broker_host_matches(const char *host, const char *name, guint port) {
  if (!host || !name)
    return FALSE;
  g_autofree char *pattern = g_strdup(host);
  guint want_port = 443;
  char *colon = strrchr(pattern, ':');
  if (colon) {
    guint64 p = 0;
    if (!g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &p, NULL))
      return FALSE;
    want_port = (guint)p;
    *colon = '\0';
  }
  if (port != want_port)
    return FALSE;
  if (g_str_has_prefix(pattern, "*.")) {
    /* the name and every name under it, as in the egress policy */
    const char *suffix = pattern + 1; /* ".NAME" */
    size_t n = strlen(name), s = strlen(suffix);
    return g_ascii_strcasecmp(name, suffix + 1) == 0 ||
           (n > s + 0 && name[0] != '.' && g_ascii_strcasecmp(name + n - s, suffix) == 0);
  }
  return g_ascii_strcasecmp(pattern, name) == 0;
}

/* The name part of a host: "*.x.org:8443" -> "x.org" (what the CA's name constraint permits:
 * a DNS name constraint covers the name and every name under it) */
static char *host_domain(const char *host) {
  const char *start = g_str_has_prefix(host, "*.") ? host + 2 : host;
  const char *colon = strrchr(start, ':');
  return colon ? g_strndup(start, colon - start) : g_strdup(start);
}

static guint host_port(const char *host) {
  const char *colon = strrchr(host, ':');
  guint64 p = 443;
  if (colon)
    g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &p, NULL);
  return (guint)p;
}

/* ---- The request head ------------------------------------------------------------------ */

/* Appends text with every placeholder that has a value replaced (when values: else every
 * placeholder is left, and marked kept) */
static void append_swapped(GString *out, const char *text, gsize len, HutchBrokerSwap *swaps,
                           guint n, gboolean values) {
  gsize at = 0;
  while (at < len) {
    gboolean matched = FALSE;
    for (guint i = 0; i < n && !matched; i++) {
      gsize pl = strlen(swaps[i].placeholder);
      if (pl > 0 && len - at >= pl && memcmp(text + at, swaps[i].placeholder, pl) == 0) {
        if (values && swaps[i].value) {
          g_string_append(out, swaps[i].value);
          swaps[i].used = TRUE;
        } else {
          g_string_append_len(out, text + at, pl);
          swaps[i].kept = TRUE;
        }
        at += pl;
        matched = TRUE;
      }
    }
    if (!matched)
      g_string_append_c(out, text[at++]);
  }
}

static gboolean header_is(const char *line, gsize len, const char *name) {
  gsize n = strlen(name);
  return len > n && line[n] == ':' && g_ascii_strncasecmp(line, name, n) == 0;
}

/* Zeroes a GString's buffer (it may hold a real value) and frees it */
static void string_wipe_free(GString *s) {
  explicit_bzero(s->str, s->allocated_len);
  g_string_free(s, TRUE);
}

/* "Authorization: Basic B64": the placeholder may be inside the encoded user:password */
static gboolean append_basic(GString *out, const char *line, gsize len, HutchBrokerSwap *swaps,
                             guint n) {
  const char *colon = memchr(line, ':', len);
  if (!colon)
    return FALSE;
  const char *v = colon + 1;
  const char *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  if (end - v < 6 || g_ascii_strncasecmp(v, "Basic ", 6) != 0)
    return FALSE;
  const char *b64 = v + 6;
  while (b64 < end && *b64 == ' ')
    b64++;
  g_autofree char *encoded = g_strndup(b64, end - b64);
  g_strstrip(encoded);
  /* only strict base64 is decoded (g_base64_decode skips what it cannot read): a raw token
   * after "Basic " (a placeholder among them) is replaced as plain text */
  for (const char *c = encoded; *c; c++)
    if (!g_ascii_isalnum(*c) && *c != '+' && *c != '/' && *c != '=')
      return FALSE;
  gsize decoded_len = 0;
  guchar *decoded = g_base64_decode(encoded, &decoded_len);
  if (!decoded || decoded_len == 0) {
    g_free(decoded);
    return FALSE;
  }
  GString *swapped = g_string_new(NULL);
  append_swapped(swapped, (const char *)decoded, decoded_len, swaps, n, TRUE);
  explicit_bzero(decoded, decoded_len);
  g_free(decoded);
  char *again = g_base64_encode((const guchar *)swapped->str, swapped->len);
  string_wipe_free(swapped);
  g_string_append_len(out, line, b64 - line);
  g_string_append(out, again);
  explicit_bzero(again, strlen(again));
  g_free(again);
  return TRUE;
}

/* The headers whose values get a secret's value: where the APIs take keys. Anywhere else
 * (the request line, other headers) a placeholder stays one: a server that echoes a path, a
 * query or a header back (an error message, a redirect) would hand the value to the guest. */
static const char *const credential_headers[] = {
    "Authorization", "X-Api-Key", "X-Goog-Api-Key", "Api-Key", "X-Auth-Token", "Private-Token",
};

const char *hutch_broker_credential_headers(void) {
  return "Authorization, X-Api-Key, X-Goog-Api-Key, Api-Key, X-Auth-Token, Private-Token";
}

static gboolean is_credential_header(const char *line, gsize len) {
  for (guint i = 0; i < G_N_ELEMENTS(credential_headers); i++)
    if (header_is(line, len, credential_headers[i]))
      return TRUE;
  return FALSE;
}

/* Whether a header's value (after "NAME:") holds word, as a comma-separated token */
static gboolean header_has_token(const char *line, gsize len, const char *word) {
  const char *colon = memchr(line, ':', len);
  if (!colon)
    return FALSE;
  g_autofree char *value = g_strndup(colon + 1, line + len - colon - 1);
  g_auto(GStrv) tokens = g_strsplit(value, ",", -1);
  for (char **t = tokens; *t; t++)
    if (g_ascii_strcasecmp(g_strstrip(*t), word) == 0)
      return TRUE;
  return FALSE;
}

/* Checks the head's form: a request line "METHOD TARGET HTTP/1.x" (METHOD in capitals),
 * CRLF line ends only (a bare LF could hide a header from this parse but not from the
 * server's), no NUL, an empty line at the end */
static const char *head_request_end(const char *head, gsize len) {
  if (len < 4 || memchr(head, '\0', len) || memcmp(head + len - 4, "\r\n\r\n", 4) != 0)
    return NULL;
  for (gsize i = 0; i < len; i++)
    if ((head[i] == '\n' && (i == 0 || head[i - 1] != '\r')) ||
        (head[i] == '\r' && (i + 1 >= len || head[i + 1] != '\n')))
      return NULL;
  const char *first_end = g_strstr_len(head, len, "\r\n");
  const char *sp = memchr(head, ' ', first_end - head);
  if (!sp || sp == head || g_strstr_len(head, first_end - head, " HTTP/1.") == NULL)
    return NULL;
  for (const char *c = head; c < sp; c++)
    if (!g_ascii_isupper(*c))
      return NULL;
  return first_end;
}

gboolean hutch_broker_request_is_for(const char *head, gsize len, const char *name, guint port,
                                     char **ret_why) {
  const char *first_end = head_request_end(head, len);
  if (!first_end) {
    *ret_why = g_strdup("not an HTTP/1 request head");
    return FALSE;
  }
  /* origin form ("/path") or "*": an absolute target names its own server, which a server
   * takes over the Host header */
  const char *target = memchr(head, ' ', first_end - head) + 1;
  if (!(*target == '/' || (target[0] == '*' && target[1] == ' '))) {
    *ret_why = g_strdup("the request's target is not a path on this server");
    return FALSE;
  }
  g_autofree char *with_port = g_strdup_printf("%s:%u", name, port);
  guint hosts = 0;
  gboolean host_ok = FALSE;
  for (const char *line = first_end + 2; line < head + len - 2;) {
    const char *end = g_strstr_len(line, head + len - line, "\r\n");
    if (header_is(line, end - line, "Host")) {
      hosts++;
      g_autofree char *value = g_strndup(line + 5, end - line - 5);
      g_strstrip(value);
      host_ok = g_ascii_strcasecmp(value, name) == 0 || g_ascii_strcasecmp(value, with_port) == 0;
    }
    line = end + 2;
  }
  if (hosts != 1 || !host_ok) {
    /* a front end that routes by Host could take the request elsewhere */
    *ret_why = g_strdup_printf("its Host header is not %s (one Host, naming the server "
                               "connected to, is needed)",
                               name);
    return FALSE;
  }
  return TRUE;
}

char *hutch_broker_rewrite_head(const char *head, gsize len, HutchBrokerSwap *swaps, guint n_swaps,
                                gsize *ret_len) {
  const char *first_end = head_request_end(head, len);
  if (!first_end)
    return NULL;
  /* a real upgrade (WebSocket) keeps its connection headers: it is one exchange anyway */
  gboolean upgrade = FALSE, connection_upgrade = FALSE, values = FALSE;
  for (const char *line = first_end + 2; line < head + len - 2;) {
    const char *end = g_strstr_len(line, head + len - line, "\r\n");
    if (header_is(line, end - line, "Upgrade"))
      upgrade = TRUE;
    if (header_is(line, end - line, "Connection") && header_has_token(line, end - line, "upgrade"))
      connection_upgrade = TRUE;
    line = end + 2;
  }
  upgrade = upgrade && connection_upgrade;
  for (guint i = 0; i < n_swaps; i++)
    values = values || swaps[i].value;
  GString *out = g_string_sized_new(len + 128);
  GString *encodings = g_string_new(NULL); /* the request's Accept-Encoding lines */
  append_swapped(out, head, first_end - head, swaps, n_swaps, FALSE);
  g_string_append(out, "\r\n");
  for (const char *line = first_end + 2; line < head + len - 2;) {
    const char *end = g_strstr_len(line, head + len - line, "\r\n");
    gsize line_len = end - line;
    gboolean drop = (!upgrade && (header_is(line, line_len, "Connection") ||
                                  header_is(line, line_len, "Keep-Alive") ||
                                  header_is(line, line_len, "Proxy-Connection"))) ||
                    /* put back at the end unless a value went in (below) */
                    (values && header_is(line, line_len, "Accept-Encoding"));
    if (drop && header_is(line, line_len, "Accept-Encoding")) {
      g_string_append_len(encodings, line, line_len);
      g_string_append(encodings, "\r\n");
    } else if (!drop) {
      gboolean credential = is_credential_header(line, line_len);
      if (!(credential && header_is(line, line_len, "Authorization") &&
            append_basic(out, line, line_len, swaps, n_swaps))) {
        /* the name as it is, the value swapped when the header carries credentials */
        const char *colon = memchr(line, ':', line_len);
        gsize name_len = colon ? (gsize)(colon - line) : line_len;
        append_swapped(out, line, name_len, swaps, n_swaps, FALSE);
        append_swapped(out, line + name_len, line_len - name_len, swaps, n_swaps, credential);
      }
      g_string_append(out, "\r\n");
    }
    line = end + 2;
  }
  gboolean used = FALSE;
  for (guint i = 0; i < n_swaps; i++)
    used = used || swaps[i].used;
  /* an answer hutch can read for the value: not compressed */
  g_string_append(out, used ? "Accept-Encoding: identity\r\n" : encodings->str);
  g_string_free(encodings, TRUE);
  if (!upgrade)
    g_string_append(out, "Connection: close\r\n");
  g_string_append(out, "\r\n");
  *ret_len = out->len;
  return g_string_free(out, FALSE);
}

/* ---- Certificates ---------------------------------------------------------------------- */

static gboolean tls_failed(int ret, const char *what, GError **error) {
  if (ret >= 0)
    return FALSE;
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: %s", what, gnutls_strerror(ret));
  return TRUE;
}

static gboolean set_serial(gnutls_x509_crt_t crt, GError **error) {
  guint8 serial[16];
  for (guint i = 0; i < sizeof serial; i++)
    serial[i] = (guint8)g_random_int_range(0, 256);
  serial[0] &= 0x7f; /* positive */
  serial[0] |= 0x01; /* and not shortened away */
  return !tls_failed(gnutls_x509_crt_set_serial(crt, serial, sizeof serial), "serial", error);
}

static gnutls_x509_privkey_t new_key(GError **error) {
  gnutls_x509_privkey_t key = NULL;
  if (tls_failed(gnutls_x509_privkey_init(&key), "key", error))
    return NULL;
  int ret = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                         GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
  if (tls_failed(ret, "generating a key", error)) {
    gnutls_x509_privkey_deinit(key);
    return NULL;
  }
  return key;
}

static char *export_pem(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key) {
  gnutls_datum_t out = {0};
  int ret = crt ? gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out)
                : gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &out);
  if (ret < 0)
    return NULL;
  char *text = g_strndup((const char *)out.data, out.size);
  explicit_bzero(out.data, out.size);
  gnutls_free(out.data);
  return text;
}

/* The VM's CA: valid 20 years, for signing certificates of the names in domains only */
static gboolean make_ca(const char *vm_name, GPtrArray *domains, char **ret_cert, char **ret_key,
                        GError **error) {
  gnutls_x509_privkey_t key = new_key(error);
  if (!key)
    return FALSE;
  gnutls_x509_crt_t crt = NULL;
  gnutls_x509_name_constraints_t nc = NULL;
  gboolean ok = FALSE;
  time_t now = time(NULL);
  g_autofree char *dn = g_strdup_printf("CN=hutch broker CA for VM %s,O=hutch", vm_name);
  const char *dn_error = NULL;
  guint8 key_id[64];
  size_t key_id_size = sizeof key_id;
  if (tls_failed(gnutls_x509_crt_init(&crt), "certificate", error) ||
      tls_failed(gnutls_x509_crt_set_version(crt, 3), "version", error) ||
      !set_serial(crt, error) ||
      tls_failed(gnutls_x509_crt_set_activation_time(crt, now - 24 * 3600), "time", error) ||
      tls_failed(gnutls_x509_crt_set_expiration_time(crt, now + 20L * 365 * 24 * 3600), "time",
                 error) ||
      tls_failed(gnutls_x509_crt_set_dn(crt, dn, &dn_error), "name", error) ||
      tls_failed(gnutls_x509_crt_set_key(crt, key), "key", error) ||
      tls_failed(gnutls_x509_crt_set_basic_constraints(crt, 1, 0), "constraints", error) ||
      tls_failed(gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN),
                 "usage", error) ||
      tls_failed(gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, key_id, &key_id_size),
                 "key id", error) ||
      tls_failed(gnutls_x509_crt_set_subject_key_id(crt, key_id, key_id_size), "key id", error) ||
      tls_failed(gnutls_x509_name_constraints_init(&nc), "constraints", error))
    goto out;
  for (guint i = 0; i < domains->len; i++) {
    const char *d = g_ptr_array_index(domains, i);
    gnutls_datum_t datum = {(unsigned char *)d, (unsigned int)strlen(d)};
    if (tls_failed(gnutls_x509_name_constraints_add_permitted(nc, GNUTLS_SAN_DNSNAME, &datum),
                   "name constraint", error))
      goto out;
  }
  if (tls_failed(gnutls_x509_crt_set_name_constraints(crt, nc, 1), "name constraints", error) ||
      tls_failed(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), "signing", error))
    goto out;
  *ret_cert = export_pem(crt, NULL);
  *ret_key = export_pem(NULL, key);
  ok = *ret_cert && *ret_key;
  if (!ok)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "exporting the CA");
out:
  if (nc)
    gnutls_x509_name_constraints_deinit(nc);
  if (crt)
    gnutls_x509_crt_deinit(crt);
  gnutls_x509_privkey_deinit(key);
  return ok;
}

/* ---- At create ------------------------------------------------------------------------- */

/* Whether the secret's source has something now (an optional secret without is left out) */
static gboolean source_present(const HutchSecret *s, char **ret_why) {
  switch (s->source) {
  case HUTCH_SECRET_ENV: {
    const char *v = g_getenv(s->from);
    if (v && *v)
      return TRUE;
    *ret_why = g_strdup_printf("the host variable %s is not set", s->from);
    return FALSE;
  }
  case HUTCH_SECRET_FILE: {
    g_autofree char *path = g_str_has_prefix(s->from, "~")
                                ? g_build_filename(g_get_home_dir(), s->from + 1, NULL)
                                : g_strdup(s->from);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
      return TRUE;
    *ret_why = g_strdup_printf("%s is not a file", path);
    return FALSE;
  }
  case HUTCH_SECRET_COMMAND: {
    g_auto(GStrv) argv = NULL;
    g_autofree char *found = NULL;
    if (g_shell_parse_argv(s->from, NULL, &argv, NULL) && argv[0])
      found = strchr(argv[0], '/') ? g_strdup(argv[0]) : g_find_program_in_path(argv[0]);
    if (found && g_file_test(found, G_FILE_TEST_IS_EXECUTABLE))
      return TRUE;
    *ret_why = g_strdup_printf("%s is not a program here", argv && argv[0] ? argv[0] : s->from);
    return FALSE;
  }
  }
  return FALSE;
}

gboolean hutch_broker_check(const HutchProfile *profile, const HutchEgressPolicy *policy,
                            GError **error) {
  if (!profile->secrets || profile->secrets->len == 0)
    return TRUE;
  const HutchSecret *first = g_ptr_array_index(profile->secrets, 0);
  if (policy->mode != HUTCH_EGRESS_ALLOWLIST && policy->mode != HUTCH_EGRESS_PUBLIC) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "secrets need the egress policy's proxy (egress: allowlist or public), and "
                "this VM's egress is %s: secret %s could never reach its hosts",
                hutch_egress_mode_to_string(policy->mode), first->name);
    return FALSE;
  }
  for (guint i = 0; i < profile->secrets->len; i++) {
    const HutchSecret *s = g_ptr_array_index(profile->secrets, i);
    g_autofree char *why = NULL;
    if (!s->optional && !source_present(s, &why)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "secret %s: %s (set it, or mark the secret optional: true to do without it)",
                  s->name, why);
      return FALSE;
    }
    for (char **h = s->hosts; h && *h; h++) {
      g_autofree char *domain = host_domain(*h);
      /* a wildcard host: the policy must allow the name and the names under it */
      g_autofree char *under = g_strconcat("x.", domain, NULL);
      g_autofree char *reason = NULL;
      if (!hutch_egress_check_name(policy, domain, host_port(*h), &reason) ||
          (g_str_has_prefix(*h, "*.") &&
           !hutch_egress_check_name(policy, under, host_port(*h), &reason))) {
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                    "secret %s: its host %s is not allowed by the egress policy (%s): add it to "
                    "network.allow, or remove it from the secret's hosts",
                    s->name, *h, reason);
        return FALSE;
      }
    }
  }
  return TRUE;
}

static const char *source_to_string(HutchSecretSource source) {
  switch (source) {
  case HUTCH_SECRET_ENV:
    return "env";
  case HUTCH_SECRET_COMMAND:
    return "command";
  case HUTCH_SECRET_FILE:
    return "file";
  }
  return "env";
}

static char *random_placeholder(void) {
  guint8 bytes[16];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  gboolean got = fd >= 0 && read(fd, bytes, sizeof bytes) == (ssize_t)sizeof bytes;
  if (fd >= 0)
    close(fd);
  if (!got)
    for (guint i = 0; i < sizeof bytes; i++)
      bytes[i] = (guint8)g_random_int_range(0, 256);
  GString *s = g_string_new(PLACEHOLDER_PREFIX);
  for (guint i = 0; i < sizeof bytes; i++)
    g_string_append_printf(s, "%02x", bytes[i]);
  return g_string_free(s, FALSE);
}

gboolean hutch_broker_create(const HutchProfile *profile, const char *vm_name,
                             const char *instance_dir, char **ret_ca_pem, char ***ret_env,
                             char ***ret_notes, GError **error) {
  *ret_ca_pem = NULL;
  *ret_env = NULL;
  *ret_notes = NULL;
  if (!profile->secrets || profile->secrets->len == 0)
    return TRUE;
  g_autoptr(GStrvBuilder) notes = g_strv_builder_new();
  guint kept = 0;
  g_autoptr(GPtrArray) domains = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(JsonBuilder) b = json_builder_new();
  g_autoptr(GStrvBuilder) env = g_strv_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "secrets");
  json_builder_begin_array(b);
  for (guint i = 0; i < profile->secrets->len; i++) {
    const HutchSecret *s = g_ptr_array_index(profile->secrets, i);
    g_autofree char *why = NULL;
    if (s->optional && !source_present(s, &why)) {
      /* the guest gets no variable for it: a tool then asks to sign in, rather than sending
       * a placeholder nothing replaces */
      g_autofree char *note = g_strdup_printf(
          "secret %s is left out (optional): %s; create the VM again to add it", s->name, why);
      g_strv_builder_add(notes, note);
      continue;
    }
    kept++;
    g_autofree char *placeholder = random_placeholder();
    g_autofree char *line = g_strdup_printf("%s=%s", s->name, placeholder);
    g_strv_builder_add(env, line);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, s->name);
    json_builder_set_member_name(b, "placeholder");
    json_builder_add_string_value(b, placeholder);
    json_builder_set_member_name(b, "source");
    json_builder_add_string_value(b, source_to_string(s->source));
    json_builder_set_member_name(b, "from");
    json_builder_add_string_value(b, s->from);
    json_builder_set_member_name(b, "hosts");
    json_builder_begin_array(b);
    for (char **h = s->hosts; h && *h; h++) {
      json_builder_add_string_value(b, *h);
      g_autofree char *d = host_domain(*h);
      if (!g_ptr_array_find_with_equal_func(domains, d, g_str_equal, NULL))
        g_ptr_array_add(domains, g_steal_pointer(&d));
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "optional");
    json_builder_add_boolean_value(b, s->optional);
    json_builder_set_member_name(b, "ttl");
    json_builder_add_int_value(b, s->ttl);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *json = json_to_string(root, TRUE);
  *ret_notes = g_strv_builder_end(notes);
  if (kept == 0)
    return TRUE;

  g_autofree char *cert = NULL, *key = NULL;
  if (!make_ca(vm_name, domains, &cert, &key, error)) {
    g_prefix_error(error, "the broker's certificate authority: ");
    return FALSE;
  }
  g_autofree char *key_path = g_build_filename(instance_dir, HUTCH_BROKER_CA_KEY, NULL);
  g_autofree char *cert_path = g_build_filename(instance_dir, HUTCH_BROKER_CA_CERT, NULL);
  g_autofree char *json_path = g_build_filename(instance_dir, HUTCH_BROKER_FILE, NULL);
  gboolean ok = hutch_write_file(key_path, key, strlen(key), 0600, error) &&
                hutch_write_file(cert_path, cert, strlen(cert), 0600, error) &&
                hutch_write_file(json_path, json, strlen(json), 0600, error);
  explicit_bzero(key, strlen(key));
  if (!ok)
    return FALSE;
  *ret_ca_pem = g_steal_pointer(&cert);
  *ret_env = g_strv_builder_end(env);
  return TRUE;
}

static JsonArray *read_secrets(const char *instance_dir, GError **error) {
  g_autofree char *path = g_build_filename(instance_dir, HUTCH_BROKER_FILE, NULL);
  g_autoptr(JsonParser) parser = json_parser_new();
  if (!json_parser_load_from_file(parser, path, error))
    return NULL;
  JsonNode *root = json_parser_get_root(parser);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonArray *a =
      o && json_object_has_member(o, "secrets") ? json_object_get_array_member(o, "secrets") : NULL;
  if (!a) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: no secrets array", path);
    return NULL;
  }
  return json_array_ref(a);
}

char **hutch_broker_env_names(const char *instance_dir) {
  g_autoptr(JsonArray) secrets = read_secrets(instance_dir, NULL);
  g_autoptr(GStrvBuilder) names = g_strv_builder_new();
  for (guint i = 0; secrets && i < json_array_get_length(secrets); i++) {
    JsonObject *s = json_array_get_object_element(secrets, i);
    if (s && g_strcmp0(json_object_get_string_member_with_default(s, "source", ""), "env") == 0)
      g_strv_builder_add(names, json_object_get_string_member_with_default(s, "from", ""));
  }
  return g_strv_builder_end(names);
}

JsonArray *hutch_broker_describe(const char *instance_dir) {
  g_autoptr(JsonArray) secrets = read_secrets(instance_dir, NULL);
  if (!secrets)
    return NULL;
  JsonArray *out = json_array_new();
  for (guint i = 0; i < json_array_get_length(secrets); i++) {
    JsonObject *s = json_array_get_object_element(secrets, i);
    JsonObject *d = json_object_new();
    json_object_set_string_member(d, "name",
                                  json_object_get_string_member_with_default(s, "name", ""));
    json_object_set_string_member(d, "source",
                                  json_object_get_string_member_with_default(s, "source", ""));
    JsonArray *hosts = json_object_get_array_member(s, "hosts");
    json_object_set_array_member(d, "hosts", hosts ? json_array_ref(hosts) : json_array_new());
    json_object_set_string_member(d, "placeholder",
                                  json_object_get_string_member_with_default(s, "placeholder", ""));
    json_array_add_object_element(out, d);
  }
  return out;
}

/* ---- In the egress helper: the values ---------------------------------------------------- */

typedef struct {
  char *name;
  char *placeholder;
  HutchSecretSource source;
  char *from;
  char **hosts;
  gboolean optional;
  guint ttl;
  char *value;    /* in the locked region (slot), or NULL: none (optional, not set) */
  gint64 fetched; /* monotonic, µs */
  gboolean stale; /* the upstream answered 401: a command secret is fetched again */
} Secret;

typedef struct {
  gnutls_certificate_credentials_t creds;
  gint64 made; /* real time, µs */
} Leaf;

static void leaf_free(gpointer data) {
  Leaf *leaf = data;
  if (leaf->creds)
    gnutls_certificate_free_credentials(leaf->creds);
  g_free(leaf);
}

struct _HutchBroker {
  Secret *secrets;
  guint n_secrets;
  guint8 *locked; /* n_secrets slots of HUTCH_BROKER_MAX_VALUE + 1 */
  gsize locked_size;
  GMutex lock;      /* the values (a command secret is fetched under it) */
  GMutex cert_lock; /* the certificate cache */
  gint64 refetch_min_us;
  gnutls_x509_crt_t ca;
  gnutls_x509_privkey_t ca_key;
  gnutls_x509_privkey_t leaf_key;
  char *leaf_key_pem;
  GHashTable *server_creds; /* name -> Leaf* */
  GPtrArray *old_creds;     /* renewed ones: sessions may still use them, freed at the end */
  gnutls_certificate_credentials_t trust;
  HutchBrokerLog log;
  gpointer log_data;
};

static void broker_log(HutchBroker *b, const char *verdict, const char *name, const char *address,
                       guint port, const char *format, ...) G_GNUC_PRINTF(6, 7);

static void broker_log(HutchBroker *b, const char *verdict, const char *name, const char *address,
                       guint port, const char *format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char *reason = g_strdup_vprintf(format, args);
  va_end(args);
  if (b->log)
    b->log(verdict, name, address, port, reason, b->log_data);
}

/* A value as read: trailing white space (a file's or a command's last newline) is dropped;
 * anything else below 0x20, or DEL, is refused (it would break the request's header). */
static gboolean clean_value(Secret *s, gsize len, GError **error) {
  while (len > 0 && g_ascii_isspace(s->value[len - 1]))
    len--;
  s->value[len] = '\0';
  if (len == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "secret %s: the value is empty", s->name);
    return FALSE;
  }
  for (gsize i = 0; i < len; i++)
    if ((guint8)s->value[i] < 0x20 || s->value[i] == 0x7f) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                  "secret %s: the value holds a control character (a line break?), which a "
                  "request header cannot carry",
                  s->name);
      return FALSE;
    }
  return TRUE;
}

/* Runs the command (no shell) and reads its standard output into s->value */
static gboolean fetch_command(Secret *s, GError **error) {
  g_auto(GStrv) argv = NULL;
  if (!g_shell_parse_argv(s->from, NULL, &argv, error)) {
    g_prefix_error(error, "secret %s: command: ", s->name);
    return FALSE;
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "pipe: %s", g_strerror(errno));
    return FALSE;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGHUP);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  int ret = posix_spawnp(&pid, argv[0], &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  if (ret != 0) {
    close(out[0]);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "secret %s: running %s: %s", s->name,
                argv[0], g_strerror(ret));
    return FALSE;
  }
  gsize len = 0;
  gboolean too_long = FALSE, timed_out = FALSE;
  gint64 deadline = g_get_monotonic_time() + HUTCH_BROKER_COMMAND_TIMEOUT_S * G_USEC_PER_SEC;
  for (;;) {
    gint64 left = (deadline - g_get_monotonic_time()) / 1000;
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    if (left <= 0 || poll(&p, 1, (int)left) == 0) {
      timed_out = TRUE;
      break;
    }
    char *into = len < HUTCH_BROKER_MAX_VALUE ? s->value + len : NULL;
    char sink[256];
    ssize_t n =
        into ? read(out[0], into, HUTCH_BROKER_MAX_VALUE - len) : read(out[0], sink, sizeof sink);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (into)
      len += (gsize)n;
    else
      too_long = TRUE;
  }
  close(out[0]);
  /* a command that closed its output may still run: it has until the deadline to end */
  int status = 0;
  pid_t done = 0;
  while (!timed_out && (done = waitpid(pid, &status, WNOHANG)) == 0) {
    if (g_get_monotonic_time() >= deadline)
      timed_out = TRUE;
    else
      g_usleep(10 * 1000);
  }
  if (done == 0 || (done < 0 && errno != ECHILD)) {
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (timed_out || too_long || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    explicit_bzero(s->value, HUTCH_BROKER_MAX_VALUE + 1);
    g_set_error(
        error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "secret %s: command '%s' %s", s->name, s->from,
        timed_out  ? "did not finish within " G_STRINGIFY(HUTCH_BROKER_COMMAND_TIMEOUT_S) " s"
        : too_long ? "wrote more than " G_STRINGIFY(HUTCH_BROKER_MAX_VALUE) " bytes"
        : WIFEXITED(status) ? "failed"
                            : "was killed");
    return FALSE;
  }
  return clean_value(s, len, error);
}

static gboolean fetch_file(Secret *s, GError **error) {
  g_autofree char *path = g_str_has_prefix(s->from, "~")
                              ? g_build_filename(g_get_home_dir(), s->from + 1, NULL)
                              : g_strdup(s->from);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "secret %s: %s: %s", s->name, path,
                g_strerror(errno));
    return FALSE;
  }
  gsize len = 0;
  ssize_t n;
  while (len < HUTCH_BROKER_MAX_VALUE &&
         (n = read(fd, s->value + len, HUTCH_BROKER_MAX_VALUE - len)) > 0)
    len += (gsize)n;
  char extra;
  gboolean too_long = len == HUTCH_BROKER_MAX_VALUE && read(fd, &extra, 1) == 1;
  close(fd);
  if (too_long) {
    explicit_bzero(s->value, HUTCH_BROKER_MAX_VALUE + 1);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "secret %s: %s is longer than %d bytes",
                s->name, path, HUTCH_BROKER_MAX_VALUE);
    return FALSE;
  }
  return clean_value(s, len, error);
}

static gboolean fetch_env(Secret *s, GError **error) {
  const char *value = g_getenv(s->from);
  gsize len = value ? strlen(value) : 0;
  if (len == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "secret %s: the host variable %s is not set (in the environment of the command "
                "that started the VM)",
                s->name, s->from);
    return FALSE;
  }
  if (len > HUTCH_BROKER_MAX_VALUE) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "secret %s: %s is longer than %d bytes",
                s->name, s->from, HUTCH_BROKER_MAX_VALUE);
    return FALSE;
  }
  memcpy(s->value, value, len);
  return clean_value(s, len, error);
}

/* Fetches s's value into its slot. An optional secret without a value is left out (value
 * NULL) with a note; a required one fails. */
static gboolean fetch(HutchBroker *b, Secret *s, char *slot, GError **error) {
  g_autoptr(GError) local = NULL;
  s->value = slot;
  explicit_bzero(slot, HUTCH_BROKER_MAX_VALUE + 1);
  gboolean ok = s->source == HUTCH_SECRET_COMMAND ? fetch_command(s, &local)
                : s->source == HUTCH_SECRET_FILE  ? fetch_file(s, &local)
                                                  : fetch_env(s, &local);
  s->fetched = g_get_monotonic_time();
  s->stale = FALSE;
  if (ok)
    return TRUE;
  s->value = NULL;
  if (s->optional) {
    broker_log(b, "note", NULL, NULL, 0, "secret %s is left out (optional): %s", s->name,
               local->message);
    return TRUE;
  }
  g_propagate_error(error, g_steal_pointer(&local));
  return FALSE;
}

/* Overwrites the environment's copy of every env secret's value, then removes it: passt and
 * the commands the helper runs never get it, and /proc/PID/environ no longer shows it. */
static void wipe_environment(HutchBroker *b) {
  for (guint i = 0; i < b->n_secrets; i++) {
    Secret *s = &b->secrets[i];
    if (s->source != HUTCH_SECRET_ENV)
      continue;
    char *value = getenv(s->from);
    if (value)
      explicit_bzero(value, strlen(value));
    g_unsetenv(s->from);
  }
}

static gboolean source_from_string(const char *text, HutchSecretSource *ret) {
  if (g_strcmp0(text, "env") == 0)
    *ret = HUTCH_SECRET_ENV;
  else if (g_strcmp0(text, "command") == 0)
    *ret = HUTCH_SECRET_COMMAND;
  else if (g_strcmp0(text, "file") == 0)
    *ret = HUTCH_SECRET_FILE;
  else
    return FALSE;
  return TRUE;
}

static gboolean load_ca(HutchBroker *b, const char *instance_dir, GError **error) {
  g_autofree char *key_path = g_build_filename(instance_dir, HUTCH_BROKER_CA_KEY, NULL);
  g_autofree char *cert_path = g_build_filename(instance_dir, HUTCH_BROKER_CA_CERT, NULL);
  g_autofree char *key = NULL, *cert = NULL;
  gsize key_len = 0, cert_len = 0;
  if (!g_file_get_contents(key_path, &key, &key_len, error) ||
      !g_file_get_contents(cert_path, &cert, &cert_len, error))
    return FALSE;
  gnutls_datum_t key_datum = {(unsigned char *)key, (unsigned int)key_len};
  gnutls_datum_t cert_datum = {(unsigned char *)cert, (unsigned int)cert_len};
  gboolean ok = !tls_failed(gnutls_x509_privkey_init(&b->ca_key), "CA key", error) &&
                !tls_failed(gnutls_x509_privkey_import(b->ca_key, &key_datum, GNUTLS_X509_FMT_PEM),
                            key_path, error) &&
                !tls_failed(gnutls_x509_crt_init(&b->ca), "CA", error) &&
                !tls_failed(gnutls_x509_crt_import(b->ca, &cert_datum, GNUTLS_X509_FMT_PEM),
                            cert_path, error);
  explicit_bzero(key, key_len);
  if (!ok)
    return FALSE;
  b->leaf_key = new_key(error);
  if (!b->leaf_key)
    return FALSE;
  b->leaf_key_pem = export_pem(NULL, b->leaf_key);
  return b->leaf_key_pem != NULL;
}

HutchBroker *hutch_broker_load(const char *instance_dir, const char *extra_trust,
                               HutchBrokerLog log, gpointer log_data, GError **error) {
  g_autofree char *path = g_build_filename(instance_dir, HUTCH_BROKER_FILE, NULL);
  if (!g_file_test(path, G_FILE_TEST_EXISTS))
    return NULL;
  g_autoptr(JsonArray) list = read_secrets(instance_dir, error);
  if (!list)
    return NULL;
  HutchBroker *b = g_new0(HutchBroker, 1);
  g_mutex_init(&b->lock);
  g_mutex_init(&b->cert_lock);
  b->refetch_min_us = REFETCH_MIN_S * G_USEC_PER_SEC;
  b->old_creds =
      g_ptr_array_new_with_free_func((GDestroyNotify)gnutls_certificate_free_credentials);
  b->log = log;
  b->log_data = log_data;
  b->server_creds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, leaf_free);
  b->n_secrets = json_array_get_length(list);
  b->secrets = g_new0(Secret, b->n_secrets);
  for (guint i = 0; i < b->n_secrets; i++) {
    JsonObject *o = json_array_get_object_element(list, i);
    Secret *s = &b->secrets[i];
    JsonArray *hosts = o ? json_object_get_array_member(o, "hosts") : NULL;
    s->name = g_strdup(o ? json_object_get_string_member_with_default(o, "name", NULL) : NULL);
    s->placeholder =
        g_strdup(o ? json_object_get_string_member_with_default(o, "placeholder", NULL) : NULL);
    s->from = g_strdup(o ? json_object_get_string_member_with_default(o, "from", NULL) : NULL);
    if (!s->name || !s->placeholder || !s->from || !hosts ||
        strlen(s->placeholder) < strlen(PLACEHOLDER_PREFIX) + 16 ||
        !source_from_string(json_object_get_string_member_with_default(o, "source", ""),
                            &s->source)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "%s: secret %u is incomplete", path,
                  i + 1);
      hutch_broker_free(b);
      return NULL;
    }
    s->hosts = g_new0(char *, json_array_get_length(hosts) + 1);
    for (guint j = 0; j < json_array_get_length(hosts); j++)
      s->hosts[j] = g_strdup(json_array_get_string_element(hosts, j));
    s->optional = json_object_get_boolean_member_with_default(o, "optional", FALSE);
    s->ttl = (guint)json_object_get_int_member_with_default(o, "ttl", 0);
  }
  /* the values' home: locked (never swapped), left out of core dumps, zeroes in a fork */
  long page = sysconf(_SC_PAGESIZE);
  b->locked_size = ((b->n_secrets * (HUTCH_BROKER_MAX_VALUE + 1)) / page + 1) * page;
  void *region =
      mmap(NULL, b->locked_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (region == MAP_FAILED) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "mmap: %s", g_strerror(errno));
    b->locked_size = 0;
    hutch_broker_free(b);
    return NULL;
  }
  b->locked = region;
  if (mlock(region, b->locked_size) < 0 || madvise(region, b->locked_size, MADV_DONTDUMP) < 0 ||
      madvise(region, b->locked_size, MADV_WIPEONFORK) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "locking the secrets' memory: %s (ulimit -l?)", g_strerror(errno));
    hutch_broker_free(b);
    return NULL;
  }
  /* the environment's values first, then wiped: the commands run next never see them */
  for (int pass = 0; pass < 2; pass++) {
    for (guint i = 0; i < b->n_secrets; i++) {
      Secret *s = &b->secrets[i];
      if ((s->source == HUTCH_SECRET_ENV) != (pass == 0))
        continue;
      if (!fetch(b, s, (char *)b->locked + i * (HUTCH_BROKER_MAX_VALUE + 1), error)) {
        wipe_environment(b);
        hutch_broker_free(b);
        return NULL;
      }
    }
    if (pass == 0)
      wipe_environment(b);
  }
  if (!load_ca(b, instance_dir, error) ||
      tls_failed(gnutls_certificate_allocate_credentials(&b->trust), "credentials", error) ||
      tls_failed(gnutls_certificate_set_x509_system_trust(b->trust), "the host's trust store",
                 error) ||
      (extra_trust && tls_failed(gnutls_certificate_set_x509_trust_file(b->trust, extra_trust,
                                                                        GNUTLS_X509_FMT_PEM),
                                 extra_trust, error))) {
    hutch_broker_free(b);
    return NULL;
  }
  return b;
}

void hutch_broker_wipe(HutchBroker *b) {
  if (b && b->locked)
    explicit_bzero(b->locked, b->locked_size);
}

void hutch_broker_set_refetch_interval(HutchBroker *b, guint ms) {
  b->refetch_min_us = (gint64)ms * 1000;
}

void hutch_broker_free(HutchBroker *b) {
  if (!b)
    return;
  for (guint i = 0; i < b->n_secrets; i++) {
    g_free(b->secrets[i].name);
    g_free(b->secrets[i].placeholder);
    g_free(b->secrets[i].from);
    g_strfreev(b->secrets[i].hosts);
  }
  g_free(b->secrets);
  if (b->locked) {
    explicit_bzero(b->locked, b->locked_size);
    munmap(b->locked, b->locked_size);
  }
  g_hash_table_unref(b->server_creds);
  g_ptr_array_unref(b->old_creds);
  if (b->trust)
    gnutls_certificate_free_credentials(b->trust);
  if (b->ca)
    gnutls_x509_crt_deinit(b->ca);
  if (b->ca_key)
    gnutls_x509_privkey_deinit(b->ca_key);
  if (b->leaf_key)
    gnutls_x509_privkey_deinit(b->leaf_key);
  if (b->leaf_key_pem) {
    explicit_bzero(b->leaf_key_pem, strlen(b->leaf_key_pem));
    g_free(b->leaf_key_pem);
  }
  g_mutex_clear(&b->lock);
  g_mutex_clear(&b->cert_lock);
  g_free(b);
}

static gboolean secret_covers(const Secret *s, const char *name, guint port) {
  for (char **h = s->hosts; h && *h; h++)
    if (hutch_broker_host_matches(*h, name, port))
      return TRUE;
  return FALSE;
}

gboolean hutch_broker_intercepts(HutchBroker *b, const char *name, guint port) {
  if (!b || !name)
    return FALSE;
  for (guint i = 0; i < b->n_secrets; i++)
    if (secret_covers(&b->secrets[i], name, port))
      return TRUE;
  return FALSE;
}

void hutch_broker_note_plain(HutchBroker *b, const guint8 *data, gsize len, const char *name,
                             const char *address, guint port) {
  if (!b)
    return;
  for (guint i = 0; i < b->n_secrets; i++) {
    const Secret *s = &b->secrets[i];
    if (memmem(data, len, s->placeholder, strlen(s->placeholder)))
      broker_log(b, "keep", name, address, port,
                 "the placeholder of %s went out as it is (not intercepted: %s)", s->name,
                 secret_covers(s, name ? name : "", port) ? "plain text"
                                                          : "not one of the secret's hosts");
  }
}

/* ---- In the egress helper: one intercepted connection ------------------------------------ */

/* The guest's side: a certificate for name from the VM's CA (made once per name) */
static gnutls_certificate_credentials_t server_credentials(HutchBroker *b, const char *name,
                                                           GError **error) {
  g_mutex_lock(&b->cert_lock);
  gnutls_certificate_credentials_t creds = NULL;
  Leaf *cached = g_hash_table_lookup(b->server_creds, name);
  if (cached && g_get_real_time() - cached->made < (gint64)LEAF_RENEW_S * G_USEC_PER_SEC) {
    g_mutex_unlock(&b->cert_lock);
    return cached->creds;
  }
  if (cached) {
    /* renewed: a session that has the old one keeps it until the broker ends */
    g_ptr_array_add(b->old_creds, g_steal_pointer(&cached->creds));
    g_hash_table_remove(b->server_creds, name);
  }
  gnutls_x509_crt_t crt = NULL;
  time_t now = time(NULL);
  g_autofree char *dn = g_strdup_printf("CN=%s", name);
  const char *dn_error = NULL;
  gboolean ok =
      !tls_failed(gnutls_x509_crt_init(&crt), "certificate", error) &&
      !tls_failed(gnutls_x509_crt_set_version(crt, 3), "version", error) &&
      set_serial(crt, error) &&
      !tls_failed(gnutls_x509_crt_set_activation_time(crt, now - 3600), "time", error) &&
      !tls_failed(gnutls_x509_crt_set_expiration_time(crt, now + 90L * 24 * 3600), "time", error) &&
      !tls_failed(gnutls_x509_crt_set_dn(crt, dn, &dn_error), "name", error) &&
      !tls_failed(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, name, strlen(name),
                                                       GNUTLS_FSAN_SET),
                  "name", error) &&
      !tls_failed(gnutls_x509_crt_set_key(crt, b->leaf_key), "key", error) &&
      !tls_failed(gnutls_x509_crt_set_basic_constraints(crt, 0, -1), "constraints", error) &&
      !tls_failed(gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE), "usage",
                  error) &&
      !tls_failed(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0), "purpose",
                  error) &&
      !tls_failed(gnutls_x509_crt_sign2(crt, b->ca, b->ca_key, GNUTLS_DIG_SHA256, 0), "signing",
                  error) &&
      !tls_failed(gnutls_certificate_allocate_credentials(&creds), "credentials", error);
  if (ok) {
    gnutls_x509_crt_t chain[2] = {crt, b->ca};
    ok = !tls_failed(gnutls_certificate_set_x509_key(creds, chain, 2, b->leaf_key), "key", error);
    if (ok) {
      Leaf *leaf = g_new0(Leaf, 1);
      leaf->creds = creds;
      leaf->made = g_get_real_time();
      g_hash_table_insert(b->server_creds, g_strdup(name), leaf);
    } else {
      gnutls_certificate_free_credentials(creds);
    }
  }
  if (crt)
    gnutls_x509_crt_deinit(crt);
  g_mutex_unlock(&b->cert_lock);
  return ok ? creds : NULL;
}

static const gnutls_datum_t http11 = {(unsigned char *)"http/1.1", 8};

static int handshake(gnutls_session_t session) {
  int ret;
  do
    ret = gnutls_handshake(session);
  while (ret < 0 && !gnutls_error_is_fatal(ret));
  return ret;
}

/* Reads from session into buf (up to size) waiting at most timeout_ms; >0 bytes, 0 at the
 * end, <0 on an error or time out */
static ssize_t tls_read(gnutls_session_t session, int fd, void *buf, size_t size, int timeout_ms) {
  for (;;) {
    if (gnutls_record_check_pending(session) == 0) {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      int r = poll(&p, 1, timeout_ms);
      if (r == 0)
        return -1;
      if (r < 0 && errno != EINTR)
        return -1;
      if (r < 0)
        continue;
    }
    ssize_t n = gnutls_record_recv(session, buf, size);
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
      continue;
    if (n == GNUTLS_E_PREMATURE_TERMINATION)
      return 0;
    return n;
  }
}

static gboolean tls_write(gnutls_session_t session, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = gnutls_record_send(session, p, len);
    /* the sockets block, with a send deadline: EAGAIN is that deadline passing */
    if (n == GNUTLS_E_INTERRUPTED)
      continue;
    if (n <= 0)
      return FALSE;
    p += n;
    len -= (size_t)n;
  }
  return TRUE;
}

/* The swaps for a request to name:port, with fresh values: a command secret that is stale
 * (401) or older than its ttl is fetched again first. Values are copied (the caller wipes). */
static HutchBrokerSwap *current_swaps(HutchBroker *b, const char *name, guint port) {
  HutchBrokerSwap *swaps = g_new0(HutchBrokerSwap, b->n_secrets);
  g_mutex_lock(&b->lock);
  gint64 now = g_get_monotonic_time();
  for (guint i = 0; i < b->n_secrets; i++) {
    Secret *s = &b->secrets[i];
    swaps[i].secret = s->name;
    swaps[i].placeholder = s->placeholder;
    if (!secret_covers(s, name, port))
      continue;
    gboolean expired = s->ttl > 0 && now - s->fetched > (gint64)s->ttl * G_USEC_PER_SEC;
    if (s->source != HUTCH_SECRET_ENV && (s->stale || expired)) {
      g_autoptr(GError) error = NULL;
      char *slot = (char *)b->locked + i * (HUTCH_BROKER_MAX_VALUE + 1);
      /* into a copy first: a failed fetch keeps the value there was */
      g_autofree char *previous = s->value ? g_strdup(s->value) : NULL;
      if (fetch(b, s, slot, &error)) {
        broker_log(b, "note", name, NULL, port, "secret %s fetched again (%s)", s->name,
                   expired ? "its ttl passed" : "the upstream answered 401");
      } else {
        broker_log(b, "fail", name, NULL, port, "secret %s could not be fetched again: %s", s->name,
                   error->message);
        if (previous) {
          g_strlcpy(slot, previous, HUTCH_BROKER_MAX_VALUE + 1);
          s->value = slot;
        }
        s->stale = FALSE;
        s->fetched = now;
      }
      if (previous)
        explicit_bzero(previous, strlen(previous));
    }
    swaps[i].value = s->value ? g_strdup(s->value) : NULL;
  }
  g_mutex_unlock(&b->lock);
  return swaps;
}

static void free_swaps(HutchBrokerSwap *swaps, guint n) {
  for (guint i = 0; i < n; i++)
    if (swaps[i].value) {
      explicit_bzero((char *)swaps[i].value, strlen(swaps[i].value));
      g_free((char *)swaps[i].value);
    }
  g_free(swaps);
}

/* After a 401 for a request that carried command secrets: fetch them at the next request,
 * unless fetched in the last REFETCH_MIN_S (the guest can make 401s at will: it must not
 * run the user's command on demand). Whether any was marked. */
static gboolean mark_stale(HutchBroker *b, HutchBrokerSwap *swaps) {
  gboolean marked = FALSE;
  gint64 now = g_get_monotonic_time();
  g_mutex_lock(&b->lock);
  for (guint i = 0; i < b->n_secrets; i++)
    if (swaps[i].used && b->secrets[i].source == HUTCH_SECRET_COMMAND &&
        now - b->secrets[i].fetched >= b->refetch_min_us) {
      b->secrets[i].stale = TRUE;
      marked = TRUE;
    }
  g_mutex_unlock(&b->lock);
  return marked;
}

static char *names_of(HutchBrokerSwap *swaps, guint n, gboolean used) {
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < n; i++)
    if (used ? swaps[i].used : swaps[i].kept)
      g_string_append_printf(s, "%s%s", s->len ? ", " : "", swaps[i].secret);
  return g_string_free(s, FALSE);
}

/* The command secrets whose value went into the request, ", "-separated */
static char *command_names_used(HutchBroker *b, HutchBrokerSwap *swaps) {
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < b->n_secrets; i++)
    if (swaps[i].used && b->secrets[i].source == HUTCH_SECRET_COMMAND)
      g_string_append_printf(s, "%s%s", s->len ? ", " : "", swaps[i].secret);
  return g_string_free(s, FALSE);
}

/* What an answer must not hold of a value that went into its request: the value itself and,
 * for a value of BASE64_FORM_MIN bytes or more, its base64 at each of the three alignments
 * (the characters that encode the value's bytes alone), one of which any base64 text holding
 * the value holds: the broker itself sends values base64-encoded inside "Authorization:
 * Basic", and a server that echoes that header back would otherwise hand the guest the value
 * in base64. lead: the characters before a form that still encode some of the value's first
 * bytes (the group it shares with what precedes it), cut with it. */
#define BASE64_FORM_MIN 8
typedef struct {
  char *text;
  gsize len, lead;
  const char *secret;
} AnswerNeedle;

static void answer_needle_clear(gpointer p) {
  AnswerNeedle *needle = p;
  explicit_bzero(needle->text, needle->len);
  g_free(needle->text);
}

static GArray *answer_needles(const HutchBrokerSwap *swaps, guint n) {
  GArray *needles = g_array_new(FALSE, FALSE, sizeof(AnswerNeedle));
  g_array_set_clear_func(needles, answer_needle_clear);
  for (guint i = 0; i < n; i++) {
    if (!swaps[i].used || !swaps[i].value || !swaps[i].value[0])
      continue;
    gsize value_len = strlen(swaps[i].value);
    AnswerNeedle raw = {g_strdup(swaps[i].value), value_len, 0, swaps[i].secret};
    g_array_append_val(needles, raw);
    if (value_len < BASE64_FORM_MIN)
      continue;
    /* skip bytes the value shares a group with: its bytes from skip on start a group */
    for (gsize skip = 0; skip < 3; skip++) {
      gsize whole = (value_len - skip) / 3 * 3;
      char *form = g_base64_encode((const guchar *)swaps[i].value + skip, whole);
      AnswerNeedle encoded = {form, strlen(form), skip ? 4 : 0, swaps[i].secret};
      g_array_append_val(needles, encoded);
    }
  }
  return needles;
}

gsize hutch_broker_answer_filter(const HutchBrokerSwap *swaps, guint n, GByteArray *held,
                                 const guint8 *chunk, gsize len, const char **ret_echoed) {
  *ret_echoed = NULL;
  g_byte_array_append(held, chunk, (guint)len);
  if (held->len == 0)
    return 0;
  g_autoptr(GArray) needles = answer_needles(swaps, n);
  gsize first = held->len; /* where the first value (or its encoded form) in held starts */
  for (guint i = 0; i < needles->len; i++) {
    const AnswerNeedle *needle = &g_array_index(needles, AnswerNeedle, i);
    const guint8 *at = memmem(held->data, held->len, needle->text, needle->len);
    if (!at)
      continue;
    gsize pos = (gsize)(at - held->data);
    gsize cut = pos > needle->lead ? pos - needle->lead : 0;
    if (cut < first) {
      first = cut;
      *ret_echoed = needle->secret;
    }
  }
  if (*ret_echoed)
    return first;
  /* held's end, when it is the start of a value or form (split across chunks), stays for
   * the next chunk to tell */
  gsize keep = 0;
  for (guint i = 0; i < needles->len; i++) {
    const AnswerNeedle *needle = &g_array_index(needles, AnswerNeedle, i);
    for (gsize k = MIN(needle->len - 1, held->len); k > 0; k--)
      if (memcmp(held->data + held->len - k, needle->text, k) == 0) {
        keep = MAX(keep, MIN(k + needle->lead, held->len));
        break;
      }
  }
  return held->len - keep;
}

/* Gives the guest the first count bytes of held and drops them from it (wiped: they may
 * be a value's start that turned out to be none) */
static gboolean release_held(gnutls_session_t guest, GByteArray *held, gsize count) {
  if (count == 0)
    return TRUE; /* (an empty array's data may be NULL, which explicit_bzero must not get) */
  gboolean ok = tls_write(guest, held->data, count);
  explicit_bzero(held->data, count);
  g_byte_array_remove_range(held, 0, (guint)count);
  return ok;
}

/* Relays both ways until the upstream's side ended (or an error, or IDLE_TIMEOUT_MS of
 * silence); reads the upstream's status line for 401, and its answer for the values */
static void relay(HutchBroker *b, gnutls_session_t guest, int guest_fd, gnutls_session_t up,
                  int up_fd, HutchBrokerSwap *swaps, const char *name, const char *address,
                  guint port) {
  gboolean guest_open = TRUE, status_seen = FALSE;
  g_autofree guint8 *buf = g_malloc(16 * 1024);
  GByteArray *held = g_byte_array_new(); /* the answer's bytes not yet given to the guest */
  gint64 held_since = 0;                 /* the upstream's last bytes, while some are held */
  for (;;) {
    int hold_ms = IDLE_TIMEOUT_MS;
    if (held->len > 0) {
      gint64 left_ms = ANSWER_HOLD_MS - (g_get_monotonic_time() - held_since) / 1000;
      /* a value's first bytes, and nothing came after them in time: an answer that ends
       * there, or a stream waiting for its next message (a WebSocket), is not held up */
      if (left_ms <= 0 && !release_held(guest, held, held->len))
        break;
      hold_ms = left_ms <= 0 ? IDLE_TIMEOUT_MS : (int)left_ms;
    }
    /* a guest side that ended is not polled (its hang-up would wake every poll) */
    struct pollfd p[2] = {{.fd = guest_open ? guest_fd : -1, .events = POLLIN},
                          {.fd = up_fd, .events = POLLIN}};
    gboolean guest_pending = guest_open && gnutls_record_check_pending(guest) > 0;
    gboolean up_pending = gnutls_record_check_pending(up) > 0;
    int r = guest_pending || up_pending ? 1 : poll(p, 2, hold_ms);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0 && held->len > 0)
      continue; /* released at the loop's top */
    if (r <= 0)
      break;
    if (guest_open && (guest_pending || (!up_pending && p[0].revents != 0))) {
      ssize_t n = gnutls_record_recv(guest, buf, 16 * 1024);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
        continue;
      if (n <= 0) {
        guest_open = FALSE;
        gnutls_bye(up, GNUTLS_SHUT_WR);
        shutdown(up_fd, SHUT_WR);
      } else if (!tls_write(up, buf, (size_t)n)) {
        break;
      }
    }
    if (up_pending || (!guest_pending && p[1].revents != 0)) {
      ssize_t n = gnutls_record_recv(up, buf, 16 * 1024);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
        continue;
      if (n <= 0) {
        /* the answer is complete: what was held could not start a value after all */
        release_held(guest, held, held->len);
        break;
      }
      if (!status_seen) {
        status_seen = TRUE;
        if (n >= 12 && memcmp(buf, "HTTP/1.", 7) == 0 && memcmp(buf + 8, " 401", 4) == 0) {
          g_autofree char *commands = command_names_used(b, swaps);
          if (*commands && mark_stale(b, swaps))
            broker_log(b, "note", name, address, port,
                       "the upstream answered 401 to a request with %s: fetched again for the "
                       "next request",
                       commands);
        }
      }
      const char *echoed = NULL;
      gsize count = hutch_broker_answer_filter(swaps, b->n_secrets, held, buf, (gsize)n, &echoed);
      gboolean written = release_held(guest, held, count);
      held_since = g_get_monotonic_time(); /* the upstream was not silent */
      if (echoed) {
        broker_log(b, "fail", name, address, port,
                   "the answer held the real value of %s: the connection is cut there (the "
                   "guest got the answer up to the bytes before)",
                   echoed);
        break;
      }
      if (!written)
        break;
    }
  }
  if (held->len > 0)
    explicit_bzero(held->data, held->len);
  g_byte_array_unref(held);
  explicit_bzero(buf, 16 * 1024);
  gnutls_bye(guest, GNUTLS_SHUT_WR);
}

/* Blocking, with a deadline on every send (a peer that stops reading does not hold the
 * thread, and a send does not spin on EAGAIN) */
static void blocking_with_timeouts(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0)
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  struct timeval timeout = {.tv_sec = TLS_TIMEOUT_MS / 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
}

/* Tells the guest why its request went nowhere (the connection ends after it) */
static void answer_502(gnutls_session_t guest, const char *format, ...) G_GNUC_PRINTF(2, 3);

static void answer_502(gnutls_session_t guest, const char *format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char *why = g_strdup_vprintf(format, args);
  va_end(args);
  g_autofree char *body = g_strdup_printf("hutch credential broker: %s\n", why);
  g_autofree char *response = g_strdup_printf(
      "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
      "Connection: close\r\nX-Hutch-Broker: failed\r\n\r\n%s",
      strlen(body), body);
  tls_write(guest, response, strlen(response));
}

/* The request line as the guest sent it (placeholders, never a value), for the log: made
 * printable UTF-8 (the guest's bytes; invalid UTF-8 would make the log's JSON line
 * unreadable, so the record would not show in `hutch net --log`) and cut at a character */
static char *request_line(const char *head) {
  const char *end = strstr(head, "\r\n");
  gsize len = end ? (gsize)(end - head) : strlen(head);
  char *line = hutch_text_sanitize(head, (gssize)MIN(len, 800), HUTCH_TEXT_LINE);
  hutch_text_truncate(line, 200);
  return line;
}

void hutch_broker_serve(HutchBroker *b, int guest_fd, const char *name, guint port,
                        HutchBrokerConnect connect, gpointer connect_data) {
  gnutls_session_t up = NULL, guest = NULL;
  HutchBrokerSwap *swaps = NULL;
  GString *head = NULL;
  char *rewritten = NULL;
  gsize rewritten_len = 0;
  int upstream_fd = -1;
  g_autoptr(GError) error = NULL;
  /* before the first goto */
  g_autofree char *used = NULL, *kept = NULL, *line = NULL, *address = NULL, *reason = NULL;
  g_autofree char *not_for = NULL;
  blocking_with_timeouts(guest_fd);

  /* the guest's side: a certificate for the name it looked up */
  gnutls_certificate_credentials_t creds = server_credentials(b, name, &error);
  if (!creds) {
    broker_log(b, "fail", name, NULL, port, "a certificate for %s: %s", name, error->message);
    goto out;
  }
  int ret = gnutls_init(&guest, GNUTLS_SERVER);
  if (ret >= 0)
    ret = gnutls_set_default_priority(guest);
  if (ret >= 0)
    ret = gnutls_credentials_set(guest, GNUTLS_CRD_CERTIFICATE, creds);
  if (ret >= 0)
    ret = gnutls_alpn_set_protocols(guest, &http11, 1, GNUTLS_ALPN_SERVER_PRECEDENCE);
  if (ret >= 0) {
    gnutls_transport_set_int(guest, guest_fd);
    gnutls_handshake_set_timeout(guest, TLS_TIMEOUT_MS);
    /* a record that starts and never ends does not hold the thread */
    gnutls_record_set_timeout(guest, TLS_TIMEOUT_MS);
    ret = handshake(guest);
  }
  if (ret < 0) {
    broker_log(b, "fail", name, NULL, port,
               "the guest's TLS: %s (a client that does not trust the VM's broker CA?)",
               gnutls_strerror(ret));
    goto out;
  }

  /* the request head, whole */
  head = g_string_sized_new(4096);
  const char *end = NULL;
  gint64 deadline = g_get_monotonic_time() + (gint64)TLS_TIMEOUT_MS * 1000;
  while (!end) {
    gint64 left_ms = (deadline - g_get_monotonic_time()) / 1000;
    if (head->len >= MAX_HEAD || left_ms <= 0) {
      broker_log(b, "fail", name, NULL, port,
                 head->len >= MAX_HEAD ? "the request head passed %d bytes"
                                       : "no whole request head within %d ms",
                 head->len >= MAX_HEAD ? MAX_HEAD : TLS_TIMEOUT_MS);
      goto out;
    }
    char chunk[4096];
    ssize_t n =
        tls_read(guest, guest_fd, chunk, MIN(sizeof chunk, MAX_HEAD - head->len), (int)left_ms);
    if (n <= 0)
      goto out; /* the guest went without a request */
    /* searched from where the new bytes could complete an end (not from the start again) */
    gsize from = head->len > 3 ? head->len - 3 : 0;
    g_string_append_len(head, chunk, n);
    end = memmem(head->str + from, head->len - from, "\r\n\r\n", 4);
  }
  gsize head_len = (gsize)(end + 4 - head->str);
  line = request_line(head->str);
  swaps = current_swaps(b, name, port);
  if (!hutch_broker_request_is_for(head->str, head_len, name, port, &not_for) ||
      g_str_has_prefix(head->str, "TRACE ")) {
    /* a request that may go to another server than name gets no value; nor does TRACE,
     * which echoes the request back to the guest */
    if (!not_for)
      not_for = g_strdup("TRACE echoes the request back");
    for (guint i = 0; i < b->n_secrets; i++)
      if (swaps[i].value) {
        explicit_bzero((char *)swaps[i].value, strlen(swaps[i].value));
        g_clear_pointer((char **)&swaps[i].value, g_free);
      }
  }
  rewritten = hutch_broker_rewrite_head(head->str, head_len, swaps, b->n_secrets, &rewritten_len);
  if (!rewritten) {
    broker_log(b, "fail", name, NULL, port, "not an HTTP/1 request: the connection is closed");
    goto out;
  }
  used = names_of(swaps, b->n_secrets, TRUE);
  kept = names_of(swaps, b->n_secrets, FALSE);
  if (*used)
    broker_log(b, "inject", name, NULL, port, "the real value of %s put into \"%s\"", used, line);
  if (*kept)
    broker_log(b, "keep", name, NULL, port, "the placeholder of %s left as it is in \"%s\": %s",
               kept, line,
               not_for ? not_for
                       : "only the credential headers of a request to the secret's hosts get "
                         "the value");
  if (!*used && !*kept)
    broker_log(b, "note", name, NULL, port, "no placeholder in \"%s\"", line);

  /* the upstream, as the policy allows it, verified for the name the guest looked up: only
   * then does the request (and the value in it) go out */
  upstream_fd = connect(name, port, &address, &reason, connect_data);
  if (upstream_fd < 0) {
    answer_502(guest, "%s:%u could not be reached: %s", name, port, reason ? reason : "?");
    goto out;
  }
  blocking_with_timeouts(upstream_fd);
  ret = gnutls_init(&up, GNUTLS_CLIENT);
  if (ret >= 0)
    ret = gnutls_set_default_priority(up);
  if (ret >= 0)
    ret = gnutls_credentials_set(up, GNUTLS_CRD_CERTIFICATE, b->trust);
  if (ret >= 0)
    ret = gnutls_server_name_set(up, GNUTLS_NAME_DNS, name, strlen(name));
  if (ret >= 0)
    ret = gnutls_alpn_set_protocols(up, &http11, 1, 0);
  if (ret >= 0) {
    gnutls_session_set_verify_cert(up, name, 0);
    gnutls_transport_set_int(up, upstream_fd);
    gnutls_handshake_set_timeout(up, TLS_TIMEOUT_MS);
    gnutls_record_set_timeout(up, TLS_TIMEOUT_MS);
    ret = handshake(up);
  }
  if (ret < 0) {
    const char *why = gnutls_strerror(ret);
    g_autofree char *status_text = NULL;
    if (ret == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
      gnutls_datum_t out = {0};
      if (gnutls_certificate_verification_status_print(gnutls_session_get_verify_cert_status(up),
                                                       GNUTLS_CRT_X509, &out, 0) >= 0) {
        status_text = g_strndup((const char *)out.data, out.size);
        gnutls_free(out.data);
        why = status_text;
      }
    }
    broker_log(b, "fail", name, address, port, "the upstream's TLS: %s (the request was not sent)",
               why);
    answer_502(guest, "the TLS of %s:%u failed: %s", name, port, why);
    goto out;
  }
  gboolean sent =
      tls_write(up, rewritten, rewritten_len) &&
      (head->len == head_len || tls_write(up, head->str + head_len, head->len - head_len));
  explicit_bzero(rewritten, rewritten_len);
  if (sent)
    relay(b, guest, guest_fd, up, upstream_fd, swaps, name, address, port);

out:
  if (head) {
    explicit_bzero(head->str, head->allocated_len);
    g_string_free(head, TRUE);
  }
  if (rewritten) {
    explicit_bzero(rewritten, rewritten_len);
    g_free(rewritten);
  }
  if (swaps)
    free_swaps(swaps, b->n_secrets);
  if (guest)
    gnutls_deinit(guest);
  if (up)
    gnutls_deinit(up);
  close(guest_fd);
  if (upstream_fd >= 0)
    close(upstream_fd);
}
