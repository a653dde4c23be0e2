/* sshd-fixture.h: a real, unprivileged OpenSSH sshd on 127.0.0.1 for the unit tests that need
 * one (test-ssh, test-forward), started by tools/test-sshd.sh. sshd is a CI dependency
 * (openssh-server): without it the tests that need the server fail, unless
 * HUTCH_ALLOW_SKIP=1, when they are skipped. HUTCH_TEST_SSHD names another sshd (or a missing
 * one, to check that the tests then fail); HUTCH_KEEP_TEST_DIR=1 keeps the test's directory. */
#pragma once

#include <sys/types.h>

#include <glib.h>

typedef struct {
  char *skip;       /* why the server cannot run, or NULL */
  char *dir;        /* everything the test makes, removed at the end */
  char *server_dir; /* test-sshd.sh's directory: sshd_config, sshd.log, sshd.pid, host key */
  char *home;       /* SFTP's start directory on the server, i.e. "~" */
  char *key;        /* the client's private key file (the public half beside it, .pub) */
  char *host_key;   /* the server's public host key line, to pin */
  char *authorized_keys;
  guint port;
  pid_t pid; /* the server's */
} SshdFixture;

/* Makes fx->dir (a new hutch-test-NAME-XXXXXX in the temporary directory) and starts the
 * server there; when it cannot start, fx->skip says why, and PURPOSE ("the SSH tests") says
 * who needs it. Stops the server and removes the directory at exit and on an abort (a failed
 * assertion), then first copying sshd.log to stderr. One fixture a program; call it after
 * g_test_init(). */
void sshd_fixture_start(SshdFixture *fx, const char *name, const char *purpose);

/* For a test that needs the server: TRUE when it runs; otherwise marks the test failed, or
 * skipped when HUTCH_ALLOW_SKIP=1. */
gboolean sshd_fixture_ready(const SshdFixture *fx);

/* Copies the server's log to stderr: it often says why a login or a channel was refused. */
void sshd_fixture_dump_log(const SshdFixture *fx);

/* Stops the server, removes fx->dir (unless HUTCH_KEEP_TEST_DIR is set) and frees the
 * fixture's fields. Safe to call twice. */
void sshd_fixture_stop(SshdFixture *fx);
