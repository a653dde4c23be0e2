/* egress-helper.c: the per-VM egress helper, which enforces the network policy (egress.c).
 *
 * passt runs in a user and network namespace of its own whose only interface is its
 * loopback: the default route leads there, so nothing the guest sends can reach another
 * machine, or the host, by itself. In that namespace nftables redirects every TCP connection
 * passt opens for the guest to the helper's proxy socket and drops everything else but DNS,
 * which the helper answers itself. The helper runs on the host's network: it decides each
 * connection (egress.c), resolves names with the host's resolver, and only then connects.
 *
 * The guest's names never reach a resolver: hutch answers every A query with an address of
 * its own (198.18.0.0/16) that stands for the name, and a connection to that address is a
 * connection to the name. So name rules never trust the guest's DNS answers, names of an
 * allowlist VM that are not listed are never looked up anywhere (no DNS tunnel), and a name
 * is refused after resolving when it resolves to the host or a private address.
 *
 * The host's side of SSH and the profile's ports: passt listens for them inside the
 * namespace; the helper listens on the host and relays each connection in, through a socket
 * the namespace's first process (the "keeper", the helper's child and passt's parent) makes
 * there for it. The keeper is a fork without exec (it runs a short, plain loop; no GLib); it
 * and passt die with the helper (PR_SET_PDEATHSIG).
 *
 * Processes: hutch start -> helper (hutch egress-helper, detached, pidfile egress.pid) ->
 * keeper (in the namespaces) -> passt (--foreground, --one-off): when QEMU goes, passt exits,
 * then the keeper, then the helper. */
#define _GNU_SOURCE
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <ifaddrs.h>
#include <json-glib/json-glib.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker-private.h"
#include "context-private.h"
#include "egress-helper-private.h"
#include "egress-private.h"
#include "net-private.h"
#include "pidfile-private.h"
#include "util-private.h"

/* the proxy's port inside the namespace (on its loopback): every guest TCP connection ends
 * there, redirected by nftables */
#define PROXY_PORT 3129
/* the namespace's own address on its loopback, the source of passt's connections */
#define NAMESPACE_SOURCE "192.0.2.1"
/* hutch's name addresses: 198.18.0.0/16 (benchmarking, never a real destination) */
#define NAME_NET 0xc6120000u
#define NAME_POOL 65534u
/* the guest's connections in flight or relayed at once: more are reset (each holds two
 * descriptors; the helper raises its limit to the hard one at start) */
#define MAX_GUEST_CONNECTIONS 2048
/* a relay's buffer, per direction */
#define RELAY_BUFFER (32 * 1024)
#define MAX_LOG_BYTES (1024 * 1024)

static const HutchHelperId helper_id = {.comm = "hutch-egress", .recorded = TRUE};

/* ---- The namespace (the keeper's side: plain libc, between fork and exec) -------------- */

static int send_fd(int sock, int fd) {
  char byte = 'f';
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control = {0};
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = control.buf,
                       .msg_controllen = sizeof control.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  return sendmsg(sock, &msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

static int recv_fd(int sock) {
  char byte;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = control.buf,
                       .msg_controllen = sizeof control.buf};
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1)
    return -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
    return -1;
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

static int write_text(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* Runs argv (by PATH) in the namespace as its root and waits; 0 when it exited 0 */
static int run_in_namespace(char *const argv[], const char *input) {
  int in[2];
  if (pipe2(in, O_CLOEXEC) < 0)
    return -1;
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    dup2(in[0], 0);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  if (input && write(in[1], input, strlen(input)) < 0) {
    /* the child's failure shows in its status */
  }
  close(in[1]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void keeper_fail(const char *what) {
  fprintf(stderr, "egress namespace: %s: %s\n", what, strerror(errno));
  _exit(1);
}

/* nftables in the namespace: every TCP connection to anything but the namespace's loopback
 * goes to the proxy, every UDP datagram to port 53 to the helper's DNS socket (conntrack
 * gives the answers the address asked as their source); the rest is dropped (ICMP, other UDP,
 * IPv6). TCP is accepted whatever its addresses: all of it is between passt and the helper's
 * sockets, or passt's own listeners. */
static const char nft_rules[] =
    "table inet hutch {\n"
    "  chain nat_out {\n"
    "    type nat hook output priority -100; policy accept;\n"
    "    meta nfproto ipv4 ip daddr != 127.0.0.0/8 meta l4proto tcp redirect to :3129\n"
    "    meta nfproto ipv4 ip daddr != 127.0.0.0/8 udp dport 53 redirect to :53\n"
    "  }\n"
    "  chain filter_out {\n"
    "    type filter hook output priority 0; policy drop;\n"
    "    meta l4proto tcp accept\n"
    "    meta nfproto ipv4 udp dport 53 accept\n"
    "    meta nfproto ipv4 udp sport 53 accept\n"
    "  }\n"
    "}\n";

/* The keeper: makes the namespaces, hands the helper its sockets there, starts passt, then
 * makes a TCP socket in the namespace for each byte the helper sends, until passt exits. */
static void G_GNUC_NORETURN keeper_main(int ctl, pid_t helper, uid_t uid, gid_t gid,
                                        char **passt_argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != helper)
    _exit(1);
  /* stdout is hutch start's "ready" pipe: neither the keeper nor passt may hold it open */
  int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, 1);
    close(null_fd);
  }
  signal(SIGHUP, SIG_DFL);
  if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0)
    keeper_fail("unshare (user namespaces must be allowed to unprivileged users)");
  char map[64];
  snprintf(map, sizeof map, "0 %u 1\n", (unsigned)uid);
  if (write_text("/proc/self/setgroups", "deny") < 0 || write_text("/proc/self/uid_map", map) < 0)
    keeper_fail("uid_map");
  snprintf(map, sizeof map, "0 %u 1\n", (unsigned)gid);
  if (write_text("/proc/self/gid_map", map) < 0)
    keeper_fail("gid_map");
  /* The default route goes out through the loopback from an address of its own: every
   * destination is off this namespace (passt's check "nobody listens on that local port"
   * must not apply, as it would with a local catch-all route), and nftables turns each
   * connection to the helper before it is sent. */
  char *lo_up[] = {"ip", "link", "set", "lo", "up", NULL};
  char *lo_addr[] = {"ip", "address", "add", NAMESPACE_SOURCE "/32", "dev", "lo", NULL};
  char *route[] = {"ip", "route", "add", "default", "dev", "lo", "src", NAMESPACE_SOURCE, NULL};
  char *nft[] = {"nft", "-f", "-", NULL};
  if (run_in_namespace(lo_up, NULL) < 0 || run_in_namespace(lo_addr, NULL) < 0 ||
      run_in_namespace(route, NULL) < 0)
    keeper_fail("ip (iproute2) could not set up the namespace's loopback");
  if (run_in_namespace(nft, nft_rules) < 0)
    keeper_fail("nft (nftables) could not load the namespace's rules");

  int one = 1;
  int proxy = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in proxy_addr = {.sin_family = AF_INET,
                                   .sin_port = htons(PROXY_PORT),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (proxy < 0 || setsockopt(proxy, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(proxy, (struct sockaddr *)&proxy_addr, sizeof proxy_addr) < 0 ||
      listen(proxy, 128) < 0)
    keeper_fail("the proxy's socket");
  int dns = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in dns_addr = {.sin_family = AF_INET,
                                 .sin_port = htons(53),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (dns < 0 || bind(dns, (struct sockaddr *)&dns_addr, sizeof dns_addr) < 0)
    keeper_fail("the DNS socket");
  if (send_fd(ctl, proxy) < 0 || send_fd(ctl, dns) < 0)
    keeper_fail("handing over the sockets");
  close(proxy);
  close(dns);

  pid_t passt = fork();
  if (passt < 0)
    keeper_fail("fork");
  if (passt == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(ctl);
    execvp(passt_argv[0], passt_argv);
    fprintf(stderr, "egress namespace: passt: %s\n", strerror(errno));
    _exit(127);
  }
  for (;;) {
    int status;
    pid_t done = waitpid(passt, &status, WNOHANG);
    if (done == passt) {
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "egress namespace: passt ended (status %d)\n", status);
      _exit(0);
    }
    struct pollfd p = {.fd = ctl, .events = POLLIN};
    int n = poll(&p, 1, 500);
    if (n < 0 && errno != EINTR)
      break;
    if (n <= 0)
      continue;
    char request;
    ssize_t got = recv(ctl, &request, 1, 0);
    if (got <= 0)
      break; /* the helper is gone */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || send_fd(ctl, fd) < 0)
      break;
    close(fd);
  }
  kill(passt, SIGTERM);
  _exit(0);
}

/* ---- The helper ----------------------------------------------------------------------- */

typedef struct {
  char *instance_dir;
  char *runtime_dir;
  HutchEgressPolicy *policy;
  GMainLoop *loop;
  int ctl;                 /* the keeper's socket */
  int dns_fd;
  GSocketService *proxy;   /* guest connections, in the namespace */
  GSocketService *inbound; /* the host's forwarded ports and SSH */
  GSocketClient *client;
  /* names <-> name addresses */
  GHashTable *name_to_index; /* char* -> index+1 */
  char **index_to_name;      /* NAME_POOL entries */
  guint next_index;
  /* test-only (HUTCH_EGRESS_TEST_HOSTS, HUTCH_EGRESS_TEST_OUTSIDE) */
  GHashTable *test_hosts; /* name -> GInetAddress* */
  GPtrArray *outside;     /* GInetAddress* */
  GPtrArray *host_addresses; /* the last list read; NULL until one could be read */
  gint64 host_addresses_time;
  guint64 allowed, denied;
  guint guest_connections; /* flows and the guest's relays */
  GList *relays;           /* Relay*: the live ones, re-checked when the policy changes */
  HutchBroker *broker;     /* the VM's secrets, or NULL */
  /* the broker's threads check addresses too: the policy and the host address cache are
   * changed under this lock, and read under it outside the main thread */
  GRecMutex check_lock;
} Helper;

static void helper_clear(Helper *h) {
  g_free(h->instance_dir);
  g_free(h->runtime_dir);
  g_clear_pointer(&h->policy, hutch_egress_policy_free);
  g_clear_pointer(&h->loop, g_main_loop_unref);
  g_clear_object(&h->proxy);
  g_clear_object(&h->inbound);
  g_clear_object(&h->client);
  /* the table's keys are index_to_name's strings */
  g_clear_pointer(&h->name_to_index, g_hash_table_unref);
  if (h->index_to_name)
    for (guint i = 0; i < NAME_POOL; i++)
      g_free(h->index_to_name[i]);
  g_free(h->index_to_name);
  g_clear_pointer(&h->test_hosts, g_hash_table_unref);
  g_clear_pointer(&h->outside, g_ptr_array_unref);
  g_clear_pointer(&h->host_addresses, g_ptr_array_unref);
  g_clear_pointer(&h->broker, hutch_broker_free);
  g_rec_mutex_clear(&h->check_lock);
  if (h->ctl >= 0)
    close(h->ctl);
}

/* The host's own addresses, read again when older than 2 s. When they cannot be read (the
 * helper out of descriptors, say) the last list read stands; NULL when none ever could be
 * read, and then no address is allowed (the check would pass the host's own). */
static GPtrArray *host_addresses(Helper *h) {
  gint64 now = g_get_monotonic_time();
  if (h->host_addresses && now - h->host_addresses_time < 2 * G_USEC_PER_SEC)
    return h->host_addresses;
  struct ifaddrs *list = NULL;
  if (getifaddrs(&list) < 0)
    return h->host_addresses;
  GPtrArray *addresses = g_ptr_array_new_with_free_func(g_object_unref);
  for (struct ifaddrs *i = list; i; i = i->ifa_next)
    if (i->ifa_addr && (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6)) {
      GSocketAddress *sa = g_socket_address_new_from_native(
          i->ifa_addr, i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                         : sizeof(struct sockaddr_in6));
      if (sa)
        g_ptr_array_add(addresses,
                        g_object_ref(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(sa))));
      g_clear_object(&sa);
    }
  freeifaddrs(list);
  g_clear_pointer(&h->host_addresses, g_ptr_array_unref);
  h->host_addresses = addresses;
  h->host_addresses_time = now;
  return h->host_addresses;
}

/* hutch_egress_check_address with the host's addresses, refusing when they are unknown */
static gboolean check_address(Helper *h, const char *name, const struct sockaddr *addr,
                              guint port, char **ret_reason) {
  g_rec_mutex_lock(&h->check_lock);
  GPtrArray *host = host_addresses(h);
  gboolean ok = FALSE;
  if (!host)
    *ret_reason = g_strdup("the host's own addresses could not be read");
  else
    ok = hutch_egress_check_address(h->policy, name, addr, port, host, h->outside, ret_reason);
  g_rec_mutex_unlock(&h->check_lock);
  return ok;
}

/* ---- The decision log ------------------------------------------------------------------ */

static void write_counts(Helper *h) {
  g_autofree char *path = g_build_filename(h->runtime_dir, HUTCH_EGRESS_COUNTS, NULL);
  g_autofree char *text = g_strdup_printf("%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "\n",
                                          h->allowed, h->denied);
  hutch_write_file(path, text, strlen(text), 0600, NULL);
}

/* One JSON line per decision in the instance's egress.log (the last one kept as
 * egress.log.1 when it passes 1 MiB). name: the guest's, any bytes: JSON escapes them. */
/* the broker's threads log (and count) too */
static GMutex log_lock;

static void log_decision(Helper *h, const char *verdict, const char *name, const char *address,
                         guint port, const char *reason) {
  g_mutex_lock(&log_lock);
  if (strcmp(verdict, "allow") == 0)
    h->allowed++;
  else if (strcmp(verdict, "deny") == 0 || strcmp(verdict, "fail") == 0)
    h->denied++;
  write_counts(h);
  g_autofree char *path = g_build_filename(h->instance_dir, HUTCH_EGRESS_LOG, NULL);
  GStatBuf st;
  if (g_stat(path, &st) == 0 && st.st_size > MAX_LOG_BYTES) {
    g_autofree char *old = g_strconcat(path, ".1", NULL);
    g_rename(path, old);
  }
  g_autoptr(JsonBuilder) b = json_builder_new();
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  g_autofree char *time = g_date_time_format_iso8601(now);
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "time");
  json_builder_add_string_value(b, time);
  json_builder_set_member_name(b, "verdict");
  json_builder_add_string_value(b, verdict);
  json_builder_set_member_name(b, "name");
  if (name)
    json_builder_add_string_value(b, name);
  else
    json_builder_add_null_value(b);
  json_builder_set_member_name(b, "address");
  if (address)
    json_builder_add_string_value(b, address);
  else
    json_builder_add_null_value(b);
  json_builder_set_member_name(b, "port");
  json_builder_add_int_value(b, port);
  json_builder_set_member_name(b, "reason");
  json_builder_add_string_value(b, reason ? reason : "");
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *line = json_to_string(root, FALSE);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    g_autofree char *with_nl = g_strconcat(line, "\n", NULL);
    if (write(fd, with_nl, strlen(with_nl)) < 0) {
      /* the log is best effort; the decision stands */
    }
    close(fd);
  }
  g_mutex_unlock(&log_lock);
}

static void on_broker_log(const char *verdict, const char *name, const char *address, guint port,
                          const char *reason, gpointer data) {
  log_decision(data, verdict, name, address, port, reason);
}

/* ---- DNS: every name gets an address of hutch's own ----------------------------------- */

static guint32 name_address(Helper *h, const char *name) {
  gpointer found = g_hash_table_lookup(h->name_to_index, name);
  if (found)
    return NAME_NET + GPOINTER_TO_UINT(found);
  guint index = h->next_index;
  h->next_index = (h->next_index + 1) % NAME_POOL;
  if (h->index_to_name[index])
    g_hash_table_remove(h->name_to_index, h->index_to_name[index]);
  g_free(h->index_to_name[index]);
  h->index_to_name[index] = g_strdup(name);
  /* +1: the network address itself is never handed out */
  g_hash_table_insert(h->name_to_index, h->index_to_name[index], GUINT_TO_POINTER(index + 1));
  return NAME_NET + index + 1;
}

static guint32 dns_address_of(const char *name, gpointer data) {
  return name_address(data, name);
}

static const char *name_of_address(Helper *h, guint32 address) {
  if (address <= NAME_NET || address > NAME_NET + NAME_POOL)
    return NULL;
  return h->index_to_name[address - NAME_NET - 1];
}

/* The question's name (lower case, dotted, no final dot) and where the question ends; NULL
 * when it is not a plain name (compression, bad bytes, too long). */
static char *dns_question_name(const guint8 *msg, gsize len, gsize *ret_end) {
  GString *name = g_string_new(NULL);
  gsize at = 12;
  while (at < len && msg[at] != 0) {
    guint label = msg[at];
    if (label > 63 || at + 1 + label >= len || name->len + label + 1 > 253) {
      g_string_free(name, TRUE);
      return NULL;
    }
    if (name->len)
      g_string_append_c(name, '.');
    for (guint i = 0; i < label; i++) {
      char c = (char)msg[at + 1 + i];
      if (!g_ascii_isalnum(c) && c != '-' && c != '_') {
        g_string_free(name, TRUE);
        return NULL;
      }
      g_string_append_c(name, g_ascii_tolower(c));
    }
    at += 1 + label;
  }
  if (at >= len || name->len == 0) {
    g_string_free(name, TRUE);
    return NULL;
  }
  *ret_end = at + 1;
  return g_string_free(name, FALSE);
}

gsize hutch_dns_answer(const guint8 *msg, gsize len, guint8 *out, gsize out_size,
                       HutchDnsAddressOf address_of, gpointer data) {
  if (len < 12 || (msg[2] & 0x80) || ((msg[2] >> 3) & 0x0f) != 0 || msg[4] != 0 || msg[5] != 1)
    return 0; /* not a standard query with one question */
  gsize end = 0;
  g_autofree char *name = dns_question_name(msg, len, &end);
  guint rcode = 0;
  guint qtype = 0;
  if (name && end + 4 > len)
    g_clear_pointer(&name, g_free);
  if (!name)
    rcode = 1; /* FORMERR */
  else
    qtype = (guint)msg[end] << 8 | msg[end + 1];
  gsize question_end = name ? end + 4 : 12;
  if (question_end + 16 > out_size)
    return 0;
  memcpy(out, msg, question_end);
  out[2] = 0x80 | 0x04 | (msg[2] & 0x01); /* QR, AA, RD as asked */
  out[3] = 0x80 | rcode;                  /* RA */
  memset(out + 6, 0, 6);                  /* no answers, authority or additional yet */
  if (!name) {
    out[4] = out[5] = 0;
    return 12;
  }
  gsize at = question_end;
  guint qclass = (guint)msg[end + 2] << 8 | msg[end + 3];
  if (qtype == 1 && qclass == 1) {
    guint32 address = htonl(address_of(name, data));
    const guint8 answer[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4};
    memcpy(out + at, answer, sizeof answer);
    memcpy(out + at + sizeof answer, &address, 4);
    at += sizeof answer + 4;
    out[7] = 1;
  }
  /* AAAA and anything else: no data (the guest has no IPv6) */
  return at;
}

static gboolean on_dns(int fd, GIOCondition condition, gpointer data) {
  Helper *h = data;
  (void)condition;
  guint8 query[1500], reply[1500];
  struct sockaddr_in from;
  socklen_t from_len = sizeof from;
  ssize_t n = recvfrom(fd, query, sizeof query, MSG_DONTWAIT, (struct sockaddr *)&from,
                       &from_len);
  if (n <= 0)
    return G_SOURCE_CONTINUE;
  gsize len = hutch_dns_answer(query, (gsize)n, reply, sizeof reply, dns_address_of, h);
  /* the socket is on 127.0.0.1, where nftables redirected the query: conntrack gives the
   * answer the address the guest asked as its source */
  if (len > 0 && sendto(fd, reply, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&from,
                        from_len) < 0) {
    /* the guest asks again */
  }
  return G_SOURCE_CONTINUE;
}

/* ---- Guest connections ----------------------------------------------------------------- */

typedef struct {
  Helper *h;
  GSocketConnection *guest;
  char *name; /* NULL: the guest connected to a bare address */
  struct sockaddr_in dst;
  guint port;
  char *address; /* the destination address chosen, as text */
  GList *candidates; /* GInetAddress* left to try */
  char *first_reason;
  guint8 request[4096]; /* what a refused HTTP client sent, read before the 403 */
  char *response;       /* the 403 being written */
  struct sockaddr_storage upstream; /* the address being connected to */
} Flow;

static void flow_free(Flow *f) {
  if (f->guest)
    f->h->guest_connections--;
  g_clear_object(&f->guest);
  g_free(f->name);
  g_free(f->address);
  g_list_free_full(f->candidates, g_object_unref);
  g_free(f->first_reason);
  g_free(f->response);
  g_free(f);
}

/* ---- Relays: both directions, each to its end ------------------------------------------
 *
 * Not g_io_stream_splice_async, which ends both directions when one reaches its end: a client
 * that sends its request, shuts its side down and waits for the answer got nothing. A
 * direction that ends shuts the other socket's sending side; the relay closes both once
 * both directions ended (or at once on an error, or when the policy changed). */

typedef struct _Relay Relay;

typedef struct {
  Relay *relay;
  GInputStream *in;
  GOutputStream *out;
  GSocket *out_socket;
  guint8 buffer[RELAY_BUFFER];
} Direction;

struct _Relay {
  Helper *h;                /* the guest's relays: re-checked when the policy changes */
  GSocketConnection *a, *b; /* a: the guest's (or the host client's) side */
  GCancellable *cancel;
  Direction to_b, to_a;
  int running; /* directions not yet ended */
  /* what the policy allowed (the guest's relays) */
  char *name;
  struct sockaddr_storage upstream;
  guint port;
};

static void relay_direction_ended(Direction *d) {
  Relay *r = d->relay;
  if (--r->running > 0)
    return;
  g_io_stream_close(G_IO_STREAM(r->a), NULL, NULL);
  g_io_stream_close(G_IO_STREAM(r->b), NULL, NULL);
  if (r->h) {
    r->h->relays = g_list_remove(r->h->relays, r);
    r->h->guest_connections--;
  }
  g_object_unref(r->a);
  g_object_unref(r->b);
  g_object_unref(r->cancel);
  g_free(r->name);
  g_free(r);
}

static void relay_read(Direction *d);

static void relay_written(GObject *source, GAsyncResult *result, gpointer data) {
  Direction *d = data;
  if (!g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), result, NULL, NULL)) {
    g_cancellable_cancel(d->relay->cancel);
    relay_direction_ended(d);
    return;
  }
  relay_read(d);
}

static void relay_got(GObject *source, GAsyncResult *result, gpointer data) {
  Direction *d = data;
  gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), result, NULL);
  if (n < 0) {
    g_cancellable_cancel(d->relay->cancel);
    relay_direction_ended(d);
    return;
  }
  if (n == 0) {
    /* the end of this direction: the other side learns it, and may still answer */
    g_socket_shutdown(d->out_socket, FALSE, TRUE, NULL);
    relay_direction_ended(d);
    return;
  }
  Relay *r = d->relay;
  if (r->h && r->h->broker && d == &r->to_b)
    hutch_broker_note_plain(r->h->broker, d->buffer, (gsize)n, r->name, NULL, r->port);
  g_output_stream_write_all_async(d->out, d->buffer, (gsize)n, G_PRIORITY_DEFAULT,
                                  d->relay->cancel, relay_written, d);
}

static void relay_read(Direction *d) {
  g_input_stream_read_async(d->in, d->buffer, sizeof d->buffer, G_PRIORITY_DEFAULT,
                            d->relay->cancel, relay_got, d);
}

/* Relays a and b (taking references) until both directions ended. h: the guest's relay, kept
 * in h->relays (and counted in h->guest_connections by the caller), or NULL. */
static Relay *relay_start(Helper *h, GSocketConnection *a, GSocketConnection *b) {
  Relay *r = g_new0(Relay, 1);
  r->h = h;
  r->a = g_object_ref(a);
  r->b = g_object_ref(b);
  r->cancel = g_cancellable_new();
  r->running = 2;
  r->to_b = (Direction){r, g_io_stream_get_input_stream(G_IO_STREAM(a)),
                        g_io_stream_get_output_stream(G_IO_STREAM(b)),
                        g_socket_connection_get_socket(b), {0}};
  r->to_a = (Direction){r, g_io_stream_get_input_stream(G_IO_STREAM(b)),
                        g_io_stream_get_output_stream(G_IO_STREAM(a)),
                        g_socket_connection_get_socket(a), {0}};
  if (h)
    h->relays = g_list_prepend(h->relays, r);
  relay_read(&r->to_b);
  relay_read(&r->to_a);
  return r;
}

/* Closes the guest's connection with a reset: a refused connection, as the guest sees it */
static void reset_guest(GSocketConnection *conn) {
  GSocket *socket = g_socket_connection_get_socket(conn);
  struct linger linger = {.l_onoff = 1, .l_linger = 0};
  setsockopt(g_socket_get_fd(socket), SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
  g_io_stream_close(G_IO_STREAM(conn), NULL, NULL);
}

static void refused_written(GObject *source, GAsyncResult *result, gpointer data) {
  Flow *f = data;
  g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), result, NULL, NULL);
  g_io_stream_close(G_IO_STREAM(f->guest), NULL, NULL);
  flow_free(f);
}

static void request_read(GObject *source, GAsyncResult *result, gpointer data) {
  Flow *f = data;
  g_input_stream_read_finish(G_INPUT_STREAM(source), result, NULL);
  g_autofree char *body = g_strdup_printf("hutch egress policy: refused: %s\n", f->first_reason);
  g_autofree char *response = g_strdup_printf(
      "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
      "Connection: close\r\nX-Hutch-Egress: refused\r\n\r\n%s",
      strlen(body), body);
  GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(f->guest));
  /* the response outlives this function: it is kept with the flow */
  f->response = g_steal_pointer(&response);
  g_output_stream_write_all_async(out, f->response, strlen(f->response), G_PRIORITY_DEFAULT,
                                  NULL, refused_written, f);
}

static void refuse(Flow *f, const char *address, const char *reason) {
  log_decision(f->h, "deny", f->name, address, f->port, reason);
  if (f->first_reason != reason) {
    g_free(f->first_reason);
    f->first_reason = g_strdup(reason);
  }
  if (f->port == 80) {
    /* plain HTTP: read the request (so that closing does not reset it away), then say why */
    GInputStream *in = g_io_stream_get_input_stream(G_IO_STREAM(f->guest));
    g_socket_set_timeout(g_socket_connection_get_socket(f->guest), 5);
    g_input_stream_read_async(in, f->request, sizeof f->request, G_PRIORITY_DEFAULT, NULL,
                              request_read, f);
    return;
  }
  reset_guest(f->guest);
  flow_free(f);
}

static void try_next(Flow *f);

static void connected(GObject *source, GAsyncResult *result, gpointer data) {
  Flow *f = data;
  g_autoptr(GError) error = NULL;
  GSocketConnection *upstream =
      g_socket_client_connect_finish(G_SOCKET_CLIENT(source), result, &error);
  if (!upstream) {
    if (f->candidates) {
      try_next(f);
      return;
    }
    log_decision(f->h, "fail", f->name, f->address, f->port, error->message);
    reset_guest(f->guest);
    flow_free(f);
    return;
  }
  /* the policy may have changed while this connected */
  g_autofree char *reason = NULL;
  if (!hutch_egress_check_name(f->h->policy, f->name, f->port, &reason) ||
      !check_address(f->h, f->name, (struct sockaddr *)&f->upstream, f->port, &reason)) {
    g_object_unref(upstream);
    refuse(f, f->address, reason);
    return;
  }
  log_decision(f->h, "allow", f->name, f->address, f->port, NULL);
  g_socket_set_option(g_socket_connection_get_socket(upstream), IPPROTO_TCP, TCP_NODELAY,
                      1, NULL);
  Relay *r = relay_start(f->h, f->guest, upstream);
  r->name = g_strdup(f->name);
  r->upstream = f->upstream;
  r->port = f->port;
  g_object_unref(upstream);
  /* the relay counts the connection now */
  g_clear_object(&f->guest);
  flow_free(f);
}

/* Checks the next candidate address and connects to the first the policy allows */
static void try_next(Flow *f) {
  while (f->candidates) {
    GInetAddress *address = f->candidates->data;
    f->candidates = g_list_delete_link(f->candidates, f->candidates);
    g_autoptr(GSocketAddress) sa = g_inet_socket_address_new(address, f->port);
    g_object_unref(address);
    struct sockaddr_storage native;
    if (!g_socket_address_to_native(sa, &native, sizeof native, NULL))
      continue;
    g_autofree char *reason = NULL;
    g_free(f->address);
    f->address = g_inet_address_to_string(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(sa)));
    if (!hutch_egress_check_name(f->h->policy, f->name, f->port, &reason) ||
        !check_address(f->h, f->name, (struct sockaddr *)&native, f->port, &reason)) {
      if (!f->first_reason)
        f->first_reason = g_steal_pointer(&reason);
      continue;
    }
    f->upstream = native;
    g_socket_client_connect_async(f->h->client, G_SOCKET_CONNECTABLE(sa), NULL, connected, f);
    return;
  }
  if (!f->first_reason)
    f->first_reason = g_strdup_printf("%s has no address", f->name ? f->name : "?");
  refuse(f, f->address, f->first_reason);
}

static void resolved(GObject *source, GAsyncResult *result, gpointer data) {
  Flow *f = data;
  g_autoptr(GError) error = NULL;
  GList *addresses = g_resolver_lookup_by_name_finish(G_RESOLVER(source), result, &error);
  if (!addresses) {
    g_autofree char *reason = g_strdup_printf("%s could not be resolved: %s", f->name,
                                              error->message);
    log_decision(f->h, "fail", f->name, NULL, f->port, reason);
    reset_guest(f->guest);
    flow_free(f);
    return;
  }
  /* IPv4 first: the helper's own connections may use either */
  for (GList *l = addresses; l; l = l->next)
    if (g_inet_address_get_family(l->data) == G_SOCKET_FAMILY_IPV4)
      f->candidates = g_list_append(f->candidates, g_object_ref(l->data));
  for (GList *l = addresses; l; l = l->next)
    if (g_inet_address_get_family(l->data) != G_SOCKET_FAMILY_IPV4)
      f->candidates = g_list_append(f->candidates, g_object_ref(l->data));
  g_resolver_free_addresses(addresses);
  try_next(f);
}

/* ---- Intercepted connections (the credential broker): a thread each ---------------------- */

/* Connects to the first address of name that the policy allows, blocking (a broker thread
 * calls it), with the decisions logged as the proxy's own are */
static int connect_for_broker(const char *name, guint port, char **ret_address,
                              char **ret_reason, gpointer data) {
  Helper *h = data;
  GList *addresses = NULL;
  GInetAddress *test_address = h->test_hosts ? g_hash_table_lookup(h->test_hosts, name) : NULL;
  if (test_address) {
    addresses = g_list_append(NULL, g_object_ref(test_address));
  } else {
    g_autoptr(GResolver) resolver = g_resolver_get_default();
    g_autoptr(GError) error = NULL;
    addresses = g_resolver_lookup_by_name(resolver, name, NULL, &error);
    if (!addresses) {
      *ret_reason = g_strdup_printf("%s could not be resolved: %s", name, error->message);
      log_decision(h, "fail", name, NULL, port, *ret_reason);
      return -1;
    }
  }
  /* IPv4 first, as the proxy does */
  GList *ordered = NULL;
  for (GList *l = addresses; l; l = l->next)
    if (g_inet_address_get_family(l->data) == G_SOCKET_FAMILY_IPV4)
      ordered = g_list_append(ordered, l->data);
  for (GList *l = addresses; l; l = l->next)
    if (g_inet_address_get_family(l->data) != G_SOCKET_FAMILY_IPV4)
      ordered = g_list_append(ordered, l->data);
  int fd = -1;
  for (GList *l = ordered; l && fd < 0; l = l->next) {
    g_autoptr(GSocketAddress) sa = g_inet_socket_address_new(l->data, port);
    struct sockaddr_storage native;
    if (!g_socket_address_to_native(sa, &native, sizeof native, NULL))
      continue;
    g_free(*ret_address);
    *ret_address = g_inet_address_to_string(l->data);
    g_autofree char *reason = NULL;
    g_rec_mutex_lock(&h->check_lock);
    gboolean allowed = hutch_egress_check_name(h->policy, name, port, &reason) &&
                       check_address(h, name, (struct sockaddr *)&native, port, &reason);
    g_rec_mutex_unlock(&h->check_lock);
    if (!allowed) {
      log_decision(h, "deny", name, *ret_address, port, reason);
      if (!*ret_reason)
        *ret_reason = g_steal_pointer(&reason);
      continue;
    }
    int s = socket(native.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    socklen_t len = native.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6);
    int r = s < 0 ? -1 : connect(s, (struct sockaddr *)&native, len);
    if (r < 0 && s >= 0 && errno == EINPROGRESS) {
      struct pollfd p = {.fd = s, .events = POLLOUT};
      int err = ETIMEDOUT;
      socklen_t err_len = sizeof err;
      if (poll(&p, 1, 30000) == 1)
        getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &err_len);
      r = err == 0 ? 0 : -1;
      errno = err;
    }
    if (r == 0) {
      int one = 1;
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      log_decision(h, "allow", name, *ret_address, port, "intercepted by the credential broker");
      fd = s;
    } else {
      g_free(reason);
      reason = g_strdup_printf("connecting to %s: %s", *ret_address, g_strerror(errno));
      log_decision(h, "fail", name, *ret_address, port, reason);
      if (!*ret_reason)
        *ret_reason = g_steal_pointer(&reason);
      if (s >= 0)
        close(s);
    }
  }
  if (fd < 0 && !*ret_reason)
    *ret_reason = g_strdup_printf("%s has no address", name);
  g_list_free(ordered);
  g_resolver_free_addresses(addresses);
  return fd;
}

typedef struct {
  Helper *h;
  int guest_fd;
  char *name;
  guint port;
} Intercept;

static gboolean intercept_ended(gpointer data) {
  ((Helper *)data)->guest_connections--;
  return G_SOURCE_REMOVE;
}

static gpointer intercept_thread(gpointer data) {
  Intercept *i = data;
  hutch_broker_serve(i->h->broker, i->guest_fd, i->name, i->port, connect_for_broker, i->h);
  g_idle_add(intercept_ended, i->h);
  g_free(i->name);
  g_free(i);
  return NULL;
}

/* Hands the guest's connection to a broker thread, which counts as the guest's connection
 * until it ends. Frees the flow. */
static void intercept(Flow *f) {
  Intercept *i = g_new0(Intercept, 1);
  i->h = f->h;
  i->guest_fd = fcntl(g_socket_get_fd(g_socket_connection_get_socket(f->guest)),
                      F_DUPFD_CLOEXEC, 3);
  i->name = g_strdup(f->name);
  i->port = f->port;
  g_autoptr(GError) error = NULL;
  GThread *thread =
      i->guest_fd >= 0 ? g_thread_try_new("hutch-broker", intercept_thread, i, &error) : NULL;
  if (thread) {
    g_thread_unref(thread);
    /* the thread counts the connection now; the flow's descriptor is a duplicate */
    g_clear_object(&f->guest);
    flow_free(f);
    return;
  }
  log_decision(f->h, "fail", f->name, NULL, f->port,
               error ? error->message : "out of descriptors");
  if (i->guest_fd >= 0)
    close(i->guest_fd);
  g_free(i->name);
  g_free(i);
  reset_guest(f->guest);
  flow_free(f);
}

static gboolean on_guest_connection(GSocketService *service, GSocketConnection *conn,
                                    GObject *source, gpointer data) {
  Helper *h = data;
  (void)service;
  (void)source;
  if (h->guest_connections >= MAX_GUEST_CONNECTIONS) {
    /* a flood: refused without a log line each (the count says it) */
    g_mutex_lock(&log_lock);
    h->denied++;
    g_mutex_unlock(&log_lock);
    reset_guest(conn);
    return TRUE;
  }
  Flow *f = g_new0(Flow, 1);
  f->h = h;
  f->guest = g_object_ref(conn);
  h->guest_connections++;
  int fd = g_socket_get_fd(g_socket_connection_get_socket(conn));
  socklen_t len = sizeof f->dst;
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &f->dst, &len) < 0 || f->dst.sin_family != AF_INET) {
    reset_guest(conn);
    flow_free(f);
    return TRUE;
  }
  f->port = ntohs(f->dst.sin_port);
  const char *name = name_of_address(h, ntohl(f->dst.sin_addr.s_addr));
  f->name = g_strdup(name);
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &f->dst.sin_addr, text, sizeof text);
  g_autofree char *reason = NULL;
  if (!hutch_egress_check_name(h->policy, f->name, f->port, &reason)) {
    refuse(f, f->name ? NULL : text, reason);
    return TRUE;
  }
  if (hutch_broker_intercepts(h->broker, f->name, f->port)) {
    intercept(f);
    return TRUE;
  }
  if (!f->name) {
    f->candidates = g_list_append(NULL, g_inet_address_new_from_bytes(
                                            (guint8 *)&f->dst.sin_addr, G_SOCKET_FAMILY_IPV4));
    try_next(f);
    return TRUE;
  }
  GInetAddress *test_address = h->test_hosts ? g_hash_table_lookup(h->test_hosts, f->name) : NULL;
  if (test_address) {
    f->candidates = g_list_append(NULL, g_object_ref(test_address));
    try_next(f);
    return TRUE;
  }
  g_autoptr(GResolver) resolver = g_resolver_get_default();
  g_resolver_lookup_by_name_async(resolver, f->name, NULL, resolved, f);
  return TRUE;
}

/* ---- The host's forwarded ports, relayed into the namespace ----------------------------- */

static gboolean on_inbound_connection(GSocketService *service, GSocketConnection *conn,
                                      GObject *source, gpointer data) {
  Helper *h = data;
  (void)service;
  (void)source;
  g_autoptr(GSocketAddress) local = g_socket_connection_get_local_address(conn, NULL);
  if (!local)
    return TRUE;
  guint port = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(local));
  char request = 's';
  int fd = -1;
  if (send(h->ctl, &request, 1, MSG_NOSIGNAL) == 1)
    fd = recv_fd(h->ctl);
  if (fd < 0) {
    /* this connection fails; the keeper's end is seen by on_keeper */
    reset_guest(conn);
    return TRUE;
  }
  struct sockaddr_in inside = {.sin_family = AF_INET,
                               .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(fd, (struct sockaddr *)&inside, sizeof inside) < 0) {
    close(fd);
    reset_guest(conn);
    return TRUE;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  g_autoptr(GSocket) socket = g_socket_new_from_fd(fd, NULL);
  if (!socket) {
    close(fd);
    return TRUE;
  }
  g_autoptr(GSocketConnection) into = g_socket_connection_factory_create_connection(socket);
  g_socket_set_option(g_socket_connection_get_socket(conn), IPPROTO_TCP, TCP_NODELAY, 1, NULL);
  relay_start(NULL, conn, into);
  return TRUE;
}

/* ---- Setup ------------------------------------------------------------------------------ */

static gboolean reload_policy(gpointer data) {
  Helper *h = data;
  g_autoptr(GError) error = NULL;
  HutchEgressPolicy *policy = hutch_egress_policy_load(h->instance_dir, &error);
  if (!policy) {
    g_printerr("egress helper: keeping the policy: %s\n", error->message);
    return G_SOURCE_CONTINUE;
  }
  g_rec_mutex_lock(&h->check_lock);
  hutch_egress_policy_free(h->policy);
  h->policy = policy;
  g_rec_mutex_unlock(&h->check_lock);
  g_printerr("egress helper: policy reloaded (%s)\n", hutch_egress_mode_to_string(policy->mode));
  /* what the new policy refuses ends now, open connections included */
  for (GList *l = h->relays; l; l = l->next) {
    Relay *r = l->data;
    g_autofree char *reason = NULL;
    if (hutch_egress_check_name(h->policy, r->name, r->port, &reason) &&
        check_address(h, r->name, (struct sockaddr *)&r->upstream, r->port, &reason))
      continue;
    char text[INET6_ADDRSTRLEN] = "";
    const struct sockaddr *sa = (struct sockaddr *)&r->upstream;
    inet_ntop(sa->sa_family,
              sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
                                       : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr,
              text, sizeof text);
    g_autofree char *why = g_strdup_printf("closed: the policy changed: %s", reason);
    log_decision(h, "deny", r->name, text, r->port, why);
    g_cancellable_cancel(r->cancel);
  }
  return G_SOURCE_CONTINUE;
}

static gboolean on_quit(gpointer data) {
  g_main_loop_quit(((Helper *)data)->loop);
  return G_SOURCE_REMOVE;
}

static gboolean on_keeper(int fd, GIOCondition condition, gpointer data) {
  (void)fd;
  (void)condition;
  /* the keeper only speaks when asked: anything else is its end (passt exited) */
  g_main_loop_quit(((Helper *)data)->loop);
  return G_SOURCE_REMOVE;
}

static void read_test_settings(Helper *h) {
  const char *hosts = g_getenv("HUTCH_EGRESS_TEST_HOSTS");
  const char *outside_text = g_getenv("HUTCH_EGRESS_TEST_OUTSIDE");
  const char *trust = g_getenv("HUTCH_EGRESS_TEST_CA");
  if ((hosts && *hosts) || (outside_text && *outside_text) || (trust && *trust)) {
    /* test-only settings weaken the policy: say so where the user looks */
    g_autofree char *what =
        g_strdup_printf("test-only settings in force: HUTCH_EGRESS_TEST_HOSTS=%s "
                        "HUTCH_EGRESS_TEST_OUTSIDE=%s HUTCH_EGRESS_TEST_CA=%s",
                        hosts ? hosts : "", outside_text ? outside_text : "",
                        trust ? trust : "");
    g_printerr("egress helper: %s\n", what);
    log_decision(h, "note", NULL, NULL, 0, what);
  }
  if (hosts && *hosts) {
    h->test_hosts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);
    g_auto(GStrv) entries = g_strsplit_set(hosts, ", ", -1);
    for (char **e = entries; *e; e++) {
      char *eq = strchr(*e, '=');
      GInetAddress *a = eq ? g_inet_address_new_from_string(eq + 1) : NULL;
      if (a) {
        *eq = '\0';
        g_hash_table_insert(h->test_hosts, g_ascii_strdown(*e, -1), a);
      }
    }
  }
  const char *outside = g_getenv("HUTCH_EGRESS_TEST_OUTSIDE");
  if (outside && *outside) {
    h->outside = g_ptr_array_new_with_free_func(g_object_unref);
    g_auto(GStrv) entries = g_strsplit_set(outside, ", ", -1);
    for (char **e = entries; *e; e++) {
      GInetAddress *a = g_inet_address_new_from_string(*e);
      if (a)
        g_ptr_array_add(h->outside, a);
    }
  }
}

static gboolean listen_forwards(Helper *h, char **forwards, GError **error) {
  h->inbound = g_socket_service_new();
  for (char **f = forwards; f && *f; f++) {
    /* IP/START[-END] (the host side; passt's spec has the guest side after a colon) */
    g_autofree char *spec = g_strdup(*f);
    char *slash = strrchr(spec, '/');
    if (!slash) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "bad forward '%s'", *f);
      return FALSE;
    }
    *slash = '\0';
    guint64 start = 0, end = 0;
    char *dash = strchr(slash + 1, '-');
    if (dash)
      *dash = '\0';
    if (!g_ascii_string_to_unsigned(slash + 1, 10, 1, 65535, &start, error) ||
        !g_ascii_string_to_unsigned(dash ? dash + 1 : slash + 1, 10, start, 65535, &end, error))
      return FALSE;
    g_autoptr(GInetAddress) ip = g_inet_address_new_from_string(spec);
    if (!ip) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "bad address in forward '%s'", *f);
      return FALSE;
    }
    for (guint64 port = start; port <= end; port++) {
      g_autoptr(GSocketAddress) sa = g_inet_socket_address_new(ip, (guint16)port);
      if (!g_socket_listener_add_address(G_SOCKET_LISTENER(h->inbound), sa,
                                         G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL, NULL,
                                         error)) {
        g_prefix_error(error, "listening on %s: ", *f);
        return FALSE;
      }
    }
  }
  g_signal_connect(h->inbound, "incoming", G_CALLBACK(on_inbound_connection), h);
  g_socket_service_start(h->inbound);
  return TRUE;
}

/* The env secrets handed over on a descriptor (hutch_egress_start's secrets_fd): each
 * "NAME=VALUE" into this process's environment, where the broker reads and then wipes them
 * like any it was started with; the read copy is wiped here. At most 1 MiB. */
static gboolean take_secrets_fd(GError **error) {
  const char *fd_text = g_getenv(HUTCH_SECRETS_FD_ENV);
  if (!fd_text)
    return TRUE;
  char *end = NULL;
  long fd = strtol(fd_text, &end, 10);
  g_unsetenv(HUTCH_SECRETS_FD_ENV);
  if (*fd_text == '\0' || *end != '\0' || fd < 3 || fd > G_MAXINT) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "%s is not a descriptor",
                HUTCH_SECRETS_FD_ENV);
    return FALSE;
  }
  enum { SECRETS_MAX = 1024 * 1024 };
  static char buf[SECRETS_MAX];
  gsize len = 0;
  gboolean ok = TRUE;
  while (len < SECRETS_MAX) {
    ssize_t n = pread((int)fd, buf + len, SECRETS_MAX - len, (off_t)len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "reading the secrets: %s",
                  g_strerror(errno));
      ok = FALSE;
    }
    if (n <= 0)
      break;
    len += (gsize)n;
  }
  if (ok && len == SECRETS_MAX) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "the secrets take more than 1 MiB");
    ok = FALSE;
  }
  close((int)fd);
  /* "NAME=VALUE\0" each; what follows the last NUL is no entry */
  for (gsize at = 0; ok && at < len;) {
    char *entry = buf + at;
    char *nul = memchr(entry, '\0', len - at);
    if (!nul)
      break;
    char *eq = strchr(entry, '=');
    if (eq && eq != entry) {
      *eq = '\0';
      setenv(entry, eq + 1, 1);
    }
    at = (gsize)(nul - buf) + 1;
  }
  explicit_bzero(buf, len);
  return ok;
}

int hutch_egress_helper_main(const char *instance_dir, const char *runtime_dir, char **forwards,
                             char **passt_argv, GError **error) {
  /* started by a verb that blocks its signals (cmd/watch.c): SIGHUP reloads the policy */
  hutch_unblock_signals();
  Helper h = {.ctl = -1, .dns_fd = -1};
  g_rec_mutex_init(&h.check_lock);
  /* declared before the first goto: the cleanups run at every exit */
  g_autoptr(GSocket) proxy_socket = NULL;
  g_autoptr(GError) broker_error = NULL;
  g_autofree char *socket_path = g_build_filename(runtime_dir, HUTCH_PASST_SOCKET, NULL);
  h.instance_dir = g_strdup(instance_dir);
  h.runtime_dir = g_strdup(runtime_dir);
  prctl(PR_SET_NAME, "hutch-egress");
  /* hutch net may signal a reload as soon as the pidfile names us: not fatal before the
   * handler is in place */
  signal(SIGHUP, SIG_IGN);
  /* the guest's connections hold descriptors: all the hard limit allows */
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  int status = 1;
  h.policy = hutch_egress_policy_load(instance_dir, error);
  if (!h.policy)
    goto out;
  read_test_settings(&h);
  /* no core dump of a process that may hold secrets */
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  /* the secrets' values, before the keeper is forked: it and passt get neither them (their
   * memory is wiped in a fork) nor the environment's copy (overwritten) */
  if (!take_secrets_fd(error))
    goto out;
  const char *trust = g_getenv("HUTCH_EGRESS_TEST_CA");
  h.broker = hutch_broker_load(instance_dir, trust && *trust ? trust : NULL, on_broker_log, &h,
                               &broker_error);
  if (broker_error) {
    g_propagate_prefixed_error(error, g_steal_pointer(&broker_error), "the credential broker: ");
    goto out;
  }
  h.name_to_index = g_hash_table_new(g_str_hash, g_str_equal);
  h.index_to_name = g_new0(char *, NAME_POOL);

  pid_t helper_pid = getpid();
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "socketpair: %s", g_strerror(errno));
    goto out;
  }
  pid_t keeper = fork();
  if (keeper < 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "fork: %s", g_strerror(errno));
    goto out;
  }
  if (keeper == 0) {
    close(pair[0]);
    keeper_main(pair[1], helper_pid, getuid(), getgid(), passt_argv);
  }
  close(pair[1]);
  h.ctl = pair[0];
  int proxy_fd = recv_fd(h.ctl);
  h.dns_fd = proxy_fd >= 0 ? recv_fd(h.ctl) : -1;
  if (h.dns_fd < 0) {
    if (proxy_fd >= 0)
      close(proxy_fd);
    waitpid(keeper, NULL, 0);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                "the egress namespace could not be made (see above)");
    goto out;
  }
  g_unix_set_fd_nonblocking(h.dns_fd, TRUE, NULL);
  /* the keeper has its namespace (it needed its own /proc files, which this would have made
   * root's): from now on the user's other processes cannot read this one's memory */
  if (h.broker)
    prctl(PR_SET_DUMPABLE, 0);
  proxy_socket = g_socket_new_from_fd(proxy_fd, error);
  if (!proxy_socket)
    goto out;
  h.proxy = g_socket_service_new();
  if (!g_socket_listener_add_socket(G_SOCKET_LISTENER(h.proxy), proxy_socket, NULL, error))
    goto out;
  g_signal_connect(h.proxy, "incoming", G_CALLBACK(on_guest_connection), &h);
  h.client = g_socket_client_new();
  g_socket_client_set_enable_proxy(h.client, FALSE);
  g_socket_client_set_timeout(h.client, 30);
  if (!listen_forwards(&h, forwards, error))
    goto out;

  h.loop = g_main_loop_new(NULL, FALSE);
  g_unix_fd_add(h.dns_fd, G_IO_IN, on_dns, &h);
  g_unix_fd_add(h.ctl, G_IO_IN | G_IO_HUP | G_IO_ERR, on_keeper, &h);
  g_unix_signal_add(SIGHUP, reload_policy, &h);
  g_unix_signal_add(SIGTERM, on_quit, &h);
  g_unix_signal_add(SIGINT, on_quit, &h);
  signal(SIGPIPE, SIG_IGN);
  write_counts(&h);

  /* ready once passt's socket is there (QEMU connects to it) */
  for (int i = 0; i < 250 && !g_file_test(socket_path, G_FILE_TEST_EXISTS); i++) {
    if (waitpid(keeper, NULL, WNOHANG) == keeper) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "passt did not start (see above)");
      goto out;
    }
    g_usleep(20 * 1000);
  }
  if (!g_file_test(socket_path, G_FILE_TEST_EXISTS)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "passt did not create %s", socket_path);
    goto out;
  }
  /* tell hutch start (our stdout is its pipe), then let go of it */
  if (write(1, "ready\n", 6) != 6) {
    /* start sees the pipe end and gives up on us; it stops us */
  }
  int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, 1);
    close(null_fd);
  }
  g_main_loop_run(h.loop);
  kill(keeper, SIGTERM);
  waitpid(keeper, NULL, 0);
  if (h.broker) {
    /* broker threads may still run (their connections end with passt): nothing they use is
     * freed under them; the values are wiped and the process ends here */
    hutch_broker_wipe(h.broker);
    _exit(0);
  }
  status = 0;
out:
  if (h.dns_fd >= 0)
    close(h.dns_fd);
  helper_clear(&h);
  return status;
}

/* ---- Starting and stopping it (hutch start's side) --------------------------------------- */

static void child_setup(gpointer data) {
  (void)data;
  setsid();
  hutch_unblock_signals();
}

static gboolean have_program(const char *name, const char *package, GError **error) {
  g_autofree char *found = g_find_program_in_path(name);
  if (!found) {
    /* ip and nft live in /usr/sbin, which a user's PATH may lack */
    g_autofree char *sbin = g_build_filename("/usr/sbin", name, NULL);
    if (g_file_test(sbin, G_FILE_TEST_IS_EXECUTABLE))
      return TRUE;
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                "the egress policy needs %s (apt-get install %s), or egress: unrestricted",
                name, package);
    return FALSE;
  }
  return TRUE;
}

gboolean hutch_egress_start(HutchContext *ctx, const char *instance_dir, const char *runtime_dir,
                            guint ssh_port, GPtrArray *ports, gboolean vhost_user,
                            char **helper_envp, int secrets_fd, GError **error) {
  for (guint i = 0; ports && i < ports->len; i++) {
    HutchPort *port = g_ptr_array_index(ports, i);
    if (port->proto == HUTCH_PROTO_TCP &&
        ((port->host_start <= PROXY_PORT && PROXY_PORT <= port->host_end) ||
         (port->host_start <= 53 && 53 <= port->host_end))) {
      /* passt listens on the host port's number in the helper's namespace, where these two
       * are the helper's own */
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "host port %u-%u takes port 53 or %u, which the egress helper uses in the "
                  "VM's network namespace: forward from another host port, or egress: "
                  "unrestricted",
                  port->host_start, port->host_end, PROXY_PORT);
      return FALSE;
    }
    if (port->proto == HUTCH_PROTO_UDP) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "UDP port %u is not forwarded under an egress policy yet: use TCP, or "
                  "egress: unrestricted",
                  port->host_start);
      return FALSE;
    }
  }
  if (!ctx->helper_program) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER,
                "no program to run the egress helper (hutch's own binary)");
    return FALSE;
  }
  if (!have_program("ip", "iproute2", error) || !have_program("nft", "nftables", error))
    return FALSE;
  hutch_egress_stop(runtime_dir);
  g_autofree char *socket = g_build_filename(runtime_dir, HUTCH_PASST_SOCKET, NULL);
  g_autofree char *log_path = g_build_filename(runtime_dir, HUTCH_EGRESS_HELPER_LOG, NULL);
  g_unlink(socket);
  g_unlink(log_path);

  g_autoptr(GStrvBuilder) argv = g_strv_builder_new();
  g_strv_builder_add_many(argv, ctx->helper_program, "egress-helper", instance_dir, runtime_dir,
                          NULL);
  g_autofree char *ssh = g_strdup_printf("127.0.0.1/%u", ssh_port);
  g_strv_builder_add(argv, ssh);
  for (guint i = 0; ports && i < ports->len; i++) {
    HutchPort *port = g_ptr_array_index(ports, i);
    g_autofree char *spec = g_strdup_printf("%s/%u-%u", port->host_ip, port->host_start,
                                            port->host_end);
    g_strv_builder_add(argv, spec);
  }
  g_strv_builder_add(argv, "--");
  g_auto(GStrv) passt =
      hutch_net_passt_argv(hutch_net_find_passt(), runtime_dir, ssh_port, ports, TRUE, vhost_user);
  g_strv_builder_addv(argv, (const char **)passt);
  g_auto(GStrv) args = g_strv_builder_end(argv);

  /* PATH with /usr/sbin for ip and nft */
  g_auto(GStrv) envp = helper_envp ? g_strdupv(helper_envp) : g_get_environ();
  const char *path = g_environ_getenv(envp, "PATH");
  g_autofree char *new_path = g_strconcat(path ? path : "/usr/bin:/bin", ":/usr/sbin:/sbin", NULL);
  envp = g_environ_setenv(envp, "PATH", new_path, TRUE);
  /* the secrets' descriptor becomes the helper's 3 */
  int source_fds[] = {secrets_fd};
  int target_fds[] = {3};
  if (secrets_fd >= 0)
    envp = g_environ_setenv(envp, HUTCH_SECRETS_FD_ENV, "3", TRUE);
  else
    envp = g_environ_unsetenv(envp, HUTCH_SECRETS_FD_ENV);

  int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int out[2] = {-1, -1};
  GPid pid = 0;
  gboolean spawned = log_fd >= 0 && null_fd >= 0 && g_unix_open_pipe(out, FD_CLOEXEC, error) &&
                     g_spawn_async_with_pipes_and_fds(
                         NULL, (const char *const *)args, (const char *const *)envp,
                         G_SPAWN_DEFAULT, child_setup, NULL, null_fd, out[1], log_fd, source_fds,
                         target_fds, secrets_fd >= 0 ? 1 : 0, &pid, NULL, NULL, NULL, error);
  if (log_fd >= 0)
    close(log_fd);
  if (null_fd >= 0)
    close(null_fd);
  if (out[1] >= 0)
    close(out[1]);
  if (!spawned) {
    if (out[0] >= 0)
      close(out[0]);
    g_prefix_error(error, "starting the egress helper: ");
    return FALSE;
  }
  /* the pidfile, with the start time, so that only this helper is ever signalled */
  g_autofree char *pid_text = hutch_pidfile_format(pid);
  g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_EGRESS_PID, NULL);
  if (pid_text)
    hutch_write_file(pid_path, pid_text, strlen(pid_text), 0600, NULL);
  char answer[16] = "";
  struct pollfd p = {.fd = out[0], .events = POLLIN};
  ssize_t n = 0;
  if (poll(&p, 1, 15000) == 1)
    n = read(out[0], answer, sizeof answer - 1);
  close(out[0]);
  if (n < 6 || strncmp(answer, "ready\n", 6) != 0) {
    hutch_egress_stop(runtime_dir);
    g_autofree char *log = NULL;
    g_file_get_contents(log_path, &log, NULL, NULL);
    g_autofree char *clean = hutch_text_sanitize(log ? g_strstrip(log) : "", -1, HUTCH_TEXT_LINE);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_HELPER, "the egress helper did not start: %s",
                *clean ? clean : "no word from it (see egress-helper.log)");
    return FALSE;
  }
  return TRUE;
}

void hutch_egress_stop(const char *runtime_dir) {
  g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_EGRESS_PID, NULL);
  hutch_pidfile_kill(pid_path, &helper_id);
  /* passt dies with the helper (its keeper's death signal); its pidfile names it until then */
  g_autofree char *passt_pid = g_build_filename(runtime_dir, HUTCH_PASST_PID, NULL);
  hutch_net_stop_passt(passt_pid);
  g_autofree char *counts = g_build_filename(runtime_dir, HUTCH_EGRESS_COUNTS, NULL);
  g_unlink(counts);
}

gboolean hutch_egress_reload(const char *runtime_dir) {
  g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_EGRESS_PID, NULL);
  pid_t pid = hutch_pidfile_check(pid_path, &helper_id);
  return pid > 0 && kill(pid, SIGHUP) == 0;
}

gboolean hutch_egress_running(const char *runtime_dir) {
  g_autofree char *pid_path = g_build_filename(runtime_dir, HUTCH_EGRESS_PID, NULL);
  return hutch_pidfile_check(pid_path, &helper_id) > 0;
}

gboolean hutch_egress_counts(const char *runtime_dir, guint64 *ret_allowed, guint64 *ret_denied) {
  g_autofree char *path = g_build_filename(runtime_dir, HUTCH_EGRESS_COUNTS, NULL);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  return sscanf(text, "%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, ret_allowed, ret_denied) == 2;
}
