/* watch.c: signals during a verb that made a VM it must not leave behind (run, template
 * create). */
#include "config.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "cli.h"

/* Waits for SIGINT, SIGTERM or SIGHUP (blocked in every thread) and powers the VM off, so that
 * whatever the main thread waits on (the boot, a command's channel) ends at once; the main
 * thread then removes what it made. SIGUSR1 ends it when the verb is over. */
static gpointer watch_thread(gpointer data) {
  CliWatch *w = data;
  int signo = 0;
  if (sigwait(&w->signals, &signo) != 0 || signo == SIGUSR1)
    return NULL;
  g_atomic_int_set(&w->signo, signo);
  fprintf(stderr, "\nhutch: %s: %s\n", g_strsignal(signo), w->doing);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new(w->uri, &error);
  if (ctx)
    hutch_instance_stop(ctx, w->vm, TRUE, NULL);
  return NULL;
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
  int signo = g_atomic_int_get(&w->signo);
  if (!signo)
    kill(getpid(), SIGUSR1); /* blocked everywhere: the watcher's sigwait takes it */
  g_thread_join(w->thread);
  pthread_sigmask(SIG_SETMASK, &w->saved, NULL);
  return g_atomic_int_get(&w->signo);
}
