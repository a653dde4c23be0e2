/* sshd-fixture.c: the throw-away sshd that test-ssh and test-forward log in to. */
#include "config.h"

#include "sshd-fixture.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ssh-private.h"
#include "util-private.h"

#define SSHD "/usr/sbin/sshd"

/* What the exit and abort handlers clean up. */
static SshdFixture *active;
/* The test program itself: a forked child that aborts must not stop the parent's server. */
static pid_t test_pid;

gboolean sshd_fixture_ready(const SshdFixture *fx) {
  if (!fx->skip)
    return TRUE;
  if (g_strcmp0(g_getenv("HUTCH_ALLOW_SKIP"), "1") == 0)
    g_test_skip(fx->skip);
  else
    g_test_fail_printf("%s (set HUTCH_ALLOW_SKIP=1 to skip)", fx->skip);
  return FALSE;
}

void sshd_fixture_dump_log(const SshdFixture *fx) {
  if (!fx->server_dir)
    return;
  g_autofree char *path = g_build_filename(fx->server_dir, "sshd.log", NULL);
  g_autofree char *log = NULL;
  if (g_file_get_contents(path, &log, NULL, NULL))
    fprintf(stderr, "# sshd.log:\n%s", log);
}

void sshd_fixture_stop(SshdFixture *fx) {
  if (fx->pid > 0) {
    kill(fx->pid, SIGTERM);
    fx->pid = 0;
  }
  if (fx->dir && g_getenv("HUTCH_KEEP_TEST_DIR") == NULL)
    hutch_rmtree(fx->dir, NULL);
  g_clear_pointer(&fx->skip, g_free);
  g_clear_pointer(&fx->dir, g_free);
  g_clear_pointer(&fx->server_dir, g_free);
  g_clear_pointer(&fx->home, g_free);
  g_clear_pointer(&fx->key, g_free);
  g_clear_pointer(&fx->host_key, g_free);
  g_clear_pointer(&fx->authorized_keys, g_free);
}

static void stop_active(void) {
  if (active && getpid() == test_pid)
    sshd_fixture_stop(active);
}

static void on_abort(int signo) {
  /* A failed assertion (GLib aborts) must not leave sshd or files behind. Not async-signal
   * safe, but the aborts that matter come from assertions in ordinary code. */
  if (active && getpid() == test_pid) {
    sshd_fixture_dump_log(active);
    sshd_fixture_stop(active);
  }
  signal(signo, SIG_DFL);
  raise(signo);
}

/* Runs test-sshd.sh; on failure fx->skip says why. */
static void run_server(SshdFixture *fx, const char *purpose) {
  const char *sshd = g_getenv("HUTCH_TEST_SSHD") ? g_getenv("HUTCH_TEST_SSHD") : SSHD;
  if (!g_file_test(sshd, G_FILE_TEST_IS_EXECUTABLE)) {
    fx->skip = g_strdup_printf("%s is missing: %s need openssh-server", sshd, purpose);
    return;
  }
  const char *source_dir = g_getenv("HUTCH_SOURCE_DIR");
  g_autofree char *script =
      g_build_filename(source_dir ? source_dir : HUTCH_SOURCE_DIR, "tools", "test-sshd.sh", NULL);
  fx->server_dir = g_build_filename(fx->dir, "sshd", NULL);
  fx->home = g_build_filename(fx->server_dir, "home", NULL);
  fx->key = g_build_filename(fx->dir, "id_ed25519", NULL);
  fx->authorized_keys = g_build_filename(fx->dir, "authorized_keys", NULL);

  g_autofree char *private_key = NULL;
  g_autofree char *public_key = NULL;
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_ssh_generate_keypair("test-client", &private_key, &public_key, &error));
  g_assert_true(hutch_write_file(fx->key, private_key, strlen(private_key), 0600, &error));
  g_autofree char *pub_path = g_strconcat(fx->key, ".pub", NULL);
  g_autofree char *line = g_strconcat(public_key, "\n", NULL);
  g_assert_true(hutch_write_file(pub_path, line, strlen(line), 0644, &error));
  g_assert_true(hutch_write_file(fx->authorized_keys, line, strlen(line), 0600, &error));
  g_assert_no_error(error);

  const char *argv[] = {"bash", script, fx->server_dir, fx->authorized_keys, NULL};
  g_auto(GStrv) envp = g_environ_setenv(g_get_environ(), "SSHD", sshd, TRUE);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  int status = 0;
  if (!g_spawn_sync(NULL, (char **)argv, envp, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status,
                    &error) ||
      !g_spawn_check_wait_status(status, NULL)) {
    fx->skip =
        g_strdup_printf("starting sshd failed: %s", error ? error->message : g_strstrip(err));
    return;
  }
  fx->port = (guint)g_ascii_strtoull(out, NULL, 10);
  g_autofree char *pid_path = g_build_filename(fx->server_dir, "sshd.pid", NULL);
  g_autofree char *pid_text = NULL;
  g_assert_true(g_file_get_contents(pid_path, &pid_text, NULL, NULL));
  fx->pid = (pid_t)g_ascii_strtoll(pid_text, NULL, 10);
  g_autofree char *host_pub = g_build_filename(fx->server_dir, "host_ed25519_key.pub", NULL);
  g_assert_true(g_file_get_contents(host_pub, &fx->host_key, NULL, NULL));
  g_strstrip(fx->host_key);
  g_assert_cmpuint(fx->port, >, 0);
}

void sshd_fixture_start(SshdFixture *fx, const char *name, const char *purpose) {
  g_assert_null(active);
  active = fx;
  test_pid = getpid();
  g_autofree char *template = g_strdup_printf("hutch-test-%s-XXXXXX", name);
  fx->dir = g_dir_make_tmp(template, NULL);
  g_assert_nonnull(fx->dir);
  signal(SIGABRT, on_abort);
  /* GLib exits on its own after a failed test: clean up then too. */
  atexit(stop_active);
  run_server(fx, purpose);
}
