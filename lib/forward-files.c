/* forward-files.c: the files of `hutch forward`'s helpers in an instance's runtime directory.
 * See forward-files-private.h. */
#include "config.h"

#include <glib/gstdio.h>
#include <string.h>

#include "forward-files-private.h"
#include "pidfile-private.h"

char *hutch_forward_file(const char *runtime_dir, guint host_port, const char *suffix) {
  g_autofree char *base = g_strdup_printf("forward-%u.%s", host_port, suffix);
  return g_build_filename(runtime_dir, base, NULL);
}

/* The forward helper hutch started: a fork of hutch (no exec, so its binary is whichever
 * program called hutch_forward_add) that names itself HUTCH_FORWARD_COMM and recorded its
 * start time in its pidfile. A pid reused since, or another VM's forward, never passes. */
static const HutchHelperId forward_id = {.comm = HUTCH_FORWARD_COMM, .recorded = TRUE};

pid_t hutch_forward_pid(const char *runtime_dir, guint host_port) {
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

/* The host ports of the forward-PORT.pid files in runtime_dir. */
static GArray *forward_ports(const char *runtime_dir) {
  GArray *ports = g_array_new(FALSE, FALSE, sizeof(guint));
  g_autoptr(GDir) dir = g_dir_open(runtime_dir, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir))) {
    if (!g_str_has_prefix(name, "forward-") || !g_str_has_suffix(name, ".pid"))
      continue;
    guint64 port = 0;
    g_autofree char *digits = g_strndup(name + 8, strlen(name) - 8 - 4);
    if (g_ascii_string_to_unsigned(digits, 10, 1, 65535, &port, NULL)) {
      guint p = (guint)port;
      g_array_append_val(ports, p);
    }
  }
  return ports;
}

static gint compare_uint(gconstpointer a, gconstpointer b) {
  guint x = *(const guint *)a, y = *(const guint *)b;
  return x < y ? -1 : x > y;
}

void hutch_forward_stop_all(const char *runtime_dir) {
  g_autoptr(GArray) ports = forward_ports(runtime_dir);
  for (guint i = 0; i < ports->len; i++)
    hutch_forward_stop(runtime_dir, g_array_index(ports, guint, i));
}

JsonArray *hutch_forward_list_dir(const char *runtime_dir) {
  g_autoptr(GArray) ports = forward_ports(runtime_dir);
  g_array_sort(ports, compare_uint);
  JsonArray *array = json_array_new();
  for (guint i = 0; i < ports->len; i++) {
    guint host_port = g_array_index(ports, guint, i);
    g_autofree char *specfile = hutch_forward_file(runtime_dir, host_port, "spec");
    g_autofree char *text = NULL;
    pid_t pid = hutch_forward_pid(runtime_dir, host_port);
    g_auto(GStrv) fields = NULL;
    if (pid > 0 && g_file_get_contents(specfile, &text, NULL, NULL))
      fields = g_strsplit(g_strstrip(text), " ", -1);
    guint64 guest_port = 0;
    if (!fields || g_strv_length(fields) != 3 ||
        !g_ascii_string_to_unsigned(fields[2], 10, 1, 65535, &guest_port, NULL)) {
      /* a helper that is gone (or files it never finished): stale */
      hutch_forward_remove_files(runtime_dir, host_port);
      continue;
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "host_ip", fields[0]);
    json_object_set_int_member(o, "host_port", host_port);
    json_object_set_int_member(o, "guest_port", (gint64)guest_port);
    json_object_set_int_member(o, "pid", pid);
    json_array_add_object_element(array, o);
  }
  return array;
}
