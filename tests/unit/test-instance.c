/* test-instance.c: what `hutch info` shows of a VM's shares, ports and forwards, and the
 * message when a VM's host ports are taken (by another hutch VM or anything else), with
 * `--no-ports` as the way out. hutch domains on libvirt's test driver; the data directory
 * (instances and their frozen profiles) is a temporary one. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "context-private.h"
#include "edit-private.h"
#include "forward-private.h"
#include "instance-private.h"
#include "pidfile-private.h"

static char *data_home; /* $XDG_DATA_HOME for the whole program */

/* Defines hutch domain `name` whose instance directory is $XDG_DATA_HOME/hutch/instances/NAME
 * holding profile_yaml as its frozen profile; returns the instance directory. */
static char *define_instance(HutchContext *ctx, const char *name, const char *profile_yaml,
                             const char *user) {
  g_autoptr(GError) error = NULL;
  char *dir = hutch_instance_dir(name);
  g_assert_true(hutch_mkdir(dir, 0700, &error));
  g_autofree char *profile = g_build_filename(dir, HUTCH_INSTANCE_PROFILE, NULL);
  g_assert_true(g_file_set_contents(profile, profile_yaml, -1, NULL));
  g_autofree char *xml =
      g_strdup_printf("<domain type='test'><name>%s</name><memory unit='MiB'>256</memory>"
                      "<os><type>hvm</type></os>"
                      "<metadata><hutch:instance xmlns:hutch='https://hutch.dev/xmlns/instance/1'>"
                      "<hutch:profile>p</hutch:profile><hutch:ssh-port>0</hutch:ssh-port>"
                      "<hutch:instance-dir>%s</hutch:instance-dir>"
                      "<hutch:runtime-dir>%s/run</hutch:runtime-dir><hutch:user>%s</hutch:user>"
                      "</hutch:instance></metadata></domain>",
                      name, dir, dir, user);
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  g_assert_no_error(error);
  g_autoptr(virDomain) dom = virDomainDefineXML(conn, xml);
  g_assert_nonnull(dom);
  return dir;
}

static void undefine_instance(HutchContext *ctx, const char *name) {
  virConnectPtr conn = hutch_context_connect(ctx, NULL);
  g_autoptr(virDomain) dom = virDomainLookupByName(conn, name);
  if (dom) {
    if (virDomainIsActive(dom) == 1)
      virDomainDestroy(dom);
    virDomainUndefine(dom);
  }
  g_autofree char *dir = hutch_instance_dir(name);
  g_assert_true(hutch_rmtree(dir, NULL));
}

/* A process whose name is hutch-forward's, as a forward's pidfile must name. */
static pid_t fake_forward_process(void) {
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    prctl(PR_SET_NAME, HUTCH_FORWARD_COMM, 0, 0, 0);
    for (;;)
      pause();
  }
  g_autofree char *comm_path = g_strdup_printf("/proc/%d/comm", (int)pid);
  for (int i = 0; i < 200; i++) {
    g_autofree char *comm = NULL;
    if (g_file_get_contents(comm_path, &comm, NULL, NULL) &&
        strcmp(g_strstrip(comm), HUTCH_FORWARD_COMM) == 0)
      return pid;
    g_usleep(10 * 1000);
  }
  g_error("the fake forward process did not take its name");
}

static void write_in(const char *dir, const char *file, const char *text) {
  g_autofree char *path = g_build_filename(dir, file, NULL);
  g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void test_info_shares_ports_forwards(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  g_autofree char *dir =
      define_instance(ctx, "dev",
                      "shares:\n"
                      "  - { host: ~/src, guest: ~/Shared, writable: true }\n"
                      "  - { host: /srv/data, guest: /mnt/data }\n"
                      "ports:\n"
                      "  - { host: 8000-9000, guest: 8000-9000 }\n"
                      "  - { host: 5353, guest: 53, proto: udp, host_ip: '::1' }\n"
                      "network:\n"
                      "  egress: allowlist\n"
                      "  allow: [deb.debian.org, '*.npmjs.org']\n",
                      "u");
  g_autofree char *run = g_build_filename(dir, "run", NULL);
  g_assert_true(hutch_mkdir(run, 0700, &error));
  pid_t forward = fake_forward_process();
  g_autofree char *pid_text = hutch_pidfile_format(forward); /* "PID START", as hutch writes it */
  write_in(run, "forward-4000.pid", pid_text);
  write_in(run, "forward-4000.spec", "127.0.0.1 4000 80\n");
  /* a forward whose process is gone is not shown */
  write_in(run, "forward-4001.pid", "1\n");
  write_in(run, "forward-4001.spec", "127.0.0.1 4001 81\n");
  /* a supervised one while no supervisor runs: pid 0, its file kept for the next one */
  write_in(run, "forward-4002.spec", "127.0.0.1 4002 82 supervisor\n");

  g_autoptr(JsonObject) info = hutch_instance_info(ctx, "dev", &error);
  g_assert_no_error(error);
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(node, info);
  g_autofree char *text = json_to_string(node, FALSE);
  json_node_unref(node);
  g_autofree char *home = g_strdup(g_get_home_dir());
  g_autofree char *want = g_strdup_printf(
      "\"shares\":[{\"host\":\"%s/src\",\"guest\":\"/home/u/"
      "Shared\",\"writable\":true,\"cache\":\"auto\"},"
      "{\"host\":\"/srv/data\",\"guest\":\"/mnt/data\",\"writable\":false,\"cache\":\"auto\"}],"
      "\"ports\":[{\"host_ip\":\"127.0.0.1\",\"host_start\":8000,\"host_end\":9000,"
      "\"guest_start\":8000,\"guest_end\":9000,\"proto\":\"tcp\"},"
      "{\"host_ip\":\"::1\",\"host_start\":5353,\"host_end\":5353,"
      "\"guest_start\":53,\"guest_end\":53,\"proto\":\"udp\"}],"
      "\"network\":{\"egress\":\"allowlist\",\"allow\":[\"deb.debian.org\",\"*.npmjs.org\"],"
      "\"deny\":[]},"
      "\"forwards\":[{\"host_ip\":\"127.0.0.1\",\"host_port\":4000,\"guest_port\":80,"
      "\"pid\":%d,\"served_by\":\"helper\"},"
      "{\"host_ip\":\"127.0.0.1\",\"host_port\":4002,\"guest_port\":82,\"pid\":0,"
      "\"served_by\":\"supervisor\"}]}",
      home, (int)forward);
  if (!g_str_has_suffix(text, want))
    g_error("info is\n%s\nwanted it to end in\n%s", text, want);
  g_autofree char *stale = g_build_filename(run, "forward-4001.pid", NULL);
  g_assert_false(g_file_test(stale, G_FILE_TEST_EXISTS));
  g_autofree char *waiting = g_build_filename(run, "forward-4002.spec", NULL);
  g_assert_true(g_file_test(waiting, G_FILE_TEST_EXISTS));

  kill(forward, SIGKILL);
  waitpid(forward, NULL, 0);
  /* a profile that does not say has the default mode */
  write_in(dir, HUTCH_INSTANCE_PROFILE, "cpus: 2\n");
  g_autoptr(JsonObject) info_default = hutch_instance_info(ctx, "dev", &error);
  g_assert_no_error(error);
  JsonObject *network = json_object_get_object_member(info_default, "network");
  g_assert_cmpstr(json_object_get_string_member(network, "egress"), ==, "public");
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(network, "allow")), ==, 0);
  /* without a readable frozen profile there is nothing to say about shares and ports */
  write_in(dir, HUTCH_INSTANCE_PROFILE, "cpus: many\n");
  g_autoptr(JsonObject) info2 = hutch_instance_info(ctx, "dev", &error);
  g_assert_no_error(error);
  g_assert_false(json_object_has_member(info2, "shares"));
  g_assert_false(json_object_has_member(info2, "ports"));
  g_assert_false(json_object_has_member(info2, "network"));
  /* the helper's forward is gone with its process; the supervised one waits */
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(info2, "forwards")), ==, 1);
  undefine_instance(ctx, "dev");
}

static HutchPort *tcp_port(guint16 start, guint16 end) {
  HutchPort *p = g_new0(HutchPort, 1);
  p->host_ip = g_strdup("127.0.0.1");
  p->host_start = p->guest_start = start;
  p->host_end = p->guest_end = end;
  return p;
}

static void test_ports_busy_message(void) {
  g_autoptr(HutchPort) range = tcp_port(8000, 9000);
  g_autoptr(HutchPort) one = tcp_port(3000, 3000);
  const struct {
    const HutchPort *port;
    const char *holder;
    gboolean exists;
    const char *message;
  } cases[] = {
      {range, "dev", FALSE,
       "host ports 127.0.0.1:8000-9000 are in use by VM 'dev': give this VM other ports with "
       "--no-ports --port 3000:3000, or stop 'dev'"},
      {range, NULL, FALSE,
       "host ports 127.0.0.1:8000-9000 are in use (8001 cannot be bound): give this VM other "
       "ports with --no-ports --port 3000:3000, or free it"},
      {one, NULL, TRUE,
       "host port 127.0.0.1:3000 is in use (or cannot be bound): give 'two' other ports with "
       "hutch edit two --no-ports --port 3000:3000, or free it"},
      {one, "dev", TRUE,
       "host port 127.0.0.1:3000 is in use by VM 'dev': give 'two' other ports with hutch edit "
       "two --no-ports --port 3000:3000, or stop 'dev'"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *message =
        hutch_instance_ports_busy_message(cases[i].port, cases[i].port == range ? 8001 : 3000,
                                          cases[i].holder, "two", cases[i].exists);
    g_assert_cmpstr(message, ==, cases[i].message);
  }
}

static int hold_port(guint *ret_port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  g_assert_cmpint(listen(fd, 1), ==, 0);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&addr, &len), ==, 0);
  *ret_port = ntohs(addr.sin_port);
  return fd;
}

/* A second VM whose host port a running hutch VM forwards: create names that VM. */
static void test_ports_busy_holder(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  guint port = 0;
  int fd = hold_port(&port);
  g_autofree char *yaml = g_strdup_printf("ports:\n  - { host: %u, guest: 80 }\n", port);
  /* a stopped VM with the port holds nothing; a running one does */
  g_autofree char *stopped_dir = define_instance(ctx, "asleep", yaml, "u");
  g_autofree char *dir = define_instance(ctx, "dev", yaml, "u");
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  g_autoptr(virDomain) dom = virDomainLookupByName(conn, "dev");
  g_assert_cmpint(virDomainCreate(dom), ==, 0);

  g_autoptr(HutchProfile) profile = hutch_profile_load_data(yaml, strlen(yaml), "two.yaml", &error);
  g_assert_no_error(error);
  g_assert_false(hutch_instance_create(ctx, "two", profile, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE);
  g_autofree char *want = g_strdup_printf(
      "creating 'two': host port 127.0.0.1:%u is in use by VM 'dev': give this VM other ports "
      "with --no-ports --port 3000:3000, or stop 'dev'",
      port);
  g_assert_cmpstr(error->message, ==, want);
  g_clear_error(&error);

  g_assert_cmpint(virDomainDestroy(dom), ==, 0);
  g_assert_false(hutch_instance_create(ctx, "two", profile, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE);
  g_autofree char *want2 = g_strdup_printf(
      "creating 'two': host port 127.0.0.1:%u is in use (or cannot be bound): give this VM "
      "other ports with --no-ports --port 3000:3000, or free it",
      port);
  g_assert_cmpstr(error->message, ==, want2);
  g_clear_error(&error);
  g_autofree char *two_dir = hutch_instance_dir("two");
  g_assert_false(g_file_test(two_dir, G_FILE_TEST_EXISTS));
  close(fd);
  undefine_instance(ctx, "dev");
  undefine_instance(ctx, "asleep");
}

/* ---- hutch edit ----------------------------------------------------------------------- */

/* The pure part: the order of the edits (removals first), and the create options' messages. */
static void test_edit_apply(void) {
  g_autoptr(GError) error = NULL;
  static const char yaml[] = "cpus: 2\nmemory: 1GiB\nshares:\n"
                             "  - { host: /srv/a, guest: ~/A }\n"
                             "ports:\n  - { host: 8000-9000, guest: 8000-9000 }\n";
  g_autoptr(HutchProfile) p = hutch_profile_load_data(yaml, strlen(yaml), "p.yaml", &error);
  g_assert_no_error(error);
  const char *const remove_shares[] = {"/home/u/A", NULL};
  const char *const add_shares[] = {"/srv/a:~/A:ro", "/srv/b:/mnt/b", NULL};
  const char *const add_ports[] = {"127.0.0.1:3000:3000", NULL};
  HutchEdit edit = {.cpus = "4",
                    .memory = "2GiB",
                    .remove_shares = remove_shares,
                    .no_ports = TRUE,
                    .add_shares = add_shares,
                    .add_ports = add_ports};
  g_assert_true(hutch_edit_apply(p, &edit, "/home/u", &error));
  g_assert_no_error(error);
  g_assert_cmpuint(p->cpus, ==, 4);
  g_assert_cmpuint(p->memory, ==, 2ULL << 30);
  g_assert_cmpuint(p->shares->len, ==, 2);
  g_assert_false(((HutchShare *)g_ptr_array_index(p->shares, 0))->writable);
  g_assert_cmpuint(p->ports->len, ==, 1);
  g_assert_cmpuint(((HutchPort *)g_ptr_array_index(p->ports, 0))->host_start, ==, 3000);

  const struct {
    HutchEdit edit;
    const char *message;
  } bad[] = {
      {{.cpus = "0"}, "cpus: '0' is out of range (1 to 256)"},
      {{.memory = "lots"}, "memory: 'lots' is not a size (e.g. 4GiB)"},
      {{.disk = "10MiB"}, "disk: '10MiB' is too small (at least 1GiB)"},
      {{.add_ports = (const char *const[]){"3000:80", NULL}},
       "port 3000: host port overlaps 3000/tcp, forwarded already (host ports must not overlap)"},
      {{.remove_ports = (const char *const[]){"8000-9000", NULL}},
       "no port forward from host port 8000-9000 to remove (forwarded: 127.0.0.1:3000)"},
      {{.remove_shares = (const char *const[]){"~/B", NULL}},
       "no share on guest path '~/B' to remove (shared: ~/A, /mnt/b)"},
      {{.add_shares = (const char *const[]){"srv:/x", NULL}},
       "invalid share 'srv:/x': 'srv' is a relative path (use an absolute path or one starting "
       "with ~/)"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) e = NULL;
    g_assert_false(hutch_edit_apply(p, &bad[i].edit, "/home/u", &e));
    g_assert_error(e, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_assert_cmpstr(e->message, ==, bad[i].message);
  }
}

typedef struct {
  HutchContext *ctx;
  char *dir; /* the instance directory of "ed" */
} EditFixture;

static char *read_in(const char *dir, const char *file) {
  g_autofree char *path = g_build_filename(dir, file, NULL);
  char *text = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  return text;
}

static guint64 disk_size(const char *dir) {
  g_autofree char *path = g_build_filename(dir, HUTCH_INSTANCE_DISK, NULL);
  const char *argv[] = {"qemu-img", "info", "--output=json", path, NULL};
  g_autofree char *out = NULL;
  int status = 0;
  g_autoptr(GError) error = NULL;
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, NULL,
                             &status, &error));
  g_assert_no_error(error);
  g_autoptr(JsonParser) parser = json_parser_new();
  g_assert_true(json_parser_load_from_data(parser, out, -1, NULL));
  return (guint64)json_object_get_int_member(json_node_get_object(json_parser_get_root(parser)),
                                             "virtual-size");
}

static char *domain_xml_of(HutchContext *ctx, const char *name) {
  virConnectPtr conn = hutch_context_connect(ctx, NULL);
  g_autoptr(virDomain) dom = virDomainLookupByName(conn, name);
  g_assert_nonnull(dom);
  return virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
}

static void edit_set_up(EditFixture *f, gconstpointer data) {
  g_autoptr(GError) error = NULL;
  f->ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  f->dir = define_instance(f->ctx, "ed",
                           "cpus: 1\nmemory: 256MiB\ndisk: 1GiB\n"
                           "ports:\n  - { host: 8000-9000, guest: 8000-9000 }\n",
                           "u");
  /* an overlay on a base image, as create makes it */
  g_autofree char *base = g_build_filename(f->dir, "base.qcow2", NULL);
  g_autofree char *disk = g_build_filename(f->dir, HUTCH_INSTANCE_DISK, NULL);
  const char *base_argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", base, "512M", NULL};
  const char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F",
                        "qcow2",    "-b",     base, disk, "1G",    NULL};
  const char *const *commands[] = {base_argv, argv};
  for (gsize i = 0; i < G_N_ELEMENTS(commands); i++) {
    int status = 0;
    g_assert_true(g_spawn_sync(NULL, (char **)commands[i], NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                               NULL, NULL, &status, &error));
    g_assert_no_error(error);
    g_assert_true(g_spawn_check_wait_status(status, NULL));
  }
}

static void edit_tear_down(EditFixture *f, gconstpointer data) {
  undefine_instance(f->ctx, "ed");
  hutch_context_free(f->ctx);
  g_free(f->dir);
}

static void test_edit_instance(EditFixture *f, gconstpointer data) {
  g_autoptr(GError) error = NULL;
  HutchEdit edit = {.cpus = "3", .memory = "512MiB", .disk = "2GiB"};
  g_assert_true(hutch_instance_edit(f->ctx, "ed", &edit, &error));
  g_assert_no_error(error);
  g_autofree char *xml = domain_xml_of(f->ctx, "ed");
  g_assert_nonnull(strstr(xml, "<vcpu placement='static'>3</vcpu>"));
  g_assert_nonnull(strstr(xml, "<memory unit='KiB'>524288</memory>"));
  g_assert_nonnull(strstr(xml, "<currentMemory unit='KiB'>524288</currentMemory>"));
  /* the metadata is kept: it is still a hutch VM */
  g_autoptr(JsonObject) info = hutch_instance_info(f->ctx, "ed", &error);
  g_assert_no_error(error);
  g_assert_cmpint(json_object_get_int_member(info, "cpus"), ==, 3);
  g_assert_cmpstr(json_object_get_string_member(info, "memory"), ==, "512MiB");
  g_assert_cmpuint(disk_size(f->dir), ==, 2ULL << 30);
  g_autoptr(HutchProfile) frozen = NULL;
  {
    g_autofree char *path = g_build_filename(f->dir, HUTCH_INSTANCE_PROFILE, NULL);
    frozen = hutch_profile_load_file(path, &error);
    g_assert_no_error(error);
  }
  g_assert_cmpuint(frozen->cpus, ==, 3);
  g_assert_cmpuint(frozen->disk, ==, 2ULL << 30);

  /* bad edits change nothing: not the profile, the domain or the disk */
  g_autofree char *profile_before = read_in(f->dir, HUTCH_INSTANCE_PROFILE);
  const struct {
    HutchEdit edit;
    int code;
    const char *message;
  } bad[] = {
      {{.cpus = "4", .disk = "1GiB"},
       HUTCH_ERROR_USAGE,
       "editing 'ed': disk: 1GiB is smaller than the disk's 2GiB: a disk only grows (--disk 2GiB "
       "or more)"},
      {{.cpus = "4", .memory = "1MiB"},
       HUTCH_ERROR_USAGE,
       "editing 'ed': memory: '1MiB' is too small (at least 256MiB)"},
      {{.cpus = "4", .remove_ports = (const char *const[]){"8000", NULL}},
       HUTCH_ERROR_USAGE,
       "editing 'ed': no port forward from host port 8000 to remove (forwarded: "
       "127.0.0.1:8000-9000)"},
      {{.cpus = "4", .add_shares = (const char *const[]){"/nonexistent/hutch-x:/mnt/x", NULL}},
       HUTCH_ERROR_PROFILE,
       NULL},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) e = NULL;
    g_assert_false(hutch_instance_edit(f->ctx, "ed", &bad[i].edit, &e));
    g_assert_error(e, HUTCH_ERROR, bad[i].code);
    if (bad[i].message)
      g_assert_cmpstr(e->message, ==, bad[i].message);
    else
      g_assert_nonnull(strstr(e->message, "/nonexistent/hutch-x"));
    g_autofree char *profile_after = read_in(f->dir, HUTCH_INSTANCE_PROFILE);
    g_assert_cmpstr(profile_after, ==, profile_before);
    g_autofree char *xml_after = domain_xml_of(f->ctx, "ed");
    g_assert_cmpstr(xml_after, ==, xml);
    g_assert_cmpuint(disk_size(f->dir), ==, 2ULL << 30);
  }

  /* a host port taken now is refused with the create message (the VM exists: hutch edit) */
  guint port = 0;
  int fd = hold_port(&port);
  g_autofree char *spec = g_strdup_printf("%u:80", port);
  const char *const taken[] = {spec, NULL};
  HutchEdit take = {.no_ports = TRUE, .add_ports = taken};
  g_assert_false(hutch_instance_edit(f->ctx, "ed", &take, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE);
  g_assert_nonnull(strstr(error->message, "hutch edit ed --no-ports"));
  g_clear_error(&error);
  close(fd);
  /* ... and once free, the ports are replaced */
  g_assert_true(hutch_instance_edit(f->ctx, "ed", &take, &error));
  g_assert_no_error(error);
  g_autoptr(JsonObject) info2 = hutch_instance_info(f->ctx, "ed", &error);
  JsonArray *ports = json_object_get_array_member(info2, "ports");
  g_assert_cmpuint(json_array_get_length(ports), ==, 1);
  g_assert_cmpint(json_object_get_int_member(json_array_get_object_element(ports, 0), "host_start"),
                  ==, port);

  /* a running VM is refused */
  virConnectPtr conn = hutch_context_connect(f->ctx, NULL);
  g_autoptr(virDomain) dom = virDomainLookupByName(conn, "ed");
  g_assert_cmpint(virDomainCreate(dom), ==, 0);
  HutchEdit cpus = {.cpus = "2"};
  g_assert_false(hutch_instance_edit(f->ctx, "ed", &cpus, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE);
  g_assert_cmpstr(error->message, ==, "ed is running: hutch stop ed first");
}

/* Shares: the domain gets the virtiofs device (and shareable memory), and loses it again. */
static void test_edit_shares(EditFixture *f, gconstpointer data) {
  g_autoptr(GError) error = NULL;
  g_autofree char *src = g_build_filename(f->dir, "src", NULL);
  g_assert_true(hutch_mkdir(src, 0700, &error));
  g_autofree char *spec = g_strdup_printf("%s:~/src", src);
  const char *const add[] = {spec, NULL};
  HutchEdit edit = {.add_shares = add};
  g_assert_true(hutch_instance_edit(f->ctx, "ed", &edit, &error));
  g_assert_no_error(error);
  g_autofree char *xml = domain_xml_of(f->ctx, "ed");
  g_assert_nonnull(strstr(xml, "<driver type='virtiofs' queue='1024'/>"));
  g_assert_nonnull(strstr(xml, "<target dir='hutchfs0'/>"));
  g_assert_nonnull(strstr(xml, "<access mode='shared'/>"));
  g_autoptr(JsonObject) info = hutch_instance_info(f->ctx, "ed", &error);
  JsonArray *shares = json_object_get_array_member(info, "shares");
  g_assert_cmpuint(json_array_get_length(shares), ==, 1);
  g_assert_cmpstr(json_object_get_string_member(json_array_get_object_element(shares, 0), "guest"),
                  ==, "/home/u/src");

  const char *const remove[] = {"/home/u/src", NULL};
  HutchEdit undo = {.remove_shares = remove};
  g_assert_true(hutch_instance_edit(f->ctx, "ed", &undo, &error));
  g_assert_no_error(error);
  g_autofree char *xml2 = domain_xml_of(f->ctx, "ed");
  g_assert_null(strstr(xml2, "<filesystem"));
  g_assert_null(strstr(xml2, "memoryBacking"));
}

/* ---- the hutch command ---------------------------------------------------------------- */

static int run_hutch(const char *const *args, char **ret_stderr) {
  g_autofree char *hutch = g_build_filename(g_getenv("HUTCH_BUILD_DIR"), "cmd", "hutch", NULL);
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, hutch);
  for (guint i = 0; args[i]; i++)
    g_ptr_array_add(argv, (gpointer)args[i]);
  g_ptr_array_add(argv, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) err = NULL;
  g_autoptr(GSubprocess) proc =
      g_subprocess_newv((const char *const *)argv->pdata,
                        G_SUBPROCESS_FLAGS_STDOUT_SILENCE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
  g_assert_no_error(error);
  g_assert_true(g_subprocess_communicate(proc, NULL, NULL, NULL, &err, &error));
  g_assert_no_error(error);
  gsize len = 0;
  const char *data = g_bytes_get_data(err, &len);
  *ret_stderr = g_strndup(len ? data : "", len);
  return g_subprocess_get_exit_status(proc);
}

/* `--no-ports` drops the profile's ports: a create that failed on a taken port goes on (to the
 * image, which this profile lacks), also with other ports given by --port. */
static void test_cli_no_ports(void) {
  guint port = 0;
  int fd = hold_port(&port);
  g_autofree char *dir = g_dir_make_tmp("hutch-instance-XXXXXX", NULL);
  g_autofree char *file = g_build_filename(dir, "ports.yaml", NULL);
  g_autofree char *yaml = g_strdup_printf(
      "image: { file: %s/missing.qcow2 }\nports:\n  - { host: %u, guest: 80 }\n", dir, port);
  g_assert_true(g_file_set_contents(file, yaml, -1, NULL));

  const char *const taken[] = {"-q", "-c", "test:///default", "create", "two", "-f", file, NULL};
  g_autofree char *err = NULL;
  g_assert_cmpint(run_hutch(taken, &err), ==, 1);
  g_autofree char *want = g_strdup_printf(
      "hutch: creating 'two': host port 127.0.0.1:%u is in use (or cannot be bound): give this "
      "VM other ports with --no-ports --port 3000:3000, or free it\n",
      port);
  g_assert_cmpstr(err, ==, want);

  close(fd);
  int other = hold_port(&port); /* a port that is free again once closed */
  close(other);
  g_autofree char *spec = g_strdup_printf("%u:80", port);
  fd = hold_port(&port);
  const char *const no_ports[] = {"-q", "-c",         "test:///default", "create", "two", "-f",
                                  file, "--no-ports", "--port",          spec,     NULL};
  g_autofree char *err2 = NULL;
  g_assert_cmpint(run_hutch(no_ports, &err2), ==, 1);
  g_assert_null(strstr(err2, "in use"));
  g_assert_nonnull(strstr(err2, "missing.qcow2"));
  close(fd);

  g_assert_true(hutch_rmtree(dir, NULL));
}

/* Root starts no VM (QEMU as root, virtiofsd without a user namespace); the test driver,
 * which starts nothing, is the exception. */
static void test_start_allowed(void) {
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_context_start_allowed("qemu:///session", 1000, &error));
  g_assert_no_error(error);
  g_assert_true(hutch_context_start_allowed("test:///default", 0, &error));
  g_assert_no_error(error);
  const char *const refused[] = {"qemu:///session", "qemu+unix:///session", "not a uri",
                                 "test://elsewhere.example/default", NULL};
  for (const char *const *u = refused; *u; u++) {
    g_assert_false(hutch_context_start_allowed(*u, 0, &error));
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
    g_assert_nonnull(strstr(error->message, "refusing to run VMs as root"));
    g_assert_nonnull(strstr(error->message, "run hutch as your own user"));
    g_clear_error(&error);
  }
}

/* hutch runs VMs on a local session daemon (or the test driver); another URI is refused
 * when libvirt is first needed, with a usage error that says why, before connecting. */
static void test_uri_supported(void) {
  g_autofree char *own_socket = g_strdup_printf(
      "qemu+unix:///session?socket=%s/libvirt/virtqemud-sock", g_get_user_runtime_dir());
  const char *const good[] = {
      "qemu:///session", "qemu+unix:///session", "QEMU:///session",     own_socket,
      "test:///default", "qemu:///system",       "qemu+unix:///system", NULL};
  for (const char *const *u = good; *u; u++) {
    g_autoptr(GError) error = NULL;
    g_assert_true(hutch_context_uri_supported(*u, &error));
    g_assert_no_error(error);
  }
  const struct {
    const char *uri, *says;
  } bad[] = {
      /* the system daemon through another socket, or asked for another URI */
      {"qemu:///system?socket=/run/libvirt/libvirt-sock", "through its own socket only"},
      {"qemu+unix:///system?name=qemu:///session", "through its own socket only"},
      {"qemu+ssh://other@localhost/session", "where a remote libvirt cannot use them"},
      {"qemu+tcp://example.test/system", "where a remote libvirt cannot use them"},
      {"xen:///system", "session daemon or the local system daemon only"},
      /* the system daemon, or any other, through socket= or name= */
      {"qemu+unix:///session?socket=/run/libvirt/virtqemud-sock", "own libvirt session daemon"},
      {"qemu:///session?name=qemu:///system", "own libvirt session daemon"},
      {"not a uri", "session daemon or the local system daemon only"},
  };
  for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) error = NULL;
    g_assert_false(hutch_context_uri_supported(bad[i].uri, &error));
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_assert_nonnull(strstr(error->message, bad[i].says));
    g_assert_nonnull(strstr(error->message, "use -c qemu:///session"));
  }
  g_autofree char *escaping =
      g_strdup_printf("qemu:///session?socket=%s/libvirt/../../../run/libvirt/virtqemud-sock",
                      g_get_user_runtime_dir());
  g_autoptr(GError) escaped = NULL;
  g_assert_false(hutch_context_uri_supported(escaping, &escaped));
  g_assert_error(escaped, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  /* the context is made (profile and image work needs no libvirt); connecting is refused */
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("qemu+ssh://nobody@host.invalid/system", &error);
  g_assert_no_error(error);
  g_assert_null(hutch_context_connect(ctx, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  /* from the environment: the message says where it came from */
  g_clear_error(&error);
  g_autofree char *saved = g_strdup(g_getenv("LIBVIRT_DEFAULT_URI"));
  g_setenv("LIBVIRT_DEFAULT_URI", "qemu+tcp://example.test/system", TRUE);
  g_autoptr(HutchContext) from_env = hutch_context_new(NULL, &error);
  if (saved)
    g_setenv("LIBVIRT_DEFAULT_URI", saved, TRUE);
  else
    g_unsetenv("LIBVIRT_DEFAULT_URI");
  g_assert_null(hutch_context_connect(from_env, &error));
  g_assert_nonnull(
      strstr(error->message, "$LIBVIRT_DEFAULT_URI: qemu+tcp://example.test/system is not"));
}

/* hutch_supervise_boot in a child (it names its process and takes the VM's lock) on a boot
 * socket; returns the child's exit status and the socket's lines. */
static int supervise_boot_child(const char *name, char **ret_lines) {
  int pair[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), ==, 0);
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid == 0) {
    close(pair[0]);
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
    int status = ctx ? hutch_supervise_boot(ctx, name, pair[1], 2222, -1, &error) : 9;
    /* failing, it says why (the CLI prints it: a NULL error crashed it once) */
    _exit(status == 1 && !error ? 8 : status);
  }
  close(pair[1]);
  g_autoptr(GString) lines = g_string_new(NULL);
  char buf[1024];
  ssize_t n;
  while ((n = read(pair[0], buf, sizeof buf)) > 0)
    g_string_append_len(lines, buf, n);
  close(pair[0]);
  int wstatus = 0;
  g_assert_cmpint(waitpid(pid, &wstatus, 0), ==, pid);
  g_assert_true(WIFEXITED(wstatus));
  *ret_lines = g_string_free(g_steal_pointer(&lines), FALSE);
  return WEXITSTATUS(wstatus);
}

/* The supervisor `hutch start` starts before the helpers: a start it refuses (the domain runs
 * already, the profile is broken) is told on the boot socket with the error's code, the
 * supervisor ends with that error (and no crash), and leaves no pidfile and no lock held. */
static void test_supervise_boot_refused(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_no_error(error);
  g_autofree char *runtime_dir = hutch_instance_runtime_dir("bootvm");
  g_assert_true(hutch_mkdir(runtime_dir, 0700, &error));
  g_autofree char *dir = define_instance(ctx, "bootvm", "cpus: 1\nmemory: 1GiB\n", "dev");
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  g_autoptr(virDomain) dom = virDomainLookupByName(conn, "bootvm");
  g_assert_cmpint(virDomainCreate(dom), ==, 0);

  g_autofree char *lines = NULL;
  g_assert_cmpint(supervise_boot_child("bootvm", &lines), ==, 1);
  g_assert_nonnull(strstr(lines, "\"ok\":false"));
  g_assert_nonnull(strstr(lines, "is running already"));
  g_autofree char *code = g_strdup_printf("\"code\":%d", HUTCH_ERROR_STATE);
  g_assert_nonnull(strstr(lines, code));

  /* stopped, with a profile that does not parse: the profile's error */
  g_assert_cmpint(virDomainDestroy(dom), ==, 0);
  g_autofree char *profile = g_build_filename(dir, HUTCH_INSTANCE_PROFILE, NULL);
  g_assert_true(g_file_set_contents(profile, "cpus: [\n", -1, NULL));
  g_clear_pointer(&lines, g_free);
  g_assert_cmpint(supervise_boot_child("bootvm", &lines), ==, 1);
  g_assert_nonnull(strstr(lines, "\"ok\":false"));
  g_assert_null(strstr(lines, code));

  g_autofree char *pid_path = g_build_filename(runtime_dir, "supervisor.pid", NULL);
  g_assert_false(g_file_test(pid_path, G_FILE_TEST_EXISTS));
  g_autofree char *lock_path = g_build_filename(runtime_dir, "supervisor.lock", NULL);
  int lock_fd = open(lock_path, O_RDWR | O_CLOEXEC);
  g_assert_cmpint(lock_fd, >=, 0);
  g_assert_cmpint(flock(lock_fd, LOCK_EX | LOCK_NB), ==, 0);
  close(lock_fd);
  undefine_instance(ctx, "bootvm");
  g_assert_true(hutch_rmtree(runtime_dir, NULL));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  /* Before anything asks GLib for it (it is cached). */
  data_home = g_dir_make_tmp("hutch-instance-data-XXXXXX", NULL);
  g_setenv("XDG_DATA_HOME", data_home, TRUE);
  /* a Rust virtiofsd by its --help, for the share plan of /instance/edit/shares */
  g_autofree char *fake = g_build_filename(data_home, "virtiofsd", NULL);
  g_assert_true(g_file_set_contents(fake, "#!/bin/sh\necho '--shared-dir --readonly'\n", -1, NULL));
  g_assert_cmpint(g_chmod(fake, 0755), ==, 0);
  g_setenv("HUTCH_VIRTIOFSD", fake, TRUE);
  g_test_add_func("/instance/info/shares-ports-forwards", test_info_shares_ports_forwards);
  g_test_add_func("/instance/uri-supported", test_uri_supported);
  g_test_add_func("/instance/start-allowed", test_start_allowed);
  g_test_add_func("/instance/supervise-boot/refused", test_supervise_boot_refused);
  g_test_add_func("/instance/ports-busy/message", test_ports_busy_message);
  g_test_add_func("/instance/ports-busy/holder", test_ports_busy_holder);
  g_test_add_func("/instance/cli/no-ports", test_cli_no_ports);
  g_test_add_func("/instance/edit/apply", test_edit_apply);
  g_test_add("/instance/edit/instance", EditFixture, NULL, edit_set_up, test_edit_instance,
             edit_tear_down);
  g_test_add("/instance/edit/shares", EditFixture, NULL, edit_set_up, test_edit_shares,
             edit_tear_down);
  int rc = g_test_run();
  hutch_rmtree(data_home, NULL);
  g_free(data_home);
  return rc;
}
