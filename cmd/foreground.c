/* foreground.c: `hutch start --foreground NAME`, for a systemd user unit (data/hutch@.service,
 * Type=notify). It starts or adopts the VM, tells systemd the phase (STATUS=) and READY=1
 * once the guest answers SSH, and stays until the domain stops or SIGTERM/SIGINT arrives, on
 * which it shuts the guest down gracefully (forcing it after a timeout) and exits 0.
 *
 * The start runs in a thread so that a signal during a long first boot is acted on at once:
 * the main thread stops the domain, which ends the start's wait. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"

/* sd_notify(3) by hand: one datagram to $NOTIFY_SOCKET, a path or an abstract name ('@'). */
static char *notify_socket;

static void notify(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void notify(const char *fmt, ...) {
  if (!notify_socket)
    return;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  size_t len = strlen(notify_socket);
  if (len < 2 || len >= sizeof(addr.sun_path) ||
      (notify_socket[0] != '/' && notify_socket[0] != '@'))
    return;
  memcpy(addr.sun_path, notify_socket, len);
  if (addr.sun_path[0] == '@')
    addr.sun_path[0] = '\0';
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  /* Best effort, as sd_notify: a unit without a listener must still run. */
  (void)sendto(fd, message, strlen(message), MSG_NOSIGNAL, (struct sockaddr *)&addr,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
  close(fd);
}

/* Progress as journal lines (stderr is no terminal under systemd) and as STATUS=. */
static void foreground_progress(const HutchProgress *p, gpointer user_data) {
  const char *name = user_data;
  switch (p->kind) {
  case HUTCH_PROGRESS_NOTE:
    fprintf(stderr, "%s\n", p->detail ? p->detail : "");
    break;
  case HUTCH_PROGRESS_BEGIN:
    notify("STATUS=%s: %s %s", name, p->phase, p->detail ? p->detail : "");
    break;
  case HUTCH_PROGRESS_UPDATE:
    break;
  case HUTCH_PROGRESS_END:
    fprintf(stderr, "  %-9s %-50.50s %6.1f s\n", p->phase, p->detail ? p->detail : "",
            p->elapsed_s);
    break;
  }
  fflush(stderr);
}

typedef struct {
  HutchContext *ctx;
  const char *name;
  int done_fd; /* written to when the start returns */
  gboolean ok;
  GError *error;
} StartJob;

static gpointer start_thread(gpointer data) {
  StartJob *job = data;
  job->ok = hutch_instance_start(job->ctx, job->name, TRUE, &job->error);
  (void)!write(job->done_fd, "x", 1);
  return NULL;
}

/* The graceful stop on SIGTERM, on a context of its own (the start thread may be using the
 * other one). hutch_instance_stop forces the power-off after its timeout. */
static gboolean stop_vm(Cli *cli, const char *name) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new(cli->uri, &error);
  if (ctx) {
    hutch_context_set_progress(ctx, foreground_progress, (gpointer)name);
    if (hutch_instance_stop(ctx, name, FALSE, &error))
      return TRUE;
  }
  cli_error(error);
  return FALSE;
}

static int read_signal(int sfd) {
  struct signalfd_siginfo info;
  if (read(sfd, &info, sizeof(info)) != sizeof(info))
    return 0;
  return (int)info.ssi_signo;
}

int cli_start_foreground(Cli *cli, const char *name) {
  /* Children (passt, virtiofsd, an auto-started libvirtd) must not talk to systemd in our
   * name: libvirtd would send its own READY=1. */
  const char *socket_env = g_getenv("NOTIFY_SOCKET");
  notify_socket = socket_env && *socket_env ? g_strdup(socket_env) : NULL;
  g_unsetenv("NOTIFY_SOCKET");

  /* Block the signals before the thread exists so that both threads leave them to the
   * signalfd. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  pthread_sigmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  int done[2];
  if (sfd < 0 || !g_unix_open_pipe(done, FD_CLOEXEC, NULL)) {
    fprintf(stderr, "hutch: %s\n", g_strerror(errno));
    return EXIT_FAILED;
  }
  if (!cli->quiet)
    hutch_context_set_progress(cli->ctx, foreground_progress, (gpointer)name);
  else
    hutch_context_set_progress(cli->ctx, NULL, NULL);
  /* This process is the VM's supervisor once it is ready: none is started beside it, and
   * libvirt's event loop is in place before the first connection. */
  hutch_context_set_supervisor_program(cli->ctx, NULL);
  g_autoptr(GError) prepare_error = NULL;
  gboolean supervise = hutch_supervise_prepare(&prepare_error);
  if (!supervise)
    fprintf(stderr, "hutch: %s; waiting without a supervisor\n", prepare_error->message);
  /* The helpers the start runs (each through a fork that exits, or forking itself into the
   * background) become this process's children, which its loop reaps (after the event loop's
   * registration: this connects) */
  g_autoptr(GError) adopt_error = NULL;
  if (!hutch_context_adopt_helpers(cli->ctx, &adopt_error))
    fprintf(stderr, "hutch: %s; the VM's helpers will not be its children\n",
            adopt_error->message);
  notify("STATUS=%s: starting", name);

  StartJob job = {.ctx = cli->ctx, .name = name, .done_fd = done[1]};
  GThread *thread = g_thread_new("start", start_thread, &job);
  int status = EXIT_OK;
  gboolean started = FALSE, stopping = FALSE;
  while (!started) {
    struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = done[0], .events = POLLIN}};
    if (poll(fds, 2, stopping ? 1000 : -1) < 0 && errno != EINTR)
      break;
    if (fds[1].revents & POLLIN) {
      started = TRUE;
    } else if (fds[0].revents & POLLIN) {
      int signo = read_signal(sfd);
      fprintf(stderr, "%s while starting: stopping %s\n", g_strsignal(signo), name);
      notify("STOPPING=1\nSTATUS=%s: stopping", name);
      stopping = TRUE;
    }
    /* Stopped again until the start gives up: it might have been about to start the
     * domain when the first stop looked. */
    if (stopping && !stop_vm(cli, name))
      status = EXIT_FAILED;
  }
  g_thread_join(thread);
  close(done[0]);
  close(done[1]);

  if (stopping) {
    g_clear_error(&job.error);
    if (job.ok && !stop_vm(cli, name))
      status = EXIT_FAILED;
    close(sfd);
    return status;
  }
  if (!job.ok) {
    notify("STATUS=%s: failed to start", name);
    status = cli_error(job.error);
    g_clear_error(&job.error);
    close(sfd);
    return status;
  }

  notify("READY=1\nSTATUS=%s: ready (hutch shell %s)", name, name);
  fprintf(stderr, "%s is ready; supervising it until it stops\n", name);
  if (supervise) {
    HutchSuperviseEnd end = HUTCH_SUPERVISE_LOST;
    g_autoptr(GError) error = NULL;
    if (hutch_supervise_full(cli->ctx, name, &end, &error) != 0)
      fprintf(stderr, "hutch: supervising %s: %s\n", name, error->message);
    if (end == HUTCH_SUPERVISE_DOMAIN_STOPPED) {
      fprintf(stderr, "%s stopped\n", name);
      notify("STOPPING=1\nSTATUS=%s: stopped", name);
      close(sfd);
      return stop_vm(cli, name) ? EXIT_OK : EXIT_FAILED;
    }
    if (end == HUTCH_SUPERVISE_SIGNAL) {
      fprintf(stderr, "shutting %s down\n", name);
      notify("STOPPING=1\nSTATUS=%s: shutting down", name);
      close(sfd);
      return stop_vm(cli, name) ? EXIT_OK : EXIT_FAILED;
    }
    /* the session or libvirt's connection ended: watch the domain as before */
    fprintf(stderr, "%s: no longer supervising (commands connect directly); waiting until it "
                    "stops\n",
            name);
  }
  for (;;) {
    struct pollfd pfd = {.fd = sfd, .events = POLLIN};
    if (poll(&pfd, 1, 0) > 0) {
      int signo = read_signal(sfd);
      fprintf(stderr, "%s: shutting %s down\n", g_strsignal(signo), name);
      notify("STOPPING=1\nSTATUS=%s: shutting down", name);
      status = stop_vm(cli, name) ? EXIT_OK : EXIT_FAILED;
      break;
    }
    g_autoptr(GError) error = NULL;
    gboolean stopped = FALSE;
    if (!hutch_instance_wait_stopped(cli->ctx, name, 1000, &stopped, &error)) {
      status = cli_error(error);
      break;
    }
    if (stopped) {
      /* Stopped from elsewhere (hutch stop, virsh, a power-off in the guest): the helpers
       * go with it. */
      fprintf(stderr, "%s stopped\n", name);
      notify("STOPPING=1\nSTATUS=%s: stopped", name);
      status = stop_vm(cli, name) ? EXIT_OK : EXIT_FAILED;
      break;
    }
  }
  close(sfd);
  return status;
}
