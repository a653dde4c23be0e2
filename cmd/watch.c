/* watch.c: signals during a verb that made a VM it must not leave behind (run, template
 * create). */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* Whether the VM runs (or is anything but stopped or missing). */
static gboolean vm_is_up(HutchContext *ctx, const char *vm) {
  g_autoptr(JsonObject) info = hutch_instance_info(ctx, vm, NULL);
  if (!info)
    return FALSE;
  const char *state = json_object_get_string_member_with_default(info, "state", "missing");
  return strcmp(state, "stopped") != 0 && strcmp(state, "missing") != 0;
}

/* Waits for SIGINT, SIGTERM or SIGHUP (blocked in every thread) and powers the VM off, so that
 * whatever the main thread waits on (the boot, a command's channel) ends at once; the main
 * thread then removes what it made. Until the verb is over (SIGUSR1), the VM is powered off
 * again whenever it is found running, so that a step the main thread had not begun when the
 * signal came (the copy of a template create is booted after the source's shutdown) fails
 * at once instead of running to its end. A second signal leaves at once. */
static gpointer watch_thread(gpointer data) {
  CliWatch *w = data;
  int signo = 0;
  if (sigwait(&w->signals, &signo) != 0 || signo == SIGUSR1)
    return NULL;
  g_atomic_int_set(&w->signo, signo);
  fprintf(stderr, "\nhutch: %s: %s (again to leave at once)\n", g_strsignal(signo), w->doing);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new(w->uri, &error);
  for (;;) {
    if (ctx && vm_is_up(ctx, w->vm))
      hutch_instance_stop(ctx, w->vm, TRUE, NULL);
    struct timespec second = {.tv_sec = 1};
    int next = sigtimedwait(&w->signals, NULL, &second);
    if (next == SIGUSR1)
      return NULL;
    if (next > 0) {
      fprintf(stderr, "hutch: %s again: leaving now; %s may be left behind (hutch delete --force "
                      "%s)\n",
              g_strsignal(next), w->vm, w->vm);
      _exit(128 + next);
    }
  }
}

void cli_watch_begin(CliWatch *w, Cli *cli, const char *vm, const char *doing) {
  w->uri = hutch_context_get_uri(cli->ctx);
  w->vm = vm;
  w->doing = doing;
  w->signo = 0;
  sigemptyset(&w->signals);
  sigaddset(&w->signals, SIGINT);
  sigaddset(&w->signals, SIGTERM);
  sigaddset(&w->signals, SIGHUP);
  sigaddset(&w->signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &w->signals, &w->saved);
  w->thread = g_thread_new("watch", watch_thread, w);
}

int cli_watch_signo(CliWatch *w) { return g_atomic_int_get(&w->signo); }

int cli_watch_end(CliWatch *w) {
  /* blocked everywhere: the watcher's sigwait (or, after a signal, its sigtimedwait) takes
   * it */
  kill(getpid(), SIGUSR1);
  g_thread_join(w->thread);
  pthread_sigmask(SIG_SETMASK, &w->saved, NULL);
  return g_atomic_int_get(&w->signo);
}
