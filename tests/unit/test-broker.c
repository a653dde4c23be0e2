/* Unit tests for broker.c: host patterns, the request head's rewrite, the checks at create,
 * the VM's CA and placeholders, fetching the values, and hutch_broker_serve end to end in
 * this process (a guest TLS client, the broker in a thread, a fake upstream TLS server with
 * certificates made here).
 */
#include "config.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker-private.h"
#include "util-private.h"
#include "policy-fixture.h"

/* the host variables these tests set (each test unsets what it set) */
#define ENV_A "HUTCH_TEST_BROKER_A"
#define ENV_B "HUTCH_TEST_BROKER_B"
#define ENV_UNSET "HUTCH_TEST_BROKER_UNSET"

/* ---- Helpers -------------------------------------------------------------------------- */

static void assert_contains(const char *text, const char *part) {
  if (!text || !strstr(text, part))
    g_error("'%s' does not contain '%s'", text ? text : "(null)", part);
}

static void assert_lacks(const char *text, const char *part) {
  if (text && strstr(text, part))
    g_error("'%s' contains '%s'", text, part);
}

static HutchProfile *load_profile(const char *yaml) {
  g_autoptr(GError) error = NULL;
  HutchProfile *p = hutch_profile_load_data(yaml, strlen(yaml), "/tmp/broker-test.yaml", &error);
  g_assert_no_error(error);
  g_assert_nonnull(p);
  return p;
}

static char *make_dir(void) {
  g_autoptr(GError) error = NULL;
  char *dir = g_dir_make_tmp("hutch-broker-XXXXXX", &error);
  g_assert_no_error(error);
  return dir;
}

static void remove_dir(char *dir) {
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_rmtree(dir, &error));
  g_assert_no_error(error);
  g_free(dir);
}

static void write_text(const char *path, const char *text) {
  g_autoptr(GError) error = NULL;
  g_assert_true(g_file_set_contents(path, text, -1, &error));
  g_assert_no_error(error);
}

static gboolean file_exists(const char *dir, const char *name) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  return g_file_test(path, G_FILE_TEST_EXISTS);
}

/* The value of NAME in a NULL-terminated "NAME=VALUE" list, or NULL */
static const char *env_value(char **env, const char *name) {
  gsize n = strlen(name);
  for (char **e = env; e && *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
      return *e + n + 1;
  return NULL;
}

static gboolean is_placeholder(const char *text) {
  return g_regex_match_simple("^hutch-placeholder-[0-9a-f]{32}$", text, 0, 0);
}

/* Makes the instance's broker files from the profile; returns the guest's variables */
static char **create_into(const HutchProfile *profile, const char *dir) {
  g_autoptr(GError) error = NULL;
  g_autofree char *ca = NULL;
  char **env = NULL;
  g_auto(GStrv) notes = NULL;
  g_assert_true(hutch_broker_create(profile, "vm", dir, &ca, &env, &notes, &error));
  g_assert_no_error(error);
  g_assert_nonnull(ca);
  g_assert_nonnull(env);
  return env;
}

/* The broker's log, as lines "VERDICT|NAME|REASON" (called from the broker's threads) */
typedef struct {
  GMutex lock;
  GPtrArray *lines;
} Log;

static void log_init(Log *log) {
  g_mutex_init(&log->lock);
  log->lines = g_ptr_array_new_with_free_func(g_free);
}

static void log_clear(Log *log) {
  g_ptr_array_unref(log->lines);
  g_mutex_clear(&log->lock);
}

static void log_cb(const char *verdict, const char *name, const char *address, guint port,
                   const char *reason, gpointer data) {
  (void)address;
  (void)port;
  Log *log = data;
  g_assert_nonnull(verdict);
  g_assert_nonnull(reason);
  g_mutex_lock(&log->lock);
  g_ptr_array_add(log->lines, g_strdup_printf("%s|%s|%s", verdict, name ? name : "", reason));
  g_mutex_unlock(&log->lock);
}

/* Whether a line has this verdict and holds part in its reason */
static gboolean log_has(Log *log, const char *verdict, const char *part) {
  gboolean found = FALSE;
  g_autofree char *prefix = g_strconcat(verdict, "|", NULL);
  g_mutex_lock(&log->lock);
  for (guint i = 0; i < log->lines->len && !found; i++) {
    const char *line = g_ptr_array_index(log->lines, i);
    found = g_str_has_prefix(line, prefix) && strstr(line, part) != NULL;
  }
  g_mutex_unlock(&log->lock);
  return found;
}

static void assert_log_has(Log *log, const char *verdict, const char *part) {
  if (log_has(log, verdict, part))
    return;
  g_mutex_lock(&log->lock);
  for (guint i = 0; i < log->lines->len; i++)
    g_printerr("# log: %s\n", (const char *)g_ptr_array_index(log->lines, i));
  g_mutex_unlock(&log->lock);
  g_error("no log line '%s' with '%s'", verdict, part);
}

static void assert_log_lacks_text(Log *log, const char *text) {
  g_mutex_lock(&log->lock);
  for (guint i = 0; i < log->lines->len; i++)
    assert_lacks(g_ptr_array_index(log->lines, i), text);
  g_mutex_unlock(&log->lock);
}

/* ---- Host patterns -------------------------------------------------------------------- */

static void test_host_exact(void) {
  g_assert_true(hutch_broker_host_matches("api.test", "api.test", 443));
  g_assert_true(hutch_broker_host_matches("api.test", "API.Test", 443));
  g_assert_true(hutch_broker_host_matches("API.TEST", "api.test", 443));
  g_assert_false(hutch_broker_host_matches("api.test", "api.test.evil", 443));
  g_assert_false(hutch_broker_host_matches("api.test", "x.api.test", 443));
  g_assert_false(hutch_broker_host_matches("api.test", "pi.test", 443));
  g_assert_false(hutch_broker_host_matches("api.test", "", 443));
}

static void test_host_wildcard(void) {
  g_assert_true(hutch_broker_host_matches("*.x.org", "a.x.org", 443));
  g_assert_true(hutch_broker_host_matches("*.x.org", "a.b.x.org", 443));
  g_assert_true(hutch_broker_host_matches("*.x.org", "A.X.ORG", 443));
  /* the name itself too, as in the egress policy and the CA's name constraint */
  g_assert_true(hutch_broker_host_matches("*.x.org", "x.org", 443));
  g_assert_false(hutch_broker_host_matches("*.x.org", "evilx.org", 443));
  g_assert_false(hutch_broker_host_matches("*.x.org", ".x.org", 443));
  g_assert_false(hutch_broker_host_matches("*.x.org", "a.x.org.evil", 443));
  g_assert_false(hutch_broker_host_matches("*.x.org", "org", 443));
  g_assert_false(hutch_broker_host_matches("*.x.org", "a.x.org", 80));
}

static void test_host_ports(void) {
  /* no port: 443 only */
  g_assert_true(hutch_broker_host_matches("api.test", "api.test", 443));
  g_assert_false(hutch_broker_host_matches("api.test", "api.test", 80));
  g_assert_false(hutch_broker_host_matches("api.test", "api.test", 8443));
  /* NAME:PORT: that port only */
  g_assert_true(hutch_broker_host_matches("api.test:8443", "api.test", 8443));
  g_assert_false(hutch_broker_host_matches("api.test:8443", "api.test", 443));
  g_assert_true(hutch_broker_host_matches("api.test:443", "api.test", 443));
  g_assert_true(hutch_broker_host_matches("*.x.org:8443", "a.x.org", 8443));
  g_assert_false(hutch_broker_host_matches("*.x.org:8443", "a.x.org", 443));
  g_assert_true(hutch_broker_host_matches("a.test:1", "a.test", 1));
  g_assert_true(hutch_broker_host_matches("a.test:65535", "a.test", 65535));
}

static void test_host_garbage(void) {
  g_assert_false(hutch_broker_host_matches(NULL, "api.test", 443));
  g_assert_false(hutch_broker_host_matches("api.test", NULL, 443));
  const char *bad[] = {"api.test:",     "api.test:0",       "api.test:65536",
                       "api.test:-1",   "api.test:44x",     "api.test:+443",
                       "api.test: 443", "api.test:443:443", "api.test:99999999999999999999"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
    if (hutch_broker_host_matches(bad[i], "api.test", 443) ||
        hutch_broker_host_matches(bad[i], "api.test", 0))
      g_error("'%s' matched api.test", bad[i]);
}

/* ---- The request head ----------------------------------------------------------------- */

#define PH1 "hutch-placeholder-11111111111111111111111111111111"
#define PH2 "hutch-placeholder-22222222222222222222222222222222"
#define PH3 "hutch-placeholder-33333333333333333333333333333333"

/* Rewrites head (copied to a buffer of its exact length, so that a read past its end is
 * seen by ASan/valgrind); NULL when refused */
static char *rewrite_len(const char *head, gsize len, HutchBrokerSwap *swaps, guint n) {
  g_autofree char *copy = g_malloc(MAX(len, 1)); /* never NULL, even empty */
  memcpy(copy, head, len);
  gsize out_len = 12345;
  char *out = hutch_broker_rewrite_head(copy, len, swaps, n, &out_len);
  if (out)
    g_assert_cmpuint(out_len, ==, strlen(out));
  else
    g_assert_cmpuint(out_len, ==, 12345); /* untouched */
  return out;
}

static char *rewrite(const char *head, HutchBrokerSwap *swaps, guint n) {
  return rewrite_len(head, strlen(head), swaps, n);
}

static void swaps_init(HutchBrokerSwap *swaps) {
  swaps[0] = (HutchBrokerSwap){"ONE", PH1, "value-one", FALSE, FALSE};
  swaps[1] = (HutchBrokerSwap){"TWO", PH2, "value-two", FALSE, FALSE};
  swaps[2] = (HutchBrokerSwap){"THREE", PH3, NULL, FALSE, FALSE};
}

static void test_rewrite_header(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  g_autofree char *out = rewrite("GET /v1/models HTTP/1.1\r\n"
                                 "Host: api.test\r\n"
                                 "x-api-key: " PH1 "\r\n"
                                 "Accept: */*\r\n"
                                 "\r\n",
                                 swaps, 3);
  g_assert_cmpstr(out, ==,
                  "GET /v1/models HTTP/1.1\r\n"
                  "Host: api.test\r\n"
                  "x-api-key: value-one\r\n"
                  "Accept: */*\r\n"
                  "Accept-Encoding: identity\r\n"
                  "Connection: close\r\n"
                  "\r\n");
  g_assert_true(swaps[0].used);
  g_assert_false(swaps[0].kept);
  /* the others were not in the head */
  g_assert_false(swaps[1].used || swaps[1].kept || swaps[2].used || swaps[2].kept);
}

/* The request line never gets a value: a server that echoes its path (an error message, a
 * redirect) would hand it to the guest */
static void test_rewrite_request_line(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  g_autofree char *out =
      rewrite("POST /search?key=" PH2 "&q=1 HTTP/1.0\r\nHost: api.test\r\n\r\n", swaps, 3);
  g_assert_cmpstr(out, ==,
                  "POST /search?key=" PH2 "&q=1 HTTP/1.0\r\nHost: api.test\r\n"
                  "Connection: close\r\n\r\n");
  g_assert_true(swaps[1].kept && !swaps[1].used);
  g_assert_false(swaps[0].used || swaps[0].kept);
}

/* Several placeholders: values go into the credential headers only (any case, repeated, side
 * by side); anywhere else they stay and are said to */
static void test_rewrite_several(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  g_autofree char *out = rewrite("GET /a?x=" PH1 " HTTP/1.1\r\n"
                                 "Authorization: Bearer " PH2 "\r\n"
                                 "X-API-KEY: " PH1 PH2 "," PH1 "\r\n"
                                 "x-goog-api-key: " PH1 "\r\n"
                                 "X-Both: " PH1 "\r\n"
                                 "X-Api-Key-Echo: " PH2 "\r\n"
                                 "X-Other: " PH3 "\r\n"
                                 "Accept-Encoding: gzip, br\r\n"
                                 "\r\n",
                                 swaps, 3);
  g_assert_cmpstr(out, ==,
                  "GET /a?x=" PH1 " HTTP/1.1\r\n"
                  "Authorization: Bearer value-two\r\n"
                  "X-API-KEY: value-onevalue-two,value-one\r\n"
                  "x-goog-api-key: value-one\r\n"
                  "X-Both: " PH1 "\r\n"
                  "X-Api-Key-Echo: " PH2 "\r\n"
                  "X-Other: " PH3 "\r\n"
                  "Accept-Encoding: identity\r\n"
                  "Connection: close\r\n"
                  "\r\n");
  g_assert_true(swaps[0].used && swaps[0].kept);
  g_assert_true(swaps[1].used && swaps[1].kept);
  /* a placeholder without a value (not for this destination) is left and said so */
  g_assert_true(!swaps[2].used && swaps[2].kept);
  /* without any value going in, the request's Accept-Encoding stays (moved to the end) */
  HutchBrokerSwap none[1] = {{"THREE", PH3, NULL, FALSE, FALSE}};
  g_autofree char *plain =
      rewrite("GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nX-Api-Key: " PH3 "\r\n\r\n", none, 1);
  g_assert_cmpstr(plain, ==,
                  "GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nX-Api-Key: " PH3 "\r\n"
                  "Connection: close\r\n\r\n");
  g_assert_true(none[0].kept);
}

/* The request is for the server connected to: origin-form target, one Host naming it */
static void test_request_is_for(void) {
  struct {
    const char *head;
    gboolean ok;
  } cases[] = {
      {"GET /v1 HTTP/1.1\r\nHost: api.test\r\n\r\n", TRUE},
      {"GET /v1 HTTP/1.1\r\nhost: API.test:443\r\n\r\n", TRUE},
      {"OPTIONS * HTTP/1.1\r\nHost: api.test\r\n\r\n", TRUE},
      {"GET /v1 HTTP/1.1\r\nHost: other.test\r\n\r\n", FALSE},
      {"GET /v1 HTTP/1.1\r\nHost: api.test:8443\r\n\r\n", FALSE},
      {"GET /v1 HTTP/1.1\r\n\r\n", FALSE},                                      /* no Host */
      {"GET /v1 HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n", FALSE}, /* two */
      {"GET https://evil.test/v1 HTTP/1.1\r\nHost: api.test\r\n\r\n", FALSE},   /* absolute */
      {"GET api.test/v1 HTTP/1.1\r\nHost: api.test\r\n\r\n", FALSE},
      {"GET /v1 HTTP/1.1\nHost: api.test\r\n\r\n", FALSE}, /* a bare LF */
  };
  for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *why = NULL;
    gboolean ok =
        hutch_broker_request_is_for(cases[i].head, strlen(cases[i].head), "api.test", 443, &why);
    if (ok != cases[i].ok)
      g_error("case %u (%s): %s", i, cases[i].head, why ? why : "accepted");
    g_assert_true(ok || why);
  }
}

/* The token of the "Authorization: Basic" line of a head, decoded */
static char *basic_of(const char *head) {
  const char *line = strstr(head, "Authorization: Basic ");
  g_assert_nonnull(line);
  line += strlen("Authorization: Basic ");
  g_autofree char *token = g_strndup(line, strstr(line, "\r\n") - line);
  gsize len = 0;
  guchar *decoded = g_base64_decode(token, &len);
  char *text = g_strndup((const char *)decoded, len);
  g_free(decoded);
  return text;
}

static void test_rewrite_basic(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  g_autofree char *b64 = g_base64_encode((const guchar *)"user:" PH1, strlen("user:" PH1));
  g_autofree char *head =
      g_strdup_printf("GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Basic %s\r\n\r\n", b64);
  g_autofree char *out = rewrite(head, swaps, 3);
  g_assert_nonnull(out);
  g_autofree char *decoded = basic_of(out);
  g_assert_cmpstr(decoded, ==, "user:value-one");
  assert_lacks(out, b64);
  g_assert_true(swaps[0].used);
  assert_contains(out, "Host: api.test\r\n");
  g_assert_true(g_str_has_suffix(out, "\r\nConnection: close\r\n\r\n"));

  /* the placeholder as the user and the password, each replaced */
  swaps_init(swaps);
  g_autofree char *both = g_base64_encode((const guchar *)PH2 ":" PH1, strlen(PH2 ":" PH1));
  g_autofree char *head2 =
      g_strdup_printf("GET / HTTP/1.1\r\nAuthorization: Basic %s\r\n\r\n", both);
  g_autofree char *out2 = rewrite(head2, swaps, 3);
  g_autofree char *decoded2 = basic_of(out2);
  g_assert_cmpstr(decoded2, ==, "value-two:value-one");
  g_assert_true(swaps[0].used && swaps[1].used);

  /* one without a value stays (encoded) and is marked kept */
  swaps_init(swaps);
  g_autofree char *kept = g_base64_encode((const guchar *)"u:" PH3, strlen("u:" PH3));
  g_autofree char *head3 =
      g_strdup_printf("GET / HTTP/1.1\r\nAuthorization: Basic %s\r\n\r\n", kept);
  g_autofree char *out3 = rewrite(head3, swaps, 3);
  g_autofree char *decoded3 = basic_of(out3);
  g_assert_cmpstr(decoded3, ==, "u:" PH3);
  g_assert_true(swaps[2].kept && !swaps[2].used);

  /* a Bearer token is replaced as it is, never base64-decoded */
  swaps_init(swaps);
  g_autofree char *out4 =
      rewrite("GET / HTTP/1.1\r\nAuthorization: Bearer " PH1 "\r\n\r\n", swaps, 3);
  assert_contains(out4, "\r\nAuthorization: Bearer value-one\r\n");
}

/* "Authorization: Basic PLACEHOLDER" where the value is itself the encoded "user:password"
 * (a registry token): not base64, so replaced as plain text, not decoded. */
static void test_rewrite_basic_raw_placeholder(void) {
  HutchBrokerSwap swaps[1] = {{"REG", PH1, "dXNlcjpwYXNz", FALSE, FALSE}};
  g_autofree char *out =
      rewrite("GET / HTTP/1.1\r\nAuthorization: Basic " PH1 "\r\n\r\n", swaps, 1);
  g_assert_cmpstr(out, ==,
                  "GET / HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\n"
                  "Accept-Encoding: identity\r\nConnection: close\r\n\r\n");
  g_assert_true(swaps[0].used);
}

static void test_rewrite_connection(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  g_autofree char *out = rewrite("GET / HTTP/1.1\r\n"
                                 "Host: api.test\r\n"
                                 "Connection: keep-alive\r\n"
                                 "Keep-Alive: timeout=5, max=100\r\n"
                                 "proxy-connection: Keep-Alive\r\n"
                                 "connection: TE\r\n"
                                 "X-Connection: mine\r\n"
                                 "Connection-Id: 7\r\n"
                                 "TE: trailers\r\n"
                                 "\r\n",
                                 swaps, 3);
  /* the request's own are gone, one "Connection: close" is there; names that only start
   * alike stay */
  g_assert_cmpstr(out, ==,
                  "GET / HTTP/1.1\r\n"
                  "Host: api.test\r\n"
                  "X-Connection: mine\r\n"
                  "Connection-Id: 7\r\n"
                  "TE: trailers\r\n"
                  "Connection: close\r\n"
                  "\r\n");

  /* a request line alone */
  g_autofree char *bare = rewrite("GET / HTTP/1.1\r\n\r\n", swaps, 3);
  g_assert_cmpstr(bare, ==, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
}

static void test_rewrite_upgrade(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  const char *head = "GET /ws HTTP/1.1\r\n"
                     "Host: api.test\r\n"
                     "Authorization: Bearer " PH1 "\r\n"
                     "Connection: Upgrade\r\n"
                     "Upgrade: websocket\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n";
  g_autofree char *out = rewrite(head, swaps, 3);
  g_assert_cmpstr(out, ==,
                  "GET /ws HTTP/1.1\r\n"
                  "Host: api.test\r\n"
                  "Authorization: Bearer value-one\r\n"
                  "Connection: Upgrade\r\n"
                  "Upgrade: websocket\r\n"
                  "Sec-WebSocket-Version: 13\r\n"
                  "Accept-Encoding: identity\r\n"
                  "\r\n");
  assert_lacks(out, "close");
  /* an Upgrade header without "Connection: upgrade" upgrades nothing: the request's own
   * connection headers go, and it gets "Connection: close" */
  swaps_init(swaps);
  g_autofree char *fake =
      rewrite("GET / HTTP/1.1\r\nUpgrade: x\r\nConnection: keep-alive\r\n\r\n", swaps, 3);
  g_assert_cmpstr(fake, ==, "GET / HTTP/1.1\r\nUpgrade: x\r\nConnection: close\r\n\r\n");
}

static void test_rewrite_body_not_head(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  const char *head = "POST /v1 HTTP/1.1\r\nContent-Length: 55\r\nX-Api-Key: " PH1 "\r\n\r\n";
  g_autofree char *request = g_strconcat(head, "{\"key\": \"" PH2 "\"}", NULL);
  /* the head is what len says: the body after it is neither read nor returned */
  g_autofree char *out = rewrite_len(request, strlen(head), swaps, 3);
  g_assert_cmpstr(out, ==,
                  "POST /v1 HTTP/1.1\r\nContent-Length: 55\r\nX-Api-Key: value-one\r\n"
                  "Accept-Encoding: identity\r\nConnection: close\r\n\r\n");
  g_assert_false(swaps[1].used || swaps[1].kept);
}

static void test_rewrite_malformed(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  const char *bad[] = {
      "",
      "\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n",      /* no empty line */
      "GET / HTTP/1.1\r\nHost: a\r\n\r\nx", /* something after it */
      "GET / HTTP/1.1\n\n",                 /* LF only */
      "get / HTTP/1.1\r\n\r\n",             /* lower-case method */
      "Get / HTTP/1.1\r\n\r\n",
      " GET / HTTP/1.1\r\n\r\n", /* no method */
      "GET / HTTP/2.0\r\n\r\n",  /* not HTTP/1.x */
      "GET /\r\n\r\n",           /* HTTP/0.9 */
      "GET / FTP/1.1\r\n\r\n",
      "GET\r\nHost: a HTTP/1.1\r\n\r\n",              /* the version is not on the request line */
      "\x16\x03\x01\x02\x01\x01\xfc\x03\x03\r\n\r\n", /* a TLS ClientHello */
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",             /* HTTP/2's preface */
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autofree char *out = rewrite(bad[i], swaps, 3);
    if (out)
      g_error("not a request head, yet rewritten: '%s' -> '%s'", bad[i], out);
  }
  g_assert_false(swaps[0].used || swaps[0].kept);
}

/* A NUL byte in a header line: the head is refused, never read past (it was: the line
 * search stopped at the NUL and the line's length ran past the head). */
static void test_rewrite_nul_in_header(void) {
  HutchBrokerSwap swaps[3];
  swaps_init(swaps);
  static const char head[] = "GET / HTTP/1.1\r\nX-Long-Header-Name: a\0b\r\n\r\n";
  g_autofree char *out = rewrite_len(head, sizeof head - 1, swaps, 3);
  g_assert_null(out);
}

/* ---- Checks at create ------------------------------------------------------------------ */


/* NULL when accepted, else the error's message */
static char *check(const char *hosts, HutchEgressMode mode, const char *const *allow,
                   const char *const *deny) {
  g_autofree char *yaml = g_strdup_printf("secrets:\n"
                                          "  - name: FIRST\n"
                                          "    from: env\n"
                                          "    hosts: [other.test]\n"
                                          "  - name: KEY\n"
                                          "    from: env\n"
                                          "    hosts: %s\n",
                                          hosts);
  g_autoptr(HutchProfile) profile = load_profile(yaml);
  g_autoptr(HutchEgressPolicy) policy = policy_of(mode, allow, deny);
  g_autoptr(GError) error = NULL;
  /* required secrets: their variables must be set */
  g_setenv("FIRST", "v1", TRUE);
  g_setenv("KEY", "v2", TRUE);
  gboolean ok = hutch_broker_check(profile, policy, &error);
  g_unsetenv("FIRST");
  g_unsetenv("KEY");
  if (ok) {
    g_assert_no_error(error);
    return NULL;
  }
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  return g_strdup(error->message);
}

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_check_modes(void) {
  g_autofree char *none = check("[api.test]", HUTCH_EGRESS_NONE, NULL, NULL);
  assert_contains(none, "this VM's egress is none");
  assert_contains(none, "secret FIRST");
  g_autofree char *unrestricted = check("[api.test]", HUTCH_EGRESS_UNRESTRICTED, NULL, NULL);
  assert_contains(unrestricted, "unrestricted");
  /* public serves any name, unless denied */
  g_assert_null(check("[api.test, a.x.org, \"b.test:8443\"]", HUTCH_EGRESS_PUBLIC, NULL, NULL));
  g_autofree char *denied = check("[api.test]", HUTCH_EGRESS_PUBLIC, NULL, LIST("api.test"));
  assert_contains(denied, "secret KEY: its host api.test is not allowed");
  assert_contains(denied, "denied by rule 'api.test'");

  /* a profile without secrets needs nothing of the policy */
  g_autoptr(HutchProfile) bare = load_profile("cpus: 1\n");
  g_autoptr(HutchEgressPolicy) policy = hutch_egress_policy_new(HUTCH_EGRESS_NONE);
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_broker_check(bare, policy, &error));
  g_assert_no_error(error);
}

static void test_check_required_source(void) {
  /* a required secret whose source has nothing is refused, naming it; optional passes */
  g_autoptr(HutchProfile) profile = load_profile(
      "secrets:\n  - name: NEEDED\n    from: env:" ENV_UNSET "\n    hosts: [api.test]\n"
      "  - name: SPARE\n    file: /nonexistent/key\n    optional: true\n"
      "    hosts: [api.test]\n");
  g_autoptr(HutchEgressPolicy) policy = hutch_egress_policy_new(HUTCH_EGRESS_PUBLIC);
  g_autoptr(GError) error = NULL;
  g_unsetenv(ENV_UNSET);
  g_assert_false(hutch_broker_check(profile, policy, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  assert_contains(error->message, "secret NEEDED: the host variable " ENV_UNSET " is not set");
  assert_contains(error->message, "optional: true");
  g_clear_error(&error);
  g_setenv(ENV_UNSET, "x", TRUE);
  g_assert_true(hutch_broker_check(profile, policy, &error));
  g_assert_no_error(error);
  g_unsetenv(ENV_UNSET);
}

static void test_check_allowlist(void) {
  const char *const *both = LIST("other.test", "api.test");
  g_assert_null(check("[api.test]", HUTCH_EGRESS_ALLOWLIST, both, NULL));
  /* the host is missing */
  g_autofree char *missing =
      check("[api.test]", HUTCH_EGRESS_ALLOWLIST, LIST("other.test", "api.test.evil"), NULL);
  assert_contains(missing, "secret KEY: its host api.test is not allowed");
  assert_contains(missing, "network.allow");
  /* allowed, and denied too: deny wins */
  g_autofree char *denied = check("[api.test]", HUTCH_EGRESS_ALLOWLIST, both, LIST("api.test"));
  assert_contains(denied, "denied by rule");
  /* host:port: the allow rule must cover the port */
  g_autofree char *port = check("[\"api.test:8443\"]", HUTCH_EGRESS_ALLOWLIST, both, NULL);
  assert_contains(port, "api.test:8443");
  g_assert_null(check("[\"api.test:8443\"]", HUTCH_EGRESS_ALLOWLIST,
                      LIST("other.test", "api.test:8443"), NULL));
  /* a wildcard allow rule covers a secret's host under it (the secret's host is one name) */
  g_assert_null(check("[a.x.org]", HUTCH_EGRESS_ALLOWLIST, LIST("other.test", "*.x.org"), NULL));
  /* the first secret's host too */
  g_autofree char *first = check("[api.test]", HUTCH_EGRESS_ALLOWLIST, LIST("api.test"), NULL);
  assert_contains(first, "secret FIRST: its host other.test");
}

/* ---- The VM's CA and placeholders ------------------------------------------------------ */

static JsonArray *read_broker_json(const char *dir) {
  g_autofree char *path = g_build_filename(dir, HUTCH_BROKER_FILE, NULL);
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) error = NULL;
  g_assert_true(json_parser_load_from_file(parser, path, &error));
  g_assert_no_error(error);
  JsonObject *root = json_node_get_object(json_parser_get_root(parser));
  return json_array_ref(json_object_get_array_member(root, "secrets"));
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
  return g_strcmp0(*(const char *const *)a, *(const char *const *)b);
}

/* The DNS names a CA certificate's name constraints permit, sorted, ", "-joined; asserts
 * the constraints are critical and exclude nothing */
static char *permitted_names(gnutls_x509_crt_t crt) {
  gnutls_x509_name_constraints_t nc = NULL;
  g_assert_cmpint(gnutls_x509_name_constraints_init(&nc), ==, 0);
  unsigned int critical = 0;
  g_assert_cmpint(gnutls_x509_crt_get_name_constraints(crt, nc, 0, &critical), ==, 0);
  g_assert_cmpuint(critical, ==, 1);
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  for (unsigned int i = 0;; i++) {
    unsigned int type = 0;
    gnutls_datum_t name = {0};
    int ret = gnutls_x509_name_constraints_get_permitted(nc, i, &type, &name);
    if (ret == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
      break;
    g_assert_cmpint(ret, ==, 0);
    g_assert_cmpuint(type, ==, GNUTLS_SAN_DNSNAME);
    g_ptr_array_add(names, g_strndup((const char *)name.data, name.size));
  }
  unsigned int type = 0;
  gnutls_datum_t name = {0};
  g_assert_cmpint(gnutls_x509_name_constraints_get_excluded(nc, 0, &type, &name), ==,
                  GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);
  gnutls_x509_name_constraints_deinit(nc);
  g_ptr_array_sort(names, compare_strings);
  g_ptr_array_add(names, NULL);
  return g_strjoinv(", ", (char **)names->pdata);
}

static const char create_yaml[] = "secrets:\n"
                                  "  - name: A_KEY\n"
                                  "    from: env:" ENV_A "\n"
                                  "    hosts: [api.test, a.x.org]\n"
                                  "  - name: B_TOKEN\n"
                                  "    command: printf tok\n"
                                  "    hosts: [\"b.test:8443\", api.test]\n"
                                  "    ttl: 1h\n"
                                  "  - name: C_FILE\n"
                                  "    file: /nonexistent/c\n"
                                  "    hosts: [\"c.test:9000\"]\n"
                                  "  - name: D_OPT\n"
                                  "    from: env:" ENV_UNSET "\n"
                                  "    hosts: [d.test]\n"
                                  "    optional: true\n";

static void test_create(void) {
  g_setenv(ENV_A, "a-value", TRUE);
  g_unsetenv(ENV_UNSET);
  g_autoptr(HutchProfile) profile = load_profile(create_yaml);
  char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autofree char *ca_pem = NULL;
  g_auto(GStrv) env = NULL, notes = NULL;
  g_assert_true(hutch_broker_create(profile, "dev", dir, &ca_pem, &env, &notes, &error));
  g_assert_no_error(error);

  /* broker.json: each secret kept, in order, with a placeholder and no value */
  g_autoptr(JsonArray) secrets = read_broker_json(dir);
  const char *names[] = {"A_KEY", "B_TOKEN", "C_FILE"};
  const char *sources[] = {"env", "command", "file"};
  g_assert_cmpuint(json_array_get_length(secrets), ==, G_N_ELEMENTS(names));
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    JsonObject *s = json_array_get_object_element(secrets, i);
    g_assert_cmpstr(json_object_get_string_member(s, "name"), ==, names[i]);
    g_assert_cmpstr(json_object_get_string_member(s, "source"), ==, sources[i]);
    const char *placeholder = json_object_get_string_member(s, "placeholder");
    if (!is_placeholder(placeholder))
      g_error("'%s' is not a placeholder", placeholder);
    g_assert_false(g_hash_table_contains(seen, placeholder));
    g_hash_table_add(seen, (gpointer)placeholder);
    /* the guest's variable is the same */
    g_assert_cmpstr(env_value(env, names[i]), ==, placeholder);
  }
  g_assert_cmpuint(g_strv_length(env), ==, 3);
  g_assert_null(env_value(env, "D_OPT"));
  JsonObject *b = json_array_get_object_element(secrets, 1);
  g_assert_cmpstr(json_object_get_string_member(b, "from"), ==, "printf tok");
  g_assert_cmpint(json_object_get_int_member(b, "ttl"), ==, 3600);
  /* the value is nowhere in the instance directory */
  g_autofree char *json_path = g_build_filename(dir, HUTCH_BROKER_FILE, NULL);
  g_autofree char *json = NULL;
  g_assert_true(g_file_get_contents(json_path, &json, NULL, NULL));
  assert_lacks(json, "a-value");

  /* the optional secret without its variable is left out, with a note */
  g_assert_cmpuint(g_strv_length(notes), ==, 1);
  assert_contains(notes[0], "secret D_OPT is left out (optional)");
  assert_contains(notes[0], ENV_UNSET);

  /* the CA key: the user's only */
  g_autofree char *key_path = g_build_filename(dir, HUTCH_BROKER_CA_KEY, NULL);
  struct stat st;
  g_assert_cmpint(g_stat(key_path, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0600);

  /* the CA: the same as the file, a CA, permitting exactly the secrets' domains */
  g_autofree char *cert_path = g_build_filename(dir, HUTCH_BROKER_CA_CERT, NULL);
  g_autofree char *cert_file = NULL;
  g_assert_true(g_file_get_contents(cert_path, &cert_file, NULL, NULL));
  g_assert_cmpstr(cert_file, ==, ca_pem);
  gnutls_x509_crt_t crt = NULL;
  g_assert_cmpint(gnutls_x509_crt_init(&crt), ==, 0);
  gnutls_datum_t datum = {(unsigned char *)ca_pem, (unsigned int)strlen(ca_pem)};
  g_assert_cmpint(gnutls_x509_crt_import(crt, &datum, GNUTLS_X509_FMT_PEM), ==, 0);
  unsigned int critical = 0;
  g_assert_cmpint(gnutls_x509_crt_get_basic_constraints(crt, &critical, NULL, NULL), ==, 1);
  unsigned int usage = 0;
  g_assert_cmpint(gnutls_x509_crt_get_key_usage(crt, &usage, &critical), >=, 0);
  g_assert_true(usage & GNUTLS_KEY_KEY_CERT_SIGN);
  char dn[256];
  size_t dn_size = sizeof dn;
  g_assert_cmpint(gnutls_x509_crt_get_dn(crt, dn, &dn_size), ==, 0);
  assert_contains(dn, "dev");
  g_autofree char *permitted = permitted_names(crt);
  g_assert_cmpstr(permitted, ==, "a.x.org, api.test, b.test, c.test");
  /* self-signed, and the key in the file is its key */
  unsigned int verify = 1;
  g_assert_cmpint(gnutls_x509_crt_verify(crt, &crt, 1, 0, &verify), ==, 0);
  g_assert_cmpuint(verify, ==, 0);
  g_autofree char *key_pem = NULL;
  g_assert_true(g_file_get_contents(key_path, &key_pem, NULL, NULL));
  gnutls_x509_privkey_t key = NULL;
  g_assert_cmpint(gnutls_x509_privkey_init(&key), ==, 0);
  gnutls_datum_t key_datum = {(unsigned char *)key_pem, (unsigned int)strlen(key_pem)};
  g_assert_cmpint(gnutls_x509_privkey_import(key, &key_datum, GNUTLS_X509_FMT_PEM), ==, 0);
  guint8 id1[64], id2[64];
  size_t id1_size = sizeof id1, id2_size = sizeof id2;
  g_assert_cmpint(gnutls_x509_crt_get_key_id(crt, 0, id1, &id1_size), ==, 0);
  g_assert_cmpint(gnutls_x509_privkey_get_key_id(key, 0, id2, &id2_size), ==, 0);
  g_assert_cmpmem(id1, id1_size, id2, id2_size);
  gnutls_x509_privkey_deinit(key);
  gnutls_x509_crt_deinit(crt);

  /* another create: other placeholders */
  char *dir2 = make_dir();
  g_auto(GStrv) env2 = create_into(profile, dir2);
  for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
    g_assert_true(is_placeholder(env_value(env2, names[i])));
    g_assert_false(g_hash_table_contains(seen, env_value(env2, names[i])));
  }
  g_unsetenv(ENV_A);
  remove_dir(dir2);
  remove_dir(dir);
}

static void test_create_all_left_out(void) {
  g_unsetenv(ENV_UNSET);
  g_autoptr(HutchProfile) profile = load_profile("secrets:\n"
                                                 "  - name: D_OPT\n"
                                                 "    from: env:" ENV_UNSET "\n"
                                                 "    hosts: [d.test]\n"
                                                 "    optional: true\n"
                                                 "  - name: E_OPT\n"
                                                 "    file: /nonexistent/e\n"
                                                 "    hosts: [e.test]\n"
                                                 "    optional: true\n"
                                                 "  - name: F_OPT\n"
                                                 "    command: /nonexistent/f --token\n"
                                                 "    hosts: [f.test]\n"
                                                 "    optional: true\n");
  char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_autofree char *ca_pem = NULL;
  g_auto(GStrv) env = NULL, notes = NULL;
  g_assert_true(hutch_broker_create(profile, "vm", dir, &ca_pem, &env, &notes, &error));
  g_assert_no_error(error);
  g_assert_null(ca_pem);
  g_assert_null(env);
  g_assert_cmpuint(g_strv_length(notes), ==, 3);
  assert_contains(notes[0], "secret D_OPT is left out");
  assert_contains(notes[1], "/nonexistent/e is not a file");
  assert_contains(notes[2], "/nonexistent/f is not a program here");
  g_assert_false(file_exists(dir, HUTCH_BROKER_FILE));
  g_assert_false(file_exists(dir, HUTCH_BROKER_CA_KEY));
  g_assert_false(file_exists(dir, HUTCH_BROKER_CA_CERT));

  /* no secrets at all: nothing either */
  g_autoptr(HutchProfile) bare = load_profile("cpus: 1\n");
  g_auto(GStrv) notes2 = NULL, env2 = NULL;
  g_autofree char *ca2 = NULL;
  g_assert_true(hutch_broker_create(bare, "vm", dir, &ca2, &env2, &notes2, &error));
  g_assert_null(ca2);
  g_assert_null(env2);
  g_assert_false(file_exists(dir, HUTCH_BROKER_FILE));
  remove_dir(dir);
}

/* ---- Certificates for the tests (a CA of their own, upstream servers) ------------------ */

typedef struct {
  gnutls_x509_crt_t crt;
  gnutls_x509_privkey_t key;
} TestCert;

/* issuer NULL: a self-signed CA; else a server certificate for dns signed by issuer */
static void make_cert(TestCert *out, const char *cn, const char *dns, const TestCert *issuer) {
  g_assert_cmpint(gnutls_x509_privkey_init(&out->key), ==, 0);
  g_assert_cmpint(gnutls_x509_privkey_generate(out->key, GNUTLS_PK_ECDSA,
                                               GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
                  ==, 0);
  g_assert_cmpint(gnutls_x509_crt_init(&out->crt), ==, 0);
  gnutls_x509_crt_t c = out->crt;
  static guint8 serial = 1;
  guint8 s[2] = {0x10, serial++};
  time_t now = time(NULL);
  g_autofree char *dn = g_strdup_printf("CN=%s", cn);
  g_assert_cmpint(gnutls_x509_crt_set_version(c, 3), ==, 0);
  g_assert_cmpint(gnutls_x509_crt_set_serial(c, s, sizeof s), ==, 0);
  g_assert_cmpint(gnutls_x509_crt_set_activation_time(c, now - 3600), ==, 0);
  g_assert_cmpint(gnutls_x509_crt_set_expiration_time(c, now + 24 * 3600), ==, 0);
  g_assert_cmpint(gnutls_x509_crt_set_dn(c, dn, NULL), ==, 0);
  g_assert_cmpint(gnutls_x509_crt_set_key(c, out->key), ==, 0);
  guint8 id[64];
  size_t id_size = sizeof id;
  g_assert_cmpint(gnutls_x509_crt_get_key_id(c, 0, id, &id_size), ==, 0);
  g_assert_cmpint(gnutls_x509_crt_set_subject_key_id(c, id, id_size), ==, 0);
  if (!issuer) {
    g_assert_cmpint(gnutls_x509_crt_set_basic_constraints(c, 1, -1), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_KEY_CERT_SIGN), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_sign2(c, c, out->key, GNUTLS_DIG_SHA256, 0), ==, 0);
  } else {
    g_assert_cmpint(gnutls_x509_crt_set_basic_constraints(c, 0, -1), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_subject_alt_name(c, GNUTLS_SAN_DNSNAME, dns, strlen(dns),
                                                         GNUTLS_FSAN_SET),
                    ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_DIGITAL_SIGNATURE), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_SERVER, 0), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_sign2(c, issuer->crt, issuer->key, GNUTLS_DIG_SHA256, 0), ==,
                    0);
  }
}

static void test_cert_clear(TestCert *c) {
  gnutls_x509_crt_deinit(c->crt);
  gnutls_x509_privkey_deinit(c->key);
}

static void write_cert_pem(const TestCert *c, const char *path) {
  gnutls_datum_t out = {0};
  g_assert_cmpint(gnutls_x509_crt_export2(c->crt, GNUTLS_X509_FMT_PEM, &out), ==, 0);
  g_autoptr(GError) error = NULL;
  g_assert_true(g_file_set_contents(path, (const char *)out.data, out.size, &error));
  gnutls_free(out.data);
}

static gnutls_certificate_credentials_t server_creds(TestCert *leaf) {
  gnutls_certificate_credentials_t creds = NULL;
  g_assert_cmpint(gnutls_certificate_allocate_credentials(&creds), ==, 0);
  g_assert_cmpint(gnutls_certificate_set_x509_key(creds, &leaf->crt, 1, leaf->key), ==, 0);
  return creds;
}

/* ---- The fake upstream, the guest, the broker between them ------------------------------ */

typedef struct {
  int fd;
  gnutls_certificate_credentials_t creds;
  const char *status; /* what it answers: "200 OK" */
  const char *const *records; /* or, when set, these, each a TLS record of its own */
  gboolean handshake_ok;
  GString *received; /* the request as it came */
  GThread *thread;
} Upstream;

/* The head's length (to its empty line) plus its Content-Length, or 0 while incomplete */
static gsize request_length(GString *r) {
  const char *end = g_strstr_len(r->str, r->len, "\r\n\r\n");
  if (!end)
    return 0;
  gsize head = (gsize)(end + 4 - r->str);
  g_autofree char *lower = g_ascii_strdown(r->str, head);
  const char *cl = strstr(lower, "\r\ncontent-length:");
  guint64 body = cl ? g_ascii_strtoull(cl + strlen("\r\ncontent-length:"), NULL, 10) : 0;
  return head + body;
}

static gpointer upstream_thread(gpointer data) {
  Upstream *u = data;
  gnutls_session_t s = NULL;
  g_assert_cmpint(gnutls_init(&s, GNUTLS_SERVER), ==, 0);
  g_assert_cmpint(gnutls_set_default_priority(s), ==, 0);
  g_assert_cmpint(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, u->creds), ==, 0);
  gnutls_transport_set_int(s, u->fd);
  gnutls_handshake_set_timeout(s, 10000);
  gnutls_record_set_timeout(s, 10000);
  int ret;
  do
    ret = gnutls_handshake(s);
  while (ret < 0 && !gnutls_error_is_fatal(ret));
  u->handshake_ok = ret >= 0;
  if (u->handshake_ok) {
    char buf[4096];
    while (request_length(u->received) == 0 || u->received->len < request_length(u->received)) {
      ssize_t n = gnutls_record_recv(s, buf, sizeof buf);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
        continue;
      if (n <= 0)
        break;
      g_string_append_len(u->received, buf, n);
    }
    if (request_length(u->received) > 0 && u->records) {
      /* apart in time too, so that the broker reads them one by one */
      for (const char *const *r = u->records; *r; r++) {
        g_assert_cmpint(gnutls_record_send(s, *r, strlen(*r)), ==, (ssize_t)strlen(*r));
        g_usleep(100 * 1000);
      }
      gnutls_bye(s, GNUTLS_SHUT_WR);
    } else if (request_length(u->received) > 0) {
      g_autofree char *answer = g_strdup_printf(
          "HTTP/1.1 %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", u->status);
      g_assert_cmpint(gnutls_record_send(s, answer, strlen(answer)), ==, (ssize_t)strlen(answer));
      gnutls_bye(s, GNUTLS_SHUT_WR);
    }
  }
  gnutls_deinit(s);
  close(u->fd);
  return NULL;
}

typedef struct {
  gnutls_certificate_credentials_t creds; /* the upstream's certificate */
  const char *status;                     /* "200 OK" unless set */
  const char *const *records;             /* Upstream's */
  const char *refuse;                     /* set: the connection fails with this reason */
  guint calls;
  char *name;
  guint port;
  Upstream *upstream; /* the last one */
} Connector;

static int connect_cb(const char *name, guint port, char **ret_address, char **ret_reason,
                      gpointer data) {
  Connector *c = data;
  c->calls++;
  g_free(c->name);
  c->name = g_strdup(name);
  c->port = port;
  *ret_address = g_strdup("192.0.2.1");
  if (c->refuse) {
    *ret_reason = g_strdup(c->refuse);
    return -1;
  }
  int fds[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  Upstream *u = g_new0(Upstream, 1);
  u->fd = fds[1];
  u->creds = c->creds;
  u->status = c->status ? c->status : "200 OK";
  u->records = c->records;
  u->received = g_string_new(NULL);
  u->thread = g_thread_new("upstream", upstream_thread, u);
  g_assert_null(c->upstream);
  c->upstream = u;
  return fds[0];
}

typedef struct {
  HutchBroker *broker;
  int fd;
  const char *name;
  guint port;
  Connector *connector;
} ServeArgs;

static gpointer serve_thread(gpointer data) {
  ServeArgs *a = data;
  hutch_broker_serve(a->broker, a->fd, a->name, a->port, connect_cb, a->connector);
  return NULL;
}

/* The guest: TLS trusting the VM's CA only, for api.test; sends request, returns all it
 * got back */
static char *guest_exchange(int fd, const char *ca_file, const char *request) {
  gnutls_certificate_credentials_t creds = NULL;
  g_assert_cmpint(gnutls_certificate_allocate_credentials(&creds), ==, 0);
  g_assert_cmpint(gnutls_certificate_set_x509_trust_file(creds, ca_file, GNUTLS_X509_FMT_PEM), ==,
                  1);
  gnutls_session_t s = NULL;
  g_assert_cmpint(gnutls_init(&s, GNUTLS_CLIENT), ==, 0);
  g_assert_cmpint(gnutls_set_default_priority(s), ==, 0);
  g_assert_cmpint(gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, creds), ==, 0);
  g_assert_cmpint(gnutls_server_name_set(s, GNUTLS_NAME_DNS, "api.test", strlen("api.test")), ==,
                  0);
  gnutls_session_set_verify_cert(s, "api.test", 0);
  gnutls_transport_set_int(s, fd);
  gnutls_handshake_set_timeout(s, 10000);
  gnutls_record_set_timeout(s, 15000);
  int ret;
  do
    ret = gnutls_handshake(s);
  while (ret < 0 && !gnutls_error_is_fatal(ret));
  if (ret < 0)
    g_error("the guest's handshake: %s", gnutls_strerror(ret));
  g_assert_cmpint(gnutls_record_send(s, request, strlen(request)), ==, (ssize_t)strlen(request));
  GString *got = g_string_new(NULL);
  char buf[4096];
  for (;;) {
    ssize_t n = gnutls_record_recv(s, buf, sizeof buf);
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
      continue;
    if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION)
      break;
    if (n < 0)
      g_error("the guest's read: %s", gnutls_strerror((int)n));
    g_string_append_len(got, buf, n);
  }
  gnutls_deinit(s);
  gnutls_certificate_free_credentials(creds);
  return g_string_free(got, FALSE);
}

/* An instance with secrets, its broker loaded, certificates for the upstream */
typedef struct {
  char *dir;
  char *trust_file; /* the test CA, the broker's extra_trust */
  char *token_file; /* what the command secret cats */
  TestCert ca, other_ca, good, wrong_name, untrusted;
  gnutls_certificate_credentials_t good_creds, wrong_name_creds, untrusted_creds;
  char **env;
  HutchBroker *broker;
  Log log;
} Fixture;

static void fixture_certs(Fixture *f) {
  make_cert(&f->ca, "hutch test CA", NULL, NULL);
  make_cert(&f->other_ca, "untrusted test CA", NULL, NULL);
  make_cert(&f->good, "api.test", "api.test", &f->ca);
  make_cert(&f->wrong_name, "other.test", "other.test", &f->ca);
  make_cert(&f->untrusted, "api.test", "api.test", &f->other_ca);
  f->good_creds = server_creds(&f->good);
  f->wrong_name_creds = server_creds(&f->wrong_name);
  f->untrusted_creds = server_creds(&f->untrusted);
  f->trust_file = g_build_filename(f->dir, "test-ca.pem", NULL);
  write_cert_pem(&f->ca, f->trust_file);
}

/* yaml: the profile, where {TOKEN} is the token file's path */
static void fixture_setup(Fixture *f, const char *yaml) {
  memset(f, 0, sizeof *f);
  f->dir = make_dir();
  log_init(&f->log);
  fixture_certs(f);
  f->token_file = g_build_filename(f->dir, "token", NULL);
  write_text(f->token_file, "tok-1\n");
  GString *text = g_string_new(yaml);
  g_string_replace(text, "{TOKEN}", f->token_file, 0);
  g_autoptr(HutchProfile) profile = load_profile(text->str);
  g_string_free(text, TRUE);
  f->env = create_into(profile, f->dir);
  g_autoptr(GError) error = NULL;
  f->broker = hutch_broker_load(f->dir, f->trust_file, log_cb, &f->log, &error);
  g_assert_no_error(error);
  g_assert_nonnull(f->broker);
}

static void fixture_teardown(Fixture *f) {
  hutch_broker_free(f->broker);
  g_strfreev(f->env);
  gnutls_certificate_free_credentials(f->good_creds);
  gnutls_certificate_free_credentials(f->wrong_name_creds);
  gnutls_certificate_free_credentials(f->untrusted_creds);
  test_cert_clear(&f->ca);
  test_cert_clear(&f->other_ca);
  test_cert_clear(&f->good);
  test_cert_clear(&f->wrong_name);
  test_cert_clear(&f->untrusted);
  g_free(f->trust_file);
  g_free(f->token_file);
  log_clear(&f->log);
  remove_dir(f->dir);
}

/* One guest connection to api.test:443 through the broker: returns what the guest got;
 * the connector says what the upstream got (the caller frees c->upstream) */
static char *exchange(Fixture *f, Connector *c, const char *request) {
  int fds[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  ServeArgs args = {f->broker, fds[0], "api.test", 443, c};
  GThread *serve = g_thread_new("serve", serve_thread, &args);
  g_autofree char *ca_file = g_build_filename(f->dir, HUTCH_BROKER_CA_CERT, NULL);
  char *got = guest_exchange(fds[1], ca_file, request);
  g_thread_join(serve);
  close(fds[1]);
  if (c->upstream)
    g_thread_join(g_steal_pointer(&c->upstream->thread));
  return got;
}

static void connector_reset(Connector *c) {
  if (c->upstream) {
    g_string_free(c->upstream->received, TRUE);
    g_free(c->upstream);
    c->upstream = NULL;
  }
  g_clear_pointer(&c->name, g_free);
}

/* Fills "@NAME@" in text with NAME's placeholder */
static char *with_placeholders(char **env, const char *text) {
  GString *out = g_string_new(NULL);
  const char *p = text;
  const char *at;
  while ((at = strchr(p, '@'))) {
    const char *close_at = strchr(at + 1, '@');
    g_assert_nonnull(close_at);
    g_string_append_len(out, p, at - p);
    g_autofree char *name = g_strndup(at + 1, close_at - at - 1);
    const char *placeholder = env_value(env, name);
    g_assert_nonnull(placeholder);
    g_string_append(out, placeholder);
    p = close_at + 1;
  }
  g_string_append(out, p);
  return g_string_free(out, FALSE);
}

static const char serve_yaml[] = "secrets:\n"
                                 "  - name: API_KEY\n"
                                 "    from: env:" ENV_A "\n"
                                 "    hosts: [api.test]\n"
                                 "  - name: CMD_TOKEN\n"
                                 "    command: cat '{TOKEN}'\n"
                                 "    hosts: [api.test]\n"
                                 "  - name: OTHER_KEY\n"
                                 "    from: env:" ENV_B "\n"
                                 "    hosts: [other.test]\n";

static void serve_setup(Fixture *f) {
  g_setenv(ENV_A, "real-api-key", TRUE);
  g_setenv(ENV_B, "real-other-key", TRUE);
  fixture_setup(f, serve_yaml);
}

/* ---- Fetching the values --------------------------------------------------------------- */

static void test_load_none(void) {
  char *dir = make_dir();
  g_autoptr(GError) error = NULL;
  g_assert_null(hutch_broker_load(dir, NULL, NULL, NULL, &error));
  g_assert_no_error(error);
  g_assert_false(hutch_broker_intercepts(NULL, "api.test", 443));
  remove_dir(dir);
}

static void test_load_values(void) {
  Fixture f;
  g_setenv(ENV_A, "env-value", TRUE);
  char *values_dir = make_dir();
  g_autofree char *file = g_build_filename(values_dir, "key", NULL);
  write_text(file, "file-value\n\n");
  g_autofree char *yaml = g_strdup_printf("secrets:\n"
                                          "  - name: E\n"
                                          "    from: env:" ENV_A "\n"
                                          "    hosts: [api.test]\n"
                                          "  - name: F\n"
                                          "    file: %s\n"
                                          "    hosts: [api.test]\n"
                                          "  - name: C\n"
                                          "    command: printf 'tok-1\\n'\n"
                                          "    hosts: [api.test]\n"
                                          "  - name: T\n"
                                          "    command: cat '{TOKEN}'\n"
                                          "    hosts: [api.test]\n",
                                          file);
  fixture_setup(&f, yaml);
  /* the environment's copy is gone */
  g_assert_null(g_getenv(ENV_A));

  Connector c = {.creds = f.good_creds};
  g_autofree char *request = with_placeholders(
      f.env, "GET / HTTP/1.1\r\nAuthorization: Bearer @E@ @F@ @C@ @T@\r\nHost: api.test\r\n\r\n");
  g_autofree char *got = exchange(&f, &c, request);
  g_assert_true(g_str_has_prefix(got, "HTTP/1.1 200 OK\r\n"));
  g_assert_cmpstr(c.upstream->received->str, ==,
                  "GET / HTTP/1.1\r\nAuthorization: Bearer env-value file-value tok-1 tok-1\r\n"
                  "Host: api.test\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n");
  connector_reset(&c);
  fixture_teardown(&f);
  remove_dir(values_dir);
}

static void test_intercepts(void) {
  Fixture f;
  g_setenv(ENV_A, "v", TRUE);
  fixture_setup(&f, "secrets:\n"
                    "  - name: E\n"
                    "    from: env:" ENV_A "\n"
                    "    hosts: [api.test, a.x.org, \"b.test:8443\"]\n"
                    "  - name: T\n"
                    "    command: cat '{TOKEN}'\n"
                    "    hosts: [\"c.test:9000\"]\n");
  HutchBroker *b = f.broker;
  g_assert_true(hutch_broker_intercepts(b, "api.test", 443));
  g_assert_true(hutch_broker_intercepts(b, "API.TEST", 443));
  g_assert_false(hutch_broker_intercepts(b, "api.test", 80));
  g_assert_false(hutch_broker_intercepts(b, "api.test", 8443));
  g_assert_true(hutch_broker_intercepts(b, "a.x.org", 443));
  /* one name each: not the names under it, nor the one above */
  g_assert_false(hutch_broker_intercepts(b, "b.a.x.org", 443));
  g_assert_false(hutch_broker_intercepts(b, "x.org", 443));
  g_assert_false(hutch_broker_intercepts(b, "evilx.org", 443));
  g_assert_true(hutch_broker_intercepts(b, "b.test", 8443));
  g_assert_false(hutch_broker_intercepts(b, "b.test", 443));
  g_assert_true(hutch_broker_intercepts(b, "c.test", 9000));
  g_assert_false(hutch_broker_intercepts(b, "c.test", 443));
  g_assert_false(hutch_broker_intercepts(b, "other.test", 443));
  g_assert_false(hutch_broker_intercepts(b, NULL, 443));
  fixture_teardown(&f);
}

/* Creates an instance for yaml (values present), then loads it as it is now; returns the
 * load's error (the load must fail) */
static GError *load_error(const char *yaml, Log *log) {
  char *dir = make_dir();
  g_autoptr(HutchProfile) profile = load_profile(yaml);
  g_auto(GStrv) env = create_into(profile, dir);
  GError *error = NULL;
  HutchBroker *b = hutch_broker_load(dir, NULL, log_cb, log, &error);
  g_assert_null(b);
  g_assert_nonnull(error);
  remove_dir(dir);
  return error;
}

static void test_load_command_fails(void) {
  Log log;
  log_init(&log);
  g_autoptr(GError) error = load_error("secrets:\n"
                                       "  - name: C\n"
                                       "    command: sh -c 'printf tok; exit 3'\n"
                                       "    hosts: [api.test]\n",
                                       &log);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  g_assert_cmpstr(error->message, ==, "secret C: command 'sh -c 'printf tok; exit 3'' failed");
  /* a program that is not there */
  g_autoptr(GError) missing = load_error("secrets:\n"
                                         "  - name: C\n"
                                         "    command: /nonexistent/helper\n"
                                         "    hosts: [api.test]\n",
                                         &log);
  /* posix_spawnp says ENOENT ("running ..."); under valgrind the child exits 127 ("failed") */
  assert_contains(missing->message, "secret C: ");
  assert_contains(missing->message, "/nonexistent/helper");
  /* nothing printed */
  g_autoptr(GError) empty = load_error("secrets:\n"
                                       "  - name: C\n"
                                       "    command: printf ''\n"
                                       "    hosts: [api.test]\n",
                                       &log);
  g_assert_cmpstr(empty->message, ==, "secret C: the value is empty");
  log_clear(&log);
}

static void test_load_command_timeout(void) {
  Log log;
  log_init(&log);
  gint64 start = g_get_monotonic_time();
  g_autoptr(GError) error = load_error("secrets:\n"
                                       "  - name: SLOW\n"
                                       "    command: sleep 60\n"
                                       "    hosts: [api.test]\n",
                                       &log);
  gint64 took = g_get_monotonic_time() - start;
  assert_contains(error->message, "secret SLOW: command 'sleep 60' did not finish within 10 s");
  g_assert_cmpint(took, >=, (HUTCH_BROKER_COMMAND_TIMEOUT_S - 1) * G_USEC_PER_SEC);
  g_assert_cmpint(took, <, (HUTCH_BROKER_COMMAND_TIMEOUT_S + 10) * G_USEC_PER_SEC);
  log_clear(&log);
}

static void test_load_control_character(void) {
  Log log;
  log_init(&log);
  char *dir = make_dir();
  g_autofree char *file = g_build_filename(dir, "key", NULL);
  write_text(file, "abc\x01"
                   "def\n");
  g_autofree char *yaml = g_strdup_printf("secrets:\n"
                                          "  - name: F\n"
                                          "    file: %s\n"
                                          "    hosts: [api.test]\n",
                                          file);
  g_autoptr(GError) error = load_error(yaml, &log);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  assert_contains(error->message, "secret F: the value holds a control character");
  /* a line break inside a command's output */
  g_autoptr(GError) lines = load_error("secrets:\n"
                                       "  - name: C\n"
                                       "    command: printf 'a\\nb'\n"
                                       "    hosts: [api.test]\n",
                                       &log);
  assert_contains(lines->message, "secret C: the value holds a control character");
  /* DEL, in a variable */
  g_setenv(ENV_A, "ab\x7f", TRUE);
  g_autoptr(GError) del = load_error("secrets:\n"
                                     "  - name: E\n"
                                     "    from: env:" ENV_A "\n"
                                     "    hosts: [api.test]\n",
                                     &log);
  assert_contains(del->message, "secret E: the value holds a control character");
  /* the variable is gone all the same */
  g_assert_null(g_getenv(ENV_A));
  log_clear(&log);
  remove_dir(dir);
}

static void test_load_env_missing(void) {
  Log log;
  log_init(&log);
  char *dir = make_dir();
  g_autoptr(HutchProfile) profile = load_profile("secrets:\n"
                                                 "  - name: REQ\n"
                                                 "    from: env:" ENV_A "\n"
                                                 "    hosts: [api.test]\n"
                                                 "  - name: OPT\n"
                                                 "    from: env:" ENV_B "\n"
                                                 "    hosts: [api.test]\n"
                                                 "    optional: true\n");
  g_setenv(ENV_A, "a", TRUE);
  g_setenv(ENV_B, "b", TRUE);
  g_auto(GStrv) env = create_into(profile, dir);
  g_assert_nonnull(env_value(env, "OPT"));

  /* the required one is not set when the VM starts: refused, naming it */
  g_unsetenv(ENV_A);
  g_setenv(ENV_B, "b", TRUE);
  g_autoptr(GError) error = NULL;
  g_assert_null(hutch_broker_load(dir, NULL, log_cb, &log, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
  assert_contains(error->message, "secret REQ: the host variable " ENV_A " is not set");
  /* the other variable was wiped all the same */
  g_assert_null(g_getenv(ENV_B));

  /* the optional one is not set: left out, with a note */
  g_setenv(ENV_A, "a", TRUE);
  g_autoptr(GError) error2 = NULL;
  HutchBroker *b = hutch_broker_load(dir, NULL, log_cb, &log, &error2);
  g_assert_no_error(error2);
  g_assert_nonnull(b);
  assert_log_has(&log, "note", "secret OPT is left out (optional)");
  assert_log_has(&log, "note", ENV_B " is not set");
  g_assert_false(log_has(&log, "note", "secret REQ"));
  g_assert_true(hutch_broker_intercepts(b, "api.test", 443));
  hutch_broker_free(b);
  g_assert_null(g_getenv(ENV_A));
  log_clear(&log);
  remove_dir(dir);
}

/* The commands run at load do not get the env secrets' values in their environment. */
static void test_load_env_not_in_commands(void) {
  Fixture f;
  g_setenv(ENV_A, "real-api-key", TRUE);
  char *out_dir = make_dir();
  g_autofree char *seen = g_build_filename(out_dir, "seen", NULL);
  g_autofree char *yaml = g_strdup_printf("secrets:\n"
                                          "  - name: E\n"
                                          "    from: env:" ENV_A "\n"
                                          "    hosts: [api.test]\n"
                                          "  - name: C\n"
                                          "    command: sh -c 'printf \"%%s\" \"$" ENV_A
                                          "\" > %s; cat \"$0\"' '{TOKEN}'\n"
                                          "    hosts: [api.test]\n",
                                          seen);
  fixture_setup(&f, yaml);
  g_autofree char *what = NULL;
  g_assert_true(g_file_get_contents(seen, &what, NULL, NULL));
  g_assert_cmpstr(what, ==, "");
  fixture_teardown(&f);
  remove_dir(out_dir);
}

/* ---- Serving a connection ------------------------------------------------------------- */

static void test_serve_inject(void) {
  Fixture f;
  serve_setup(&f);
  g_assert_null(g_getenv(ENV_A));
  g_assert_null(g_getenv(ENV_B));
  Connector c = {.creds = f.good_creds};
  /* the body holds a placeholder too */
  g_autofree char *body = with_placeholders(f.env, "{\"k\":\"@API_KEY@\"}");
  g_autofree char *head = with_placeholders(f.env, "POST /v1/messages?key=@API_KEY@ HTTP/1.1\r\n"
                                                   "Host: api.test\r\n"
                                                   "X-Api-Key: @API_KEY@\r\n"
                                                   "Authorization: Bearer @CMD_TOKEN@\r\n"
                                                   "X-Other: @OTHER_KEY@\r\n"
                                                   "Connection: keep-alive\r\n");
  g_autofree char *request =
      g_strdup_printf("%sContent-Length: %zu\r\n\r\n%s", head, strlen(body), body);
  g_autofree char *got = exchange(&f, &c, request);

  /* the guest got the upstream's answer */
  g_assert_cmpstr(got, ==, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  /* the upstream: connected through the callback for the name the guest looked up */
  g_assert_cmpuint(c.calls, ==, 1);
  g_assert_cmpstr(c.name, ==, "api.test");
  g_assert_cmpuint(c.port, ==, 443);
  g_assert_true(c.upstream->handshake_ok);
  /* the real values in the credential headers; the request line, the other host's
   * placeholder and the body untouched */
  g_autofree char *other = with_placeholders(f.env, "@OTHER_KEY@");
  g_autofree char *api = with_placeholders(f.env, "@API_KEY@");
  g_autofree char *expected = g_strdup_printf("POST /v1/messages?key=%s HTTP/1.1\r\n"
                                              "Host: api.test\r\n"
                                              "X-Api-Key: real-api-key\r\n"
                                              "Authorization: Bearer tok-1\r\n"
                                              "X-Other: %s\r\n"
                                              "Content-Length: %zu\r\n"
                                              "Accept-Encoding: identity\r\n"
                                              "Connection: close\r\n"
                                              "\r\n%s",
                                              api, other, strlen(body), body);
  g_assert_cmpstr(c.upstream->received->str, ==, expected);
  assert_lacks(c.upstream->received->str, "real-other-key");

  /* the log: inject naming the secrets, keep naming the other; never a value */
  assert_log_has(&f.log, "inject", "API_KEY");
  assert_log_has(&f.log, "inject", "CMD_TOKEN");
  assert_log_has(&f.log, "keep", "OTHER_KEY");
  g_assert_false(log_has(&f.log, "inject", "OTHER_KEY"));
  assert_log_lacks_text(&f.log, "real-api-key");
  assert_log_lacks_text(&f.log, "real-other-key");
  assert_log_lacks_text(&f.log, "tok-1");
  connector_reset(&c);
  fixture_teardown(&f);
}

static void test_serve_no_placeholder(void) {
  Fixture f;
  serve_setup(&f);
  Connector c = {.creds = f.good_creds};
  g_autofree char *got = exchange(&f, &c, "GET / HTTP/1.1\r\nHost: api.test\r\n\r\n");
  g_assert_true(g_str_has_prefix(got, "HTTP/1.1 200 OK\r\n"));
  g_assert_cmpstr(c.upstream->received->str, ==,
                  "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
  assert_log_has(&f.log, "note", "no placeholder in \"GET / HTTP/1.1\"");
  g_assert_false(log_has(&f.log, "inject", ""));
  connector_reset(&c);
  fixture_teardown(&f);
}

/* The guest's request line reaches the log as printable UTF-8: invalid bytes would make the
 * JSON line unreadable (the record hidden from `hutch net --log`), C1 and bidi overrides
 * would reach a terminal through --json */
static void test_serve_log_line_sanitized(void) {
  Fixture f;
  serve_setup(&f);
  Connector c = {.creds = f.good_creds};
  g_autofree char *got = exchange(&f, &c,
                                  "GET /\xff\xfe\x1b[31m\xc2\x9b\xe2\x80\xae"
                                  "evil HTTP/1.1\r\nHost: api.test\r\n\r\n");
  g_assert_true(g_str_has_prefix(got, "HTTP/1.1 200 OK\r\n"));
  assert_log_has(&f.log, "note", "evil HTTP/1.1");
  g_mutex_lock(&f.log.lock);
  for (guint i = 0; i < f.log.lines->len; i++) {
    const char *line = g_ptr_array_index(f.log.lines, i);
    g_assert_true(g_utf8_validate(line, -1, NULL));
    g_assert_null(strchr(line, '\x1b'));
    g_assert_null(strstr(line, "\xc2\x9b"));
    g_assert_null(strstr(line, "\xe2\x80\xae"));
  }
  g_mutex_unlock(&f.log.lock);
  connector_reset(&c);
  fixture_teardown(&f);
}

static void assert_502(const char *got, const char *why) {
  if (!g_str_has_prefix(got, "HTTP/1.1 502 Bad Gateway\r\n"))
    g_error("not a 502: '%s'", got);
  assert_contains(got, "\r\nX-Hutch-Broker: failed\r\n");
  assert_contains(got, why);
  /* the Content-Length is the body's */
  const char *body = strstr(got, "\r\n\r\n") + 4;
  g_autofree char *cl = g_strdup_printf("Content-Length: %zu\r\n", strlen(body));
  assert_contains(got, cl);
}

static void test_serve_upstream_unverified(void) {
  Fixture f;
  serve_setup(&f);
  g_autofree char *request = with_placeholders(
      f.env, "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer @API_KEY@\r\n\r\n");
  /* a certificate for another name (from the trusted CA), then one for the name from a CA
   * that is not trusted: the request is never sent */
  gnutls_certificate_credentials_t bad[] = {f.wrong_name_creds, f.untrusted_creds};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    Connector c = {.creds = bad[i]};
    g_autofree char *got = exchange(&f, &c, request);
    assert_502(got, "the TLS of api.test:443 failed");
    g_assert_cmpuint(c.calls, ==, 1);
    g_assert_false(c.upstream->handshake_ok);
    g_assert_cmpuint(c.upstream->received->len, ==, 0);
    assert_lacks(got, "real-api-key");
    connector_reset(&c);
  }
  assert_log_has(&f.log, "fail", "(the request was not sent)");
  assert_log_lacks_text(&f.log, "real-api-key");

  /* the same request to the right upstream goes through (the CA files are right) */
  Connector ok = {.creds = f.good_creds};
  g_autofree char *got = exchange(&f, &ok, request);
  g_assert_true(g_str_has_prefix(got, "HTTP/1.1 200 OK\r\n"));
  assert_contains(ok.upstream->received->str, "Bearer real-api-key\r\n");
  connector_reset(&ok);
  fixture_teardown(&f);
}

static void test_serve_connect_fails(void) {
  Fixture f;
  serve_setup(&f);
  Connector c = {.creds = f.good_creds, .refuse = "api.test:443 is not in the allowlist"};
  g_autofree char *request =
      with_placeholders(f.env, "GET /?k=@API_KEY@ HTTP/1.1\r\nHost: api.test\r\n\r\n");
  g_autofree char *got = exchange(&f, &c, request);
  assert_502(got, "api.test:443 could not be reached: api.test:443 is not in the allowlist");
  g_assert_cmpuint(c.calls, ==, 1);
  g_assert_null(c.upstream);
  assert_lacks(got, "real-api-key");
  connector_reset(&c);
  fixture_teardown(&f);
}

static void test_serve_not_http(void) {
  Fixture f;
  serve_setup(&f);
  Connector c = {.creds = f.good_creds};
  g_autofree char *got = exchange(&f, &c, "hello there\r\n\r\n");
  g_assert_cmpstr(got, ==, "");
  g_assert_cmpuint(c.calls, ==, 0);
  assert_log_has(&f.log, "fail", "not an HTTP/1 request");
  fixture_teardown(&f);
}

/* A 401 to a request that carried a command secret: the next request runs the command again
 * (and only then: a 200 keeps the value) */
static void test_serve_401_refetch(void) {
  Fixture f;
  serve_setup(&f);
  /* 10 s between fetches by default: none here (a later check tests the limit) */
  hutch_broker_set_refetch_interval(f.broker, 0);
  g_autofree char *request = with_placeholders(
      f.env, "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer @CMD_TOKEN@\r\n\r\n");
  const struct {
    const char *file;   /* what the command prints from this request on, or NULL */
    const char *status; /* what the upstream answers */
    const char *sent;   /* the value the upstream gets */
  } steps[] = {
      {NULL, "200 OK", "tok-1"},
      {"tok-2\n", "200 OK", "tok-1"},      /* not fetched again: still the first */
      {NULL, "401 Unauthorized", "tok-1"}, /* the upstream refuses it */
      {NULL, "200 OK", "tok-2"},           /* fetched again */
      {"tok-3\n", "200 OK", "tok-2"},      /* and kept */
  };
  for (gsize i = 0; i < G_N_ELEMENTS(steps); i++) {
    if (steps[i].file)
      write_text(f.token_file, steps[i].file);
    Connector c = {.creds = f.good_creds, .status = steps[i].status};
    g_autofree char *got = exchange(&f, &c, request);
    g_autofree char *status = g_strdup_printf("HTTP/1.1 %s\r\n", steps[i].status);
    g_assert_true(g_str_has_prefix(got, status));
    g_autofree char *sent = g_strdup_printf("Authorization: Bearer %s\r\n", steps[i].sent);
    if (!strstr(c.upstream->received->str, sent))
      g_error("step %zu: the upstream got '%s', not '%s'", i, c.upstream->received->str, sent);
    connector_reset(&c);
  }
  assert_log_has(&f.log, "note", "the upstream answered 401 to a request with CMD_TOKEN");
  assert_log_has(&f.log, "note", "secret CMD_TOKEN fetched again (the upstream answered 401)");

  /* a 401 to a request with the env secret only: the command secret was not in it and is
   * not fetched again (the file says tok-3 now: the next request still gets tok-2), and the
   * env secret keeps its value (its variable is gone: there is nothing to fetch) */
  g_autofree char *env_request = with_placeholders(
      f.env, "GET / HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer @API_KEY@\r\n\r\n");
  Connector c = {.creds = f.good_creds, .status = "401 Unauthorized"};
  g_autofree char *got = exchange(&f, &c, env_request);
  g_assert_true(g_str_has_prefix(got, "HTTP/1.1 401 Unauthorized\r\n"));
  connector_reset(&c);
  Connector again = {.creds = f.good_creds};
  g_autofree char *both =
      with_placeholders(f.env, "GET / HTTP/1.1\r\nX-Api-Key: @API_KEY@\r\nHost: "
                               "api.test\r\nAuthorization: Bearer @CMD_TOKEN@\r\n\r\n");
  g_autofree char *got_again = exchange(&f, &again, both);
  g_assert_true(g_str_has_prefix(got_again, "HTTP/1.1 200 OK\r\n"));
  g_assert_cmpstr(again.upstream->received->str, ==,
                  "GET / HTTP/1.1\r\nX-Api-Key: real-api-key\r\nHost: api.test\r\n"
                  "Authorization: Bearer tok-2\r\nAccept-Encoding: identity\r\n"
                  "Connection: close\r\n\r\n");
  connector_reset(&again);
  /* the limit: with the default interval, a 401 right after a fetch fetches nothing (the
   * guest can make 401s at will; it must not run the user's command on demand) */
  hutch_broker_set_refetch_interval(f.broker, 10 * 1000);
  write_text(f.token_file, "tok-4\n");
  for (int i = 0; i < 2; i++) {
    Connector r = {.creds = f.good_creds, .status = "401 Unauthorized"};
    g_autofree char *answer = exchange(&f, &r, request);
    g_assert_true(g_str_has_prefix(answer, "HTTP/1.1 401"));
    /* fetched last at the first 401 above, a moment ago: the file's tok-4 is not read */
    assert_contains(r.upstream->received->str, "Bearer tok-2\r\n");
    connector_reset(&r);
  }
  g_assert_false(log_has(&f.log, "note", "secret API_KEY fetched again"));
  assert_log_lacks_text(&f.log, "tok-1");
  assert_log_lacks_text(&f.log, "tok-2");
  assert_log_lacks_text(&f.log, "tok-3");
  assert_log_lacks_text(&f.log, "real-api-key");
  fixture_teardown(&f);
}

/* A server that echoes the key back, in records that split it: not even the value's first
 * bytes reach the guest (the end of a record that starts like the value is held for the
 * next one); the answer before it does, and the connection ends there. */
static void test_serve_echo_split(void) {
  /* the upstream's last sends meet a connection the broker cut (the egress helper, where the
   * broker runs, ignores SIGPIPE too) */
  signal(SIGPIPE, SIG_IGN);
  Fixture f;
  serve_setup(&f);
  g_autofree char *request = with_placeholders(f.env, "GET /echo HTTP/1.1\r\n"
                                                      "Host: api.test\r\n"
                                                      "X-Api-Key: @API_KEY@\r\n\r\n");
  const char *const records[] = {"HTTP/1.1 400 Bad Request\r\nContent-Length: 30\r\n\r\n"
                                 "you sent: real-ap",
                                 "i-key, bad\n", NULL};
  Connector c = {.creds = f.good_creds, .records = records};
  g_autofree char *got = exchange(&f, &c, request);
  g_assert_cmpstr(got, ==, "HTTP/1.1 400 Bad Request\r\nContent-Length: 30\r\n\r\nyou sent: ");
  assert_log_has(&f.log, "fail", "the answer held the real value of API_KEY");
  connector_reset(&c);

  /* an end that starts like the value but is none goes on with the next record; one at the
   * answer's very end goes when the upstream closes */
  const char *const innocent[] = {"HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\nreal-a",
                                  "pple, real-api", NULL};
  Connector c2 = {.creds = f.good_creds, .records = innocent};
  g_autofree char *got2 = exchange(&f, &c2, request);
  g_assert_cmpstr(got2, ==, "HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\nreal-apple, real-api");
  connector_reset(&c2);
  fixture_teardown(&f);
}

/* The filter itself, chunk by chunk */
static void test_answer_filter(void) {
  HutchBrokerSwap swaps[] = {
      {.secret = "A", .placeholder = "pa", .value = "secret-one", .used = TRUE},
      {.secret = "B", .placeholder = "pb", .value = "sec-two", .used = TRUE},
      {.secret = "C", .placeholder = "pc", .value = "unused", .used = FALSE}};
  g_autoptr(GByteArray) held = g_byte_array_new();
  const char *echoed = NULL;
  /* "sec" could start either value: held */
  g_assert_cmpuint(
      hutch_broker_answer_filter(swaps, 3, held, (const guint8 *)"abc sec", 7, &echoed), ==, 4);
  g_assert_null(echoed);
  g_byte_array_remove_range(held, 0, 4);
  /* "secret-o": still the start of one */
  g_assert_cmpuint(hutch_broker_answer_filter(swaps, 3, held, (const guint8 *)"ret-o", 5, &echoed),
                   ==, 0);
  /* "secret-one": found at 0, nothing of it goes */
  g_assert_cmpuint(hutch_broker_answer_filter(swaps, 3, held, (const guint8 *)"ne!", 3, &echoed),
                   ==, 0);
  g_assert_cmpstr(echoed, ==, "A");
  /* the first of two values decides; an unused swap's value is nobody's business */
  g_byte_array_set_size(held, 0);
  g_assert_cmpuint(hutch_broker_answer_filter(swaps, 3, held,
                                              (const guint8 *)"xx sec-two secret-one", 21, &echoed),
                   ==, 3);
  g_assert_cmpstr(echoed, ==, "B");
  g_byte_array_set_size(held, 0);
  g_assert_cmpuint(
      hutch_broker_answer_filter(swaps, 3, held, (const guint8 *)"unused s", 8, &echoed), ==, 7);
  g_assert_null(echoed);
  /* no value went in: everything goes */
  HutchBrokerSwap none[] = {
      {.secret = "A", .placeholder = "pa", .value = "secret-one", .used = FALSE}};
  g_byte_array_set_size(held, 0);
  g_assert_cmpuint(
      hutch_broker_answer_filter(none, 1, held, (const guint8 *)"secret-on", 9, &echoed), ==, 9);
}

/* A value the broker put into "Authorization: Basic" comes back base64-encoded in an echo:
 * cut at every alignment (the guest picks the user name's length), with the group before
 * it, which encodes the value's first bytes */
static void test_answer_filter_base64(void) {
  HutchBrokerSwap swaps[] = {
      {.secret = "A", .placeholder = "pa", .value = "token-one-real", .used = TRUE}};
  const char *users[] = {"", "x:", "xy:", "xyz:"};
  for (guint i = 0; i < G_N_ELEMENTS(users); i++) {
    g_autofree char *plain = g_strconcat(users[i], swaps[0].value, NULL);
    g_autofree char *encoded = g_base64_encode((const guchar *)plain, strlen(plain));
    g_autofree char *answer = g_strconcat("you sent: Basic ", encoded, "\n", NULL);
    g_autoptr(GByteArray) held = g_byte_array_new();
    const char *echoed = NULL;
    gsize count =
        hutch_broker_answer_filter(swaps, 1, held, (const guint8 *)answer, strlen(answer), &echoed);
    g_test_message("user '%s': %s -> %.*s", users[i], answer, (int)count, answer);
    g_assert_cmpstr(echoed, ==, "A");
    /* what the guest gets decodes to none of the value's bytes */
    g_assert_cmpuint(count, ==, strlen("you sent: Basic ") + strlen(users[i]) / 3 * 4);
  }
  /* a value shorter than 8 bytes is looked for only as it is (its encoded forms would be
   * a few characters, which innocent answers hold) */
  HutchBrokerSwap short_value[] = {
      {.secret = "S", .placeholder = "ps", .value = "abc1234", .used = TRUE}};
  g_autofree char *encoded = g_base64_encode((const guchar *)"x:abc1234", 9);
  g_autoptr(GByteArray) held = g_byte_array_new();
  const char *echoed = NULL;
  g_assert_cmpuint(hutch_broker_answer_filter(short_value, 1, held, (const guint8 *)encoded,
                                              strlen(encoded), &echoed),
                   ==, strlen(encoded));
  g_assert_null(echoed);
  /* an encoded form split across chunks: its start, and the group before, are held */
  HutchBrokerSwap one[] = {
      {.secret = "A", .placeholder = "pa", .value = "token-one-real", .used = TRUE}};
  g_autofree char *form = g_base64_encode((const guchar *)"x:token-one-real", 16);
  g_byte_array_set_size(held, 0);
  /* "eDp0" encodes "x:t"; the form that follows starts "b2tl" ("oke") */
  g_assert_true(g_str_has_prefix(form, "eDp0b2tl"));
  g_assert_cmpuint(
      hutch_broker_answer_filter(one, 1, held, (const guint8 *)"Basic eDp0b2", 12, &echoed), ==, 6);
  g_assert_null(echoed);
  g_byte_array_remove_range(held, 0, 6);
  g_assert_cmpuint(
      hutch_broker_answer_filter(one, 1, held, (const guint8 *)form + 6, strlen(form) - 6, &echoed),
      ==, 0);
  g_assert_cmpstr(echoed, ==, "A");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/broker/host/exact", test_host_exact);
  g_test_add_func("/broker/host/wildcard", test_host_wildcard);
  g_test_add_func("/broker/host/ports", test_host_ports);
  g_test_add_func("/broker/host/garbage", test_host_garbage);
  g_test_add_func("/broker/rewrite/header", test_rewrite_header);
  g_test_add_func("/broker/rewrite/request-line", test_rewrite_request_line);
  g_test_add_func("/broker/rewrite/several", test_rewrite_several);
  g_test_add_func("/broker/rewrite/basic", test_rewrite_basic);
  g_test_add_func("/broker/rewrite/basic-raw-placeholder", test_rewrite_basic_raw_placeholder);
  g_test_add_func("/broker/rewrite/connection", test_rewrite_connection);
  g_test_add_func("/broker/rewrite/upgrade", test_rewrite_upgrade);
  g_test_add_func("/broker/rewrite/body-not-head", test_rewrite_body_not_head);
  g_test_add_func("/broker/rewrite/malformed", test_rewrite_malformed);
  g_test_add_func("/broker/rewrite/nul-in-header", test_rewrite_nul_in_header);
  g_test_add_func("/broker/check/modes", test_check_modes);
  g_test_add_func("/broker/check/allowlist", test_check_allowlist);
  g_test_add_func("/broker/rewrite/request-is-for", test_request_is_for);
  g_test_add_func("/broker/check/required-source", test_check_required_source);
  g_test_add_func("/broker/create/ca-and-placeholders", test_create);
  g_test_add_func("/broker/create/all-left-out", test_create_all_left_out);
  g_test_add_func("/broker/load/none", test_load_none);
  g_test_add_func("/broker/load/values", test_load_values);
  g_test_add_func("/broker/load/intercepts", test_intercepts);
  g_test_add_func("/broker/load/command-fails", test_load_command_fails);
  g_test_add_func("/broker/load/command-timeout", test_load_command_timeout);
  g_test_add_func("/broker/load/control-character", test_load_control_character);
  g_test_add_func("/broker/load/env-missing", test_load_env_missing);
  g_test_add_func("/broker/load/env-not-in-commands", test_load_env_not_in_commands);
  g_test_add_func("/broker/serve/inject", test_serve_inject);
  g_test_add_func("/broker/serve/no-placeholder", test_serve_no_placeholder);
  g_test_add_func("/broker/serve/upstream-unverified", test_serve_upstream_unverified);
  g_test_add_func("/broker/serve/connect-fails", test_serve_connect_fails);
  g_test_add_func("/broker/serve/not-http", test_serve_not_http);
  g_test_add_func("/broker/serve/401-refetch", test_serve_401_refetch);
  g_test_add_func("/broker/serve/echo-split", test_serve_echo_split);
  g_test_add_func("/broker/answer-filter", test_answer_filter);
  g_test_add_func("/broker/serve/log-line-sanitized", test_serve_log_line_sanitized);
  g_test_add_func("/broker/answer-filter/base64", test_answer_filter_base64);
  return g_test_run();
}
