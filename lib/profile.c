/* profile.c: YAML profiles (libyaml) -> HutchProfile, with base: inheritance and errors that
 * name FILE:LINE:COLUMN. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <yaml.h>

#include "profile-private.h"
#include "util-private.h"

static const char *const accel_names[HUTCH_ACCEL_N] = {
    [HUTCH_ACCEL_AUTO] = "auto",
    [HUTCH_ACCEL_KVM] = "kvm",
    [HUTCH_ACCEL_TCG] = "tcg",
};

const char *hutch_accel_to_string(HutchAccel accel) {
  return accel < HUTCH_ACCEL_N ? accel_names[accel] : NULL;
}

gboolean hutch_accel_from_string(const char *text, HutchAccel *ret) {
  for (int i = 0; i < HUTCH_ACCEL_N; i++) {
    if (g_strcmp0(text, accel_names[i]) == 0) {
      *ret = (HutchAccel)i;
      return TRUE;
    }
  }
  return FALSE;
}

static const char *const proto_names[HUTCH_PROTO_N] = {
    [HUTCH_PROTO_TCP] = "tcp",
    [HUTCH_PROTO_UDP] = "udp",
};

const char *hutch_proto_to_string(HutchProto proto) {
  return proto < HUTCH_PROTO_N ? proto_names[proto] : NULL;
}

void hutch_share_free(HutchShare *share) {
  if (!share)
    return;
  g_free(share->host);
  g_free(share->guest);
  g_free(share);
}

void hutch_port_free(HutchPort *port) {
  if (!port)
    return;
  g_free(port->host_ip);
  g_free(port);
}

static void provision_step_free(HutchProvisionStep *step) {
  if (!step)
    return;
  g_free(step->name);
  g_strfreev(step->packages);
  g_free(step->script);
  g_free(step->script_path);
  g_free(step->run);
  g_free(step);
}

static void env_var_free(HutchEnvVar *var) {
  if (!var)
    return;
  g_free(var->key);
  g_free(var->value);
  g_free(var);
}

void hutch_secret_free(HutchSecret *secret) {
  if (!secret)
    return;
  g_free(secret->name);
  g_free(secret->from);
  g_strfreev(secret->hosts);
  g_free(secret);
}

static void image_spec_clear(HutchImageSpec *image) {
  if (image->fallback) {
    image_spec_clear(image->fallback);
    g_free(image->fallback);
  }
  g_free(image->file);
  g_free(image->url);
  g_free(image->digest);
  g_free(image->checksums);
  g_free(image->suite);
  g_strfreev(image->packages);
  g_free(image->mirror);
  g_free(image->kernel);
  g_free(image->template);
  memset(image, 0, sizeof(*image));
}

HutchProfile *hutch_profile_new_defaults(void) {
  HutchProfile *p = g_new0(HutchProfile, 1);
  p->cpus = 2;
  p->memory = 4ULL << 30;
  p->disk = 40ULL << 30;
  p->accel = HUTCH_ACCEL_AUTO;
  p->user_uid = -1;
  p->user_gid = -1;
  p->user_sudo = TRUE;
  p->user_shell = g_strdup("/bin/bash");
  p->shares = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_share_free);
  p->ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  p->provision = g_ptr_array_new_with_free_func((GDestroyNotify)provision_step_free);
  p->env = g_ptr_array_new_with_free_func((GDestroyNotify)env_var_free);
  p->secrets = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_secret_free);
  p->boot_timeout = 600;
  p->egress = HUTCH_EGRESS_UNSET;
  p->egress_allow = g_ptr_array_new_with_free_func(g_free);
  p->egress_deny = g_ptr_array_new_with_free_func(g_free);
  p->origins = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return p;
}

void hutch_profile_free(HutchProfile *p) {
  if (!p)
    return;
  g_free(p->name);
  g_free(p->path);
  g_free(p->base);
  image_spec_clear(&p->image);
  g_free(p->user_name);
  g_free(p->user_shell);
  g_hash_table_unref(p->origins);
  g_ptr_array_unref(p->shares);
  g_ptr_array_unref(p->ports);
  g_ptr_array_unref(p->provision);
  g_ptr_array_unref(p->env);
  g_ptr_array_unref(p->secrets);
  g_ptr_array_unref(p->egress_allow);
  g_ptr_array_unref(p->egress_deny);
  g_free(p->description);
  g_free(p);
}

const char *hutch_profile_get_name(const HutchProfile *p) {
  return p->name;
}

const char *hutch_profile_get_first_share_guest(const HutchProfile *p) {
  if (!p->shares || p->shares->len == 0)
    return NULL;
  return ((const HutchShare *)g_ptr_array_index(p->shares, 0))->guest;
}

/* ---- Limits ------------------------------------------------------------------------------ */

#define MAX_BASE_DEPTH 8            /* levels of `base:` above the file loaded */
#define MAX_PROFILE_BYTES (1 << 20) /* a profile is a few hundred bytes; refuse junk early */
#define MAX_CPUS 256
#define MIN_MEMORY (256ULL << 20) /* below this Debian's cloud kernel does not boot */
#define MIN_DISK (1ULL << 30)
#define MAX_BOOT_TIMEOUT (24 * 3600)
#define DEFAULT_SUITE "bookworm"

/* ---- Validators shared by the YAML reader and the command-line setters -------------------
 * Each returns NULL when the text is valid (and stores the value), else a newly allocated
 * "what is wrong (what would be valid)" phrase. */

/* User text as it appears in messages: quoted, one line, not endless. */
static char *quote(const char *text) {
  GString *out = g_string_new("'");
  const char *end = text + strlen(text);
  for (const char *c = text; c < end;) {
    if (out->len > 60) {
      g_string_append(out, "...");
      break;
    }
    /* a byte of invalid UTF-8 is one '?' (its lead byte's length may run past the end) */
    gunichar u = g_utf8_get_char_validated(c, end - c);
    gsize step = u < 0x110000 ? (gsize)(g_utf8_next_char(c) - c) : 1;
    if (u >= 0x110000 || (guchar)*c < 0x20 || *c == 0x7f)
      g_string_append_c(out, '?');
    else
      g_string_append_len(out, c, step);
    c += step;
  }
  g_string_append_c(out, '\'');
  return g_string_free(out, FALSE);
}

static gboolean has_control_chars(const char *text, gboolean allow_newline) {
  for (const char *c = text; *c; c++) {
    if (((guchar)*c < 0x20 && !(allow_newline && (*c == '\n' || *c == '\t'))) || *c == 0x7f)
      return TRUE;
  }
  return FALSE;
}

/* [first][rest]{0,max-1} over ASCII character classes given as strings of allowed extras. */
static gboolean is_word(const char *text, gboolean lower_only, const char *first_extra,
                        const char *rest_extra, gsize max) {
  gsize len = strlen(text);
  if (len == 0 || len > max)
    return FALSE;
  for (gsize i = 0; i < len; i++) {
    char c = text[i];
    gboolean ok = g_ascii_isdigit(c) || g_ascii_islower(c) || (!lower_only && g_ascii_isupper(c)) ||
                  strchr(i == 0 ? first_extra : rest_extra, c) != NULL;
    if (!ok || c == '\0')
      return FALSE;
  }
  return TRUE;
}

static gboolean is_profile_name(const char *text) {
  return is_word(text, FALSE, "", "._-", 64) && !g_str_has_suffix(text, ".yaml");
}

static char *check_uint(const char *text, guint64 min, guint64 max, const char *noun,
                        guint64 *ret) {
  guint64 value;
  g_autofree char *q = quote(text);
  if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64, &value, NULL))
    return g_strdup_printf("%s is not %s (%" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT ")", q, noun,
                           min, max);
  if (value < min || value > max)
    return g_strdup_printf("%s is out of range (%" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT ")", q,
                           min, max);
  *ret = value;
  return NULL;
}

static char *check_cpus(const char *text, guint *ret) {
  guint64 value = 0;
  char *why = check_uint(text, 1, MAX_CPUS, "a number of CPUs", &value);
  if (!why)
    *ret = (guint)value;
  return why;
}

static char *check_size(const char *text, guint64 min, guint64 *ret) {
  guint64 value;
  g_autofree char *q = quote(text);
  if (!hutch_parse_size(text, &value))
    return g_strdup_printf("%s is not a size (e.g. 4GiB)", q);
  if (value < min) {
    g_autofree char *least = hutch_format_size(min);
    return g_strdup_printf("%s is too small (at least %s)", q, least);
  }
  *ret = value;
  return NULL;
}

static char *check_bool(const char *text, gboolean *ret) {
  static const char *const yes[] = {"true", "yes", "on"};
  static const char *const no[] = {"false", "no", "off"};
  for (gsize i = 0; i < G_N_ELEMENTS(yes); i++) {
    if (g_ascii_strcasecmp(text, yes[i]) == 0) {
      *ret = TRUE;
      return NULL;
    }
    if (g_ascii_strcasecmp(text, no[i]) == 0) {
      *ret = FALSE;
      return NULL;
    }
  }
  g_autofree char *q = quote(text);
  return g_strdup_printf("%s is not a boolean (true or false)", q);
}

/* Seconds, or a duration such as 90s, 10m, 1h30m. */
static char *check_duration(const char *text, guint *ret) {
  guint64 total = 0;
  const char *c = text;
  gboolean ok = *c != '\0';
  if (ok && g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT64, &total, NULL)) {
    c += strlen(c);
  } else {
    while (ok && *c) {
      if (!g_ascii_isdigit(*c)) {
        ok = FALSE;
        break;
      }
      char *end;
      guint64 n = g_ascii_strtoull(c, &end, 10);
      guint64 unit = *end == 'h' ? 3600 : *end == 'm' ? 60 : *end == 's' ? 1 : 0;
      if (unit == 0 || n > MAX_BOOT_TIMEOUT) {
        ok = FALSE;
        break;
      }
      total += n * unit;
      c = end + 1;
    }
  }
  g_autofree char *q = quote(text);
  if (!ok)
    return g_strdup_printf("%s is not a duration (seconds, or e.g. 90s, 10m, 1h30m)", q);
  if (total < 1 || total > MAX_BOOT_TIMEOUT)
    return g_strdup_printf("%s is out of range (1s to 24h)", q);
  *ret = (guint)total;
  return NULL;
}

static char *check_port_range(const char *text, guint16 *ret_start, guint16 *ret_end) {
  g_autofree char *q = quote(text);
  g_auto(GStrv) parts = g_strsplit(text, "-", 3);
  guint n = g_strv_length(parts);
  guint64 value[2] = {0, 0};
  if (n < 1 || n > 2)
    return g_strdup_printf("%s is not a port or range (e.g. 8080 or 8000-9000)", q);
  for (guint i = 0; i < n; i++) {
    if (!g_ascii_string_to_unsigned(parts[i], 10, 0, G_MAXUINT64, &value[i], NULL))
      return g_strdup_printf("%s is not a port or range (e.g. 8080 or 8000-9000)", q);
    if (value[i] < 1 || value[i] > 65535)
      return g_strdup_printf("%s is out of range (ports are 1 to 65535)", q);
  }
  if (n == 1)
    value[1] = value[0];
  if (value[1] < value[0])
    return g_strdup_printf("%s is not a range (START-END with START <= END)", q);
  *ret_start = (guint16)value[0];
  *ret_end = (guint16)value[1];
  return NULL;
}

static char *check_range_lengths(const HutchPort *port) {
  guint host = port->host_end - port->host_start + 1u;
  guint guest = port->guest_end - port->guest_start + 1u;
  if (host == guest)
    return NULL;
  return g_strdup_printf("host range has %u port%s, guest range %u (give ranges of the same "
                         "length)",
                         host, host == 1 ? "" : "s", guest);
}

static char *check_proto(const char *text, HutchProto *ret) {
  for (int i = 0; i < HUTCH_PROTO_N; i++) {
    if (strcmp(text, proto_names[i]) == 0) {
      *ret = (HutchProto)i;
      return NULL;
    }
  }
  g_autofree char *q = quote(text);
  return g_strdup_printf("%s is not a protocol (tcp or udp)", q);
}

static char *check_host_ip(const char *text) {
  g_autoptr(GInetAddress) address = g_inet_address_new_from_string(text);
  if (address)
    return NULL;
  g_autofree char *q = quote(text);
  return g_strdup_printf("%s is not an IP address (e.g. 127.0.0.1)", q);
}

/* Share paths: absolute or "~"-relative, no "..", no control characters. The normal form
 * drops repeated and trailing slashes so that "~/a/" and "~/a" are the same guest path. */
static char *check_share_path(const char *text, gboolean guest, char **ret) {
  g_autofree char *q = quote(text);
  if (!(text[0] == '/' || (text[0] == '~' && (text[1] == '\0' || text[1] == '/'))))
    return g_strdup_printf("%s is a relative path (use an absolute path or one starting with "
                           "~/)",
                           q);
  if (has_control_chars(text, FALSE))
    return g_strdup_printf("%s contains control characters (use a plain path)", q);
  GString *norm = g_string_new(NULL);
  g_auto(GStrv) parts = g_strsplit(text, "/", -1);
  for (guint i = 0; parts[i]; i++) {
    if (strcmp(parts[i], "..") == 0) {
      g_string_free(norm, TRUE);
      return g_strdup_printf("%s contains '..' (use a path without it)", q);
    }
    if (i == 0) {
      g_string_append(norm, parts[0]);
    } else if (parts[i][0] != '\0' && strcmp(parts[i], ".") != 0) {
      g_string_append_c(norm, '/');
      g_string_append(norm, parts[i]);
    }
  }
  if (norm->len == 0)
    g_string_append_c(norm, '/');
  /* The whole home or root: on the host it would hand the guest the user's keys, in the
   * guest it would hide the guest user's own files (its SSH keys among them). */
  if (strcmp(norm->str, "/") == 0 || strcmp(norm->str, "~") == 0) {
    g_string_free(norm, TRUE);
    return g_strdup_printf("%s is the whole %s (share a directory below it)", q,
                           guest ? "guest root or home" : "file system or home");
  }
  *ret = g_string_free(norm, FALSE);
  return NULL;
}

static char *check_package(const char *text) {
  if (is_word(text, FALSE, "", "+.:=~_-", 128))
    return NULL;
  g_autofree char *q = quote(text);
  return g_strdup_printf("%s is not a package name (e.g. build-essential)", q);
}

static char *check_url(const char *text, gboolean https_only) {
  gboolean ok =
      (g_str_has_prefix(text, "https://") || (!https_only && g_str_has_prefix(text, "http://"))) &&
      !has_control_chars(text, FALSE) && !strchr(text, ' ');
  if (ok)
    return NULL;
  g_autofree char *q = quote(text);
  return g_strdup_printf("%s is not a%s URL (e.g. https://example.org/file)", q,
                         https_only ? "n https" : "n http or https");
}

static char *check_digest(const char *text, char **ret) {
  g_autofree char *q = quote(text);
  gsize hex_len = g_ascii_strncasecmp(text, "sha256:", 7) == 0   ? 64
                  : g_ascii_strncasecmp(text, "sha512:", 7) == 0 ? 128
                                                                 : 0;
  const char *hex = strchr(text, ':');
  gboolean ok = hex_len > 0 && strlen(hex + 1) == hex_len;
  for (gsize i = 0; ok && i < hex_len; i++)
    ok = g_ascii_isxdigit(hex[1 + i]);
  if (!ok)
    return g_strdup_printf("%s is not a digest (sha256:64 hex digits or sha512:128 hex digits)", q);
  *ret = g_ascii_strdown(text, -1);
  return NULL;
}

static char *check_egress_mode(const char *text, HutchEgressMode *ret) {
  HutchEgressMode mode;
  if (hutch_egress_mode_from_string(text, &mode) && mode != HUTCH_EGRESS_UNSET) {
    *ret = mode;
    return NULL;
  }
  g_autofree char *q = quote(text);
  return g_strdup_printf("%s is not an egress mode (none, allowlist, public or unrestricted)", q);
}

/* An environment variable's name: letters, digits, '_', not starting with a digit. */
static char *check_var_name(const char *text, gsize max) {
  if (is_word(text, FALSE, "_", "_", max) && !g_ascii_isdigit(text[0]))
    return NULL;
  g_autofree char *q = quote(text);
  return g_strdup_printf("%s is not a variable name (letters, digits, '_', at most %" G_GSIZE_FORMAT
                         "; not starting with a digit)",
                         q, max);
}

/* A command secret's command line: split into words as it will be when run (no shell). */
static char *check_secret_command(const char *text) {
  g_autofree char *q = quote(text);
  g_auto(GStrv) argv = NULL;
  g_autoptr(GError) local = NULL;
  if (g_shell_parse_argv(text, NULL, &argv, &local))
    return NULL;
  if (g_error_matches(local, G_SHELL_ERROR, G_SHELL_ERROR_EMPTY_STRING))
    return g_strdup("the command is empty (give the command that prints the secret, e.g. gh "
                    "auth token)");
  if (g_error_matches(local, G_SHELL_ERROR, G_SHELL_ERROR_BAD_QUOTING))
    return g_strdup_printf("%s cannot be split into words (a quote is not closed, or a "
                           "backslash ends it)",
                           q);
  return g_strdup_printf("%s cannot be split into words (%s)", q, local->message);
}

/* A file secret's path: as written, and expanded on the host when the VM starts, so it must
 * not depend on the directory hutch runs in. */
static char *check_secret_file(const char *text) {
  g_autofree char *q = quote(text);
  if (!(text[0] == '/' || g_str_has_prefix(text, "~/")))
    return g_strdup_printf("%s is neither absolute nor starting with ~/ (e.g. "
                           "~/.config/x/key)",
                           q);
  if (has_control_chars(text, FALSE))
    return g_strdup_printf("%s contains control characters (use a plain path)", q);
  return NULL;
}

/* A DNS name: labels of letters, digits and '-' (1-63, no '-' at either end), at most 253
 * in all, the last not a number (that would be an address in disguise, such as 127.1). */
static gboolean is_host_name(const char *name) {
  gsize len = strlen(name);
  if (len == 0 || len > 253)
    return FALSE;
  g_auto(GStrv) labels = g_strsplit(name, ".", -1);
  const char *last = NULL;
  for (char **label = labels; *label; label++) {
    gsize n = strlen(*label);
    if (n == 0 || n > 63 || (*label)[0] == '-' || (*label)[n - 1] == '-')
      return FALSE;
    for (const char *c = *label; *c; c++)
      if (!g_ascii_isalnum(*c) && *c != '-')
        return FALSE;
    last = *label;
  }
  return strspn(last, "0123456789") != strlen(last);
}

/* A secret's host: NAME or NAME:PORT, stored in lower case and without ":443" (the port a name
 * without one means). Never a wildcard: under a shared suffix (workers.dev, vercel.app, an S3
 * endpoint) anyone can have a server, and the real value would go to it. */
static char *check_secret_host(const char *text, char **ret) {
  g_autofree char *q = quote(text);
  if (strchr(text, '*'))
    return g_strdup_printf("%s: a secret's host is one name, not a wildcard (a wildcard could "
                           "be anyone's server: name each host)",
                           q);
  g_autofree char *lower = g_ascii_strdown(text, -1);
  char *name = lower;
  guint64 port = 443;
  char *colon = strchr(lower, ':');
  gboolean address = lower[0] == '[' || (colon && strchr(colon + 1, ':'));
  if (colon && !address) {
    *colon = '\0';
    g_autoptr(GInetAddress) ip = g_inet_address_new_from_string(name);
    address = ip != NULL;
    if (!address && !g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &port, NULL))
      return g_strdup_printf("%s has a bad port (1 to 65535)", q);
  }
  if (!address) {
    g_autoptr(GInetAddress) ip = g_inet_address_new_from_string(name);
    address = ip != NULL;
  }
  if (address)
    return g_strdup_printf("%s is an IP address (a secret's host is a name: the real value only "
                           "goes to the name the guest asked for)",
                           q);
  if (!is_host_name(name))
    return g_strdup_printf("%s is not a host name (letters, digits, '-' and '.', labels of 1 to "
                           "63, at most 253 in all; e.g. api.example.com)",
                           q);
  *ret = port == 443 ? g_strdup(name) : g_strdup_printf("%s:%" G_GUINT64_FORMAT, name, port);
  return NULL;
}

/* ---- Command-line specs ------------------------------------------------------------------ */

static HutchPort *port_from_spec(const char *spec, char **why) {
  g_autoptr(GString) rest = g_string_new(spec);
  g_autofree char *q = quote(spec);
  HutchProto proto = HUTCH_PROTO_TCP;
  g_autofree char *host_ip = NULL;

  char *slash = strrchr(rest->str, '/');
  if (slash) {
    g_autofree char *inner = check_proto(slash + 1, &proto);
    if (inner) {
      *why = g_strdup_printf("%s: %s", q, inner);
      return NULL;
    }
    g_string_truncate(rest, slash - rest->str);
  }
  const char *ports = rest->str;
  if (rest->str[0] == '[') {
    char *close = strchr(rest->str, ']');
    if (!close || close[1] != ':') {
      *why = g_strdup_printf("%s: unterminated IPv6 address (e.g. [::1]:8080:80)", q);
      return NULL;
    }
    host_ip = g_strndup(rest->str + 1, close - rest->str - 1);
    ports = close + 2;
  }
  g_auto(GStrv) parts = g_strsplit(ports, ":", -1);
  guint n = g_strv_length(parts);
  if (!host_ip && n == 3) {
    host_ip = g_strdup(parts[0]);
  } else if (n != 1 && n != 2) {
    *why = g_strdup_printf("%s is not a port forward ([HOST_IP:]HOST[-END]:GUEST[-END][/tcp|/udp])",
                           q);
    return NULL;
  }
  const char *host = n == 3 ? parts[1] : parts[0];
  const char *guest = n == 1 ? parts[0] : parts[n - 1];

  HutchPort *port = g_new0(HutchPort, 1);
  port->proto = proto;
  port->host_ip = host_ip ? g_steal_pointer(&host_ip) : g_strdup("127.0.0.1");
  char *inner = check_host_ip(port->host_ip);
  if (!inner)
    inner = check_port_range(host, &port->host_start, &port->host_end);
  if (!inner)
    inner = check_port_range(guest, &port->guest_start, &port->guest_end);
  if (!inner)
    inner = check_range_lengths(port);
  if (inner) {
    *why = g_strdup_printf("%s: %s", q, inner);
    g_free(inner);
    hutch_port_free(port);
    return NULL;
  }
  return port;
}

HutchPort *hutch_port_parse(const char *spec, GError **error) {
  g_autofree char *why = NULL;
  HutchPort *port = port_from_spec(spec, &why);
  if (!port)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "invalid port forward %s", why);
  return port;
}

const char *hutch_share_cache_name(HutchShareCache cache) {
  switch (cache) {
  case HUTCH_SHARE_CACHE_ALWAYS:
    return "always";
  case HUTCH_SHARE_CACHE_NEVER:
    return "never";
  case HUTCH_SHARE_CACHE_AUTO:
  default:
    return "auto";
  }
}

gboolean hutch_share_cache_parse(const char *text, HutchShareCache *ret_cache) {
  static const HutchShareCache all[] = {HUTCH_SHARE_CACHE_AUTO, HUTCH_SHARE_CACHE_ALWAYS,
                                        HUTCH_SHARE_CACHE_NEVER};
  for (gsize i = 0; i < G_N_ELEMENTS(all); i++)
    if (strcmp(text, hutch_share_cache_name(all[i])) == 0) {
      *ret_cache = all[i];
      return TRUE;
    }
  return FALSE;
}

/* The options after the second ':' of a --share spec: "ro", "rw", "cache=MODE", separated
 * by commas. An error text, or NULL. */
static char *share_spec_options(const char *text, gboolean *writable, HutchShareCache *cache) {
  g_auto(GStrv) options = g_strsplit(text, ",", -1);
  for (char **o = options; *o; o++) {
    if (strcmp(*o, "ro") == 0 || strcmp(*o, "rw") == 0)
      *writable = strcmp(*o, "rw") == 0;
    else if (!g_str_has_prefix(*o, "cache=") || !hutch_share_cache_parse(*o + 6, cache))
      return g_strdup_printf("'%s' is not an option (ro, rw, cache=auto|always|never)", *o);
  }
  return NULL;
}

HutchShare *hutch_share_parse(const char *spec, GError **error) {
  g_auto(GStrv) parts = g_strsplit(spec, ":", -1);
  guint n = g_strv_length(parts);
  g_autofree char *q = quote(spec);
  g_autofree char *why = NULL;
  g_autofree char *host = NULL, *guest = NULL;
  gboolean writable = TRUE;
  HutchShareCache cache = HUTCH_SHARE_CACHE_AUTO;

  if (n != 2 && n != 3)
    why = g_strdup("is not a share (HOST:GUEST[:OPTION,...]: ro, rw, cache=MODE)");
  else if (n == 3)
    why = share_spec_options(parts[2], &writable, &cache);
  if (!why)
    why = check_share_path(parts[0], FALSE, &host);
  if (!why)
    why = check_share_path(parts[1], TRUE, &guest);
  if (why) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "invalid share %s: %s", q, why);
    return NULL;
  }
  HutchShare *share = g_new0(HutchShare, 1);
  share->host = g_steal_pointer(&host);
  share->guest = g_steal_pointer(&guest);
  share->writable = writable;
  share->cache = cache;
  return share;
}

static const HutchPort *find_overlap(GPtrArray *ports, const HutchPort *port) {
  for (guint i = 0; i < ports->len; i++) {
    const HutchPort *other = g_ptr_array_index(ports, i);
    if (other->proto == port->proto && port->host_start <= other->host_end &&
        other->host_start <= port->host_end)
      return other;
  }
  return NULL;
}

static char *describe_overlap(const HutchPort *other) {
  if (other->host_start == other->host_end)
    return g_strdup_printf("host port overlaps %u/%s, forwarded already (host ports must "
                           "not overlap)",
                           other->host_start, proto_names[other->proto]);
  return g_strdup_printf("host ports overlap %u-%u/%s, forwarded already (host ports must not "
                         "overlap)",
                         other->host_start, other->host_end, proto_names[other->proto]);
}

static gint find_share(GPtrArray *shares, const char *guest) {
  for (guint i = 0; i < shares->len; i++) {
    const HutchShare *share = g_ptr_array_index(shares, i);
    if (strcmp(share->guest, guest) == 0)
      return (gint)i;
  }
  return -1;
}

gboolean hutch_profile_add_share(HutchProfile *p, HutchShare *share, GError **error) {
  gint i = find_share(p->shares, share->guest);
  if (i >= 0) {
    hutch_share_free(g_ptr_array_index(p->shares, i));
    g_ptr_array_index(p->shares, i) = share;
  } else {
    g_ptr_array_add(p->shares, share);
  }
  return TRUE;
}

gboolean hutch_profile_add_port(HutchProfile *p, HutchPort *port, GError **error) {
  const HutchPort *other = find_overlap(p->ports, port);
  if (other) {
    g_autofree char *why = describe_overlap(other);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "port %u: %s", port->host_start, why);
    return FALSE;
  }
  g_ptr_array_add(p->ports, port);
  return TRUE;
}

gboolean hutch_profile_set_cpus(HutchProfile *p, const char *cpus, GError **error) {
  g_autofree char *why = check_cpus(cpus, &p->cpus);
  if (why)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "cpus: %s", why);
  return why == NULL;
}

gboolean hutch_profile_set_memory(HutchProfile *p, const char *size, GError **error) {
  g_autofree char *why = check_size(size, MIN_MEMORY, &p->memory);
  if (why)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "memory: %s", why);
  return why == NULL;
}

gboolean hutch_profile_set_disk(HutchProfile *p, const char *size, GError **error) {
  g_autofree char *why = check_size(size, MIN_DISK, &p->disk);
  if (why)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "disk: %s", why);
  return why == NULL;
}

gboolean hutch_profile_set_egress(HutchProfile *p, const char *mode, GError **error) {
  g_autofree char *why = check_egress_mode(mode, &p->egress);
  if (why)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "egress: %s", why);
  return why == NULL;
}

HutchEgressPolicy *hutch_profile_egress_policy(const HutchProfile *p, GError **error) {
  g_autoptr(HutchEgressPolicy) policy =
      hutch_egress_policy_new(p->egress == HUTCH_EGRESS_UNSET ? HUTCH_EGRESS_DEFAULT : p->egress);
  /* deny after allow: policy_add takes a text out of the other list, so deny wins */
  for (guint i = 0; i < p->egress_allow->len; i++)
    if (!hutch_egress_policy_add(policy, FALSE, g_ptr_array_index(p->egress_allow, i), error))
      return NULL;
  for (guint i = 0; i < p->egress_deny->len; i++)
    if (!hutch_egress_policy_add(policy, TRUE, g_ptr_array_index(p->egress_deny, i), error))
      return NULL;
  return g_steal_pointer(&policy);
}

/* ---- Search path ------------------------------------------------------------------------- */

static gboolean running_from_build_tree(void) {
  g_autofree char *exe = g_file_read_link("/proc/self/exe", NULL);
  g_autofree char *build = realpath(HUTCH_BUILD_DIR, NULL);
  if (!exe || !build)
    return FALSE;
  gsize len = strlen(build);
  return strncmp(exe, build, len) == 0 && exe[len] == '/';
}

static void add_dir(GPtrArray *dirs, char *dir) {
  for (guint i = 0; i < dirs->len; i++) {
    if (strcmp(g_ptr_array_index(dirs, i), dir) == 0) {
      g_free(dir);
      return;
    }
  }
  g_ptr_array_add(dirs, dir);
}

GPtrArray *hutch_profile_search_path(void) {
  GPtrArray *dirs = g_ptr_array_new_with_free_func(g_free);
  /* Read the variable itself rather than g_get_user_config_dir(), which caches the first
   * answer for the life of the process. */
  const char *config = g_getenv("XDG_CONFIG_HOME");
  if (config && g_path_is_absolute(config))
    add_dir(dirs, g_build_filename(config, "hutch", "profiles", NULL));
  else
    add_dir(dirs, g_build_filename(g_get_home_dir(), ".config", "hutch", "profiles", NULL));
  add_dir(dirs, g_build_filename(HUTCH_DATADIR, "profiles", NULL));
  const char *source = g_getenv("HUTCH_SOURCE_DIR");
  if (source && *source)
    add_dir(dirs, g_build_filename(source, "profiles", NULL));
  else if (running_from_build_tree())
    add_dir(dirs, g_build_filename(HUTCH_SOURCE_DIR, "profiles", NULL));
  return dirs;
}

static char *join_dirs(GPtrArray *dirs) {
  g_ptr_array_add(dirs, NULL);
  char *joined = g_strjoinv(", ", (char **)dirs->pdata);
  g_ptr_array_remove_index(dirs, dirs->len - 1);
  return joined;
}

/* NULL with *searched set (a list of directories) when there is no such profile. */
static char *search(const char *name, char **searched) {
  g_autoptr(GPtrArray) dirs = hutch_profile_search_path();
  g_autofree char *file = g_strconcat(name, ".yaml", NULL);
  for (guint i = 0; i < dirs->len; i++) {
    g_autofree char *path = g_build_filename(g_ptr_array_index(dirs, i), file, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
      return g_steal_pointer(&path);
  }
  *searched = join_dirs(dirs);
  return NULL;
}

char *hutch_profile_find(const char *name, GError **error) {
  if (!is_profile_name(name)) {
    g_autofree char *q = quote(name);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "%s is not a profile name (letters, digits, '.', '_', '-'; e.g. debian-12)", q);
    return NULL;
  }
  g_autofree char *searched = NULL;
  char *path = search(name, &searched);
  if (!path)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND, "profile '%s' not found (searched %s)",
                name, searched);
  return path;
}

static gint compare_entries(gconstpointer a, gconstpointer b) {
  JsonObject *x = *(JsonObject *const *)a, *y = *(JsonObject *const *)b;
  int by_name =
      strcmp(json_object_get_string_member(x, "name"), json_object_get_string_member(y, "name"));
  if (by_name != 0)
    return by_name;
  return (gint)json_object_get_int_member(x, "order") -
         (gint)json_object_get_int_member(y, "order");
}

JsonArray *hutch_profile_list(GError **error) {
  g_autoptr(GPtrArray) dirs = hutch_profile_search_path();
  g_autoptr(GPtrArray) entries = g_ptr_array_new_with_free_func((GDestroyNotify)json_object_unref);
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; i < dirs->len; i++) {
    const char *dir_path = g_ptr_array_index(dirs, i);
    g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
    if (!dir)
      continue; /* a directory of the search path need not exist */
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *entry;
    while ((entry = g_dir_read_name(dir))) {
      if (!g_str_has_suffix(entry, ".yaml"))
        continue;
      g_autofree char *name = g_strndup(entry, strlen(entry) - strlen(".yaml"));
      g_autofree char *path = g_build_filename(dir_path, entry, NULL);
      if (!is_profile_name(name) || !g_file_test(path, G_FILE_TEST_IS_REGULAR))
        continue;
      JsonObject *obj = json_object_new();
      json_object_set_string_member(obj, "name", name);
      json_object_set_string_member(obj, "path", path);
      json_object_set_boolean_member(obj, "shadowed", g_hash_table_contains(seen, name));
      json_object_set_int_member(obj, "order", i);
      g_ptr_array_add(entries, obj);
      g_ptr_array_add(names, g_steal_pointer(&name));
    }
    /* Only after the whole directory: shadowing is between directories. */
    for (guint j = 0; j < names->len; j++)
      g_hash_table_add(seen, g_strdup(g_ptr_array_index(names, j)));
  }
  g_ptr_array_sort(entries, compare_entries);
  JsonArray *list = json_array_new();
  for (guint i = 0; i < entries->len; i++) {
    JsonObject *obj = g_ptr_array_index(entries, i);
    json_object_remove_member(obj, "order");
    json_array_add_object_element(list, json_object_ref(obj));
  }
  return list;
}

/* ---- Reading YAML ------------------------------------------------------------------------ */

typedef struct {
  const char *display; /* the file's name in messages */
  char *dir;           /* the file's directory, absolute: relative paths start here */
  yaml_document_t doc;
  gboolean have_doc;
  HutchProfile *profile;    /* being built: the base's values, then this file's */
  GPtrArray *chain;         /* real paths of the files being read, outermost first */
  GPtrArray *chain_display; /* and their names in messages */
  GHashTable *share_guests; /* guest paths this file defines (duplicates are errors) */
  GHashTable *step_names;   /* step names this file defines */
  GHashTable *secret_names; /* secret names this file defines -> NodeAt of the name */
  GHashTable *env_names;    /* env names this file sets -> NodeAt of the key */
} Loader;

/* Where a value was given, for an error found after the whole file is read. */
typedef struct {
  char *key; /* as in messages, e.g. "secrets[1].name" */
  yaml_node_t *node;
} NodeAt;

static void node_at_free(NodeAt *at) {
  if (!at)
    return;
  g_free(at->key);
  g_free(at);
}

static void remember_node(GHashTable *table, const char *name, const char *key, yaml_node_t *node) {
  NodeAt *at = g_new0(NodeAt, 1);
  at->key = g_strdup(key);
  at->node = node;
  g_hash_table_replace(table, g_strdup(name), at);
}

typedef gboolean (*KeyHandler)(Loader *l, gpointer target, yaml_node_t *value, const char *key,
                               GError **error);

typedef struct {
  const char *name;
  KeyHandler handler;
} KeySpec;

static HutchProfile *load_path(const char *path, GPtrArray *chain, GPtrArray *chain_display,
                               GError **error);

static gboolean fail_at(const Loader *l, const yaml_node_t *node, const char *key, GError **error,
                        const char *fmt, ...) G_GNUC_PRINTF(5, 6);

static gboolean fail_at(const Loader *l, const yaml_node_t *node, const char *key, GError **error,
                        const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *what = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "%s:%zu:%zu: %s: %s", l->display,
              node->start_mark.line + 1, node->start_mark.column + 1, key, what);
  return FALSE;
}

static const char *node_kind(const yaml_node_t *node) {
  switch (node->type) {
  case YAML_SCALAR_NODE:
    return "a single value";
  case YAML_SEQUENCE_NODE:
    return "a list";
  case YAML_MAPPING_NODE:
    return "a mapping";
  case YAML_NO_NODE:
    break;
  }
  return "nothing";
}

static gboolean is_null(const yaml_node_t *node) {
  static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
  if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return FALSE;
  for (gsize i = 0; i < G_N_ELEMENTS(nulls); i++) {
    if (strcmp((const char *)node->data.scalar.value, nulls[i]) == 0)
      return TRUE;
  }
  return FALSE;
}

static const char *expect_scalar(Loader *l, yaml_node_t *node, const char *key, const char *what,
                                 GError **error) {
  if (node->type != YAML_SCALAR_NODE) {
    fail_at(l, node, key, error, "expected %s, got %s", what, node_kind(node));
    return NULL;
  }
  if (is_null(node)) {
    fail_at(l, node, key, error, "expected %s, got no value", what);
    return NULL;
  }
  const char *text = (const char *)node->data.scalar.value;
  if (strlen(text) != node->data.scalar.length) {
    fail_at(l, node, key, error, "contains a NUL character (expected %s)", what);
    return NULL;
  }
  return text;
}

/* Fails with why (taking it) unless it is NULL. */
static gboolean check_at(Loader *l, yaml_node_t *node, const char *key, char *why, GError **error) {
  if (!why)
    return TRUE;
  fail_at(l, node, key, error, "%s", why);
  g_free(why);
  return FALSE;
}

/* Records that the value of key (see HutchProfile.origins) was read from node; with append,
 * after where it was read before (a value that several files extend). */
static void set_origin(Loader *l, const char *key, const yaml_node_t *node, gboolean append) {
  g_autofree char *here = g_strdup_printf("%s:%zu", l->display, node->start_mark.line + 1);
  const char *before = append ? g_hash_table_lookup(l->profile->origins, key) : NULL;
  char *origin = before ? g_strdup_printf("%s, %s", before, here) : g_steal_pointer(&here);
  g_hash_table_replace(l->profile->origins, g_strdup(key), origin);
}

#define FOR_EACH_ITEM(l, node, item)                                                               \
  for (yaml_node_item_t *item##_it = (node)->data.sequence.items.start;                            \
       item##_it < (node)->data.sequence.items.top; item##_it++)                                   \
    for (yaml_node_t *item = yaml_document_get_node(&(l)->doc, *item##_it); item; item = NULL)

static yaml_node_t *pair_key(Loader *l, yaml_node_pair_t *pair) {
  return yaml_document_get_node(&l->doc, pair->key);
}

static yaml_node_t *pair_value(Loader *l, yaml_node_pair_t *pair) {
  return yaml_document_get_node(&l->doc, pair->value);
}

static yaml_node_t *mapping_lookup(Loader *l, yaml_node_t *mapping, const char *name) {
  for (yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
       pair < mapping->data.mapping.pairs.top; pair++) {
    yaml_node_t *k = pair_key(l, pair);
    if (k->type == YAML_SCALAR_NODE && strcmp((const char *)k->data.scalar.value, name) == 0)
      return pair_value(l, pair);
  }
  return NULL;
}

static char *key_path(const char *prefix, const char *name) {
  return prefix ? g_strconcat(prefix, ".", name, NULL) : g_strdup(name);
}

static char *key_list(const KeySpec *keys, gsize n_keys) {
  GString *out = g_string_new(NULL);
  for (gsize i = 0; i < n_keys; i++)
    g_string_append_printf(out, "%s%s", i ? ", " : "", keys[i].name);
  return g_string_free(out, FALSE);
}

/* Checks that node is a mapping whose keys are unique scalars; `what` describes it. */
static gboolean expect_mapping(Loader *l, yaml_node_t *node, const char *prefix, const char *what,
                               GError **error) {
  const char *key = prefix ? prefix : "profile";
  if (node->type != YAML_MAPPING_NODE)
    return fail_at(l, node, key, error, "expected %s, got %s", what, node_kind(node));
  for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top;
       pair++) {
    yaml_node_t *k = pair_key(l, pair);
    if (k->type != YAML_SCALAR_NODE)
      return fail_at(l, k, key, error, "a key must be a single value, not %s", node_kind(k));
    for (yaml_node_pair_t *before = node->data.mapping.pairs.start; before < pair; before++) {
      yaml_node_t *b = pair_key(l, before);
      if (strcmp((const char *)b->data.scalar.value, (const char *)k->data.scalar.value) == 0) {
        g_autofree char *full = key_path(prefix, (const char *)k->data.scalar.value);
        return fail_at(l, k, full, error, "duplicate key (first given on line %zu)",
                       b->start_mark.line + 1);
      }
    }
  }
  return TRUE;
}

static gboolean walk_mapping(Loader *l, yaml_node_t *node, const char *prefix, const char *what,
                             const KeySpec *keys, gsize n_keys, gpointer target, GError **error) {
  if (!expect_mapping(l, node, prefix, what, error))
    return FALSE;
  for (yaml_node_pair_t *pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top;
       pair++) {
    yaml_node_t *k = pair_key(l, pair);
    const char *name = (const char *)k->data.scalar.value;
    g_autofree char *full = key_path(prefix, name);
    const KeySpec *spec = NULL;
    for (gsize i = 0; i < n_keys && !spec; i++) {
      if (strcmp(keys[i].name, name) == 0)
        spec = &keys[i];
    }
    if (!spec) {
      g_autofree char *valid = key_list(keys, n_keys);
      return fail_at(l, k, full, error, "unknown key (valid keys: %s)", valid);
    }
    if (!spec->handler(l, target, pair_value(l, pair), full, error))
      return FALSE;
    /* the profile's single values and user's; image and list items record their own */
    if (target == l->profile && pair_value(l, pair)->type == YAML_SCALAR_NODE)
      set_origin(l, full, pair_value(l, pair), FALSE);
  }
  return TRUE;
}

static gboolean get_string(Loader *l, yaml_node_t *node, const char *key, const char *what,
                           char **field, GError **error) {
  const char *text = expect_scalar(l, node, key, what, error);
  if (!text)
    return FALSE;
  g_free(*field);
  *field = g_strdup(text);
  return TRUE;
}

static gboolean get_bool(Loader *l, yaml_node_t *node, const char *key, gboolean *field,
                         GError **error) {
  const char *text = expect_scalar(l, node, key, "true or false", error);
  return text && check_at(l, node, key, check_bool(text, field), error);
}

/* A list of package names, appended to *field (without duplicates). */
static gboolean get_packages(Loader *l, yaml_node_t *node, const char *key, char ***field,
                             GError **error) {
  if (node->type != YAML_SEQUENCE_NODE ||
      node->data.sequence.items.start == node->data.sequence.items.top)
    return fail_at(l, node, key, error, "expected a list of package names, got %s",
                   node->type == YAML_SEQUENCE_NODE ? "an empty list" : node_kind(node));
  g_autoptr(GPtrArray) all = g_ptr_array_new_with_free_func(g_free);
  for (char **old = *field; old && *old; old++)
    g_ptr_array_add(all, g_strdup(*old));
  FOR_EACH_ITEM(l, node, item) {
    const char *name = expect_scalar(l, item, key, "a package name", error);
    if (!name || !check_at(l, item, key, check_package(name), error))
      return FALSE;
    gboolean dup = FALSE;
    for (guint i = 0; i < all->len && !dup; i++)
      dup = strcmp(g_ptr_array_index(all, i), name) == 0;
    if (!dup)
      g_ptr_array_add(all, g_strdup(name));
  }
  g_ptr_array_add(all, NULL);
  g_strfreev(*field);
  *field = (char **)g_ptr_array_free(g_steal_pointer(&all), FALSE);
  return TRUE;
}

/* ---- Profile keys ------------------------------------------------------------------------ */

static gboolean key_base(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                         GError **error) {
  return TRUE; /* read before the other keys, by load_text */
}

static gboolean key_description(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                                GError **error) {
  HutchProfile *p = target;
  return get_string(l, v, key, "a line of text", &p->description, error);
}

static gboolean key_cpus(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                         GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "a number from 1 to 256", error);
  return text && check_at(l, v, key, check_cpus(text, &p->cpus), error);
}

static gboolean key_memory(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "a size (e.g. 4GiB)", error);
  return text && check_at(l, v, key, check_size(text, MIN_MEMORY, &p->memory), error);
}

static gboolean key_disk(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                         GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "a size (e.g. 40GiB)", error);
  return text && check_at(l, v, key, check_size(text, MIN_DISK, &p->disk), error);
}

static gboolean key_accel(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "auto, kvm or tcg", error);
  if (!text)
    return FALSE;
  if (hutch_accel_from_string(text, &p->accel))
    return TRUE;
  g_autofree char *q = quote(text);
  return fail_at(l, v, key, error, "%s is not an accelerator (auto, kvm or tcg)", q);
}

static gboolean key_boot_timeout(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                                 GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "a duration (e.g. 600 or 10m)", error);
  return text && check_at(l, v, key, check_duration(text, &p->boot_timeout), error);
}

/* user: */

static gboolean user_name(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "a user name", error);
  if (!text)
    return FALSE;
  if (!is_word(text, TRUE, "_", "_-", 32) || g_ascii_isdigit(text[0]) ||
      strcmp(text, "root") == 0) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error,
                   "%s is not a user name (lower-case letters, digits, '_', '-'; not root)", q);
  }
  g_free(p->user_name);
  p->user_name = g_strdup(text);
  return TRUE;
}

static gboolean user_uid(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                         GError **error) {
  HutchProfile *p = target;
  guint64 uid = 0;
  const char *text = expect_scalar(l, v, key, "a uid (1 to 2147483646)", error);
  if (!text || !check_at(l, v, key, check_uint(text, 1, G_MAXINT32 - 1, "a uid", &uid), error))
    return FALSE;
  p->user_uid = (gint64)uid;
  return TRUE;
}

static gboolean user_gid(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                         GError **error) {
  HutchProfile *p = target;
  guint64 gid = 0;
  const char *text = expect_scalar(l, v, key, "a gid (1 to 2147483646)", error);
  if (!text || !check_at(l, v, key, check_uint(text, 1, G_MAXINT32 - 1, "a gid", &gid), error))
    return FALSE;
  p->user_gid = (gint64)gid;
  return TRUE;
}

static gboolean user_sudo(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  HutchProfile *p = target;
  return get_bool(l, v, key, &p->user_sudo, error);
}

static gboolean user_shell(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "an absolute path (e.g. /bin/bash)", error);
  if (!text)
    return FALSE;
  if (text[0] != '/' || has_control_chars(text, FALSE) || strchr(text, ' ')) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error, "%s is not an absolute path (e.g. /bin/bash)", q);
  }
  g_free(p->user_shell);
  p->user_shell = g_strdup(text);
  return TRUE;
}

static const KeySpec user_keys[] = {
    {"name", user_name},
    {"uid", user_uid},
    {"gid", user_gid},
    {"sudo", user_sudo},
    {"shell", user_shell},
};

static gboolean key_user(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                         GError **error) {
  return walk_mapping(l, v, key, "a mapping with name, uid, gid, sudo, shell", user_keys,
                      G_N_ELEMENTS(user_keys), target, error);
}

/* shares: */

static gboolean share_path(Loader *l, yaml_node_t *v, const char *key, gboolean guest, char **field,
                           GError **error) {
  const char *text = expect_scalar(l, v, key, "a path (absolute or starting with ~/)", error);
  char *norm = NULL;
  if (!text || !check_at(l, v, key, check_share_path(text, guest, &norm), error))
    return FALSE;
  g_free(*field);
  *field = norm;
  return TRUE;
}

static gboolean share_host(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  return share_path(l, v, key, FALSE, &((HutchShare *)target)->host, error);
}

static gboolean share_guest(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  return share_path(l, v, key, TRUE, &((HutchShare *)target)->guest, error);
}

static gboolean share_writable(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                               GError **error) {
  return get_bool(l, v, key, &((HutchShare *)target)->writable, error);
}

static gboolean share_create(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                             GError **error) {
  return get_bool(l, v, key, &((HutchShare *)target)->create, error);
}

static gboolean share_cache(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  const char *text = expect_scalar(l, v, key, "auto, always or never", error);
  if (!text)
    return FALSE;
  if (!hutch_share_cache_parse(text, &((HutchShare *)target)->cache)) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error, "%s is not a cache mode (auto, always or never)", q);
  }
  return TRUE;
}

static const KeySpec share_keys[] = {
    {"host", share_host},
    {"guest", share_guest},
    {"writable", share_writable},
    {"create", share_create},
    {"cache", share_cache}, /* one per line */
};

G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchShare, hutch_share_free)

static gboolean key_shares(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  HutchProfile *p = target;
  if (is_null(v))
    return TRUE;
  if (v->type != YAML_SEQUENCE_NODE)
    return fail_at(l, v, key, error, "expected a list of shares, got %s", node_kind(v));
  guint index = 0;
  FOR_EACH_ITEM(l, v, item) {
    g_autofree char *item_key = g_strdup_printf("%s[%u]", key, index++);
    g_autoptr(HutchShare) share = g_new0(HutchShare, 1);
    if (!walk_mapping(l, item, item_key, "a mapping with host, guest, writable, create, cache",
                      share_keys, G_N_ELEMENTS(share_keys), share, error))
      return FALSE;
    if (!share->host || !share->guest)
      return fail_at(l, item, item_key, error, "missing %s (a share needs host and guest)",
                     share->host ? "guest" : "host");
    if (g_hash_table_contains(l->share_guests, share->guest)) {
      g_autofree char *guest_key = key_path(item_key, "guest");
      g_autofree char *q = quote(share->guest);
      return fail_at(l, mapping_lookup(l, item, "guest"), guest_key, error,
                     "%s is shared twice (each guest path once)", q);
    }
    g_hash_table_add(l->share_guests, g_strdup(share->guest));
    g_autofree char *origin_key = g_strconcat("shares:", share->guest, NULL);
    set_origin(l, origin_key, item, FALSE);
    hutch_profile_add_share(p, g_steal_pointer(&share), NULL);
  }
  return TRUE;
}

/* ports: */

static gboolean port_range(Loader *l, yaml_node_t *v, const char *key, guint16 *start, guint16 *end,
                           GError **error) {
  const char *text = expect_scalar(l, v, key, "a port or range (e.g. 8080 or 8000-9000)", error);
  return text && check_at(l, v, key, check_port_range(text, start, end), error);
}

static gboolean port_host(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  HutchPort *port = target;
  return port_range(l, v, key, &port->host_start, &port->host_end, error);
}

static gboolean port_guest(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  HutchPort *port = target;
  return port_range(l, v, key, &port->guest_start, &port->guest_end, error);
}

static gboolean port_proto(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  HutchPort *port = target;
  const char *text = expect_scalar(l, v, key, "tcp or udp", error);
  return text && check_at(l, v, key, check_proto(text, &port->proto), error);
}

static gboolean port_host_ip(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                             GError **error) {
  HutchPort *port = target;
  const char *text = expect_scalar(l, v, key, "an IP address (e.g. 127.0.0.1)", error);
  if (!text || !check_at(l, v, key, check_host_ip(text), error))
    return FALSE;
  g_free(port->host_ip);
  port->host_ip = g_strdup(text);
  return TRUE;
}

static const KeySpec port_keys[] = {
    {"host", port_host},
    {"guest", port_guest},
    {"proto", port_proto},
    {"host_ip", port_host_ip},
};

static gboolean key_ports(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  HutchProfile *p = target;
  if (is_null(v))
    return TRUE;
  if (v->type != YAML_SEQUENCE_NODE)
    return fail_at(l, v, key, error, "expected a list of ports, got %s", node_kind(v));
  guint index = 0;
  FOR_EACH_ITEM(l, v, item) {
    g_autofree char *item_key = g_strdup_printf("%s[%u]", key, index++);
    g_autoptr(HutchPort) port = NULL;
    if (item->type == YAML_SCALAR_NODE) {
      const char *text = expect_scalar(l, item, item_key, "a port forward (e.g. 8080:80)", error);
      char *why = NULL;
      if (!text)
        return FALSE;
      port = port_from_spec(text, &why);
      if (!check_at(l, item, item_key, why, error))
        return FALSE;
    } else {
      port = g_new0(HutchPort, 1);
      port->host_ip = g_strdup("127.0.0.1");
      if (!walk_mapping(l, item, item_key, "a mapping with host, guest, proto, host_ip", port_keys,
                        G_N_ELEMENTS(port_keys), port, error))
        return FALSE;
      /* Ports start at 1, so 0 means the key was not given. */
      if (port->host_start == 0 || port->guest_start == 0)
        return fail_at(l, item, item_key, error, "missing %s (a port needs host and guest)",
                       port->host_start ? "guest" : "host");
      g_autofree char *guest_key = key_path(item_key, "guest");
      if (!check_at(l, mapping_lookup(l, item, "guest"), guest_key, check_range_lengths(port),
                    error))
        return FALSE;
    }
    const HutchPort *other = find_overlap(p->ports, port);
    if (other)
      return check_at(l, item, item_key, describe_overlap(other), error);
    g_autofree char *origin_key = g_strdup_printf("ports[%u]", p->ports->len);
    set_origin(l, origin_key, item, FALSE);
    g_ptr_array_add(p->ports, g_steal_pointer(&port));
  }
  return TRUE;
}

/* provision: */

typedef struct {
  HutchProvisionStep *step;
  yaml_node_t *action; /* the first of packages, script, run */
} StepBuild;

static gboolean step_action(Loader *l, StepBuild *b, yaml_node_t *v, const char *key,
                            GError **error) {
  if (b->action) {
    /* The key is the last component of the path. */
    return fail_at(l, v, key, error,
                   "a step has exactly one of packages, script, run (this "
                   "one has %s already)",
                   b->step->packages ? "packages"
                   : b->step->script ? "script"
                                     : "run");
  }
  b->action = v;
  return TRUE;
}

static gboolean step_name(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  StepBuild *b = target;
  const char *text = expect_scalar(l, v, key, "a step name", error);
  if (!text)
    return FALSE;
  if (!is_word(text, FALSE, "", "._-", 64)) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error, "%s is not a step name (letters, digits, '.', '_', '-')", q);
  }
  b->step->name = g_strdup(text);
  return TRUE;
}

static gboolean step_packages(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                              GError **error) {
  StepBuild *b = target;
  return step_action(l, b, v, key, error) && get_packages(l, v, key, &b->step->packages, error);
}

static gboolean step_script(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  StepBuild *b = target;
  if (!step_action(l, b, v, key, error))
    return FALSE;
  const char *text = expect_scalar(l, v, key, "a script file name", error);
  if (!text)
    return FALSE;
  g_autofree char *q = quote(text);
  gboolean ok = is_word(text, FALSE, "_", "._/+-", 255) && !strstr(text, "..");
  if (!ok)
    return fail_at(l, v, key, error,
                   "%s is not a script name (a file name under cloud-init/scripts/)", q);
  /* Beside the profile (a profiles/ next to cloud-init/), installed, and the source tree
   * when run from a build tree: the last also serves an instance's frozen profile, which
   * lives in the instance directory. */
  g_autofree char *local = g_build_filename(l->dir, "..", "cloud-init", "scripts", NULL);
  g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func(g_free);
  add_dir(dirs, g_canonicalize_filename(local, NULL));
  add_dir(dirs, g_build_filename(HUTCH_DATADIR, "cloud-init", "scripts", NULL));
  const char *source = g_getenv("HUTCH_SOURCE_DIR");
  if (source && *source)
    add_dir(dirs, g_build_filename(source, "cloud-init", "scripts", NULL));
  else if (running_from_build_tree())
    add_dir(dirs, g_build_filename(HUTCH_SOURCE_DIR, "cloud-init", "scripts", NULL));
  for (guint i = 0; i < dirs->len; i++) {
    g_autofree char *path = g_build_filename(g_ptr_array_index(dirs, i), text, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
      b->step->script = g_strdup(text);
      b->step->script_path = g_steal_pointer(&path);
      return TRUE;
    }
  }
  g_autofree char *looked = join_dirs(dirs);
  return fail_at(l, v, key, error, "%s not found (looked in %s)", q, looked);
}

static gboolean step_run(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                         GError **error) {
  StepBuild *b = target;
  return step_action(l, b, v, key, error) &&
         get_string(l, v, key, "shell commands", &b->step->run, error);
}

static gboolean step_as(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                        GError **error) {
  StepBuild *b = target;
  const char *text = expect_scalar(l, v, key, "root or user", error);
  if (!text)
    return FALSE;
  if (strcmp(text, "root") != 0 && strcmp(text, "user") != 0) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error, "%s is not who to run as (root or user)", q);
  }
  b->step->as_user = strcmp(text, "user") == 0;
  return TRUE;
}

static gboolean step_optional(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                              GError **error) {
  StepBuild *b = target;
  return get_bool(l, v, key, &b->step->optional, error);
}

static const KeySpec step_keys[] = {
    {"name", step_name}, {"packages", step_packages}, {"script", step_script}, {"run", step_run},
    {"as", step_as},     {"optional", step_optional},
};

G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchProvisionStep, provision_step_free)

static gboolean key_provision(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                              GError **error) {
  HutchProfile *p = target;
  if (is_null(v))
    return TRUE;
  if (v->type != YAML_SEQUENCE_NODE)
    return fail_at(l, v, key, error, "expected a list of steps, got %s", node_kind(v));
  guint index = 0;
  FOR_EACH_ITEM(l, v, item) {
    g_autofree char *item_key = g_strdup_printf("%s[%u]", key, index++);
    g_autoptr(HutchProvisionStep) step = g_new0(HutchProvisionStep, 1);
    StepBuild b = {step, NULL};
    if (!walk_mapping(l, item, item_key, "a mapping with name and one of packages, script, run",
                      step_keys, G_N_ELEMENTS(step_keys), &b, error))
      return FALSE;
    if (!step->name)
      return fail_at(l, item, item_key, error, "missing name (every step has a name)");
    if (!b.action)
      return fail_at(l, item, item_key, error,
                     "step '%s' does nothing (give one of packages, script, run)", step->name);
    if (g_hash_table_contains(l->step_names, step->name)) {
      g_autofree char *name_key = key_path(item_key, "name");
      return fail_at(l, mapping_lookup(l, item, "name"), name_key, error,
                     "'%s' names two steps (step names are unique)", step->name);
    }
    g_hash_table_add(l->step_names, g_strdup(step->name));
    g_autofree char *origin_key = g_strconcat("provision:", step->name, NULL);
    set_origin(l, origin_key, item, FALSE);
    /* A base's step of the same name is replaced where it stands, so the order of the
     * base's steps (which may depend on each other) is kept. */
    gboolean replaced = FALSE;
    for (guint i = 0; i < p->provision->len && !replaced; i++) {
      HutchProvisionStep *old = g_ptr_array_index(p->provision, i);
      if (strcmp(old->name, step->name) == 0) {
        provision_step_free(old);
        g_ptr_array_index(p->provision, i) = g_steal_pointer(&step);
        replaced = TRUE;
      }
    }
    if (!replaced)
      g_ptr_array_add(p->provision, g_steal_pointer(&step));
  }
  return TRUE;
}

/* env: */

static gboolean key_env(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                        GError **error) {
  HutchProfile *p = target;
  if (is_null(v))
    return TRUE;
  if (!expect_mapping(l, v, key, "a mapping of NAME: VALUE", error))
    return FALSE;
  for (yaml_node_pair_t *pair = v->data.mapping.pairs.start; pair < v->data.mapping.pairs.top;
       pair++) {
    yaml_node_t *k = pair_key(l, pair), *value_node = pair_value(l, pair);
    const char *name = (const char *)k->data.scalar.value;
    g_autofree char *full = key_path(key, name);
    if (!is_word(name, FALSE, "_", "_", 128) || g_ascii_isdigit(name[0])) {
      g_autofree char *q = quote(name);
      return fail_at(l, k, key, error,
                     "%s is not a variable name (letters, digits, '_'; not starting with a "
                     "digit)",
                     q);
    }
    const char *value = expect_scalar(l, value_node, full, "a string", error);
    if (!value)
      return FALSE;
    if (has_control_chars(value, FALSE))
      return fail_at(l, value_node, full, error,
                     "contains a line break or control character "
                     "(a value is one line)");
    HutchEnvVar *var = NULL;
    for (guint i = 0; i < p->env->len && !var; i++) {
      HutchEnvVar *old = g_ptr_array_index(p->env, i);
      if (strcmp(old->key, name) == 0)
        var = old;
    }
    if (!var) {
      var = g_new0(HutchEnvVar, 1);
      var->key = g_strdup(name);
      g_ptr_array_add(p->env, var);
    }
    g_free(var->value);
    var->value = g_strdup(value);
    set_origin(l, full, value_node, FALSE);
    remember_node(l->env_names, name, full, k);
  }
  return TRUE;
}

/* secrets: */

typedef struct {
  HutchSecret *secret;
  const char *source_key; /* the first of from, command, file */
  gboolean plain_env;     /* `from: env`: the host variable of the secret's own name */
  yaml_node_t *name_node;
} SecretBuild;

static gboolean secret_source(Loader *l, SecretBuild *b, yaml_node_t *v, const char *key,
                              const char *which, GError **error) {
  if (b->source_key)
    return fail_at(l, v, key, error,
                   "a secret has exactly one of from, command, file (this one has %s already)",
                   b->source_key);
  b->source_key = which;
  return TRUE;
}

static gboolean secret_name(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  SecretBuild *b = target;
  const char *text = expect_scalar(l, v, key, "a variable name", error);
  if (!text || !check_at(l, v, key, check_var_name(text, 64), error))
    return FALSE;
  b->secret->name = g_strdup(text);
  b->name_node = v;
  return TRUE;
}

static gboolean set_command(Loader *l, SecretBuild *b, yaml_node_t *v, const char *key,
                            const char *command, GError **error) {
  if (!check_at(l, v, key, check_secret_command(command), error))
    return FALSE;
  b->secret->source = HUTCH_SECRET_COMMAND;
  b->secret->from = g_strdup(command);
  return TRUE;
}

static gboolean set_file(Loader *l, SecretBuild *b, yaml_node_t *v, const char *key,
                         const char *path, GError **error) {
  if (!check_at(l, v, key, check_secret_file(path), error))
    return FALSE;
  b->secret->source = HUTCH_SECRET_FILE;
  b->secret->from = g_strdup(path);
  return TRUE;
}

static gboolean secret_from(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  SecretBuild *b = target;
  if (!secret_source(l, b, v, key, "from", error))
    return FALSE;
  const char *text = expect_scalar(l, v, key, "env, env:VAR, command:CMD or file:PATH", error);
  if (!text)
    return FALSE;
  if (strcmp(text, "env") == 0) {
    b->secret->source = HUTCH_SECRET_ENV;
    b->plain_env = TRUE;
    return TRUE;
  }
  if (g_str_has_prefix(text, "env:")) {
    g_autofree char *why = check_var_name(text + 4, 128);
    if (why) {
      g_autofree char *q = quote(text);
      return fail_at(l, v, key, error, "%s: %s", q, why);
    }
    b->secret->source = HUTCH_SECRET_ENV;
    b->secret->from = g_strdup(text + 4);
    return TRUE;
  }
  if (g_str_has_prefix(text, "command:"))
    return set_command(l, b, v, key, text + strlen("command:"), error);
  if (g_str_has_prefix(text, "file:"))
    return set_file(l, b, v, key, text + strlen("file:"), error);
  g_autofree char *q = quote(text);
  return fail_at(l, v, key, error,
                 "%s is not where a secret comes from (env, env:VAR, command:CMD or file:PATH)", q);
}

static gboolean secret_command(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                               GError **error) {
  SecretBuild *b = target;
  if (!secret_source(l, b, v, key, "command", error))
    return FALSE;
  const char *text = expect_scalar(l, v, key, "a command (e.g. gh auth token)", error);
  return text && set_command(l, b, v, key, text, error);
}

static gboolean secret_file(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  SecretBuild *b = target;
  if (!secret_source(l, b, v, key, "file", error))
    return FALSE;
  const char *text = expect_scalar(l, v, key, "a path (absolute or starting with ~/)", error);
  return text && set_file(l, b, v, key, text, error);
}

static gboolean secret_hosts(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                             GError **error) {
  SecretBuild *b = target;
  if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.start == v->data.sequence.items.top)
    return fail_at(l, v, key, error,
                   "expected a list of host names (e.g. [api.example.com]), got %s",
                   v->type == YAML_SEQUENCE_NODE ? "an empty list"
                   : is_null(v)                  ? "no value"
                                                 : node_kind(v));
  g_autoptr(GPtrArray) hosts = g_ptr_array_new_with_free_func(g_free);
  guint index = 0;
  FOR_EACH_ITEM(l, v, item) {
    g_autofree char *item_key = g_strdup_printf("%s[%u]", key, index++);
    const char *text = expect_scalar(l, item, item_key, "a host name (NAME or NAME:PORT)", error);
    char *host = NULL;
    if (!text || !check_at(l, item, item_key, check_secret_host(text, &host), error))
      return FALSE;
    if (g_ptr_array_find_with_equal_func(hosts, host, g_str_equal, NULL))
      g_free(host);
    else
      g_ptr_array_add(hosts, host);
  }
  g_ptr_array_add(hosts, NULL);
  g_strfreev(b->secret->hosts);
  b->secret->hosts = (char **)g_ptr_array_free(g_steal_pointer(&hosts), FALSE);
  return TRUE;
}

static gboolean secret_optional(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                                GError **error) {
  SecretBuild *b = target;
  return get_bool(l, v, key, &b->secret->optional, error);
}

static gboolean secret_ttl(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  SecretBuild *b = target;
  const char *text = expect_scalar(l, v, key, "a duration (e.g. 3600 or 12h)", error);
  return text && check_at(l, v, key, check_duration(text, &b->secret->ttl), error);
}

static const KeySpec secret_keys[] = {
    {"name", secret_name}, {"from", secret_from},   {"command", secret_command},
    {"file", secret_file}, {"hosts", secret_hosts}, {"optional", secret_optional},
    {"ttl", secret_ttl},
};

G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchSecret, hutch_secret_free)

static gboolean key_secrets(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  HutchProfile *p = target;
  if (is_null(v))
    return TRUE;
  if (v->type != YAML_SEQUENCE_NODE)
    return fail_at(l, v, key, error, "expected a list of secrets, got %s", node_kind(v));
  guint index = 0;
  FOR_EACH_ITEM(l, v, item) {
    g_autofree char *item_key = g_strdup_printf("%s[%u]", key, index++);
    g_autoptr(HutchSecret) secret = g_new0(HutchSecret, 1);
    SecretBuild b = {secret, NULL, FALSE, NULL};
    if (!walk_mapping(l, item, item_key,
                      "a mapping with name, hosts and one of from, command, file", secret_keys,
                      G_N_ELEMENTS(secret_keys), &b, error))
      return FALSE;
    if (!secret->name)
      return fail_at(l, item, item_key, error,
                     "missing name (every secret has one: the guest's variable)");
    if (!b.source_key)
      return fail_at(l, item, item_key, error,
                     "secret '%s' has no source (give one of from, command, file: where its "
                     "value comes from on the host)",
                     secret->name);
    if (!secret->hosts)
      return fail_at(l, item, item_key, error,
                     "secret '%s' has no hosts (the names its value may be sent to, e.g. "
                     "hosts: [api.example.com])",
                     secret->name);
    g_autofree char *name_key = key_path(item_key, "name");
    if (g_hash_table_contains(l->secret_names, secret->name))
      return fail_at(l, b.name_node, name_key, error,
                     "'%s' names two secrets (secret names are unique)", secret->name);
    remember_node(l->secret_names, secret->name, name_key, b.name_node);
    if (b.plain_env)
      secret->from = g_strdup(secret->name);
    g_autofree char *origin_key = g_strconcat("secrets:", secret->name, NULL);
    set_origin(l, origin_key, item, FALSE);
    /* A base's secret of the same name is replaced where it stands. */
    gboolean replaced = FALSE;
    for (guint i = 0; i < p->secrets->len && !replaced; i++) {
      HutchSecret *old = g_ptr_array_index(p->secrets, i);
      if (strcmp(old->name, secret->name) == 0) {
        hutch_secret_free(old);
        g_ptr_array_index(p->secrets, i) = g_steal_pointer(&secret);
        replaced = TRUE;
      }
    }
    if (!replaced)
      g_ptr_array_add(p->secrets, g_steal_pointer(&secret));
  }
  return TRUE;
}

/* A variable both in env: and secrets: (of this file or a base) would reach the guest with
 * two values. Checked once the file is read, as env: may come before or after secrets:;
 * the base was checked alone, so one of the two is this file's, and the error names it. */
static gboolean check_secrets_env(Loader *l, GError **error) {
  HutchProfile *p = l->profile;
  for (guint i = 0; i < p->secrets->len; i++) {
    const HutchSecret *secret = g_ptr_array_index(p->secrets, i);
    gboolean in_env = FALSE;
    for (guint j = 0; j < p->env->len && !in_env; j++)
      in_env = strcmp(((const HutchEnvVar *)g_ptr_array_index(p->env, j))->key, secret->name) == 0;
    if (!in_env)
      continue;
    const NodeAt *at = g_hash_table_lookup(l->secret_names, secret->name);
    if (at)
      return fail_at(l, at->node, at->key, error,
                     "'%s' is also set in env: (the guest would get two values; keep one)",
                     secret->name);
    at = g_hash_table_lookup(l->env_names, secret->name);
    if (at)
      return fail_at(l, at->node, at->key, error,
                     "'%s' is also a secret (the guest would get two values; keep one)",
                     secret->name);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "%s: '%s' is both in env: and in secrets: (the guest would get two values)",
                l->display, secret->name);
    return FALSE;
  }
  return TRUE;
}

/* network: */

static gboolean network_egress(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                               GError **error) {
  HutchProfile *p = target;
  const char *text = expect_scalar(l, v, key, "none, allowlist, public or unrestricted", error);
  return text && check_at(l, v, key, check_egress_mode(text, &p->egress), error);
}

/* A list of destinations, appended to rules (each text once; a base's come first). */
static gboolean network_rules(Loader *l, yaml_node_t *v, const char *key, GPtrArray *rules,
                              GError **error) {
  if (is_null(v))
    return TRUE;
  if (v->type != YAML_SEQUENCE_NODE)
    return fail_at(l, v, key, error,
                   "expected a list of destinations (e.g. [deb.debian.org, \"*.npmjs.org\", "
                   "github.com:22]), got %s",
                   node_kind(v));
  guint index = 0;
  FOR_EACH_ITEM(l, v, item) {
    g_autofree char *item_key = g_strdup_printf("%s[%u]", key, index++);
    const char *text = expect_scalar(
        l, item, item_key, "a destination (NAME, *.NAME, NAME:PORT, ADDR[/PREFIX][:PORT])", error);
    if (!text)
      return FALSE;
    g_autoptr(GError) local = NULL;
    g_autoptr(HutchEgressRule) rule = hutch_egress_rule_parse(text, &local);
    if (!rule)
      return fail_at(l, item, item_key, error, "%s", local->message);
    if (!g_ptr_array_find_with_equal_func(rules, rule->text, g_str_equal, NULL))
      g_ptr_array_add(rules, g_strdup(rule->text));
  }
  set_origin(l, key, v, TRUE);
  return TRUE;
}

static gboolean network_allow(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                              GError **error) {
  return network_rules(l, v, key, ((HutchProfile *)target)->egress_allow, error);
}

static gboolean network_deny(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                             GError **error) {
  return network_rules(l, v, key, ((HutchProfile *)target)->egress_deny, error);
}

static const KeySpec network_keys[] = {
    {"egress", network_egress},
    {"allow", network_allow},
    {"deny", network_deny},
};

static gboolean key_network(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  if (is_null(v))
    return TRUE;
  return walk_mapping(l, v, key, "a mapping with egress, allow, deny", network_keys,
                      G_N_ELEMENTS(network_keys), target, error);
}

/* image: */

static void image_spec_free(HutchImageSpec *image) {
  if (!image)
    return;
  image_spec_clear(image);
  g_free(image);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(HutchImageSpec, image_spec_free)

static gboolean image_file(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                           GError **error) {
  HutchImageSpec *img = target;
  const char *text = expect_scalar(l, v, key, "a path", error);
  if (!text)
    return FALSE;
  if (has_control_chars(text, FALSE)) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error, "%s contains control characters (use a plain path)", q);
  }
  g_autofree char *expanded = hutch_expand_tilde(text, g_get_home_dir());
  img->kind = HUTCH_IMAGE_FILE;
  img->file = g_canonicalize_filename(expanded, l->dir);
  return TRUE;
}

static gboolean image_template(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                               GError **error) {
  HutchImageSpec *img = target;
  const char *text = expect_scalar(l, v, key, "a template's name", error);
  if (!text)
    return FALSE;
  g_autoptr(GError) invalid = NULL;
  if (!hutch_name_is_valid(text, &invalid))
    return fail_at(l, v, key, error, "%s", invalid->message);
  img->kind = HUTCH_IMAGE_TEMPLATE;
  img->template = g_strdup(text);
  return TRUE;
}

static gboolean image_url(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  HutchImageSpec *img = target;
  const char *text = expect_scalar(l, v, key, "a URL", error);
  if (!text || !check_at(l, v, key, check_url(text, FALSE), error))
    return FALSE;
  img->kind = HUTCH_IMAGE_URL;
  img->url = g_strdup(text);
  return TRUE;
}

static gboolean image_digest(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                             GError **error) {
  HutchImageSpec *img = target;
  const char *text = expect_scalar(l, v, key, "a digest (sha256:HEX or sha512:HEX)", error);
  return text && check_at(l, v, key, check_digest(text, &img->digest), error);
}

static gboolean image_checksums(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                                GError **error) {
  HutchImageSpec *img = target;
  const char *text =
      expect_scalar(l, v, key, "the https URL of a SHA256SUMS or SHA512SUMS file", error);
  /* The sums are what makes the image trustworthy: they must not travel in clear. */
  if (!text || !check_at(l, v, key, check_url(text, TRUE), error))
    return FALSE;
  img->checksums = g_strdup(text);
  return TRUE;
}

static gboolean build_suite(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  HutchImageSpec *img = target;
  const char *text = expect_scalar(l, v, key, "a Debian suite (e.g. bookworm)", error);
  if (!text)
    return FALSE;
  if (!is_word(text, TRUE, "", "-", 32) || g_ascii_isdigit(text[0])) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error, "%s is not a suite (e.g. bookworm)", q);
  }
  img->suite = g_strdup(text);
  return TRUE;
}

static gboolean build_packages(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                               GError **error) {
  HutchImageSpec *img = target;
  return get_packages(l, v, key, &img->packages, error);
}

static gboolean build_mirror(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                             GError **error) {
  HutchImageSpec *img = target;
  const char *text = expect_scalar(l, v, key, "a mirror URL", error);
  if (!text || !check_at(l, v, key, check_url(text, FALSE), error))
    return FALSE;
  img->mirror = g_strdup(text);
  return TRUE;
}

/* The generic kernel (linux-image-amd64) has what the cloud one leaves out (9p, AHCI, most
 * drivers) at the cost of a larger image and initrd. */
static gboolean build_kernel(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                             GError **error) {
  HutchImageSpec *img = target;
  const char *text = expect_scalar(l, v, key, "a kernel package (e.g. linux-image-amd64)", error);
  if (!text || !check_at(l, v, key, check_package(text), error))
    return FALSE;
  if (!g_str_has_prefix(text, "linux-image-")) {
    g_autofree char *q = quote(text);
    return fail_at(l, v, key, error, "%s is not a kernel package (linux-image-...)", q);
  }
  img->kernel = g_strdup(text);
  return TRUE;
}

static const KeySpec build_keys[] = {
    {"suite", build_suite},
    {"packages", build_packages},
    {"mirror", build_mirror},
    {"kernel", build_kernel},
};

static gboolean image_build(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                            GError **error) {
  HutchImageSpec *img = target;
  img->kind = HUTCH_IMAGE_BUILD;
  if (is_null(v))
    return TRUE;
  return walk_mapping(l, v, key, "a mapping with suite, packages, mirror, kernel", build_keys,
                      G_N_ELEMENTS(build_keys), img, error);
}

static const KeySpec fallback_keys[] = {
    {"build", image_build},
};

/* What to build when the url cannot be downloaded: only a build (a second URL would fail the
 * same way on a machine without the network to reach it). */
static gboolean image_fallback(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                               GError **error) {
  HutchImageSpec *img = target;
  g_autoptr(HutchImageSpec) fallback = g_new0(HutchImageSpec, 1);
  if (!walk_mapping(l, v, key, "a mapping with build (the image to build instead)", fallback_keys,
                    G_N_ELEMENTS(fallback_keys), fallback, error))
    return FALSE;
  if (fallback->kind != HUTCH_IMAGE_BUILD)
    return fail_at(l, v, key, error,
                   "missing build (a fallback is built: fallback: { build: { suite: ... } })");
  if (!fallback->suite)
    fallback->suite = g_strdup(DEFAULT_SUITE);
  img->fallback = g_steal_pointer(&fallback);
  return TRUE;
}

static const KeySpec image_keys[] = {
    {"file", image_file},           {"url", image_url},     {"digest", image_digest},
    {"checksums", image_checksums}, {"build", image_build}, {"fallback", image_fallback},
    {"template", image_template},
};

static void extend_strv(char ***field, char **more) {
  g_autoptr(GPtrArray) all = g_ptr_array_new_with_free_func(g_free);
  for (char **s = *field; s && *s; s++)
    g_ptr_array_add(all, g_strdup(*s));
  for (char **s = more; s && *s; s++) {
    if (!*field || !g_strv_contains((const char *const *)*field, *s))
      g_ptr_array_add(all, g_strdup(*s));
  }
  g_ptr_array_add(all, NULL);
  g_strfreev(*field);
  *field = (char **)g_ptr_array_free(g_steal_pointer(&all), FALSE);
}

static gboolean key_image(Loader *l, gpointer target, yaml_node_t *v, const char *key,
                          GError **error) {
  HutchProfile *p = target;
  g_autoptr(HutchImageSpec) img = g_new0(HutchImageSpec, 1);
  if (!walk_mapping(l, v, key,
                    "a mapping with file, url (and digest or checksums, fallback), build or "
                    "template",
                    image_keys, G_N_ELEMENTS(image_keys), img, error))
    return FALSE;

  static const char *const kinds[] = {"file", "url", "build", "template", NULL};
  const char *first = NULL;
  for (yaml_node_pair_t *pair = v->data.mapping.pairs.start; pair < v->data.mapping.pairs.top;
       pair++) {
    const char *name = (const char *)pair_key(l, pair)->data.scalar.value;
    if (!g_strv_contains(kinds, name))
      continue;
    if (first) {
      g_autofree char *full = key_path(key, name);
      return fail_at(l, pair_key(l, pair), full, error,
                     "an image is one of file, url, build, template (%s given already)",
                     first);
    }
    first = name;
  }
  if (!first)
    return fail_at(l, v, key, error,
                   "missing file, url, build or template (an image needs one)");
  yaml_node_t *digest = mapping_lookup(l, v, "digest");
  yaml_node_t *checksums = mapping_lookup(l, v, "checksums");
  if (img->kind != HUTCH_IMAGE_URL && (digest || checksums)) {
    g_autofree char *full = key_path(key, digest ? "digest" : "checksums");
    return fail_at(l, digest ? digest : checksums, full, error, "only valid with url");
  }
  yaml_node_t *fallback = mapping_lookup(l, v, "fallback");
  if (img->kind != HUTCH_IMAGE_URL && fallback) {
    g_autofree char *full = key_path(key, "fallback");
    return fail_at(l, fallback, full, error,
                   "only valid with url (an image that is not downloaded needs none)");
  }
  if (img->kind == HUTCH_IMAGE_URL && digest && checksums) {
    g_autofree char *full = key_path(key, "checksums");
    return fail_at(l, checksums, full, error, "give digest or checksums, not both");
  }
  if (img->kind == HUTCH_IMAGE_URL && !digest && !checksums)
    return fail_at(l, v, key, error,
                   "url needs digest or checksums (e.g. digest: sha256:HEX, or checksums: the "
                   "URL of SHA256SUMS)");

  if (img->kind == HUTCH_IMAGE_BUILD && p->image.kind == HUTCH_IMAGE_BUILD) {
    if (img->suite) {
      g_free(p->image.suite);
      p->image.suite = g_steal_pointer(&img->suite);
    }
    if (img->mirror) {
      g_free(p->image.mirror);
      p->image.mirror = g_steal_pointer(&img->mirror);
    }
    if (img->kernel) {
      g_free(p->image.kernel);
      p->image.kernel = g_steal_pointer(&img->kernel);
    }
    extend_strv(&p->image.packages, img->packages);
    set_origin(l, key, v, TRUE);
    return TRUE;
  }
  set_origin(l, key, v, FALSE);
  image_spec_clear(&p->image);
  p->image = *img;
  memset(img, 0, sizeof(*img));
  if (p->image.kind == HUTCH_IMAGE_BUILD && !p->image.suite)
    p->image.suite = g_strdup(DEFAULT_SUITE);
  return TRUE;
}

static const KeySpec profile_keys[] = {
    {"base", key_base},
    {"description", key_description},
    {"cpus", key_cpus},
    {"memory", key_memory},
    {"disk", key_disk},
    {"accel", key_accel},
    {"boot_timeout", key_boot_timeout},
    {"image", key_image},
    {"user", key_user},
    {"shares", key_shares},
    {"ports", key_ports},
    {"network", key_network},
    {"provision", key_provision},
    {"env", key_env},
    {"secrets", key_secrets},
};

/* ---- Files and base chains --------------------------------------------------------------- */

static void loader_clear(Loader *l) {
  g_free(l->dir);
  if (l->have_doc)
    yaml_document_delete(&l->doc);
  g_clear_pointer(&l->share_guests, g_hash_table_unref);
  g_clear_pointer(&l->step_names, g_hash_table_unref);
  g_clear_pointer(&l->secret_names, g_hash_table_unref);
  g_clear_pointer(&l->env_names, g_hash_table_unref);
  hutch_profile_free(l->profile);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Loader, loader_clear)

static void set_syntax_error(const char *display, const char *data, gsize len,
                             const yaml_parser_t *parser, GError **error) {
  gsize line = parser->problem_mark.line, column = parser->problem_mark.column;
  if (parser->error == YAML_READER_ERROR) {
    /* Reader errors (bad encoding) carry a byte offset, not a mark. */
    line = column = 0;
    for (gsize i = 0; i < parser->problem_offset && i < len; i++) {
      column++;
      if (data[i] == '\n')
        line++, column = 0;
    }
  }
  const char *problem = parser->error == YAML_MEMORY_ERROR ? "out of memory"
                        : parser->problem                  ? parser->problem
                                                           : "unknown error";
  if (parser->context)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "%s:%zu:%zu: syntax error: %s (%s at line %zu)", display, line + 1, column + 1,
                problem, parser->context, parser->context_mark.line + 1);
  else
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "%s:%zu:%zu: syntax error: %s", display,
                line + 1, column + 1, problem);
}

static gboolean parse_document(Loader *l, const char *data, gsize len, GError **error) {
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "%s: out of memory", l->display);
    return FALSE;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
  gboolean ok = yaml_parser_load(&parser, &l->doc);
  if (ok) {
    l->have_doc = TRUE;
    yaml_document_t extra;
    ok = yaml_parser_load(&parser, &extra);
    if (ok) {
      yaml_node_t *root = yaml_document_get_root_node(&extra);
      if (root)
        g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                    "%s:%zu:%zu: profile: a second YAML document (a profile is one document)",
                    l->display, root->start_mark.line + 1, root->start_mark.column + 1);
      ok = root == NULL;
      yaml_document_delete(&extra);
      if (!ok)
        goto out;
    }
  }
  if (!ok)
    set_syntax_error(l->display, data, len, &parser, error);
out:
  yaml_parser_delete(&parser);
  return ok;
}

/* The chain as "a -> b -> c", from index `from`, then `last`. */
static char *describe_chain(GPtrArray *chain_display, guint from, const char *last) {
  GString *out = g_string_new(NULL);
  for (guint i = from; i < chain_display->len; i++)
    g_string_append_printf(out, "%s -> ", (const char *)g_ptr_array_index(chain_display, i));
  g_string_append(out, last);
  return g_string_free(out, FALSE);
}

static HutchProfile *load_base(Loader *l, yaml_node_t *node, GPtrArray *chain,
                               GPtrArray *chain_display, GError **error) {
  const char *text = expect_scalar(l, node, "base", "a profile name or path", error);
  if (!text)
    return NULL;
  g_autofree char *q = quote(text);
  g_autofree char *path = NULL;
  if (strchr(text, '/') || g_str_has_suffix(text, ".yaml")) {
    g_autofree char *expanded = hutch_expand_tilde(text, g_get_home_dir());
    path = g_canonicalize_filename(expanded, l->dir);
    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
      fail_at(l, node, "base", error, "%s not found (no file %s)", q, path);
      return NULL;
    }
  } else if (!is_profile_name(text)) {
    fail_at(l, node, "base", error,
            "%s is not a profile name or path (e.g. debian-12 or ./base.yaml)", q);
    return NULL;
  } else {
    g_autofree char *searched = NULL;
    path = search(text, &searched);
    if (!path) {
      fail_at(l, node, "base", error, "profile %s not found (searched %s)", q, searched);
      return NULL;
    }
  }

  g_autofree char *real = realpath(path, NULL);
  const char *id = real ? real : path;
  for (guint i = 0; i < chain->len; i++) {
    if (strcmp(g_ptr_array_index(chain, i), id) == 0) {
      g_autofree char *cycle = describe_chain(chain_display, i, path);
      fail_at(l, node, "base", error, "cycle: %s (a profile cannot be its own base)", cycle);
      return NULL;
    }
  }
  if (chain->len > MAX_BASE_DEPTH) {
    g_autofree char *all = describe_chain(chain_display, 0, path);
    fail_at(l, node, "base", error, "more than %d levels of base: %s", MAX_BASE_DEPTH, all);
    return NULL;
  }
  g_ptr_array_add(chain, g_strdup(id));
  g_ptr_array_add(chain_display, g_strdup(path));
  HutchProfile *base = load_path(path, chain, chain_display, error);
  g_ptr_array_remove_index(chain, chain->len - 1);
  g_ptr_array_remove_index(chain_display, chain_display->len - 1);
  return base;
}

static char *profile_name_of(const char *path) {
  g_autofree char *file = g_path_get_basename(path);
  if (g_str_has_suffix(file, ".yaml"))
    file[strlen(file) - strlen(".yaml")] = '\0';
  else if (g_str_has_suffix(file, ".yml"))
    file[strlen(file) - strlen(".yml")] = '\0';
  return g_steal_pointer(&file);
}

/* Reads one file's text; chain already ends with this file. */
static HutchProfile *load_text(const char *data, gsize len, const char *display,
                               const char *abs_path, GPtrArray *chain, GPtrArray *chain_display,
                               GError **error) {
  g_auto(Loader) l = {0};
  l.display = display;
  l.dir = g_path_get_dirname(abs_path);
  l.share_guests = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  l.step_names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  l.secret_names =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)node_at_free);
  l.env_names =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)node_at_free);
  if (len > MAX_PROFILE_BYTES) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "%s: too large (%" G_GSIZE_FORMAT " bytes; a profile is at most 1MiB)", display,
                len);
    return NULL;
  }
  if (!parse_document(&l, data, len, error))
    return NULL;

  yaml_node_t *root = yaml_document_get_root_node(&l.doc);
  if (root && is_null(root))
    root = NULL;
  if (root &&
      !expect_mapping(&l, root, NULL, "a mapping of profile keys (cpus, memory, ...)", error))
    return NULL;
  yaml_node_t *base = root ? mapping_lookup(&l, root, "base") : NULL;
  if (base)
    l.profile = load_base(&l, base, chain, chain_display, error);
  else
    l.profile = hutch_profile_new_defaults();
  if (!l.profile)
    return NULL;

  HutchProfile *p = l.profile;
  g_free(p->name);
  p->name = profile_name_of(abs_path);
  g_free(p->path);
  p->path = g_strdup(abs_path);
  g_free(p->base);
  p->base = base ? g_strdup((const char *)base->data.scalar.value) : NULL;
  g_clear_pointer(&p->description, g_free);
  if (root && !walk_mapping(&l, root, NULL, "a mapping of profile keys", profile_keys,
                            G_N_ELEMENTS(profile_keys), p, error))
    return NULL;
  if (!check_secrets_env(&l, error))
    return NULL;
  return g_steal_pointer(&l.profile);
}

static HutchProfile *load_path(const char *path, GPtrArray *chain, GPtrArray *chain_display,
                               GError **error) {
  GStatBuf st;
  if (g_stat(path, &st) < 0) {
    int saved = errno;
    g_set_error(error, HUTCH_ERROR, saved == ENOENT ? HUTCH_ERROR_NOT_FOUND : HUTCH_ERROR_PROFILE,
                "reading profile %s: %s", path, g_strerror(saved));
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "reading profile %s: not a file", path);
    return NULL;
  }
  if (st.st_size > MAX_PROFILE_BYTES) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE,
                "%s: too large (%" G_GINT64_FORMAT " bytes; a profile is at most 1MiB)", path,
                (gint64)st.st_size);
    return NULL;
  }
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr(GError) local = NULL;
  if (!g_file_get_contents(path, &data, &len, &local)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE, "reading profile: %s", local->message);
    return NULL;
  }
  g_autofree char *abs_path = g_canonicalize_filename(path, NULL);
  return load_text(data, len, path, abs_path, chain, chain_display, error);
}

static void start_chain(const char *path, GPtrArray **chain, GPtrArray **chain_display) {
  g_autofree char *abs_path = g_canonicalize_filename(path, NULL);
  char *real = realpath(abs_path, NULL);
  *chain = g_ptr_array_new_with_free_func(g_free);
  *chain_display = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(*chain, real ? real : g_strdup(abs_path));
  g_ptr_array_add(*chain_display, g_strdup(path));
}

HutchProfile *hutch_profile_load_file(const char *path, GError **error) {
  g_autoptr(GPtrArray) chain = NULL, chain_display = NULL;
  start_chain(path, &chain, &chain_display);
  return load_path(path, chain, chain_display, error);
}

HutchProfile *hutch_profile_load_data(const char *data, gsize len, const char *filename,
                                      GError **error) {
  g_autoptr(GPtrArray) chain = NULL, chain_display = NULL;
  start_chain(filename, &chain, &chain_display);
  g_autofree char *abs_path = g_canonicalize_filename(filename, NULL);
  return load_text(data, len, filename, abs_path, chain, chain_display, error);
}

HutchProfile *hutch_profile_load_text(const char *text, gsize len, const char *name,
                                      GError **error) {
  return hutch_profile_load_data(text, len, name, error);
}

HutchProfile *hutch_profile_load(const char *name_or_path, GError **error) {
  if (strchr(name_or_path, '/') || g_str_has_suffix(name_or_path, ".yaml"))
    return hutch_profile_load_file(name_or_path, error);
  g_autofree char *path = hutch_profile_find(name_or_path, error);
  return path ? hutch_profile_load_file(path, error) : NULL;
}

/* ---- Writing YAML ------------------------------------------------------------------------ */

typedef struct {
  yaml_emitter_t emitter;
  GString *out;
  gboolean failed;
} Emit;

static int emit_write(void *data, unsigned char *buffer, size_t size) {
  g_string_append_len(data, (const char *)buffer, (gssize)size);
  return 1;
}

/* After the first failure the rest is skipped and the failure reported once, at the end. */
static void emit_event(Emit *e, int initialised, yaml_event_t *event) {
  if (e->failed || !initialised || !yaml_emitter_emit(&e->emitter, event))
    e->failed = TRUE;
}

/* Plain scalars that a YAML 1.1 reader would take for something else than a string. */
static gboolean looks_typed(const char *text) {
  static const char *const words[] = {"",   "~",   "null", "true", "false", "yes", "no",
                                      "on", "off", "y",    "n",    ".inf",  ".nan"};
  const char *t = (text[0] == '-' || text[0] == '+') ? text + 1 : text;
  for (gsize i = 0; i < G_N_ELEMENTS(words); i++) {
    if (g_ascii_strcasecmp(text, words[i]) == 0 || g_ascii_strcasecmp(t, words[i]) == 0)
      return TRUE;
  }
  return g_ascii_isdigit(t[0]) || (t[0] == '.' && g_ascii_isdigit(t[1]));
}

static void emit_scalar(Emit *e, const char *text, yaml_scalar_style_t style) {
  yaml_event_t event;
  if (e->failed)
    return;
  emit_event(e,
             yaml_scalar_event_initialize(&event, NULL, NULL, (yaml_char_t *)text,
                                          (int)strlen(text), 1, 1, style),
             &event);
}

static void emit_plain(Emit *e, const char *text) {
  emit_scalar(e, text, YAML_PLAIN_SCALAR_STYLE);
}

static void emit_string(Emit *e, const char *text) {
  yaml_scalar_style_t style = looks_typed(text)    ? YAML_DOUBLE_QUOTED_SCALAR_STYLE
                              : strchr(text, '\n') ? YAML_LITERAL_SCALAR_STYLE
                                                   : YAML_ANY_SCALAR_STYLE;
  emit_scalar(e, text, style);
}

static void emit_key_string(Emit *e, const char *key, const char *value) {
  emit_plain(e, key);
  emit_string(e, value);
}

static void emit_key_plain(Emit *e, const char *key, const char *value) {
  emit_plain(e, key);
  emit_plain(e, value);
}

static void emit_key_uint(Emit *e, const char *key, guint64 value) {
  char text[32];
  g_snprintf(text, sizeof(text), "%" G_GUINT64_FORMAT, value);
  emit_key_plain(e, key, text);
}

static void emit_key_size(Emit *e, const char *key, guint64 bytes) {
  g_autofree char *text = hutch_format_size(bytes);
  emit_key_plain(e, key, text);
}

static void emit_key_bool(Emit *e, const char *key, gboolean value) {
  emit_key_plain(e, key, value ? "true" : "false");
}

static void emit_mapping_start(Emit *e, gboolean flow) {
  yaml_event_t event;
  if (e->failed)
    return;
  emit_event(e,
             yaml_mapping_start_event_initialize(
                 &event, NULL, NULL, 1, flow ? YAML_FLOW_MAPPING_STYLE : YAML_BLOCK_MAPPING_STYLE),
             &event);
}

static void emit_mapping_end(Emit *e) {
  yaml_event_t event;
  if (!e->failed)
    emit_event(e, yaml_mapping_end_event_initialize(&event), &event);
}

static void emit_sequence_start(Emit *e, gboolean flow) {
  yaml_event_t event;
  if (e->failed)
    return;
  emit_event(e,
             yaml_sequence_start_event_initialize(&event, NULL, NULL, 1,
                                                  flow ? YAML_FLOW_SEQUENCE_STYLE
                                                       : YAML_BLOCK_SEQUENCE_STYLE),
             &event);
}

static void emit_sequence_end(Emit *e) {
  yaml_event_t event;
  if (!e->failed)
    emit_event(e, yaml_sequence_end_event_initialize(&event), &event);
}

static void emit_key_packages(Emit *e, const char *key, char **packages) {
  emit_plain(e, key);
  emit_sequence_start(e, TRUE);
  for (char **name = packages; name && *name; name++)
    emit_string(e, *name);
  emit_sequence_end(e);
}

static void emit_port_range(Emit *e, const char *key, guint start, guint end) {
  g_autofree char *text =
      start == end ? g_strdup_printf("%u", start) : g_strdup_printf("%u-%u", start, end);
  emit_key_plain(e, key, text);
}

static void emit_rules(Emit *e, const char *key, GPtrArray *rules) {
  emit_plain(e, key);
  emit_sequence_start(e, FALSE);
  for (guint i = 0; i < rules->len; i++)
    emit_string(e, g_ptr_array_index(rules, i));
  emit_sequence_end(e);
}

/* Only what the files said: an unset mode stays unset (the default may change, and a frozen
 * profile that never chose should follow it). */
static void emit_network(Emit *e, const HutchProfile *p) {
  if (p->egress == HUTCH_EGRESS_UNSET && p->egress_allow->len == 0 && p->egress_deny->len == 0)
    return;
  emit_plain(e, "network");
  emit_mapping_start(e, FALSE);
  if (p->egress != HUTCH_EGRESS_UNSET)
    emit_key_plain(e, "egress", hutch_egress_mode_to_string(p->egress));
  if (p->egress_allow->len > 0)
    emit_rules(e, "allow", p->egress_allow);
  if (p->egress_deny->len > 0)
    emit_rules(e, "deny", p->egress_deny);
  emit_mapping_end(e);
}

/* Definitions only (a profile holds no values); only when there are some, so that a frozen
 * profile of a version without secrets reads the same. */
static void emit_secrets(Emit *e, const HutchProfile *p) {
  if (p->secrets->len == 0)
    return;
  emit_plain(e, "secrets");
  emit_sequence_start(e, FALSE);
  for (guint i = 0; i < p->secrets->len; i++) {
    const HutchSecret *secret = g_ptr_array_index(p->secrets, i);
    emit_mapping_start(e, FALSE);
    emit_key_string(e, "name", secret->name);
    switch (secret->source) {
    case HUTCH_SECRET_ENV:
      if (strcmp(secret->from, secret->name) == 0) {
        emit_key_plain(e, "from", "env");
      } else {
        g_autofree char *from = g_strconcat("env:", secret->from, NULL);
        emit_key_string(e, "from", from);
      }
      break;
    case HUTCH_SECRET_COMMAND:
      emit_key_string(e, "command", secret->from);
      break;
    case HUTCH_SECRET_FILE:
      emit_key_string(e, "file", secret->from);
      break;
    }
    emit_key_packages(e, "hosts", secret->hosts);
    emit_key_bool(e, "optional", secret->optional);
    if (secret->ttl > 0)
      emit_key_uint(e, "ttl", secret->ttl);
    emit_mapping_end(e);
  }
  emit_sequence_end(e);
}

static void emit_build(Emit *e, const HutchImageSpec *image) {
  emit_plain(e, "build");
  emit_mapping_start(e, FALSE);
  emit_key_string(e, "suite", image->suite);
  if (image->packages && image->packages[0])
    emit_key_packages(e, "packages", image->packages);
  if (image->mirror)
    emit_key_string(e, "mirror", image->mirror);
  if (image->kernel)
    emit_key_string(e, "kernel", image->kernel);
  emit_mapping_end(e);
}

static void emit_image(Emit *e, const HutchImageSpec *image) {
  emit_plain(e, "image");
  emit_mapping_start(e, FALSE);
  switch (image->kind) {
  case HUTCH_IMAGE_FILE:
    emit_key_string(e, "file", image->file);
    break;
  case HUTCH_IMAGE_URL:
    emit_key_string(e, "url", image->url);
    if (image->digest)
      emit_key_string(e, "digest", image->digest);
    if (image->checksums)
      emit_key_string(e, "checksums", image->checksums);
    if (image->fallback) {
      emit_plain(e, "fallback");
      emit_mapping_start(e, FALSE);
      emit_build(e, image->fallback);
      emit_mapping_end(e);
    }
    break;
  case HUTCH_IMAGE_BUILD:
    emit_build(e, image);
    break;
  case HUTCH_IMAGE_TEMPLATE:
    emit_key_string(e, "template", image->template);
    break;
  case HUTCH_IMAGE_NONE:
  case HUTCH_IMAGE_N:
    break;
  }
  emit_mapping_end(e);
}

static void emit_profile(Emit *e, const HutchProfile *p) {
  yaml_event_t event;
  emit_event(e, yaml_stream_start_event_initialize(&event, YAML_UTF8_ENCODING), &event);
  if (!e->failed)
    emit_event(e, yaml_document_start_event_initialize(&event, NULL, NULL, NULL, 1), &event);
  emit_mapping_start(e, FALSE);
  if (p->description)
    emit_key_string(e, "description", p->description);
  emit_key_uint(e, "cpus", p->cpus);
  emit_key_size(e, "memory", p->memory);
  emit_key_size(e, "disk", p->disk);
  emit_key_plain(e, "accel", hutch_accel_to_string(p->accel));
  emit_key_uint(e, "boot_timeout", p->boot_timeout);
  if (p->image.kind != HUTCH_IMAGE_NONE)
    emit_image(e, &p->image);

  emit_plain(e, "user");
  emit_mapping_start(e, FALSE);
  if (p->user_name)
    emit_key_string(e, "name", p->user_name);
  if (p->user_uid >= 0)
    emit_key_uint(e, "uid", (guint64)p->user_uid);
  if (p->user_gid >= 0)
    emit_key_uint(e, "gid", (guint64)p->user_gid);
  emit_key_bool(e, "sudo", p->user_sudo);
  emit_key_string(e, "shell", p->user_shell);
  emit_mapping_end(e);

  emit_plain(e, "shares");
  emit_sequence_start(e, p->shares->len == 0);
  for (guint i = 0; i < p->shares->len; i++) {
    const HutchShare *share = g_ptr_array_index(p->shares, i);
    emit_mapping_start(e, FALSE);
    emit_key_string(e, "host", share->host);
    emit_key_string(e, "guest", share->guest);
    emit_key_bool(e, "writable", share->writable);
    emit_key_bool(e, "create", share->create);
    if (share->cache != HUTCH_SHARE_CACHE_AUTO)
      emit_key_string(e, "cache", hutch_share_cache_name(share->cache));
    emit_mapping_end(e);
  }
  emit_sequence_end(e);

  emit_plain(e, "ports");
  emit_sequence_start(e, p->ports->len == 0);
  for (guint i = 0; i < p->ports->len; i++) {
    const HutchPort *port = g_ptr_array_index(p->ports, i);
    emit_mapping_start(e, FALSE);
    emit_port_range(e, "host", port->host_start, port->host_end);
    emit_port_range(e, "guest", port->guest_start, port->guest_end);
    emit_key_plain(e, "proto", hutch_proto_to_string(port->proto));
    emit_key_string(e, "host_ip", port->host_ip);
    emit_mapping_end(e);
  }
  emit_sequence_end(e);

  emit_network(e, p);

  emit_plain(e, "provision");
  emit_sequence_start(e, p->provision->len == 0);
  for (guint i = 0; i < p->provision->len; i++) {
    const HutchProvisionStep *step = g_ptr_array_index(p->provision, i);
    emit_mapping_start(e, FALSE);
    emit_key_string(e, "name", step->name);
    if (step->packages)
      emit_key_packages(e, "packages", step->packages);
    if (step->script)
      emit_key_string(e, "script", step->script);
    if (step->run)
      emit_key_string(e, "run", step->run);
    emit_key_plain(e, "as", step->as_user ? "user" : "root");
    emit_key_bool(e, "optional", step->optional);
    emit_mapping_end(e);
  }
  emit_sequence_end(e);

  emit_plain(e, "env");
  emit_mapping_start(e, p->env->len == 0);
  for (guint i = 0; i < p->env->len; i++) {
    const HutchEnvVar *var = g_ptr_array_index(p->env, i);
    emit_key_string(e, var->key, var->value);
  }
  emit_mapping_end(e);

  emit_secrets(e, p);

  emit_mapping_end(e);
  if (!e->failed)
    emit_event(e, yaml_document_end_event_initialize(&event, 1), &event);
  if (!e->failed)
    emit_event(e, yaml_stream_end_event_initialize(&event), &event);
}

char *hutch_profile_to_yaml(const HutchProfile *p, GError **error) {
  Emit e = {.out = g_string_new(NULL)};
  if (!yaml_emitter_initialize(&e.emitter)) {
    g_string_free(e.out, TRUE);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing profile: out of memory");
    return NULL;
  }
  yaml_emitter_set_output(&e.emitter, emit_write, e.out);
  yaml_emitter_set_unicode(&e.emitter, 1);
  yaml_emitter_set_width(&e.emitter, 100);
  emit_profile(&e, p);
  if (e.failed) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing profile %s as YAML: %s",
                p->name ? p->name : "", e.emitter.problem ? e.emitter.problem : "emitter failed");
    yaml_emitter_delete(&e.emitter);
    g_string_free(e.out, TRUE);
    return NULL;
  }
  yaml_emitter_delete(&e.emitter);
  return g_string_free(e.out, FALSE);
}

/* ---- Where each value came from (profile show --origin) ----------------------------------- */

static void origin_line(GString *out, const HutchProfile *p, const char *origin_key,
                        const char *key, const char *value) {
  const char *origin = g_hash_table_lookup(p->origins, origin_key);
  g_string_append_printf(out, "%s\t%s: %s\n", origin ? origin : "default", key, value);
}

static void origin_uint(GString *out, const HutchProfile *p, const char *key, guint64 value) {
  g_autofree char *text = g_strdup_printf("%" G_GUINT64_FORMAT, value);
  origin_line(out, p, key, key, text);
}

static void origin_size(GString *out, const HutchProfile *p, const char *key, guint64 value) {
  g_autofree char *text = hutch_format_size(value);
  origin_line(out, p, key, key, text);
}

static char *describe_image(const HutchImageSpec *image) {
  switch (image->kind) {
  case HUTCH_IMAGE_FILE:
    return g_strdup_printf("file %s", image->file);
  case HUTCH_IMAGE_URL:
    return g_strdup_printf("url %s", image->url);
  case HUTCH_IMAGE_BUILD: {
    g_autofree char *packages = image->packages ? g_strjoinv(" ", image->packages) : NULL;
    return g_strdup_printf("build %s%s%s%s%s%s%s", image->suite,
                           packages && *packages ? ", packages " : "", packages ? packages : "",
                           image->mirror ? ", mirror " : "", image->mirror ? image->mirror : "",
                           image->kernel ? ", kernel " : "", image->kernel ? image->kernel : "");
  }
  case HUTCH_IMAGE_TEMPLATE:
    return g_strdup_printf("template %s", image->template);
  case HUTCH_IMAGE_NONE:
  case HUTCH_IMAGE_N:
    break;
  }
  return g_strdup("none");
}

static char *join_rules(GPtrArray *rules) {
  GString *out = g_string_new(NULL);
  for (guint i = 0; i < rules->len; i++)
    g_string_append_printf(out, "%s%s", i ? ", " : "", (const char *)g_ptr_array_index(rules, i));
  return g_string_free(out, FALSE);
}

char *hutch_profile_to_origins(const HutchProfile *p) {
  GString *out = g_string_new(NULL);
  if (p->description)
    origin_line(out, p, "description", "description", p->description);
  origin_uint(out, p, "cpus", p->cpus);
  origin_size(out, p, "memory", p->memory);
  origin_size(out, p, "disk", p->disk);
  origin_line(out, p, "accel", "accel", hutch_accel_to_string(p->accel));
  origin_uint(out, p, "boot_timeout", p->boot_timeout);
  g_autofree char *image = describe_image(&p->image);
  origin_line(out, p, "image", "image", image);
  origin_line(out, p, "user.name", "user.name", p->user_name ? p->user_name : "(the host user's)");
  if (p->user_uid >= 0)
    origin_uint(out, p, "user.uid", (guint64)p->user_uid);
  else
    origin_line(out, p, "user.uid", "user.uid", "(the host user's)");
  if (p->user_gid >= 0)
    origin_uint(out, p, "user.gid", (guint64)p->user_gid);
  else
    origin_line(out, p, "user.gid", "user.gid", "(the uid)");
  origin_line(out, p, "user.sudo", "user.sudo", p->user_sudo ? "true" : "false");
  origin_line(out, p, "user.shell", "user.shell", p->user_shell);
  for (guint i = 0; i < p->shares->len; i++) {
    const HutchShare *share = g_ptr_array_index(p->shares, i);
    g_autofree char *origin_key = g_strconcat("shares:", share->guest, NULL);
    g_autofree char *key = g_strdup_printf("shares[%u]", i);
    g_autofree char *value = g_strdup_printf(
        "%s -> %s (%s%s%s%s)", share->host, share->guest, share->writable ? "rw" : "ro",
        share->create ? ", create" : "", share->cache == HUTCH_SHARE_CACHE_AUTO ? "" : ", cache ",
        share->cache == HUTCH_SHARE_CACHE_AUTO ? "" : hutch_share_cache_name(share->cache));
    origin_line(out, p, origin_key, key, value);
  }
  for (guint i = 0; i < p->ports->len; i++) {
    const HutchPort *port = g_ptr_array_index(p->ports, i);
    g_autofree char *key = g_strdup_printf("ports[%u]", i);
    g_autofree char *host = port->host_start == port->host_end
                                ? g_strdup_printf("%u", port->host_start)
                                : g_strdup_printf("%u-%u", port->host_start, port->host_end);
    g_autofree char *guest = port->guest_start == port->guest_end
                                 ? g_strdup_printf("%u", port->guest_start)
                                 : g_strdup_printf("%u-%u", port->guest_start, port->guest_end);
    g_autofree char *value = g_strdup_printf("%s %s -> %s/%s", port->host_ip, host, guest,
                                             hutch_proto_to_string(port->proto));
    origin_line(out, p, key, key, value);
  }
  HutchEgressMode egress = p->egress == HUTCH_EGRESS_UNSET ? HUTCH_EGRESS_DEFAULT : p->egress;
  origin_line(out, p, "network.egress", "network.egress", hutch_egress_mode_to_string(egress));
  if (p->egress_allow->len > 0) {
    g_autofree char *allow = join_rules(p->egress_allow);
    origin_line(out, p, "network.allow", "network.allow", allow);
  }
  if (p->egress_deny->len > 0) {
    g_autofree char *deny = join_rules(p->egress_deny);
    origin_line(out, p, "network.deny", "network.deny", deny);
  }
  for (guint i = 0; i < p->provision->len; i++) {
    const HutchProvisionStep *step = g_ptr_array_index(p->provision, i);
    g_autofree char *origin_key = g_strconcat("provision:", step->name, NULL);
    g_autofree char *key = g_strdup_printf("provision[%u]", i);
    g_autofree char *value =
        g_strdup_printf("%s (%s, as %s%s)", step->name,
                        step->packages ? "packages"
                        : step->script ? "script"
                                       : "run",
                        step->as_user ? "user" : "root", step->optional ? ", optional" : "");
    origin_line(out, p, origin_key, key, value);
  }
  for (guint i = 0; i < p->env->len; i++) {
    const HutchEnvVar *var = g_ptr_array_index(p->env, i);
    g_autofree char *key = g_strconcat("env.", var->key, NULL);
    origin_line(out, p, key, key, var->value);
  }
  for (guint i = 0; i < p->secrets->len; i++) {
    const HutchSecret *secret = g_ptr_array_index(p->secrets, i);
    g_autofree char *origin_key = g_strconcat("secrets:", secret->name, NULL);
    g_autofree char *key = g_strdup_printf("secrets[%u]", i);
    g_autofree char *from = quote(secret->from);
    g_autofree char *hosts = g_strjoinv(", ", secret->hosts);
    g_autofree char *ttl = secret->ttl ? g_strdup_printf(", ttl %us", secret->ttl) : g_strdup("");
    g_autofree char *value =
        g_strdup_printf("%s (%s %s, hosts %s%s%s)", secret->name,
                        secret->source == HUTCH_SECRET_ENV       ? "env"
                        : secret->source == HUTCH_SECRET_COMMAND ? "command"
                                                                 : "file",
                        from, hosts, secret->optional ? ", optional" : "", ttl);
    origin_line(out, p, origin_key, key, value);
  }
  return g_string_free(out, FALSE);
}

gboolean hutch_profile_add_share_spec(HutchProfile *profile, const char *spec,
                                      GError **error) {
  HutchShare *share = hutch_share_parse(spec, error);
  return share && hutch_profile_add_share(profile, share, error);
}

gboolean hutch_profile_add_port_spec(HutchProfile *profile, const char *spec, GError **error) {
  HutchPort *port = hutch_port_parse(spec, error);
  if (!port)
    return FALSE;
  /* add_port takes the port only when it succeeds */
  if (!hutch_profile_add_port(profile, port, error)) {
    hutch_port_free(port);
    return FALSE;
  }
  return TRUE;
}

void hutch_profile_clear_ports(HutchProfile *profile) {
  g_ptr_array_set_size(profile->ports, 0);
}

void hutch_profile_set_template_image(HutchProfile *profile, const char *template) {
  image_spec_clear(&profile->image);
  profile->image.kind = HUTCH_IMAGE_TEMPLATE;
  profile->image.template = g_strdup(template);
}

void hutch_profile_clear_shares(HutchProfile *profile) {
  g_ptr_array_set_size(profile->shares, 0);
}

static char *range_text(guint16 start, guint16 end) {
  return start == end ? g_strdup_printf("%u", start) : g_strdup_printf("%u-%u", start, end);
}

char *hutch_port_host_to_string(const HutchPort *port) {
  g_autofree char *range = range_text(port->host_start, port->host_end);
  gboolean v6 = strchr(port->host_ip, ':') != NULL;
  return g_strdup_printf("%s%s%s:%s%s", v6 ? "[" : "", port->host_ip, v6 ? "]" : "", range,
                         port->proto == HUTCH_PROTO_UDP ? "/udp" : "");
}

char *hutch_port_guest_to_string(const HutchPort *port) {
  return range_text(port->guest_start, port->guest_end);
}

gboolean hutch_profile_remove_port(HutchProfile *p, const char *spec, GError **error) {
  g_autoptr(HutchPort) wanted = hutch_port_parse(spec, error);
  if (!wanted)
    return FALSE;
  for (guint i = 0; i < p->ports->len; i++) {
    const HutchPort *port = g_ptr_array_index(p->ports, i);
    if (port->proto == wanted->proto && port->host_start == wanted->host_start &&
        port->host_end == wanted->host_end) {
      g_ptr_array_remove_index(p->ports, i);
      return TRUE;
    }
  }
  g_autoptr(GString) have = g_string_new(NULL);
  for (guint i = 0; i < p->ports->len; i++) {
    g_autofree char *text = hutch_port_host_to_string(g_ptr_array_index(p->ports, i));
    g_string_append_printf(have, "%s%s", i ? ", " : "", text);
  }
  g_autofree char *range = range_text(wanted->host_start, wanted->host_end);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
              "no port forward from host port %s%s to remove (%s%s)", range,
              wanted->proto == HUTCH_PROTO_UDP ? "/udp" : "",
              have->len ? "forwarded: " : "no ports are forwarded", have->str);
  return FALSE;
}

gboolean hutch_profile_remove_share(HutchProfile *p, const char *guest, const char *guest_home,
                                    GError **error) {
  g_autofree char *norm = NULL;
  g_autofree char *why = check_share_path(guest, TRUE, &norm);
  if (why) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "invalid guest path: %s", why);
    return FALSE;
  }
  g_autofree char *wanted = hutch_expand_tilde(norm, guest_home);
  g_autoptr(GString) have = g_string_new(NULL);
  for (guint i = 0; i < p->shares->len; i++) {
    const HutchShare *share = g_ptr_array_index(p->shares, i);
    g_autofree char *path = hutch_expand_tilde(share->guest, guest_home);
    if (strcmp(path, wanted) == 0) {
      g_ptr_array_remove_index(p->shares, i);
      return TRUE;
    }
    g_string_append_printf(have, "%s%s", i ? ", " : "", share->guest);
  }
  g_autofree char *q = quote(guest);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "no share on guest path %s to remove (%s%s)",
              q, have->len ? "shared: " : "no folders are shared", have->str);
  return FALSE;
}
