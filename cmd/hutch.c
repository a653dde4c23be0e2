/* hutch: the command line. argv -> one verb -> libhutch calls -> output and exit code. */
#include "config.h"

#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Sorted by name: `hutch --help` lists them in this order. */
static const Verb verbs[] = {
    {"clone", verb_clone, "make a new VM from a stopped one or a template, provisioned already",
     "usage: hutch clone SRC NAME [--share SPEC]... [--remove-share GUEST]... [--port SPEC]...\n"
     "                   [--remove-port HOST[-END][/udp]]... [--no-ports] [--cpus N]\n"
     "                   [--memory SIZE]\n"
     "\n"
     "SRC is a VM or, when no VM has that name, a template (hutch template list).\n"
     "A VM SRC must be stopped and have finished its first boot. NAME gets a copy of its disk\n"
     "(without its snapshots) and its profile, changed by the options as hutch edit changes\n"
     "them; provisioning does not run again. NAME has its own UUID, MAC address and pinned SSH\n"
     "host key: its first start gives the guest that key, the hostname NAME and a new\n"
     "machine-id. SRC is only read. From a template, NAME gets an overlay of the template's\n"
     "disk and its profile (no shares or ports but the options'), and takes its identity\n"
     "from its seed at its first boot.\n"},
    {"cp", verb_cp, "copy files between the host and a VM (NAME:PATH on one side)",
     "usage: hutch cp [-r] SRC DST\n"
     "\n"
     "Copies over SFTP. Exactly one of SRC and DST is NAME:PATH; a relative PATH is relative\n"
     "to the guest user's home. File modes are kept.\n"
     "\n"
     "  -r, --recursive   copy directories\n"},
    {"create", verb_create, "create a VM from a profile (shut off)",
     "usage: hutch create NAME [--profile PROFILE | -f FILE] [OPTIONS]\n"
     "\n"
     "Creates the VM's directory, disk overlay, cloud-init seed and libvirt domain. The image\n"
     "is built or downloaded first when it is not cached. Nothing is left behind on failure.\n"
     "\n"
     "  -p, --profile NAME  profile by name (default: default)\n"
     "  -f, --file FILE     profile from a file (-: standard input)\n"
     "      --template NAME on a template (hutch template): its profile, provisioned already\n"
     "      --cpus N        override the profile's cpus\n"
     "      --memory SIZE   override the profile's memory (e.g. 2GiB)\n"
     "      --disk SIZE     override the profile's disk size (e.g. 20GiB)\n"
     "      --share HOST:GUEST[:OPTION,...]\n"
     "                      share a host directory (repeatable); OPTION: ro, rw (the\n"
     "                      default), cache=auto|always|never (hutch-profile(5))\n"
     "      --port [HOST_IP:]HOST[-END]:GUEST[-END][/tcp|/udp]\n"
     "                      forward a host port to the guest (repeatable; host side\n"
     "                      binds 127.0.0.1 unless HOST_IP is given)\n"
     "      --no-ports      drop the profile's port forwards (--port adds others): for a\n"
     "                      second VM from a profile whose ports the first one holds\n"
     "      --egress MODE   override the profile's network.egress: none, allowlist, public\n"
     "                      or unrestricted (see hutch-profile(5))\n"},
    {"delete", verb_delete, "remove a VM, its disk, snapshots and helpers",
     "usage: hutch delete NAME [--force]\n"
     "\n"
     "  -f, --force   delete a running VM (it is powered off first)\n"},
    {"doctor", verb_doctor, "check the host: KVM, libvirt, QEMU, passt, virtiofsd, subuids, space",
     "usage: hutch doctor [--json]\n"
     "\n"
     "Checks what hutch needs on this host and prints the fix for each problem. Exits 0 when\n"
     "all is well, 1 otherwise.\n"},
    {"edit", verb_edit, "change a stopped VM: CPUs, memory, disk, shares, ports",
     "usage: hutch edit NAME [OPTIONS]\n"
     "\n"
     "Changes a stopped VM (hutch stop NAME first) as create would have made it: its profile\n"
     "(kept in its directory, what every start uses), its domain and its disk. Everything is\n"
     "checked first, as create checks it: a bad edit changes nothing.\n"
     "\n"
     "      --cpus N                 virtual CPUs\n"
     "      --memory SIZE            memory (e.g. 8GiB)\n"
     "      --disk SIZE              grow the disk (never shrinks it); the guest's root file\n"
     "                               system grows at the next boot\n"
     "      --share HOST:GUEST[:OPTION,...]\n"
     "                               add a shared folder (repeatable; same GUEST replaces);\n"
     "                               OPTION: ro, rw, cache=auto|always|never\n"
     "      --remove-share GUEST     remove the share on guest path GUEST (repeatable)\n"
     "      --port [HOST_IP:]HOST[-END]:GUEST[-END][/tcp|/udp]\n"
     "                               add a port forward (repeatable)\n"
     "      --remove-port HOST[-END][/tcp|/udp]\n"
     "                               remove the port forward from these host ports\n"
     "      --no-ports               remove every port forward (before --port adds any)\n"},
    {"egress-helper", verb_egress_helper, "a VM's network policy at work (started by hutch start)",
     "usage: hutch egress-helper INSTANCE_DIR RUNTIME_DIR FORWARD... -- PASST_ARGV...\n"
     "\n"
     "Runs passt in a network namespace of its own, where every connection the guest opens\n"
     "ends at this helper's proxy, which allows it or not by the VM's egress policy (see\n"
     "hutch net). hutch start runs it detached; there is no need to run it by hand.\n"},
    {"forward", verb_forward, "add a port forward to a running VM, list or remove them",
     "usage: hutch forward NAME [HOST_IP:]HOST:GUEST\n"
     "       hutch forward NAME --list [--json]\n"
     "       hutch forward NAME --remove HOST\n"
     "\n"
     "Forwards host port HOST (on 127.0.0.1 unless HOST_IP is given) to TCP port GUEST in\n"
     "the running VM over SSH: the VM's supervisor holds the port (without one, a small\n"
     "background process of its own does); the forward ends when the VM stops. Ports that\n"
     "are always needed belong in the profile (--port).\n"
     "\n"
     "      --list          the forwards added this way, HOST_IP:HOST -> GUEST\n"
     "      --remove HOST   stop the forward from host port HOST\n"},
    {"image", verb_image, "build, download, list and remove base images",
     "usage: hutch image build PROFILE\n"
     "       hutch image pull URL --digest sha256:HEX|sha512:HEX\n"
     "       hutch image list [--json]\n"
     "       hutch image rm KEY\n"
     "\n"
     "Images live in $XDG_CACHE_HOME/hutch/images. `build` runs mmdebstrap for a profile\n"
     "whose image is `build:`; `pull` checks the digest before anything enters the cache; `rm`\n"
     "refuses an image that still backs a VM.\n"},
    {"info", verb_info, "show one VM", "usage: hutch info NAME [--json]\n"},
    {"list", verb_list, "list VMs",
     "usage: hutch list [--json] [--name]\n"
     "\n"
     "      --name   print only the names, one a line\n"},
    {"logs", verb_logs, "print a VM's console log and provisioning logs",
     "usage: hutch logs NAME [--raw]\n"
     "\n"
     "Prints the serial console log and, while the VM runs, cloud-init's output and each\n"
     "provisioning step's log from inside the guest. The guest writes them: control\n"
     "characters (escape sequences too) and invalid UTF-8 are printed as '?'.\n"
     "\n"
     "      --raw   the bytes as they are (for a file; a terminal obeys escape sequences)\n"},
    {"net", verb_net, "a VM's network egress policy: show it, change it, read its log",
     "usage: hutch net NAME [--egress MODE] [--allow DEST]... [--deny DEST]...\n"
     "       hutch net NAME --log [--json]\n"
     "\n"
     "Shows the egress policy of NAME: what the guest's connections may reach, enforced on\n"
     "the host (hutch-profile(5), network). A change is saved with the VM and a running VM\n"
     "has it at once (a change to or from unrestricted at its next start).\n"
     "\n"
     "      --egress MODE   none | allowlist | public | unrestricted\n"
     "      --allow DEST    allow a destination: NAME, *.NAME, NAME:PORT, ADDR[/PREFIX][:PORT]\n"
     "                      (a name or address without a port: ports 80 and 443)\n"
     "      --deny DEST     refuse a destination, whatever the mode and allow say\n"
     "      --log           the VM's decisions, oldest first (with --json: as JSON)\n"
     "      --json          the policy (or the log) as JSON (docs/json.md)\n"},
    {"profile", verb_profile, "list profiles or show one fully expanded",
     "usage: hutch profile list [--json]\n"
     "       hutch profile show [--origin] NAME|FILE\n"
     "\n"
     "      --origin   for each value, the file and line it came from through the base chain\n"
     "                 (\"default\" when no file sets it), like git config --show-origin\n"},
    {"restart", verb_restart, "stop a VM and start it again",
     "usage: hutch restart NAME [--no-wait]\n"
     "\n"
     "hutch stop NAME (the guest is asked to power off, and powered off after 60 seconds),\n"
     "then hutch start NAME: returns once the guest is ready. A stopped VM is just started.\n"
     "\n"
     "      --no-wait   return once the domain runs\n"},
    {"run", verb_run, "run one command in a new VM that is deleted afterwards",
     "usage: hutch run [--profile PROFILE | -f FILE | --template NAME]\n"
     "                 [--share DIR[:GUEST][:OPTION,...]]...\n"
     "                 [--port SPEC]...\n"
     "                 [--no-ports] [--egress MODE] [--cpus N] [--memory SIZE] [--disk SIZE]\n"
     "                 [--name NAME] [--keep] -- CMD [ARG...]\n"
     "\n"
     "Creates a VM (named run-XXXXXX unless --name), starts it, runs CMD in it (with a\n"
     "terminal when stdin and stdout are one; in the first share's guest path, else the\n"
     "user's home), and deletes the VM: after CMD, a failed start, Ctrl-C, SIGTERM or\n"
     "SIGHUP. Exits with CMD's exit status (128+N after signal N, 1 when the VM could not\n"
     "be made). A share without GUEST is mounted at the same path in the guest.\n"
     "\n"
     "  -p, --profile PROFILE   the profile (default: default)\n"
     "  -f, --file FILE         a profile file (-: standard input)\n"
     "      --template NAME     a VM on this template (hutch template): provisioned already\n"
     "      --share, --port, --no-ports, --egress, --cpus, --memory, --disk   as for create\n"
     "      --name NAME         the VM's name\n"
     "      --keep              keep the VM afterwards (stopped only by hutch stop NAME)\n"},
    {"shell", verb_shell, "open a shell in a VM, or run a command there",
     "usage: hutch shell NAME [--workdir DIR] [-- CMD [ARG...]]\n"
     "\n"
     "Without CMD: an interactive login shell with a terminal (without one when stdin is no\n"
     "terminal: it reads commands from stdin). With CMD: runs it with stdin,\n"
     "stdout and stderr connected; hutch exits with CMD's exit status.\n"
     "\n"
     "  -w, --workdir DIR   directory to run in (default: the user's home)\n"},
    {"snapshot", verb_snapshot, "take, list, revert to and delete snapshots of a VM",
     "usage: hutch snapshot create NAME SNAPSHOT [--description TEXT]\n"
     "       hutch snapshot list NAME [--json] [--name]\n"
     "       hutch snapshot revert NAME SNAPSHOT\n"
     "       hutch snapshot delete NAME SNAPSHOT\n"
     "\n"
     "Snapshots are libvirt internal snapshots of the VM's disk, taken while it is shut off: a\n"
     "running VM is shut down, snapshotted and started again, and revert restarts a running\n"
     "VM. Shared folders are on the host and not part of a snapshot.\n"
     "\n"
     "  -d, --description TEXT   a note kept with the snapshot (create)\n"
     "      --name               print only the snapshot names, one a line (list)\n"},
    {"template", verb_template, "make provisioned templates of VMs, list and remove them",
     "usage: hutch template create TEMPLATE --from VM\n"
     "       hutch template list [--json]\n"
     "       hutch template rm TEMPLATE\n"
     "\n"
     "A template is a provisioned VM's disk, generalised, in the image cache: new VMs start\n"
     "from it in the time of a restart (hutch run --template TEMPLATE -- CMD, hutch clone\n"
     "TEMPLATE NAME, hutch create NAME --template TEMPLATE, or image: {template: TEMPLATE} in\n"
     "a profile). create copies VM (a running VM is shut down for the copy and started again),\n"
     "boots the copy once to remove what made it that machine (SSH host keys, machine-id,\n"
     "cloud-init's state, authorized keys, shell histories, the shares' mount lines) and keeps\n"
     "its disk with VM's profile (without shares and ports) and network policy. VM itself is\n"
     "only read. rm is refused while a VM uses the template.\n"
     "\n"
     "      --from VM   the VM to make the template from (create)\n"
     "      --json      machine-readable output (list)\n"},
    {"ssh-config", verb_ssh_config, "OpenSSH client configuration for a VM, or for all of them",
     "usage: hutch ssh-config NAME\n"
     "       hutch ssh-config --install | --uninstall\n"
     "\n"
     "Prints a Host block (with the VM's pinned host key) for ssh -F or ~/.ssh/config.\n"
     "\n"
     "      --install    keep $XDG_CONFIG_HOME/hutch/ssh_config current for every VM (rewritten\n"
     "                   at create, start, stop, delete) and put one Include line of it at the\n"
     "                   top of ~/.ssh/config: `ssh NAME` and VS Code Remote-SSH find every\n"
     "                   running VM\n"
     "      --uninstall  remove that line and the file\n"},
    {"start", verb_start, "start a VM (creating it first when new) and wait until it is ready",
     "usage: hutch start NAME [--profile PROFILE | -f FILE] [OPTIONS]\n"
     "\n"
     "Creates NAME when it does not exist (same options as create), starts its helpers and\n"
     "the domain, and returns once the guest is provisioned and answers SSH.\n"
     "\n"
     "  -p, --profile NAME  profile for a new VM (default: default)\n"
     "  -f, --file FILE     profile file for a new VM (-: standard input)\n"
     "      --template NAME a new VM on this template (hutch template)\n"
     "      --cpus N, --memory SIZE, --disk SIZE, --share SPEC, --port SPEC, --no-ports\n"
     "                      overrides for a new VM (see hutch create --help)\n"
     "      --egress MODE   the network policy: for a new VM as create's, for an existing\n"
     "                      one saved as hutch net NAME --egress MODE would\n"
     "      --no-wait       return once the domain runs\n"
     "      --foreground    stay attached: tell systemd (NOTIFY_SOCKET) when the VM is ready,\n"
     "                      shut it down on SIGTERM, return when it stops (hutch@.service)\n"},
    {"stop", verb_stop, "shut a VM down",
     "usage: hutch stop NAME [--force]\n"
     "\n"
     "Asks the guest to power off and waits; powers it off after 60 seconds.\n"
     "\n"
     "  -f, --force   power off at once\n"},
    {"supervise", verb_supervise, "the supervisor of a running VM (started by hutch itself)",
     "usage: hutch supervise NAME\n"
     "\n"
     "Holds one SSH session to the running VM NAME and serves hutch shell, cp and forward\n"
     "over it, through the socket supervisor.sock in the VM's runtime directory; stops the\n"
     "VM's helpers and exits when the domain stops. hutch start runs it detached, before the\n"
     "VM's helpers, which it starts as its children (--boot-fd, --ssh-port and --secrets-fd\n"
     "are hutch start's); hutch shell runs it when a running VM has none. There is no need\n"
     "to run it by hand.\n"},
};

static const char main_usage[] =
    "usage: hutch [-c URI] [--json] [-q] VERB [ARGS...]\n"
    "\n"
    "hutch makes disposable, provisioned QEMU/KVM dev VMs through libvirt: only the folders\n"
    "you name are shared, only the ports you name are forwarded (to 127.0.0.1), and no host\n"
    "secret goes in.\n"
    "\n"
    "options:\n"
    "  -c, --connect URI   libvirt URI (default: $LIBVIRT_DEFAULT_URI, else qemu:///session)\n"
    "      --json          machine-readable output (see docs/json.md)\n"
    "  -q, --quiet         no progress output\n"
    "  -h, --help          this text; `hutch VERB --help` for a verb\n"
    "      --version       print the version\n"
    "\n"
    "verbs:\n";

const Verb *cli_find_verb(const char *name) {
  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++)
    if (strcmp(verbs[i].name, name) == 0)
      return &verbs[i];
  return NULL;
}

static void print_main_usage(FILE *out) {
  fputs(main_usage, out);
  for (gsize i = 0; i < G_N_ELEMENTS(verbs); i++)
    fprintf(out, "  %-12s %s\n", verbs[i].name, verbs[i].summary);
  fputs("\nexit status: 0 success, 1 failure, 2 usage error; `shell -- CMD` exits with CMD's.\n",
        out);
}

int cli_usage_error(const char *verb, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  if (verb)
    fprintf(stderr, "hutch %s: %s (see 'hutch %s --help')\n", verb, message, verb);
  else
    fprintf(stderr, "hutch: %s (see 'hutch --help')\n", message);
  return EXIT_USAGE;
}

int cli_getopt(CliOptions *opts, int argc, char **argv) {
  g_autofree char *shortopts = g_strconcat(":h", opts->shortopts ? opts->shortopts : "", NULL);
  gsize n = 0;
  while (opts->longopts && opts->longopts[n].name)
    n++;
  g_autofree struct option *longopts = g_new0(struct option, n + 2);
  if (n)
    memcpy(longopts, opts->longopts, n * sizeof(struct option));
  longopts[n] = (struct option){"help", no_argument, NULL, 'h'};

  opterr = 0;
  int c = getopt_long(argc, argv, shortopts, longopts, NULL);
  switch (c) {
  case -1:
    return 0;
  case 'h':
    fputs(opts->verb->usage, stdout);
    opts->exit_code = EXIT_OK;
    return -1;
  case ':':
    opts->exit_code = cli_usage_error(opts->verb->name, "option '%s' needs a value",
                                      argv[optind - 1]);
    return -1;
  case '?':
    if (optopt)
      opts->exit_code = cli_usage_error(opts->verb->name, "unknown option '-%c'", optopt);
    else
      opts->exit_code = cli_usage_error(opts->verb->name, "unknown option '%s'",
                                        argv[optind - 1]);
    return -1;
  default:
    return c;
  }
}

gboolean cli_expect_args(CliOptions *opts, int argc, char **argv, int min, int max) {
  int count = argc - optind;
  if (count < min) {
    opts->exit_code = cli_usage_error(opts->verb->name, "missing argument");
    return FALSE;
  }
  if (max >= 0 && count > max) {
    opts->exit_code = cli_usage_error(opts->verb->name, "unexpected argument '%s'",
                                      argv[optind + max]);
    return FALSE;
  }
  return TRUE;
}

static void print_json(JsonNode *node) {
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_pretty(gen, TRUE);
  json_generator_set_root(gen, node);
  g_autofree char *text = json_generator_to_data(gen, NULL);
  printf("%s\n", text);
  json_node_unref(node);
}

void cli_print_json_array(JsonArray *array) {
  JsonNode *node = json_node_new(JSON_NODE_ARRAY);
  json_node_set_array(node, array);
  print_json(node);
}

void cli_print_json_object(JsonObject *object) {
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(node, object);
  print_json(node);
}

/* Progress on stderr. On a terminal the current phase is redrawn in place and replaced by
 * its final line when it ends; otherwise each phase prints one line when it ends. */
typedef struct {
  gboolean tty;
  gboolean line_open;   /* a redrawable line is on the screen */
} ProgressView;

static void progress_print(const HutchProgress *p, gpointer user_data) {
  ProgressView *view = user_data;
  if (view->tty && view->line_open) {
    fputs("\r\033[K", stderr);
    view->line_open = FALSE;
  }
  switch (p->kind) {
  case HUTCH_PROGRESS_NOTE:
    fprintf(stderr, "%s\n", p->detail ? p->detail : "");
    break;
  case HUTCH_PROGRESS_BEGIN:
  case HUTCH_PROGRESS_UPDATE:
    if (view->tty) {
      g_autofree char *fraction =
          p->fraction >= 0 ? g_strdup_printf(" %3.0f%%", p->fraction * 100) : g_strdup("");
      fprintf(stderr, "  %-9s %-50.50s%s %6.1f s", p->phase, p->detail ? p->detail : "",
              fraction, p->elapsed_s);
      view->line_open = TRUE;
    }
    break;
  case HUTCH_PROGRESS_END:
    fprintf(stderr, "  %-9s %-50.50s %6.1f s\n", p->phase, p->detail ? p->detail : "",
            p->elapsed_s);
    break;
  }
  fflush(stderr);
}

static ProgressView progress_view;

HutchContext *cli_context(Cli *cli) {
  if (cli->ctx)
    return cli->ctx;
  g_autoptr(GError) error = NULL;
  cli->ctx = hutch_context_new(cli->uri, &error);
  if (!cli->ctx) {
    cli_error(error);
    return NULL;
  }
  /* the supervisor is this very program, run again (an executed program, not a fork) */
  g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
  if (self) {
    hutch_context_set_supervisor_program(cli->ctx, self);
    hutch_context_set_helper_program(cli->ctx, self);
  }
  if (!cli->quiet) {
    progress_view.tty = isatty(STDERR_FILENO);
    hutch_context_set_progress(cli->ctx, progress_print, &progress_view);
  }
  return cli->ctx;
}

HutchContext *cli_vm_context(Cli *cli) {
  if (!cli_context(cli))
    return NULL;
  g_autoptr(GError) error = NULL;
  if (!hutch_context_check_may_run_vms(cli->ctx, &error)) {
    cli_error(error);
    return NULL;
  }
  return cli->ctx;
}

int main(int argc, char **argv) {
  enum { OPT_JSON = 1000, OPT_VERSION };
  static const struct option global_options[] = {
      {"connect", required_argument, NULL, 'c'},
      {"json", no_argument, NULL, OPT_JSON},
      {"quiet", no_argument, NULL, 'q'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, OPT_VERSION},
      {NULL, 0, NULL, 0},
  };
  Cli cli = {0};
  hutch_init();

  /* '+': stop at the verb, whose options are its own. */
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+:c:qh", global_options, NULL)) != -1) {
    switch (c) {
    case 'c':
      cli.uri = optarg;
      break;
    case 'q':
      cli.quiet = TRUE;
      break;
    case OPT_JSON:
      cli.json = TRUE;
      break;
    case 'h':
      print_main_usage(stdout);
      return EXIT_OK;
    case OPT_VERSION:
      printf("hutch %s\n", hutch_version());
      return EXIT_OK;
    case ':':
      return cli_usage_error(NULL, "option '%s' needs a value", argv[optind - 1]);
    default:
      if (optopt)
        return cli_usage_error(NULL, "unknown option '-%c'", optopt);
      return cli_usage_error(NULL, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc)
    return cli_usage_error(NULL, "no verb given");
  const Verb *verb = cli_find_verb(argv[optind]);
  if (!verb)
    return cli_usage_error(NULL, "unknown verb '%s'", argv[optind]);

  /* The verb sees argv starting at its own name, with getopt reset. */
  int verb_argc = argc - optind;
  char **verb_argv = argv + optind;
  optind = 0;
  /* another host's libvirt: the verb runs there (cmd/remote.c) */
  const char *uri = cli.uri ? cli.uri : g_getenv("LIBVIRT_DEFAULT_URI");
  if (hutch_remote_uri_is_remote(uri))
    return cli_remote(&cli, uri, verb, verb_argc, verb_argv);
  int status = verb->run(&cli, verb_argc, verb_argv);
  hutch_context_free(cli.ctx);
  return status;
}
