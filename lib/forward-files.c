/* forward-files.c: the files of `hutch forward`'s helpers in an instance's runtime directory.
 * See forward-files-private.h. */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>

#include "forward-files-private.h"
#include "pidfile-private.h"
#include "supervisor-private.h"

char *hutch_forward_file(const char *runtime_dir, guint host_port, const char *suffix) {
  g_autofree char *base = g_strdup_printf("forward-%u.%s", host_port, suffix);
  return g_build_filename(runtime_dir, base, NULL);
}

/* The forward helper hutch started: a fork of hutch (no exec, so its binary is whichever
 * program called hutch_forward_add) that names itself HUTCH_FORWARD_COMM and recorded its
 * start time in its pidfile. A pid reused since, or another VM's forward, never passes. */
static const HutchHelperId forward_id = {.comm = HUTCH_FORWARD_COMM, .recorded = TRUE};

gboolean hutch_forward_read_spec(const char *runtime_dir, guint host_port, char **ret_host_ip,
                                 guint *ret_guest_port, gboolean *ret_supervised) {
  g_autofree char *specfile = hutch_forward_file(runtime_dir, host_port, "spec");
  g_autofree char *text = NULL;
  if (!g_file_get_contents(specfile, &text, NULL, NULL))
    return FALSE;
  g_auto(GStrv) fields = g_strsplit(g_strstrip(text), " ", -1);
  guint n = g_strv_length(fields);
  guint64 host = 0, guest = 0;
  if ((n != 3 && n != 4) || !g_ascii_string_to_unsigned(fields[1], 10, 1, 65535, &host, NULL) ||
      host != host_port || !g_ascii_string_to_unsigned(fields[2], 10, 1, 65535, &guest, NULL) ||
      (n == 4 && strcmp(fields[3], HUTCH_FORWARD_SUPERVISED) != 0))
    return FALSE;
  if (ret_host_ip)
    *ret_host_ip = g_strdup(fields[0]);
  if (ret_guest_port)
    *ret_guest_port = (guint)guest;
  if (ret_supervised)
    *ret_supervised = n == 4;
  return TRUE;
}

pid_t hutch_forward_pid(const char *runtime_dir, guint host_port) {
  gboolean supervised = FALSE;
  if (hutch_forward_read_spec(runtime_dir, host_port, NULL, NULL, &supervised) && supervised)
    return hutch_supervisor_pid(runtime_dir);
  g_autofree char *pidfile = hutch_forward_file(runtime_dir, host_port, "pid");
  return hutch_pidfile_check(pidfile, &forward_id);
}

void hutch_forward_remove_files(const char *runtime_dir, guint host_port) {
  g_autofree char *pidfile = hutch_forward_file(runtime_dir, host_port, "pid");
  g_autofree char *specfile = hutch_forward_file(runtime_dir, host_port, "spec");
  g_unlink(pidfile);
  g_unlink(specfile);
}

void hutch_forward_stop(const char *runtime_dir, guint host_port) {
  g_autofree char *pidfile = hutch_forward_file(runtime_dir, host_port, "pid");
  hutch_pidfile_kill(pidfile, &forward_id);
  hutch_forward_remove_files(runtime_dir, host_port);
}

/* "forward-PORT.SUFFIX": PORT, or 0. */
static guint port_of_file(const char *name, const char *suffix) {
  gsize prefix = strlen("forward-"), tail = strlen(suffix);
  if (!g_str_has_prefix(name, "forward-") || !g_str_has_suffix(name, suffix) ||
      strlen(name) <= prefix + tail)
    return 0;
  g_autofree char *digits = g_strndup(name + prefix, strlen(name) - prefix - tail);
  guint64 port = 0;
  return g_ascii_string_to_unsigned(digits, 10, 1, 65535, &port, NULL) ? (guint)port : 0;
}

static gint compare_uint(gconstpointer a, gconstpointer b) {
  guint x = *(const guint *)a, y = *(const guint *)b;
  return x < y ? -1 : x > y;
}

GArray *hutch_forward_ports(const char *runtime_dir) {
  GArray *ports = g_array_new(FALSE, FALSE, sizeof(guint));
  g_autoptr(GDir) dir = g_dir_open(runtime_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir))) {
    guint port = port_of_file(name, ".spec");
    if (port)
      g_array_append_val(ports, port);
  }
  g_array_sort(ports, compare_uint);
  return ports;
}

void hutch_forward_stop_all(const char *runtime_dir) {
  g_autoptr(GArray) ports = hutch_forward_ports(runtime_dir);
  for (guint i = 0; i < ports->len; i++)
    hutch_forward_stop(runtime_dir, g_array_index(ports, guint, i));
  /* a helper that died between its pid file and its spec file */
  g_autoptr(GDir) dir = g_dir_open(runtime_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir))) {
    guint port = port_of_file(name, ".pid");
    if (port)
      hutch_forward_stop(runtime_dir, port);
  }
}

JsonArray *hutch_forward_list_dir(const char *runtime_dir) {
  g_autoptr(GArray) ports = hutch_forward_ports(runtime_dir);
  JsonArray *array = json_array_new();
  for (guint i = 0; i < ports->len; i++) {
    guint host_port = g_array_index(ports, guint, i);
    g_autofree char *host_ip = NULL;
    guint guest_port = 0;
    gboolean supervised = FALSE;
    gboolean readable =
        hutch_forward_read_spec(runtime_dir, host_port, &host_ip, &guest_port, &supervised);
    pid_t pid = hutch_forward_pid(runtime_dir, host_port);
    if (!readable || (pid <= 0 && !supervised)) {
      /* a helper that is gone (or files it never finished): stale */
      hutch_forward_remove_files(runtime_dir, host_port);
      continue;
    }
    /* a supervised forward whose supervisor is gone: pid 0 until the next one serves it */
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "host_ip", host_ip);
    json_object_set_int_member(o, "host_port", host_port);
    json_object_set_int_member(o, "guest_port", guest_port);
    json_object_set_int_member(o, "pid", pid);
    json_object_set_string_member(o, "served_by", supervised ? "supervisor" : "helper");
    json_array_add_object_element(array, o);
  }
  return array;
}
