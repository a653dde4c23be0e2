/* Unit tests for net.c: the passt command line and host port checks. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net-private.h"

static HutchPort *port(const char *ip, guint16 hs, guint16 he, guint16 gs, guint16 ge,
                       HutchProto proto) {
  HutchPort *p = g_new0(HutchPort, 1);
  p->host_ip = g_strdup(ip);
  p->host_start = hs;
  p->host_end = he;
  p->guest_start = gs;
  p->guest_end = ge;
  p->proto = proto;
  return p;
}

static void test_passt_argv_defaults(void) {
  g_auto(GStrv) argv = hutch_net_passt_argv("passt", "/run/h/dev", 2222, NULL);
  g_autofree char *line = g_strjoinv(" ", argv);
  g_assert_cmpstr(line, ==,
                  "passt --one-off --no-map-gw --quiet --socket /run/h/dev/passt.socket "
                  "--pid /run/h/dev/passt.pid --log-file /run/h/dev/passt.log "
                  "-t 127.0.0.1/2222:22 -u none");
}

static void test_passt_argv_ports(void) {
  g_autoptr(GPtrArray) ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  g_ptr_array_add(ports, port("127.0.0.1", 8000, 9000, 8000, 9000, HUTCH_PROTO_TCP));
  g_ptr_array_add(ports, port("127.0.0.1", 5353, 5353, 53, 53, HUTCH_PROTO_UDP));
  g_auto(GStrv) argv = hutch_net_passt_argv("/usr/bin/passt", "/r", 40000, ports);
  g_autofree char *line = g_strjoinv(" ", argv);
  g_assert_nonnull(strstr(line, " -t 127.0.0.1/40000:22 -t 127.0.0.1/8000-9000:8000-9000 "
                                "-u 127.0.0.1/5353:53"));
  /* with a UDP forward there is no "-u none" */
  g_assert_null(strstr(line, "-u none"));
  /* the gateway must never map to the host's loopback */
  g_assert_true(g_strv_contains((const char *const *)argv, "--no-map-gw"));
}

static void test_free_port_and_in_use(void) {
  g_autoptr(GError) error = NULL;
  guint free_port = hutch_net_free_port(&error);
  g_assert_no_error(error);
  g_assert_cmpuint(free_port, >, 0);

  /* hold a port, then ask for it */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
  g_assert_cmpint(listen(fd, 1), ==, 0);
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&addr, &len), ==, 0);
  guint16 taken = ntohs(addr.sin_port);

  g_autoptr(GPtrArray) ports = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_port_free);
  g_ptr_array_add(ports, port("127.0.0.1", taken, taken, 80, 80, HUTCH_PROTO_TCP));
  guint busy = 0;
  g_assert_true(hutch_net_find_busy_port(ports, &busy) == g_ptr_array_index(ports, 0));
  g_assert_cmpuint(busy, ==, taken);
  /* a range that holds it: the first port that cannot be bound is named */
  if (taken > 1) {
    g_ptr_array_add(ports, port("127.0.0.1", taken - 1, taken, 80, 81, HUTCH_PROTO_TCP));
    g_ptr_array_remove_index(ports, 0);
    busy = 0;
    g_assert_true(hutch_net_find_busy_port(ports, &busy) == g_ptr_array_index(ports, 0));
    g_assert_true(busy == taken || busy == taken - 1u);
  }
  close(fd);
  g_assert_null(hutch_net_find_busy_port(ports, &busy));
  g_assert_null(hutch_net_find_busy_port(NULL, &busy));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/net/passt-argv/defaults", test_passt_argv_defaults);
  g_test_add_func("/net/passt-argv/ports", test_passt_argv_ports);
  g_test_add_func("/net/ports/free-and-in-use", test_free_port_and_in_use);
  return g_test_run();
}
