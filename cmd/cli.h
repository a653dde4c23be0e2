/* cli.h: what the verb files of the hutch command share. Only lib/hutch.h from the library. */
#pragma once

#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include "hutch.h"

/* Exit codes (docs/hutch.1). `hutch shell NAME -- CMD` exits with CMD's status instead. */
enum {
  EXIT_OK = 0,
  EXIT_FAILED = 1,
  EXIT_USAGE = 2,
};

typedef struct {
  const char *uri;     /* -c/--connect, or NULL */
  gboolean json;       /* --json: machine-readable output on stdout */
  gboolean quiet;      /* -q: no progress, only errors and requested data */
  HutchContext *ctx;   /* made on first use by cli_context() */
  HutchRemote *remote; /* -c qemu+ssh://: cp's other host (cmd/remote.c), else NULL */
} Cli;

typedef struct {
  const char *name;
  int (*run)(Cli *cli, int argc, char **argv);
  const char *summary;
  const char *usage;   /* "hutch NAME ..." lines and option descriptions for --help */
} Verb;

/* The verbs, one file a group. */
int verb_cp(Cli *cli, int argc, char **argv);
int verb_create(Cli *cli, int argc, char **argv);
int verb_delete(Cli *cli, int argc, char **argv);
int verb_doctor(Cli *cli, int argc, char **argv);
int verb_edit(Cli *cli, int argc, char **argv);
int verb_forward(Cli *cli, int argc, char **argv);
int verb_image(Cli *cli, int argc, char **argv);
int verb_info(Cli *cli, int argc, char **argv);
int verb_list(Cli *cli, int argc, char **argv);
int verb_logs(Cli *cli, int argc, char **argv);
int verb_profile(Cli *cli, int argc, char **argv);
int verb_restart(Cli *cli, int argc, char **argv);
int verb_shell(Cli *cli, int argc, char **argv);
int verb_snapshot(Cli *cli, int argc, char **argv);
int verb_template(Cli *cli, int argc, char **argv);
int verb_ssh_config(Cli *cli, int argc, char **argv);
int verb_start(Cli *cli, int argc, char **argv);
int verb_stop(Cli *cli, int argc, char **argv);
int verb_run(Cli *cli, int argc, char **argv);
int verb_clone(Cli *cli, int argc, char **argv);
int verb_supervise(Cli *cli, int argc, char **argv);
int verb_egress_helper(Cli *cli, int argc, char **argv);
int verb_net(Cli *cli, int argc, char **argv);

/* A verb that makes a VM it must not leave behind (run; template create's copy): from
 * cli_watch_begin to cli_watch_end, SIGINT, SIGTERM and SIGHUP are blocked in every thread and
 * taken by a thread that says `doing` and powers vm off, so that the verb's waits end and it
 * removes what it made. cli_watch_end returns the signal that came, or 0 (cmd/watch.c). */
typedef struct {
  const char *uri;
  const char *vm;
  const char *doing;
  sigset_t signals, saved;
  gint signo; /* atomic */
  GThread *thread;
} CliWatch;
void cli_watch_begin(CliWatch *w, Cli *cli, const char *vm, const char *doing);
int cli_watch_signo(CliWatch *w);
int cli_watch_end(CliWatch *w);

/* -c qemu+ssh://...: runs verb (argv from its name) on that host (cmd/remote.c). */
int cli_remote(Cli *cli, const char *uri, const Verb *verb, int argc, char **argv);
/* A profile on standard input (`-f -`), at most 1 MiB. */
char *cli_read_stdin_profile(GError **error);

/* start --foreground NAME (cmd/foreground.c): start or adopt, notify systemd, stay until the
 * domain stops or SIGTERM/SIGINT (then a graceful shutdown). */
int cli_start_foreground(Cli *cli, const char *name);

/* The context for library calls, with progress drawn on stderr unless -q. NULL after
 * printing the error. */
HutchContext *cli_context(Cli *cli);
/* cli_context for a verb that makes or starts a VM: NULL after printing the error when this
 * process may not (hutch_context_check_may_run_vms: root), before anything is done. */
HutchContext *cli_vm_context(Cli *cli);

/* Prints "hutch VERB: message" on stderr and returns EXIT_USAGE. */
int cli_usage_error(const char *verb, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Prints "hutch: message" for error on stderr (one line) and returns the exit code it maps
 * to (EXIT_USAGE for HUTCH_ERROR_USAGE, else EXIT_FAILED). */
int cli_error(GError *error);

/* Parses the options of a verb with getopt_long. Handles --help (prints usage, returns -1
 * with *exit_code = 0) and unknown options or missing arguments (one line on stderr, returns
 * -1 with *exit_code = 2). Returns the option character otherwise, 0 at the end. */
typedef struct {
  const Verb *verb;
  const char *shortopts;          /* without the leading '+' or ':' */
  const struct option *longopts;  /* must not contain "help" */
  int exit_code;
} CliOptions;
int cli_getopt(CliOptions *opts, int argc, char **argv);
/* After cli_getopt returned 0: checks the number of positional arguments. */
gboolean cli_expect_args(CliOptions *opts, int argc, char **argv, int min, int max);

const Verb *cli_find_verb(const char *name);

/* Write pretty JSON and a newline on stdout. */
void cli_print_json_array(JsonArray *array);
void cli_print_json_object(JsonObject *object);
