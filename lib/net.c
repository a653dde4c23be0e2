/* net.c: the per-VM passt process. See net-private.h for why hutch runs it itself. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net-private.h"
#include "pidfile-private.h"
#include "util-private.h"

static char *port_range(guint16 start, guint16 end) {
  return start == end ? g_strdup_printf("%u", start) : g_strdup_printf("%u-%u", start, end);
}

GStrv hutch_net_passt_argv(const char *passt, const char *runtime_dir, guint ssh_port,
                           GPtrArray *ports, gboolean sandboxed, gboolean vhost_user) {
  g_autoptr(GStrvBuilder) argv = g_strv_builder_new();
  g_autofree char *socket = g_build_filename(runtime_dir, HUTCH_PASST_SOCKET, NULL);
  g_autofree char *pidfile = g_build_filename(runtime_dir, HUTCH_PASST_PID, NULL);
  g_autofree char *logfile = g_build_filename(runtime_dir, HUTCH_PASST_LOG, NULL);
  g_autofree char *ssh = g_strdup_printf("127.0.0.1/%u:22", ssh_port);
  const char *fixed[] = {
      passt,
      /* exit when QEMU disconnects: no orphan when the VM stops */
      "--one-off",
      /* do not map the gateway address to the host's loopback: the guest must not reach
       * services bound to the host's 127.0.0.1 */
      "--no-map-gw",
      "--quiet",
      "--socket", socket,
      "--pid", pidfile,
      "--log-file", logfile,
      /* nothing goes out of the guest on its own but what passt forwards by default; no
       * inbound port but the ones named */
      "-t", ssh,
      NULL,
  };
  g_strv_builder_addv(argv, fixed);
  /* no repair socket beside it where passt would make one (2025-02 and later): that is for
   * migrating TCP connections (passt-repair, with CAP_NET_ADMIN), which hutch never does */
  if (vhost_user)
    g_strv_builder_add(argv, "--vhost-user");
  if (vhost_user && hutch_net_passt_has_repair_path())
    g_strv_builder_addv(argv, (const char *[]){"--repair-path", "none", NULL});
  if (sandboxed) {
    /* In the egress helper's namespace, whose only interface is its loopback: passt stays in
     * the foreground as the helper's child; it is root there (mapped to the user) and must
     * stay so, having no other uid; the guest gets fixed IPv4 addresses (the namespace has
     * none to copy) and no IPv6; its DNS server is an address whose queries the helper
     * answers. */
    const char *sandbox[] = {"--foreground", "--runas", "0", "--ipv4-only", "--interface", "lo",
                             "--address", HUTCH_SANDBOX_GUEST_ADDRESS, "--netmask", "24",
                             "--gateway", HUTCH_SANDBOX_GATEWAY, "--mac-addr", "9a:55:9a:55:9a:55",
                             "--dns", HUTCH_SANDBOX_DNS, "--no-icmp", NULL};
    g_strv_builder_addv(argv, sandbox);
  }
  gboolean any_udp = FALSE;
  for (guint i = 0; ports && i < ports->len; i++) {
    HutchPort *port = g_ptr_array_index(ports, i);
    g_autofree char *host = port_range(port->host_start, port->host_end);
    g_autofree char *guest = port_range(port->guest_start, port->guest_end);
    /* sandboxed, passt listens in the namespace (on its loopback), the helper on the host */
    g_autofree char *spec =
        g_strdup_printf("%s/%s:%s", sandboxed ? "127.0.0.1" : port->host_ip, host, guest);
    g_strv_builder_add(argv, port->proto == HUTCH_PROTO_UDP ? "-u" : "-t");
    g_strv_builder_add(argv, spec);
    any_udp |= port->proto == HUTCH_PROTO_UDP;
  }
  /* passt forwards nothing inbound over UDP unless told; say so explicitly. */
  if (!any_udp)
    g_strv_builder_addv(argv, (const char *[]){"-u", "none", NULL});
  return g_strv_builder_end(argv);
}

/* Whether ip:port can be bound now; ip is an IPv4 or IPv6 address (no brackets). TCP with
 * SO_REUSEADDR, as passt binds: a connection of the VM's last run still in TIME_WAIT on the
 * port (passt closed it first) does not keep passt from listening there, and must not make
 * this check refuse for a minute; a socket that listens still refuses. UDP without it, which
 * would let two sockets share the port. */
static gboolean bind_test(const char *ip, guint port, int type) {
  struct addrinfo hints = {.ai_socktype = type, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  g_autofree char *service = g_strdup_printf("%u", port);
  if (getaddrinfo(ip, service, &hints, &ai) != 0)
    return FALSE;
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0 && type == SOCK_STREAM)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  gboolean ok = fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
  if (fd >= 0)
    close(fd);
  freeaddrinfo(ai);
  return ok;
}

const HutchPort *hutch_net_find_busy_port(GPtrArray *ports, guint *ret_port) {
  for (guint i = 0; ports && i < ports->len; i++) {
    const HutchPort *port = g_ptr_array_index(ports, i);
    int type = port->proto == HUTCH_PROTO_UDP ? SOCK_DGRAM : SOCK_STREAM;
    for (guint p = port->host_start; p <= port->host_end; p++) {
      if (!bind_test(port->host_ip, p, type)) {
        *ret_port = p;
        return port;
      }
    }
  }
  return NULL;
}

guint hutch_net_free_port(GError **error) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
    int saved = errno;
    if (fd >= 0)
      close(fd);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_PORT_IN_USE,
                "finding a free port on 127.0.0.1: %s", g_strerror(saved));
    return 0;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

const char *hutch_net_find_passt(void) {
  const char *configured = g_getenv("HUTCH_PASST");
  return configured && *configured ? configured : "passt";
}

gboolean hutch_net_help_has_option(const char *help, const char *option) {
  gsize len = strlen(option);
  for (const char *at = help; at && (at = strstr(at, option)); at++) {
    char before = at == help ? ' ' : at[-1];
    char after = at[len];
    if ((g_ascii_isspace(before) || before == ',') &&
        (after == '\0' || g_ascii_isspace(after) || after == ','))
      return TRUE;
  }
  return FALSE;
}

/* What the passt found offers, from its --help; asked once per process. */
static gboolean passt_offers(const char *option) {
  static gsize asked = 0;
  static char *help = NULL;
  if (g_once_init_enter(&asked)) {
    const char *argv[] = {hutch_net_find_passt(), "--help", NULL};
    g_autofree char *out = NULL, *err = NULL;
    /* only the text matters, whatever passt's exit status */
    if (g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL,
                     NULL, NULL, &out, &err, NULL, NULL))
      help = g_strconcat(out ? out : "", "\n", err ? err : "", NULL);
    g_once_init_leave(&asked, 1);
  }
  return hutch_net_help_has_option(help, option);
}

gboolean hutch_net_passt_has_repair_path(void) {
  return passt_offers("--repair-path");
}

static gboolean passt_offers_vhost_user(void) {
  return passt_offers("--vhost-user");
}

gboolean hutch_net_vhost_user(gboolean *ret_vhost_user, GError **error) {
  const char *forced = g_getenv("HUTCH_PASST_VHOST_USER");
  if (!forced || !*forced) {
    *ret_vhost_user = passt_offers_vhost_user();
    return TRUE;
  }
  if (strcmp(forced, "0") == 0) {
    *ret_vhost_user = FALSE;
    return TRUE;
  }
  if (strcmp(forced, "1") != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "HUTCH_PASST_VHOST_USER is '%s': it takes 0 (a stream socket) or 1 (vhost-user)",
                forced);
    return FALSE;
  }
  if (!passt_offers_vhost_user()) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                "HUTCH_PASST_VHOST_USER=1, but %s has no vhost-user mode (passt 2024-11 and "
                "later have it): unset it, or install a newer passt",
                hutch_net_find_passt());
    return FALSE;
  }
  *ret_vhost_user = TRUE;
  return TRUE;
}

/* Stops this VM's passt, if the pidfile still names it: the passt binary hutch runs (which
 * re-executes itself as PASST.avx2 where the CPU has AVX2), with this pidfile as its --pid. A
 * pidfile left behind can name a pid reused since, or another VM's passt. */
void hutch_net_stop_passt(const char *pidfile) {
  g_autofree char *found = g_find_program_in_path(hutch_net_find_passt());
  g_autofree char *exe = found ? realpath(found, NULL) : NULL;
  g_autofree char *avx2 = exe ? g_strconcat(exe, ".avx2", NULL) : NULL;
  const char *exes[] = {exe, avx2, NULL};
  HutchHelperId id = {.exes = exes, .arg = pidfile};
  hutch_pidfile_kill(pidfile, &id);
}

static void unblock_child_signals(gpointer data) {
  (void)data;
  hutch_unblock_signals();
}

gboolean hutch_net_start(const char *runtime_dir, guint ssh_port, GPtrArray *ports,
                         gboolean vhost_user, GError **error) {
  g_autofree char *socket = g_build_filename(runtime_dir, HUTCH_PASST_SOCKET, NULL);
  g_autofree char *pidfile = g_build_filename(runtime_dir, HUTCH_PASST_PID, NULL);
  g_autofree char *logfile = g_build_filename(runtime_dir, HUTCH_PASST_LOG, NULL);
  /* A passt left over from a VM that died with it still waiting would hold the socket. */
  hutch_net_stop_passt(pidfile);
  g_unlink(socket);
  g_unlink(logfile);

  g_auto(GStrv) argv =
      hutch_net_passt_argv(hutch_net_find_passt(), runtime_dir, ssh_port, ports, FALSE, vhost_user);
  g_autofree char *out = NULL, *err = NULL;
  int status = 0;
  /* passt forks into the background and the parent exits once the socket listens. */
  if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, unblock_child_signals, NULL, &out,
                    &err, &status, error)) {
    g_prefix_error(error, "starting passt (apt-get install passt): ");
    return FALSE;
  }
  if (!g_spawn_check_wait_status(status, NULL)) {
    g_autofree char *log = NULL;
    g_file_get_contents(logfile, &log, NULL, NULL);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "passt failed: %s%s",
                err ? g_strstrip(err) : "", log ? g_strstrip(log) : "");
    return FALSE;
  }
  for (int i = 0; i < 100 && !g_file_test(socket, G_FILE_TEST_EXISTS); i++)
    g_usleep(20 * 1000);
  if (!g_file_test(socket, G_FILE_TEST_EXISTS)) {
    hutch_net_stop_passt(pidfile);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "passt did not create %s", socket);
    return FALSE;
  }
  return TRUE;
}

void hutch_net_stop(const char *runtime_dir) {
  g_autofree char *socket = g_build_filename(runtime_dir, HUTCH_PASST_SOCKET, NULL);
  g_autofree char *pidfile = g_build_filename(runtime_dir, HUTCH_PASST_PID, NULL);
  hutch_net_stop_passt(pidfile);
  g_unlink(socket);
}
