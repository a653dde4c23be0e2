/* verb-instance.c: create, start, edit, restart, stop, delete, list, info. */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* Options shared by create and start: which profile, and overrides. */
typedef struct {
  const char *profile;
  const char *file;
  const char *template; /* --template NAME: a VM on a template instead of a profile */
  const char *cpus;
  const char *memory;
  const char *disk;
  GPtrArray *shares;   /* --share specs, in order */
  GPtrArray *ports;    /* --port specs, in order */
  gboolean no_ports;   /* --no-ports: drop the profile's ports (before --port adds any) */
  const char *egress;  /* --egress MODE (create and run) */
  gboolean no_wait;
  gboolean foreground;  /* start --foreground (cmd/foreground.c) */
} CreateOptions;

enum {
  OPT_CPUS = 1000,
  OPT_MEMORY,
  OPT_DISK,
  OPT_NO_WAIT,
  OPT_SHARE,
  OPT_PORT,
  OPT_NO_PORTS,
  OPT_FOREGROUND,
  OPT_REMOVE_SHARE,
  OPT_REMOVE_PORT,
  OPT_EGRESS,
  OPT_TEMPLATE,
};

static const struct option create_longopts[] = {
    {"profile", required_argument, NULL, 'p'},
    {"file", required_argument, NULL, 'f'},
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"disk", required_argument, NULL, OPT_DISK},
    {"no-wait", no_argument, NULL, OPT_NO_WAIT},
    {"share", required_argument, NULL, OPT_SHARE},
    {"port", required_argument, NULL, OPT_PORT},
    {"no-ports", no_argument, NULL, OPT_NO_PORTS},
    {"foreground", no_argument, NULL, OPT_FOREGROUND},
    {"egress", required_argument, NULL, OPT_EGRESS},
    {"template", required_argument, NULL, OPT_TEMPLATE},
    {NULL, 0, NULL, 0},
};

/* One of the options that say what a new VM is (create, start, run); FALSE for another.
 * --share specs are kept as given. */
static gboolean create_option(CreateOptions *out, int c, char *arg) {
  switch (c) {
  case 'p':
    out->profile = arg;
    return TRUE;
  case 'f':
    out->file = arg;
    return TRUE;
  case OPT_CPUS:
    out->cpus = arg;
    return TRUE;
  case OPT_MEMORY:
    out->memory = arg;
    return TRUE;
  case OPT_DISK:
    out->disk = arg;
    return TRUE;
  case OPT_SHARE:
    g_ptr_array_add(out->shares, arg);
    return TRUE;
  case OPT_PORT:
    g_ptr_array_add(out->ports, arg);
    return TRUE;
  case OPT_NO_PORTS:
    out->no_ports = TRUE;
    return TRUE;
  case OPT_EGRESS:
    out->egress = arg;
    return TRUE;
  case OPT_TEMPLATE:
    out->template = arg;
    return TRUE;
  default:
    return FALSE;
  }
}

/* Returns -1 when parsing should go on with positional arguments, else an exit code. */
static int parse_create_options(CliOptions *opts, CreateOptions *out, gboolean allow_no_wait,
                                int argc, char **argv) {
  int c;
  while ((c = cli_getopt(opts, argc, argv)) > 0) {
    if (create_option(out, c, optarg))
      continue;
    switch (c) {
    case OPT_NO_WAIT:
      if (!allow_no_wait)
        return cli_usage_error(opts->verb->name, "unknown option '--no-wait'");
      out->no_wait = TRUE;
      break;
    case OPT_FOREGROUND:
      if (!allow_no_wait)
        return cli_usage_error(opts->verb->name, "unknown option '--foreground'");
      out->foreground = TRUE;
      break;
    default:
      return cli_usage_error(opts->verb->name, "unknown option");
    }
  }
  if (c < 0)
    return opts->exit_code;
  if ((out->profile != NULL) + (out->file != NULL) + (out->template != NULL) > 1)
    return cli_usage_error(opts->verb->name,
                           "--profile, --file and --template exclude each other");
  if (!cli_expect_args(opts, argc, argv, 1, 1))
    return opts->exit_code;
  return -1;
}

static HutchProfile *load_profile(const CreateOptions *o, GError **error) {
  const char *which = o->file ? o->file : o->profile ? o->profile : "default";
  g_autoptr(HutchProfile) profile = NULL;
  if (o->template) {
    profile = hutch_template_profile(o->template, error);
  } else if (strcmp(which, "-") == 0) {
    /* -f -: standard input (what `hutch -c qemu+ssh://...` sends the far side) */
    g_autofree char *text = cli_read_stdin_profile(error);
    profile = text ? hutch_profile_load_text(text, strlen(text), "<stdin>", error) : NULL;
  } else {
    profile = hutch_profile_load(which, error);
  }
  if (!profile)
    return NULL;
  if (o->cpus && !hutch_profile_set_cpus(profile, o->cpus, error))
    return NULL;
  if (o->memory && !hutch_profile_set_memory(profile, o->memory, error))
    return NULL;
  if (o->disk && !hutch_profile_set_disk(profile, o->disk, error))
    return NULL;
  if (o->egress && !hutch_profile_set_egress(profile, o->egress, error))
    return NULL;
  for (guint i = 0; i < o->shares->len; i++)
    if (!hutch_profile_add_share_spec(profile, g_ptr_array_index(o->shares, i), error))
      return NULL;
  if (o->no_ports)
    hutch_profile_clear_ports(profile);
  for (guint i = 0; i < o->ports->len; i++)
    if (!hutch_profile_add_port_spec(profile, g_ptr_array_index(o->ports, i), error))
      return NULL;
  return g_steal_pointer(&profile);
}

/* Validates everything given before anything is created: a bad profile or name changes
 * nothing. */
static gboolean create_instance(Cli *cli, const char *name, const CreateOptions *o,
                                GError **error) {
  if (!hutch_name_is_valid(name, error))
    return FALSE;
  g_autoptr(HutchProfile) profile = load_profile(o, error);
  if (!profile)
    return FALSE;
  return hutch_instance_create(cli->ctx, name, profile, error);
}

int verb_create(Cli *cli, int argc, char **argv) {
  CliOptions opts = {cli_find_verb("create"), "p:f:", create_longopts, 0};
  g_autoptr(GPtrArray) shares = g_ptr_array_new();
  g_autoptr(GPtrArray) ports = g_ptr_array_new();
  CreateOptions o = {.shares = shares, .ports = ports};
  int rc = parse_create_options(&opts, &o, FALSE, argc, argv);
  if (rc >= 0)
    return rc;
  const char *name = argv[optind];
  if (!cli_vm_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!create_instance(cli, name, &o, &error))
    return cli_error(error);
  return EXIT_OK;
}

int verb_start(Cli *cli, int argc, char **argv) {
  CliOptions opts = {cli_find_verb("start"), "p:f:", create_longopts, 0};
  g_autoptr(GPtrArray) shares = g_ptr_array_new();
  g_autoptr(GPtrArray) ports = g_ptr_array_new();
  CreateOptions o = {.shares = shares, .ports = ports};
  int rc = parse_create_options(&opts, &o, TRUE, argc, argv);
  if (rc >= 0)
    return rc;
  if (o.foreground && o.no_wait)
    return cli_usage_error("start", "--foreground and --no-wait exclude each other");
  const char *name = argv[optind];
  if (!cli_vm_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_name_is_valid(name, &error))
    return cli_error(error);
  gboolean exists = hutch_instance_exists(cli->ctx, name, &error);
  if (error)
    return cli_error(error);
  if (!exists) {
    if (!create_instance(cli, name, &o, &error))
      return cli_error(error);
  } else if (o.profile || o.file || o.template || o.cpus || o.memory || o.disk || shares->len || ports->len ||
             o.no_ports) {
    return cli_usage_error("start",
                           "'%s' exists already: profile options apply only to a "
                           "new VM (hutch edit %s changes a stopped one)",
                           name, name);
  }
  if (exists && o.egress) {
    /* the VM's policy mode from now on, as hutch net --egress would set it */
    g_autoptr(JsonObject) net = hutch_instance_net(cli->ctx, name, o.egress, NULL, NULL, &error);
    if (!net)
      return error->code == HUTCH_ERROR_USAGE ? cli_usage_error("start", "%s", error->message)
                                              : cli_error(error);
  }
  if (o.foreground)
    return cli_start_foreground(cli, name);
  if (!hutch_instance_start(cli->ctx, name, !o.no_wait, &error))
    return cli_error(error);
  return EXIT_OK;
}

static const char *const *strv_of(GPtrArray *array) {
  g_ptr_array_add(array, NULL);
  return (const char *const *)array->pdata;
}

static const struct option edit_longopts[] = {
    {"cpus", required_argument, NULL, OPT_CPUS},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"disk", required_argument, NULL, OPT_DISK},
    {"share", required_argument, NULL, OPT_SHARE},
    {"remove-share", required_argument, NULL, OPT_REMOVE_SHARE},
    {"port", required_argument, NULL, OPT_PORT},
    {"remove-port", required_argument, NULL, OPT_REMOVE_PORT},
    {"no-ports", no_argument, NULL, OPT_NO_PORTS},
    {NULL, 0, NULL, 0},
};

/* edit's and clone's options: what changes of a stopped VM's profile. */
typedef struct {
  GPtrArray *add_shares, *remove_shares, *add_ports, *remove_ports;
  HutchEdit edit;
  gboolean any;
} EditOptions;

static void edit_options_clear(EditOptions *e) {
  g_ptr_array_unref(e->add_shares);
  g_ptr_array_unref(e->remove_shares);
  g_ptr_array_unref(e->add_ports);
  g_ptr_array_unref(e->remove_ports);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(EditOptions, edit_options_clear)

/* Returns -1 when the options are read (positional arguments checked), else an exit code. */
static int parse_edit_options(CliOptions *opts, EditOptions *e, int positional, int argc,
                              char **argv) {
  e->add_shares = g_ptr_array_new();
  e->remove_shares = g_ptr_array_new();
  e->add_ports = g_ptr_array_new();
  e->remove_ports = g_ptr_array_new();
  int c;
  while ((c = cli_getopt(opts, argc, argv)) > 0) {
    switch (c) {
    case OPT_CPUS:
      e->edit.cpus = optarg;
      break;
    case OPT_MEMORY:
      e->edit.memory = optarg;
      break;
    case OPT_DISK:
      e->edit.disk = optarg;
      break;
    case OPT_SHARE:
      g_ptr_array_add(e->add_shares, optarg);
      break;
    case OPT_REMOVE_SHARE:
      g_ptr_array_add(e->remove_shares, optarg);
      break;
    case OPT_PORT:
      g_ptr_array_add(e->add_ports, optarg);
      break;
    case OPT_REMOVE_PORT:
      g_ptr_array_add(e->remove_ports, optarg);
      break;
    case OPT_NO_PORTS:
      e->edit.no_ports = TRUE;
      break;
    default:
      return cli_usage_error(opts->verb->name, "unknown option");
    }
  }
  if (c < 0)
    return opts->exit_code;
  if (!cli_expect_args(opts, argc, argv, positional, positional))
    return opts->exit_code;
  e->any = e->edit.cpus || e->edit.memory || e->edit.disk || e->edit.no_ports ||
           e->add_shares->len || e->remove_shares->len || e->add_ports->len ||
           e->remove_ports->len;
  e->edit.add_shares = strv_of(e->add_shares);
  e->edit.remove_shares = strv_of(e->remove_shares);
  e->edit.add_ports = strv_of(e->add_ports);
  e->edit.remove_ports = strv_of(e->remove_ports);
  return -1;
}

int verb_edit(Cli *cli, int argc, char **argv) {
  CliOptions opts = {cli_find_verb("edit"), "", edit_longopts, 0};
  g_auto(EditOptions) e = {0};
  int rc = parse_edit_options(&opts, &e, 1, argc, argv);
  if (rc >= 0)
    return rc;
  if (!e.any)
    return cli_usage_error("edit", "nothing to change: give --cpus, --memory, --disk, --share, "
                                   "--remove-share, --port, --remove-port or --no-ports");
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_name_is_valid(argv[optind], &error) ||
      !hutch_instance_edit(cli->ctx, argv[optind], &e.edit, &error))
    return cli_error(error);
  return EXIT_OK;
}

int verb_clone(Cli *cli, int argc, char **argv) {
  CliOptions opts = {cli_find_verb("clone"), "", edit_longopts, 0};
  g_auto(EditOptions) e = {0};
  int rc = parse_edit_options(&opts, &e, 2, argc, argv);
  if (rc >= 0)
    return rc;
  if (!cli_vm_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_name_is_valid(argv[optind], &error) ||
      !hutch_instance_clone(cli->ctx, argv[optind], argv[optind + 1], &e.edit, &error))
    return cli_error(error);
  return EXIT_OK;
}

int verb_restart(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"no-wait", no_argument, NULL, OPT_NO_WAIT},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("restart"), "", longopts, 0};
  gboolean no_wait = FALSE;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    if (c == OPT_NO_WAIT)
      no_wait = TRUE;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, 1))
    return opts.exit_code;
  if (!cli_vm_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_instance_restart(cli->ctx, argv[optind], !no_wait, &error))
    return cli_error(error);
  return EXIT_OK;
}

/* stop and delete: NAME and --force. */
static int parse_name_force(Cli *cli, const char *verb, int argc, char **argv,
                            gboolean *force) {
  static const struct option longopts[] = {
      {"force", no_argument, NULL, 'f'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb(verb), "f", longopts, 0};
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    if (c == 'f')
      *force = TRUE;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, 1))
    return opts.exit_code;
  return -1;
}

int verb_stop(Cli *cli, int argc, char **argv) {
  gboolean force = FALSE;
  int rc = parse_name_force(cli, "stop", argc, argv, &force);
  if (rc >= 0)
    return rc;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_instance_stop(cli->ctx, argv[optind], force, &error))
    return cli_error(error);
  return EXIT_OK;
}

int verb_delete(Cli *cli, int argc, char **argv) {
  gboolean force = FALSE;
  int rc = parse_name_force(cli, "delete", argc, argv, &force);
  if (rc >= 0)
    return rc;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (!hutch_instance_delete(cli->ctx, argv[optind], force, &error))
    return cli_error(error);
  return EXIT_OK;
}

/* `--json` is accepted after the verb too (`hutch list --json`), as virsh users expect. */
static const struct option json_longopts[] = {
    {"json", no_argument, NULL, 'j'},
    {NULL, 0, NULL, 0},
};

static char *range_text(JsonObject *o, const char *start, const char *end) {
  gint64 first = json_object_get_int_member_with_default(o, start, 0);
  gint64 last = json_object_get_int_member_with_default(o, end, first);
  if (first == last)
    return g_strdup_printf("%" G_GINT64_FORMAT, first);
  return g_strdup_printf("%" G_GINT64_FORMAT "-%" G_GINT64_FORMAT, first, last);
}

static char *host_text(const char *ip, const char *ports) {
  gboolean v6 = strchr(ip, ':') != NULL;
  return g_strdup_printf("%s%s%s:%s", v6 ? "[" : "", ip, v6 ? "]" : "", ports);
}

/* One line for an object of an info array, or NULL for the JSON text. */
static char *info_element_text(const char *member, JsonObject *o) {
  if (strcmp(member, "optional_failed") == 0) {
    /* "NAME: REASON" reads better than the object */
    return g_strdup_printf("%s: %s", json_object_get_string_member_with_default(o, "name", ""),
                           json_object_get_string_member_with_default(o, "reason", ""));
  }
  if (strcmp(member, "secrets") == 0) {
    /* "NAME (env) -> host, host" */
    GString *hosts = g_string_new(NULL);
    JsonArray *list = json_object_has_member(o, "hosts") ? json_object_get_array_member(o, "hosts")
                                                         : NULL;
    for (guint i = 0; list && i < json_array_get_length(list); i++)
      g_string_append_printf(hosts, "%s%s", i ? ", " : "", json_array_get_string_element(list, i));
    char *text = g_strdup_printf("%s (%s) -> %s",
                                 json_object_get_string_member_with_default(o, "name", ""),
                                 json_object_get_string_member_with_default(o, "source", ""),
                                 hosts->str);
    g_string_free(hosts, TRUE);
    return text;
  }
  if (strcmp(member, "shares") == 0) {
    const char *cache = json_object_get_string_member_with_default(o, "cache", "auto");
    return g_strdup_printf(
        "%s -> %s (%s%s%s)", json_object_get_string_member_with_default(o, "host", ""),
        json_object_get_string_member_with_default(o, "guest", ""),
        json_object_get_boolean_member_with_default(o, "writable", FALSE) ? "rw" : "ro",
        strcmp(cache, "auto") ? ", cache " : "", strcmp(cache, "auto") ? cache : "");
  }
  if (strcmp(member, "ports") == 0) {
    g_autofree char *host_ports = range_text(o, "host_start", "host_end");
    g_autofree char *guest_ports = range_text(o, "guest_start", "guest_end");
    g_autofree char *host =
        host_text(json_object_get_string_member_with_default(o, "host_ip", ""), host_ports);
    return g_strdup_printf("%s -> %s/%s", host, guest_ports,
                           json_object_get_string_member_with_default(o, "proto", "tcp"));
  }
  if (strcmp(member, "forwards") == 0) {
    g_autofree char *host_port = range_text(o, "host_port", "host_port");
    g_autofree char *host =
        host_text(json_object_get_string_member_with_default(o, "host_ip", ""), host_port);
    return g_strdup_printf("%s -> %" G_GINT64_FORMAT "/tcp (hutch forward, pid %" G_GINT64_FORMAT
                           ")",
                           host, json_object_get_int_member_with_default(o, "guest_port", 0),
                           json_object_get_int_member_with_default(o, "pid", 0));
  }
  return NULL;
}

/* info's "network": the mode, then a line per rule ("allow NAME", "deny NAME"). */
static void print_network(JsonObject *network) {
  printf("%-14s %s\n", "network",
         json_object_get_string_member_with_default(network, "egress", ""));
  static const char *const lists[] = {"allow", "deny"};
  for (gsize i = 0; i < G_N_ELEMENTS(lists); i++) {
    JsonArray *rules = json_object_has_member(network, lists[i])
                           ? json_object_get_array_member(network, lists[i])
                           : NULL;
    for (guint j = 0; rules && j < json_array_get_length(rules); j++)
      printf("%-14s %s %s\n", "", lists[i], json_array_get_string_element(rules, j));
  }
  if (json_object_has_member(network, "allowed"))
    printf("%-14s %" G_GINT64_FORMAT " allowed, %" G_GINT64_FORMAT " refused or failed\n", "",
           json_object_get_int_member(network, "allowed"),
           json_object_get_int_member(network, "denied"));
}

int verb_info(Cli *cli, int argc, char **argv) {
  CliOptions opts = {cli_find_verb("info"), "", json_longopts, 0};
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0)
    if (c == 'j')
      cli->json = TRUE;
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, 1))
    return opts.exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) info = hutch_instance_info(cli->ctx, argv[optind], &error);
  if (!info)
    return cli_error(error);
  if (cli->json) {
    cli_print_json_object(info);
    return EXIT_OK;
  }
  /* Text: one "key: value" line per scalar member, in the documented order. */
  g_autoptr(GList) members = json_object_get_members(info);
  for (GList *l = members; l; l = l->next) {
    JsonNode *value = json_object_get_member(info, l->data);
    if (JSON_NODE_HOLDS_VALUE(value)) {
      g_autofree char *text = NULL;
      if (json_node_get_value_type(value) == G_TYPE_STRING)
        text = g_strdup(json_node_get_string(value));
      else if (json_node_get_value_type(value) == G_TYPE_BOOLEAN)
        text = g_strdup(json_node_get_boolean(value) ? "yes" : "no");
      else
        text = g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(value));
      /* (values may hold text a helper or the guest chose: a process name, an error) */
      g_autofree char *clean = hutch_text_sanitize(text, -1, HUTCH_TEXT_LINE);
      printf("%-14s %s\n", (const char *)l->data, clean);
    } else if (JSON_NODE_HOLDS_ARRAY(value)) {
      JsonArray *array = json_node_get_array(value);
      for (guint i = 0; i < json_array_get_length(array); i++) {
        JsonNode *element = json_array_get_element(array, i);
        g_autofree char *text = NULL;
        if (JSON_NODE_HOLDS_VALUE(element)) {
          text = g_strdup(json_node_get_string(element));
        } else if (JSON_NODE_HOLDS_OBJECT(element)) {
          text = info_element_text(l->data, json_node_get_object(element));
        }
        if (!text)
          text = json_to_string(element, FALSE);
        g_autofree char *clean = hutch_text_sanitize(text ? text : "", -1, HUTCH_TEXT_LINE);
        printf("%-14s %s\n", i == 0 ? (const char *)l->data : "", clean);
      }
    } else if (JSON_NODE_HOLDS_OBJECT(value) && strcmp(l->data, "network") == 0) {
      print_network(json_node_get_object(value));
    }
  }
  return EXIT_OK;
}

int verb_list(Cli *cli, int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},
      {"name", no_argument, NULL, 'n'},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("list"), "", longopts, 0};
  gboolean names_only = FALSE;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (c == 'j')
      cli->json = TRUE;
    else if (c == 'n')
      names_only = TRUE;
  }
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 0, 0))
    return opts.exit_code;
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) list = hutch_instance_list(cli->ctx, &error);
  if (!list)
    return cli_error(error);
  if (cli->json) {
    cli_print_json_array(list);
    return EXIT_OK;
  }
  if (!names_only)
    printf("%-20s %-10s %-12s %5s %8s %6s\n", "NAME", "STATE", "PROFILE", "CPUS", "MEMORY",
           "SSH");
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *vm = json_array_get_object_element(list, i);
    if (names_only) {
      printf("%s\n", json_object_get_string_member(vm, "name"));
      continue;
    }
    gint64 port = json_object_get_int_member_with_default(vm, "ssh_port", 0);
    g_autofree char *port_text = port ? g_strdup_printf("%" G_GINT64_FORMAT, port)
                                      : g_strdup("-");
    /* a "missing" VM (files without a domain) has no profile, CPUs or memory to show */
    gint64 cpus = json_object_get_int_member_with_default(vm, "cpus", 0);
    g_autofree char *cpus_text = cpus ? g_strdup_printf("%" G_GINT64_FORMAT, cpus) : g_strdup("-");
    printf("%-20s %-10s %-12s %5s %8s %6s\n", json_object_get_string_member(vm, "name"),
           json_object_get_string_member(vm, "state"),
           json_object_get_string_member_with_default(vm, "profile", "-"), cpus_text,
           json_object_get_string_member_with_default(vm, "memory", "-"), port_text);
  }
  return EXIT_OK;
}

/* A descriptor number given by hutch start; -2 when it is none. */
static int descriptor_arg(const char *text) {
  char *end = NULL;
  long fd = strtol(text, &end, 10);
  return *text && !*end && fd >= 3 && fd <= 1024 ? (int)fd : -2;
}

/* A TCP port number given by hutch start; 0 when it is none (out of range included: parsed in
 * 64 bits, so 4294967318 is not 22). */
static guint port_arg(const char *text) {
  guint64 port = 0;
  return g_ascii_string_to_unsigned(text, 10, 1, 65535, &port, NULL) ? (guint)port : 0;
}

int verb_supervise(Cli *cli, int argc, char **argv) {
  CliOptions opts = {cli_find_verb("supervise"), "", NULL, 0};
  /* hutch start's own: the boot socket, the SSH port and the egress helper's secrets */
  static const struct option longopts[] = {{"boot-fd", required_argument, NULL, 'B'},
                                           {"ssh-port", required_argument, NULL, 'P'},
                                           {"secrets-fd", required_argument, NULL, 'S'},
                                           {NULL, 0, NULL, 0}};
  opts.longopts = longopts;
  int c, boot_fd = -1, secrets_fd = -1;
  guint ssh_port = 0;
  const char *ssh_port_text = NULL;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    if (c == 'B')
      boot_fd = descriptor_arg(optarg);
    else if (c == 'S')
      secrets_fd = descriptor_arg(optarg);
    else if (c == 'P')
      ssh_port = port_arg(ssh_port_text = optarg);
  }
  if (c < 0)
    return opts.exit_code;
  if (!cli_expect_args(&opts, argc, argv, 1, 1))
    return opts.exit_code;
  if (ssh_port_text && ssh_port == 0)
    return cli_usage_error(opts.verb->name, "--ssh-port takes a port (1 to 65535), not '%s'",
                           ssh_port_text);
  if (boot_fd == -2 || secrets_fd == -2 || (boot_fd >= 0 && ssh_port == 0))
    return cli_usage_error(opts.verb->name,
                           "--boot-fd and --secrets-fd take a descriptor (3 or more), "
                           "--boot-fd needs --ssh-port PORT");
  if (!cli_context(cli))
    return EXIT_FAILED;
  g_autoptr(GError) error = NULL;
  if (hutch_supervise_boot(cli->ctx, argv[optind], boot_fd, ssh_port, secrets_fd, &error) != 0)
    return cli_error(error);
  return EXIT_OK;
}

/* ---- run: one command in a VM made for it ------------------------------------------------ */

static char *random_run_name(void) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  GString *name = g_string_new("run-");
  for (int i = 0; i < 6; i++)
    g_string_append_c(name, alphabet[g_random_int_range(0, (gint32)strlen(alphabet))]);
  return g_string_free(name, FALSE);
}

/* "DIR" alone shares DIR at the same absolute path in the guest. */
static char *run_share_spec(const char *spec) {
  if (strchr(spec, ':'))
    return g_strdup(spec);
  g_autofree char *cwd = g_get_current_dir();
  g_autofree char *abs = g_canonicalize_filename(spec, cwd);
  return g_strdup_printf("%s:%s", abs, abs);
}

int verb_run(Cli *cli, int argc, char **argv) {
  enum { OPT_NAME = 2000, OPT_KEEP };
  static const struct option longopts[] = {
      {"profile", required_argument, NULL, 'p'},
      {"file", required_argument, NULL, 'f'},
      {"cpus", required_argument, NULL, OPT_CPUS},
      {"memory", required_argument, NULL, OPT_MEMORY},
      {"disk", required_argument, NULL, OPT_DISK},
      {"share", required_argument, NULL, OPT_SHARE},
      {"port", required_argument, NULL, OPT_PORT},
      {"no-ports", no_argument, NULL, OPT_NO_PORTS},
      {"egress", required_argument, NULL, OPT_EGRESS},
      {"template", required_argument, NULL, OPT_TEMPLATE},
      {"name", required_argument, NULL, OPT_NAME},
      {"keep", no_argument, NULL, OPT_KEEP},
      {NULL, 0, NULL, 0},
  };
  CliOptions opts = {cli_find_verb("run"), "p:f:", longopts, 0};
  g_autoptr(GPtrArray) shares = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) ports = g_ptr_array_new();
  CreateOptions o = {.shares = shares, .ports = ports};
  const char *given_name = NULL;
  gboolean keep = FALSE;
  int c;
  while ((c = cli_getopt(&opts, argc, argv)) > 0) {
    /* "DIR" alone: run_share_spec's copy, freed with the array */
    if (c == OPT_SHARE) {
      g_ptr_array_add(shares, run_share_spec(optarg));
      continue;
    }
    if (create_option(&o, c, optarg))
      continue;
    switch (c) {
    case OPT_NAME:
      given_name = optarg;
      break;
    case OPT_KEEP:
      keep = TRUE;
      break;
    default:
      return cli_usage_error("run", "unknown option");
    }
  }
  if (c < 0)
    return opts.exit_code;
  if ((o.profile != NULL) + (o.file != NULL) + (o.template != NULL) > 1)
    return cli_usage_error("run", "--profile, --file and --template exclude each other");
  if (optind >= argc)
    return cli_usage_error("run", "missing the command (hutch run [OPTIONS] -- CMD [ARG...])");
  char **command = argv + optind;
  if (!cli_vm_context(cli))
    return EXIT_FAILED;

  /* Everything is checked before anything is made. */
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchProfile) profile = load_profile(&o, &error);
  if (!profile)
    return cli_error(error);
  g_autofree char *name = NULL;
  for (int attempt = 0; !name && attempt < 8; attempt++) {
    g_autofree char *candidate = given_name ? g_strdup(given_name) : random_run_name();
    if (!hutch_name_is_valid(candidate, &error))
      return cli_error(error);
    gboolean exists = hutch_instance_exists(cli->ctx, candidate, &error);
    if (error)
      return cli_error(error);
    if (!exists)
      name = g_steal_pointer(&candidate);
    else if (given_name)
      return cli_usage_error("run", "'%s' exists already: hutch run makes a VM of its own "
                                    "(hutch shell %s -- CMD runs in that one)",
                             given_name, given_name);
  }
  if (!name)
    return cli_usage_error("run", "no free run-XXXXXX name after 8 tries");

  /* From here on the VM is removed however the run ends: signals go to the watcher. */
  g_autofree char *doing = g_strdup_printf("removing %s", name);
  CliWatch watch;
  cli_watch_begin(&watch, cli, name, doing);

  int status = EXIT_FAILED;
  gboolean made = hutch_instance_create(cli->ctx, name, profile, &error);
  if (made && !cli_watch_signo(&watch) &&
      hutch_instance_start(cli->ctx, name, TRUE, &error)) {
    /* the first share's guest path: "~/x" is x relative to the home the shell starts in */
    const char *workdir = hutch_profile_get_first_share_guest(profile);
    if (workdir && strcmp(workdir, "~") == 0)
      workdir = NULL;
    else if (workdir && g_str_has_prefix(workdir, "~/"))
      workdir += 2;
    if (!cli_watch_signo(&watch))
      status = hutch_shell(cli->ctx, name, workdir, command, &error);
    if (status < 0)
      status = EXIT_FAILED;
  }
  int signo = cli_watch_signo(&watch);
  if (error && !signo)
    cli_error(error);
  g_clear_error(&error);
  if (made && !keep) {
    g_autoptr(GError) delete_error = NULL;
    if (!hutch_instance_delete(cli->ctx, name, TRUE, &delete_error)) {
      fprintf(stderr, "hutch: removing %s: %s\n", name, delete_error->message);
      if (status == 0)
        status = EXIT_FAILED;
    }
  } else if (made && !cli->quiet) {
    fprintf(stderr, "hutch: kept %s (hutch delete %s removes it)\n", name, name);
  }
  signo = cli_watch_end(&watch);
  return signo ? 128 + signo : status;
}
