/* front.c: the `hutch` that users run.
 *
 * It serves `hutch shell NAME [--] [CMD...]` itself, through the VM's supervisor
 * (lib/client.c), and executes the full CLI (hutch-cli, every verb) for everything else and
 * whenever no supervisor takes the command. Why: the full CLI maps 63 libraries at each start
 * (libvirt alone brings 56) and resolves their symbols, 7-8 ms of CPU against the 2.7 ms of
 * OpenSSH's client; through the supervisor a whole command takes about 65 ms under TCG, so
 * that was most of what separated `hutch shell` from a ControlMaster. This program maps GLib
 * only (docs/performance.md has the figures).
 *
 * It must do exactly what the full CLI would: it takes only a command line whose meaning is
 * plain without the CLI's parser (no option before "--", a valid name) and builds the same
 * command, terminal and request through the same code; everything else, unread, goes to the
 * full CLI with the same argv. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client-private.h"
#include "cli.h"

/* argv as `hutch shell NAME [CMD...]`: its name and command (CMD..., maybe empty), when the
 * full CLI would read it so too. Its verb parser permutes (GNU getopt), so operands before
 * "--" are taken in order, and anything that looks like an option (before "--") is left to
 * it: -w, --help, or an error it words. */
static gboolean parse_shell(int argc, char **argv, const char **ret_name, char ***ret_command) {
  if (argc < 3 || strcmp(argv[1], "shell") != 0)
    return FALSE;
  g_autoptr(GPtrArray) operands = g_ptr_array_new();
  gboolean options_ended = FALSE;
  for (int i = 2; i < argc; i++) {
    if (!options_ended && strcmp(argv[i], "--") == 0) {
      options_ended = TRUE;
      continue;
    }
    if (!options_ended && argv[i][0] == '-' && argv[i][1] != '\0')
      return FALSE;
    g_ptr_array_add(operands, argv[i]);
  }
  if (operands->len < 1 || !hutch_name_is_valid(operands->pdata[0], NULL))
    return FALSE;
  *ret_name = operands->pdata[0];
  g_ptr_array_remove_index(operands, 0);
  g_ptr_array_add(operands, NULL);
  *ret_command = (char **)g_ptr_array_free(g_steal_pointer(&operands), FALSE);
  return TRUE;
}

/* The full CLI: hutch-cli beside this program (a build tree, or a prefix that installs both
 * in one directory), else where this build installs it. */
static char *full_cli_path(void) {
  g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
  if (self) {
    g_autofree char *dir = g_path_get_dirname(self);
    g_autofree char *beside = g_build_filename(dir, "hutch-cli", NULL);
    if (access(beside, X_OK) == 0)
      return g_steal_pointer(&beside);
  }
  return g_strdup(HUTCH_CLI_PATH);
}

static int run_full_cli(char **argv) {
  g_autofree char *path = full_cli_path();
  execv(path, argv);
  fprintf(stderr, "hutch: cannot run %s: %s\n", path, g_strerror(errno));
  return EXIT_FAILED;
}

/* The supervisors serve the VMs of the user's own session daemon: another libvirt named by
 * $LIBVIRT_DEFAULT_URI is the full CLI's to connect to (or to refuse). */
static gboolean default_libvirt(void) {
  const char *uri = g_getenv("LIBVIRT_DEFAULT_URI");
  return !uri || !*uri || strcmp(uri, "qemu:///session") == 0;
}

int main(int argc, char **argv) {
  const char *name = NULL;
  g_autofree char **command = NULL;
  if (default_libvirt() && parse_shell(argc, argv, &name, &command)) {
    g_autofree char *runtime_dir = hutch_instance_runtime_dir(name);
    g_autofree char *command_line = hutch_shell_command(command, NULL);
    gboolean pty = hutch_shell_wants_pty(!command[0]);
    g_autoptr(GError) error = NULL;
    gboolean used = FALSE;
    int status = hutch_supervisor_exec(runtime_dir, command_line, pty, &used, &error);
    if (used && status < 0) {
      g_prefix_error(&error, "%s: ", name);
      return cli_error(error);
    }
    if (used)
      return status;
    /* The full CLI connects directly (and starts a supervisor for the next command); it need
     * not ask the one that just did not answer, and wait for it again. */
    g_setenv(HUTCH_NO_SUPERVISOR_ENV, "1", TRUE);
  }
  return run_full_cli(argv);
}
