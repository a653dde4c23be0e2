/* test-ssh.c: the SSH module against a real, unprivileged OpenSSH sshd on 127.0.0.1
 * (sshd-fixture.h). sshd is a CI dependency (openssh-server): without it the tests fail,
 * unless HUTCH_ALLOW_SKIP=1, when they are skipped. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <glib-unix.h>
#include <glib/gstdio.h>

#include "ssh-private.h"
#include "sshd-fixture.h"
#include "util-private.h"

#define TIMEOUT_MS 10000

static SshdFixture fx;

/* ---- Helpers -------------------------------------------------------------------------- */

static HutchSsh *connect_ok(void) {
  g_autoptr(GError) error = NULL;
  HutchSsh *ssh = hutch_ssh_connect("127.0.0.1", fx.port, g_get_user_name(), fx.key, fx.host_key,
                                    TIMEOUT_MS, &error);
  g_assert_no_error(error);
  g_assert_nonnull(ssh);
  return ssh;
}

static char *sha256_file(const char *path) {
  g_autofree char *data = NULL;
  gsize len = 0;
  g_autoptr(GError) error = NULL;
  g_file_get_contents(path, &data, &len, &error);
  g_assert_no_error(error);
  return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

static void write_random_file(const char *path, gsize len, guint32 seed, int mode) {
  g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
  g_autofree guint32 *data = g_new(guint32, len / 4 + 1);
  for (gsize i = 0; i < len / 4 + 1; i++)
    data[i] = g_rand_int(rand);
  g_autoptr(GError) error = NULL;
  g_assert_true(g_file_set_contents_full(path, (const char *)data, (gssize)len,
                                         G_FILE_SET_CONTENTS_NONE, mode, &error));
  g_assert_no_error(error);
  g_assert_cmpint(g_chmod(path, mode), ==, 0);
}

/* Printable text with newlines, so that it can go through a C string. */
static char *random_text(gsize len, guint32 seed) {
  g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
  char *text = g_malloc(len + 1);
  for (gsize i = 0; i < len; i++)
    text[i] = g_rand_int_range(rand, 0, 64) == 0 ? '\n' : (char)g_rand_int_range(rand, 32, 127);
  text[len] = '\0';
  return text;
}

static int file_mode(const char *path) {
  GStatBuf st;
  g_assert_cmpint(g_lstat(path, &st), ==, 0);
  return st.st_mode & 07777;
}

static char *run_capture(const char *const *argv) {
  g_autofree char *out = NULL;
  int status = 0;
  g_autoptr(GError) error = NULL;
  g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, NULL, &status,
               &error);
  g_assert_no_error(error);
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  return g_steal_pointer(&out);
}

/* The fingerprint as OpenSSH's own ssh-keygen prints it, to check ours against. */
static char *openssh_fingerprint(const char *public_key_line) {
  g_autofree char *path = g_build_filename(fx.dir, "fp.pub", NULL);
  g_assert_true(g_file_set_contents(path, public_key_line, -1, NULL));
  const char *argv[] = {"ssh-keygen", "-l", "-E", "sha256", "-f", path, NULL};
  g_autofree char *out = run_capture(argv);
  g_auto(GStrv) words = g_strsplit(out, " ", -1);
  g_assert_cmpuint(g_strv_length(words), >=, 2);
  g_assert_true(g_str_has_prefix(words[1], "SHA256:"));
  return g_strdup(words[1]);
}

/* Same names, types, modes and contents; symbolic links in a are expected to be skipped. */
static void assert_same_tree(const char *a, const char *b) {
  g_assert_cmpint(file_mode(a), ==, file_mode(b));
  g_autoptr(GDir) dir = g_dir_open(a, 0, NULL);
  g_assert_nonnull(dir);
  guint expected = 0;
  const char *name;
  while ((name = g_dir_read_name(dir))) {
    g_autofree char *pa = g_build_filename(a, name, NULL);
    g_autofree char *pb = g_build_filename(b, name, NULL);
    GStatBuf sa, sb;
    g_assert_cmpint(g_lstat(pa, &sa), ==, 0);
    if (S_ISLNK(sa.st_mode)) {
      g_assert_cmpint(g_lstat(pb, &sb), <, 0);
      continue;
    }
    expected++;
    g_assert_cmpint(g_lstat(pb, &sb), ==, 0);
    g_assert_cmpint(sa.st_mode, ==, sb.st_mode);
    if (S_ISDIR(sa.st_mode)) {
      assert_same_tree(pa, pb);
    } else {
      g_autofree char *ha = sha256_file(pa);
      g_autofree char *hb = sha256_file(pb);
      g_assert_cmpstr(ha, ==, hb);
    }
  }
  g_autoptr(GDir) other = g_dir_open(b, 0, NULL);
  guint found = 0;
  while (g_dir_read_name(other))
    found++;
  g_assert_cmpuint(found, ==, expected);
}

/* ---- Connecting ----------------------------------------------------------------------- */

static void test_exec_capture(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "echo hi", NULL, &out, &err, &error), ==, 0);
  g_assert_no_error(error);
  g_assert_cmpstr(out, ==, "hi\n");
  g_assert_cmpstr(err, ==, "");
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "exit 7", NULL, NULL, NULL, &error), ==, 7);
  g_assert_no_error(error);

  g_assert_cmpint(
      hutch_ssh_exec_capture(ssh, "echo out; echo err >&2; echo out2", NULL, &out, &err, &error),
      ==, 0);
  g_assert_no_error(error);
  g_assert_cmpstr(out, ==, "out\nout2\n");
  g_assert_cmpstr(err, ==, "err\n");
  g_clear_pointer(&out, g_free);
  g_clear_pointer(&err, g_free);

  /* Killed by a signal: 128+N, as shells report it. */
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "kill -TERM $$", NULL, NULL, NULL, &error), ==,
                  128 + SIGTERM);
  g_assert_no_error(error);

  /* The exit status arrives after the output has ended. */
  g_assert_cmpint(
      hutch_ssh_exec_capture(ssh, "exec >&- 2>&-; sleep 0.3; exit 3", NULL, NULL, NULL, &error), ==,
      3);
  g_assert_no_error(error);

  /* Input that the command never reads is not an error. */
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "true", "ignored\n", NULL, NULL, &error), ==, 0);
  g_assert_no_error(error);
}

static void test_exec_stdin(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *text = random_text(1024 * 1024, 1);
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  /* More than the channel windows hold in both directions at once: no deadlock. */
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "cat", text, &out, &err, &error), ==, 0);
  g_assert_no_error(error);
  g_assert_cmpuint(strlen(out), ==, strlen(text));
  g_autofree char *want = g_compute_checksum_for_string(G_CHECKSUM_SHA256, text, -1);
  g_autofree char *got = g_compute_checksum_for_string(G_CHECKSUM_SHA256, out, -1);
  g_assert_cmpstr(got, ==, want);
  g_assert_cmpstr(err, ==, "");
  g_clear_pointer(&out, g_free);

  /* The server's own checksum: stdin really arrived whole, with its end. */
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "sha256sum", text, &out, NULL, &error), ==, 0);
  g_assert_no_error(error);
  g_assert_true(g_str_has_prefix(out, want));
}

/* A guest that sends without end: a capture stops at its bound, with an error, and does not
 * wait for the command to end. */
static void test_exec_capture_bounded(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  /* (16 MiB through libssh2 takes valgrind a while: once is enough, stderr has the same
   * path) */
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "echo err >&2; exec yes", NULL, &out, &err, &error),
                  ==, -1);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
  g_assert_cmpstr(error->message, ==, "the command's output is larger than 16 MiB: it was stopped");
  g_assert_null(out);
  g_assert_null(err);
  g_clear_error(&error);

  /* the session is still good */
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "echo hi", NULL, &out, NULL, &error), ==, 0);
  g_assert_no_error(error);
  g_assert_cmpstr(out, ==, "hi\n");
}

typedef struct {
  gsize total;
  guint calls;
  gsize stop_after; /* 0: never */
} StreamSink;

static gboolean stream_sink(const char *data, gsize len, gpointer user_data, GError **error) {
  StreamSink *sink = user_data;
  for (gsize i = 0; i < len; i++)
    g_assert_true(data[i] == 'y' || data[i] == '\n' || data[i] == 'x');
  sink->total += len;
  sink->calls++;
  if (sink->stop_after && sink->total >= sink->stop_after) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "enough");
    return FALSE;
  }
  return TRUE;
}

static void test_exec_stream(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;

  /* in pieces, whatever the size, stderr dropped */
  StreamSink all = {0};
  g_assert_cmpint(hutch_ssh_exec_stream(ssh,
                                        "head -c 3000000 /dev/zero | tr '\\0' x; "
                                        "echo err >&2; exit 4",
                                        stream_sink, &all, &error),
                  ==, 4);
  g_assert_no_error(error);
  g_assert_cmpuint(all.total, ==, 3000000);
  g_assert_cmpuint(all.calls, >, 1);

  /* the sink's error stops a command that would never end */
  StreamSink some = {.stop_after = 1024 * 1024};
  g_assert_cmpint(hutch_ssh_exec_stream(ssh, "yes", stream_sink, &some, &error), ==, -1);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
  g_assert_cmpstr(error->message, ==, "enough");
}

static void test_host_key_mismatch(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autofree char *other_private = NULL;
  g_autofree char *other_public = NULL;
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_ssh_generate_keypair("impostor", &other_private, &other_public, &error));
  g_assert_no_error(error);

  g_autoptr(HutchSsh) ssh = hutch_ssh_connect("127.0.0.1", fx.port, g_get_user_name(), fx.key,
                                              other_public, TIMEOUT_MS, &error);
  g_assert_null(ssh);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_HOST_KEY);
  g_autofree char *offered = openssh_fingerprint(fx.host_key);
  g_autofree char *pinned = openssh_fingerprint(other_public);
  g_test_message("%s", error->message);
  g_assert_nonnull(strstr(error->message, offered));
  g_assert_nonnull(strstr(error->message, pinned));
  g_assert_nonnull(strstr(error->message, "attack"));
  g_clear_error(&error);

  /* A pin that is no key at all is refused before connecting. */
  ssh = hutch_ssh_connect("127.0.0.1", fx.port, g_get_user_name(), fx.key,
                          "ssh-ed25519 bm90IGEga2V5", TIMEOUT_MS, &error);
  g_assert_null(ssh);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED);
}

static guint closed_port(int *ret_listening_fd, gboolean keep_listening) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint(fd, >=, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof addr), ==, 0);
  socklen_t len = sizeof addr;
  g_assert_cmpint(getsockname(fd, (struct sockaddr *)&addr, &len), ==, 0);
  if (keep_listening) {
    g_assert_cmpint(listen(fd, 4), ==, 0);
    *ret_listening_fd = fd;
  } else {
    close(fd);
  }
  return ntohs(addr.sin_port);
}

static void test_connect_failures(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(GError) error = NULL;

  /* Refused: at once. */
  guint port = closed_port(NULL, FALSE);
  double start = hutch_now();
  g_autoptr(HutchSsh) ssh = hutch_ssh_connect("127.0.0.1", port, g_get_user_name(), fx.key,
                                              fx.host_key, TIMEOUT_MS, &error);
  g_assert_null(ssh);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH);
  g_assert_nonnull(strstr(error->message, "refused"));
  g_assert_cmpfloat(hutch_now() - start, <, 2.0);
  g_clear_error(&error);

  /* A server that accepts and never speaks (a booting guest behind a port forward): the
   * timeout bounds the handshake. */
  int listening = -1;
  port = closed_port(&listening, TRUE);
  start = hutch_now();
  ssh = hutch_ssh_connect("127.0.0.1", port, g_get_user_name(), fx.key, fx.host_key, 500, &error);
  double elapsed = hutch_now() - start;
  close(listening);
  g_assert_null(ssh);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH);
  g_assert_cmpfloat(elapsed, >=, 0.4);
  g_assert_cmpfloat(elapsed, <, 3.0);
  g_clear_error(&error);

  /* A key the server does not know. */
  g_autofree char *stranger = g_build_filename(fx.dir, "stranger", NULL);
  const char *argv[] = {"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger, NULL};
  g_free(run_capture(argv));
  ssh = hutch_ssh_connect("127.0.0.1", fx.port, g_get_user_name(), stranger, fx.host_key,
                          TIMEOUT_MS, &error);
  g_assert_null(ssh);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_SSH);
  g_assert_nonnull(strstr(error->message, "authenticating"));
}

/* ---- Quoting -------------------------------------------------------------------------- */

static void test_quote(void) {
  char *simple[] = {"ls", "-la", "/tmp/x_y.z", "a b", "it's", "", "FOO=bar", "~", NULL};
  g_autofree char *line = hutch_shell_quote_argv(simple);
  g_assert_cmpstr(line, ==, "ls -la /tmp/x_y.z 'a b' 'it'\\''s' '' 'FOO=bar' '~'");
  char *none[] = {NULL};
  g_autofree char *empty = hutch_shell_quote_argv(none);
  g_assert_cmpstr(empty, ==, "");

  if (!sshd_fixture_ready(&fx))
    return;
  char *words[] = {
      "printf",
      "%s\\n",
      "plain",
      "with space",
      "  leading and trailing  ",
      "it's",
      "'",
      "''",
      "\"double\"",
      "$(touch pwned)",
      "`touch pwned`",
      "$HOME",
      "${PATH}",
      "a\nb",
      "\n",
      "tab\there",
      "back\\slash",
      "*",
      "?",
      "[a]",
      "~",
      "~/x",
      "a;b",
      "a|b",
      "a&b",
      "<in",
      ">out",
      "#hash",
      "!bang",
      "-n",
      "--",
      "",
      "naïve ✓",
      "%d",
      NULL,
  };
  g_autofree char *command = hutch_shell_quote_argv(words);
  g_autoptr(GString) want = g_string_new(NULL);
  for (gsize i = 2; words[i]; i++)
    g_string_append_printf(want, "%s\n", words[i]);

  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, command, NULL, &out, &err, &error), ==, 0);
  g_assert_no_error(error);
  g_assert_cmpstr(err, ==, "");
  g_assert_cmpstr(out, ==, want->str);
}

/* ---- Interactive ---------------------------------------------------------------------- */

/* Runs exec_interactive in a child whose stdin, stdout and stderr are the given descriptors
 * (as `hutch shell` would see them) and returns the child's pid; its exit status is the
 * command's, 100 on an error, 99 when the terminal was not restored. */
static pid_t spawn_interactive(const char *command, gboolean pty, int in_fd, int out_fd, int err_fd,
                               int ctty) {
  fflush(stdout);
  fflush(stderr);
  pid_t parent = getpid();
  pid_t pid = fork();
  g_assert_cmpint(pid, >=, 0);
  if (pid > 0)
    return pid;
  /* A failed assertion aborts the test while this child may still wait on its terminal: it
   * must go with the test, not hold meson's output pipe open until meson's own timeout. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
    _exit(98);
  if (ctty >= 0) {
    setsid();
    ioctl(ctty, TIOCSCTTY, 0);
  }
  dup2(in_fd, STDIN_FILENO);
  dup2(out_fd, STDOUT_FILENO);
  dup2(err_fd, STDERR_FILENO);
  struct termios before = {0}, after = {0};
  gboolean tty = isatty(STDIN_FILENO);
  if (tty)
    tcgetattr(STDIN_FILENO, &before);
  HutchSsh *ssh = hutch_ssh_connect("127.0.0.1", fx.port, g_get_user_name(), fx.key, fx.host_key,
                                    TIMEOUT_MS, NULL);
  int status = ssh ? hutch_ssh_exec_interactive(ssh, command, pty, NULL) : -1;
  hutch_ssh_free(ssh);
  if (tty) {
    tcgetattr(STDIN_FILENO, &after);
    if (before.c_lflag != after.c_lflag || before.c_iflag != after.c_iflag ||
        before.c_oflag != after.c_oflag)
      _exit(99);
  }
  _exit(status < 0 ? 100 : status);
}

static int wait_child(pid_t pid) {
  int wstatus = 0;
  g_assert_cmpint(waitpid(pid, &wstatus, 0), ==, pid);
  g_assert_true(WIFEXITED(wstatus));
  return WEXITSTATUS(wstatus);
}

static void test_interactive_stream(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  const gsize size = 10 * 1024 * 1024;
  g_autofree char *in_path = g_build_filename(fx.dir, "stream-in", NULL);
  g_autofree char *err_path = g_build_filename(fx.dir, "stream-err", NULL);
  write_random_file(in_path, size, 2, 0600);
  g_autofree char *want = sha256_file(in_path);

  int in_fd = open(in_path, O_RDONLY | O_CLOEXEC);
  int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int pipe_fds[2];
  g_assert_cmpint(pipe(pipe_fds), ==, 0);
  /* Binary data in both directions, and a stdout pipe that the parent drains slowly enough
   * to push back. */
  pid_t pid =
      spawn_interactive("cat; echo done >&2; exit 5", FALSE, in_fd, pipe_fds[1], err_fd, -1);
  close(pipe_fds[1]);
  close(in_fd);
  close(err_fd);
  g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
  gsize total = 0;
  char buf[65536];
  ssize_t n;
  while ((n = read(pipe_fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) {
      g_checksum_update(sum, (const guchar *)buf, n);
      total += (gsize)n;
    }
  }
  close(pipe_fds[0]);
  g_assert_cmpint(wait_child(pid), ==, 5);
  g_assert_cmpuint(total, ==, size);
  g_assert_cmpstr(g_checksum_get_string(sum), ==, want);
  g_autofree char *err_text = NULL;
  g_assert_true(g_file_get_contents(err_path, &err_text, NULL, NULL));
  g_assert_cmpstr(err_text, ==, "done\n");
}

/* Reads the pty master until needle shows up or the child is gone; returns what it read. */
static void read_until(int master, GString *seen, const char *needle) {
  /* generous: it only runs out on a failure, and under valgrind on a loaded machine the
   * child's SSH session alone has taken most of 10 s */
  double deadline = hutch_now() + 30;
  while (!strstr(seen->str, needle) && hutch_now() < deadline) {
    struct pollfd pfd = {.fd = master, .events = POLLIN};
    if (poll(&pfd, 1, 200) <= 0)
      continue;
    char buf[4096];
    ssize_t n = read(master, buf, sizeof buf);
    if (n <= 0)
      break;
    g_string_append_len(seen, buf, n);
  }
}

static void test_interactive_pty(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  int master = -1, slave = -1;
  struct winsize ws = {.ws_row = 33, .ws_col = 111};
  g_assert_cmpint(openpty(&master, &slave, NULL, NULL, &ws), ==, 0);
  g_unix_set_fd_nonblocking(master, TRUE, NULL);
  /* sshd gives a PTY to the user and the tty group; unprivileged, it can do so only when the
   * kernel already did (devpts mounted with gid=5, as on a normal system, not in some
   * containers) or when the user is in that group. Otherwise the server, not hutch, kills
   * the session. */
  struct stat st;
  struct group *tty_group = getgrnam("tty");
  gboolean in_tty_group = FALSE;
  gid_t groups[256];
  int n_groups = getgroups(G_N_ELEMENTS(groups), groups);
  for (int i = 0; tty_group && i < n_groups; i++)
    in_tty_group = in_tty_group || groups[i] == tty_group->gr_gid;
  if (getuid() != 0 && !in_tty_group && fstat(slave, &st) == 0 &&
      (!tty_group || st.st_gid != tty_group->gr_gid)) {
    g_test_skip("unprivileged sshd cannot hand out PTYs here (devpts is not mounted with "
                "gid=tty): run as root or in group tty to test PTYs");
    close(master);
    close(slave);
    return;
  }

  /* The size follows the local terminal, at start and on SIGWINCH; TERM is passed on. */
  g_setenv("TERM", "xterm-hutch-test", TRUE);
  /* Under valgrind the SIGWINCH may be handled after the typed line went out: the remote side
   * waits a little for the new size. */
  pid_t pid = spawn_interactive("tty; echo \"term=$TERM\"; stty size; read x; "
                                "for i in $(seq 50); do s=$(stty size); "
                                "[ \"$s\" != '33 111' ] && break; sleep 0.1; done; "
                                "echo \"now $s\"; exit 4",
                                TRUE, slave, slave, slave, slave);
  g_unsetenv("TERM");
  g_autoptr(GString) seen = g_string_new(NULL);
  read_until(master, seen, "33 111");
  g_test_message("terminal: %s", seen->str);
  g_assert_nonnull(strstr(seen->str, "33 111"));
  g_assert_nonnull(strstr(seen->str, "/dev/pts/"));
  g_assert_nonnull(strstr(seen->str, "term=xterm-hutch-test"));

  ws = (struct winsize){.ws_row = 44, .ws_col = 122};
  g_assert_cmpint(ioctl(master, TIOCSWINSZ, &ws), ==, 0);
  g_assert_cmpint(write(master, "\r", 1), ==, 1);
  read_until(master, seen, "now 44 122");
  g_test_message("terminal after resizing: %s", seen->str);
  g_assert_nonnull(strstr(seen->str, "now 44 122"));
  g_assert_cmpint(wait_child(pid), ==, 4);

  /* No command: a login shell on the PTY. */
  g_string_truncate(seen, 0);
  pid = spawn_interactive(NULL, TRUE, slave, slave, slave, slave);
  const char *typed = "echo \"shell $((6 * 7))\"; exit 6\r";
  g_assert_cmpint(write(master, typed, strlen(typed)), ==, (ssize_t)strlen(typed));
  read_until(master, seen, "shell 42");
  g_assert_nonnull(strstr(seen->str, "shell 42"));
  g_assert_cmpint(wait_child(pid), ==, 6);
  close(slave);
  close(master);
}

/* ---- SFTP ----------------------------------------------------------------------------- */

/* A hostile SFTP server that sends replies to requests never made, without end: libssh2
 * keeps each one (its SFTP packet list) until the session ends, so it would grow the process
 * without end. The session's allocations stop at the limit (lowered here from 256 MiB, to
 * keep the test short under valgrind): the copy fails saying why, nothing is written. */
static void test_sftp_flood(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autofree char *keys = NULL;
  g_assert_true(g_file_get_contents(fx.authorized_keys, &keys, NULL, NULL));
  g_autofree char *server =
      g_build_filename(g_getenv("HUTCH_TEST_DATA"), "ssh", "flood-sftp-server.py", NULL);
  /* the key's forced command replaces the SFTP subsystem: 32 MiB of unasked replies */
  g_autoptr(GString) forced = g_string_new(NULL);
  g_auto(GStrv) lines = g_strsplit(keys, "\n", -1);
  for (guint i = 0; lines[i]; i++)
    if (*lines[i])
      g_string_append_printf(forced, "command=\"python3 %s 512\" %s\n", server, lines[i]);
  g_assert_true(g_file_set_contents(fx.authorized_keys, forced->str, -1, NULL));
  hutch_ssh_set_session_memory_max(16 * 1024 * 1024);

  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *local = g_build_filename(fx.dir, "flood-out", NULL);
  gboolean copied = hutch_ssh_download(ssh, "~/anything", local, FALSE, &error);

  hutch_ssh_set_session_memory_max(0);
  g_assert_true(g_file_set_contents(fx.authorized_keys, keys, -1, NULL));
  g_assert_false(copied);
  g_assert_nonnull(error);
  g_test_message("%s", error->message);
  g_assert_nonnull(strstr(error->message, "sent more than hutch keeps for a session (16 MiB"));
  g_assert_true(hutch_ssh_over_limit(ssh));
  g_assert_false(g_file_test(local, G_FILE_TEST_EXISTS));
  /* the default, which nothing in the environment raised */
  g_autofree char *message = hutch_ssh_over_limit_message();
  g_assert_nonnull(strstr(message, "(256 MiB"));
}

static void test_sftp_file(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *local = g_build_filename(fx.dir, "big.bin", NULL);
  write_random_file(local, 10 * 1024 * 1024, 3, 0751);
  g_autofree char *want = sha256_file(local);

  /* "~/name": the remote home, which test-sshd.sh makes fx.home on this same machine. */
  g_assert_true(hutch_ssh_upload(ssh, local, "~/up.bin", FALSE, &error));
  g_assert_no_error(error);
  g_autofree char *remote_copy = g_build_filename(fx.home, "up.bin", NULL);
  g_assert_cmpint(file_mode(remote_copy), ==, 0751);
  g_autofree char *got = sha256_file(remote_copy);
  g_assert_cmpstr(got, ==, want);
  g_clear_pointer(&got, g_free);

  /* Relative path, back down. */
  g_autofree char *back = g_build_filename(fx.dir, "back.bin", NULL);
  g_assert_true(hutch_ssh_download(ssh, "up.bin", back, FALSE, &error));
  g_assert_no_error(error);
  g_assert_cmpint(file_mode(back), ==, 0751);
  got = sha256_file(back);
  g_assert_cmpstr(got, ==, want);
  g_clear_pointer(&got, g_free);

  /* Into existing directories, like cp: "~" remotely, a directory locally. */
  g_autofree char *small = g_build_filename(fx.dir, "small.txt", NULL);
  g_assert_true(g_file_set_contents(small, "short\n", -1, NULL));
  g_assert_cmpint(g_chmod(small, 0640), ==, 0);
  g_assert_true(hutch_ssh_upload(ssh, small, "~", FALSE, &error));
  g_assert_no_error(error);
  g_autofree char *small_remote = g_build_filename(fx.home, "small.txt", NULL);
  g_assert_cmpint(file_mode(small_remote), ==, 0640);
  g_autofree char *into = g_build_filename(fx.dir, "into", NULL);
  g_assert_cmpint(g_mkdir(into, 0700), ==, 0);
  g_assert_true(hutch_ssh_download(ssh, "~/up.bin", into, FALSE, &error));
  g_assert_no_error(error);
  g_autofree char *into_file = g_build_filename(into, "up.bin", NULL);
  got = sha256_file(into_file);
  g_assert_cmpstr(got, ==, want);
  g_clear_pointer(&got, g_free);

  /* Overwriting a bigger file truncates it, and takes the new mode. */
  g_assert_true(hutch_ssh_upload(ssh, small, "~/up.bin", FALSE, &error));
  g_assert_no_error(error);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(remote_copy, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "short\n");
  g_assert_cmpint(file_mode(remote_copy), ==, 0640);
  g_assert_true(hutch_ssh_download(ssh, "~/small.txt", back, FALSE, &error));
  g_assert_no_error(error);
  g_clear_pointer(&text, g_free);
  g_assert_true(g_file_get_contents(back, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "short\n");

  /* Failures say what is wrong. */
  g_assert_false(hutch_ssh_download(ssh, "~/missing", back, FALSE, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);
  g_clear_pointer(&text, g_free);
  g_assert_true(g_file_get_contents(back, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "short\n");
  g_assert_false(hutch_ssh_upload(ssh, fx.dir, "~/x", FALSE, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_clear_error(&error);
  g_assert_false(hutch_ssh_upload(ssh, small, "~/no/such/dir/f", FALSE, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);
}

static void make_tree(const char *root) {
  g_autofree char *sub = g_build_filename(root, "sub", NULL);
  g_autofree char *deeper = g_build_filename(sub, "deeper", NULL);
  g_autofree char *empty = g_build_filename(root, "empty", NULL);
  g_assert_cmpint(g_mkdir_with_parents(deeper, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(empty, 0700), ==, 0);
  g_autofree char *a = g_build_filename(root, "a.txt", NULL);
  g_autofree char *b = g_build_filename(sub, "b.bin", NULL);
  g_autofree char *c = g_build_filename(deeper, "c with space", NULL);
  g_autofree char *link = g_build_filename(root, "link", NULL);
  write_random_file(a, 1000, 4, 0644);
  write_random_file(b, 300000, 5, 0755);
  write_random_file(c, 0, 6, 0600);
  g_assert_cmpint(symlink("/etc/passwd", link), ==, 0);
  g_assert_cmpint(g_chmod(sub, 0750), ==, 0);
  g_assert_cmpint(g_chmod(empty, 0711), ==, 0);
  g_assert_cmpint(g_chmod(root, 0755), ==, 0);
}

static void test_sftp_recursive(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *tree = g_build_filename(fx.dir, "tree", NULL);
  make_tree(tree);

  /* A new name: the copy is the tree itself. */
  g_assert_true(hutch_ssh_upload(ssh, tree, "~/copy", TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *copy = g_build_filename(fx.home, "copy", NULL);
  assert_same_tree(tree, copy);

  /* An existing directory: the tree goes inside it. */
  g_autofree char *nest = g_build_filename(fx.home, "nest", NULL);
  g_assert_cmpint(g_mkdir(nest, 0700), ==, 0);
  g_assert_true(hutch_ssh_upload(ssh, tree, "~/nest/", TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *nested = g_build_filename(nest, "tree", NULL);
  assert_same_tree(tree, nested);

  /* And back down, to a new name and into an existing directory. */
  g_autofree char *down = g_build_filename(fx.dir, "down", NULL);
  g_assert_true(hutch_ssh_download(ssh, "copy", down, TRUE, &error));
  g_assert_no_error(error);
  assert_same_tree(tree, down);
  g_autofree char *down_into = g_build_filename(fx.dir, "down-into", NULL);
  g_assert_cmpint(g_mkdir(down_into, 0700), ==, 0);
  g_assert_true(hutch_ssh_download(ssh, "~/nest/tree", down_into, TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *down_nested = g_build_filename(down_into, "tree", NULL);
  assert_same_tree(tree, down_nested);

  g_assert_false(hutch_ssh_download(ssh, "~/copy", down, FALSE, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
}

/* A link as a guest would plant it through a share: not root's (given to nobody when the
 * tests run as root, where every link we make would be root's). */
static void plant_link(const char *target, const char *path) {
  g_assert_cmpint(symlink(target, path), ==, 0);
  if (getuid() == 0)
    g_assert_cmpint(lchown(path, 65534, 65534), ==, 0);
}

static void assert_text(const char *path, const char *text) {
  g_autofree char *got = NULL;
  g_assert_true(g_file_get_contents(path, &got, NULL, NULL));
  g_assert_cmpstr(got, ==, text);
}

static void assert_empty_dir(const char *path) {
  g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
  g_assert_nonnull(dir);
  g_assert_null(g_dir_read_name(dir));
}

static void assert_error_has(GError **error, const char *needle) {
  g_assert_nonnull(*error);
  if (!strstr((*error)->message, needle))
    g_error("expected \"%s\" in: %s", needle, (*error)->message);
  g_clear_error(error);
}

static void on_alarm(int signo) {
  /* A copy blocked (on a FIFO): fail, through the fixture's abort handler. */
  abort();
}

/* Downloads never write outside the destination the user named, whatever a guest planted
 * there (through a share of the same VM); uploads never read through a planted link. */
static void test_sftp_planted_links(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *secret = g_build_filename(fx.dir, "secret", NULL);
  g_autofree char *secret_dir = g_build_filename(fx.dir, "secret-dir", NULL);
  g_assert_true(g_file_set_contents(secret, "host secret", -1, NULL));
  g_assert_cmpint(g_mkdir(secret_dir, 0700), ==, 0);
  g_autofree char *remote_file = g_build_filename(fx.home, "guest.txt", NULL);
  g_assert_true(g_file_set_contents(remote_file, "from the guest", -1, NULL));
  g_autofree char *remote_tree = g_build_filename(fx.home, "ltree", NULL);
  g_autofree char *remote_sub = g_build_filename(remote_tree, "sub", NULL);
  g_assert_cmpint(g_mkdir_with_parents(remote_sub, 0755), ==, 0);
  g_autofree char *remote_a = g_build_filename(remote_tree, "a.txt", NULL);
  g_autofree char *remote_b = g_build_filename(remote_sub, "b.txt", NULL);
  g_assert_true(g_file_set_contents(remote_a, "a", -1, NULL));
  g_assert_true(g_file_set_contents(remote_b, "b", -1, NULL));

  /* The destination file is a link: refused, its target unchanged. */
  g_autofree char *file_link = g_build_filename(fx.dir, "dest-link", NULL);
  plant_link(secret, file_link);
  g_assert_false(hutch_ssh_download(ssh, "guest.txt", file_link, FALSE, &error));
  g_autofree char *want =
      g_strdup_printf("refusing to write through the symbolic link %s", file_link);
  assert_error_has(&error, want);
  assert_text(secret, "host secret");

  /* A link to a directory as the destination, or in its path: refused, nothing written. */
  g_autofree char *dir_link = g_build_filename(fx.dir, "dir-link", NULL);
  plant_link(secret_dir, dir_link);
  g_assert_false(hutch_ssh_download(ssh, "guest.txt", dir_link, FALSE, &error));
  g_clear_pointer(&want, g_free);
  want = g_strdup_printf("refusing to write through the symbolic link %s", dir_link);
  assert_error_has(&error, want);
  g_autofree char *below_link = g_build_filename(dir_link, "x", NULL);
  g_assert_false(hutch_ssh_download(ssh, "guest.txt", below_link, FALSE, &error));
  g_clear_pointer(&want, g_free);
  want = g_strdup_printf("refusing to follow the symbolic link %s (", dir_link);
  assert_error_has(&error, want);
  g_assert_false(hutch_ssh_download(ssh, "ltree", dir_link, TRUE, &error));
  g_clear_error(&error);
  assert_empty_dir(secret_dir);

  /* Inside a tree being copied into: a directory or a file swapped for a link. */
  g_autofree char *into = g_build_filename(fx.dir, "into", NULL);
  g_autofree char *into_tree = g_build_filename(into, "ltree", NULL);
  g_autofree char *into_sub = g_build_filename(into_tree, "sub", NULL);
  g_autofree char *into_a = g_build_filename(into_tree, "a.txt", NULL);
  g_assert_cmpint(g_mkdir_with_parents(into_tree, 0700), ==, 0);
  plant_link(secret_dir, into_sub);
  g_assert_false(hutch_ssh_download(ssh, "ltree", into, TRUE, &error));
  g_clear_pointer(&want, g_free);
  want = g_strdup_printf("refusing to write through the symbolic link %s", into_sub);
  assert_error_has(&error, want);
  assert_empty_dir(secret_dir);
  g_assert_cmpint(g_unlink(into_sub), ==, 0);
  plant_link(secret, into_a);
  g_assert_false(hutch_ssh_download(ssh, "ltree", into, TRUE, &error));
  g_clear_pointer(&want, g_free);
  want = g_strdup_printf("refusing to write through the symbolic link %s", into_a);
  assert_error_has(&error, want);
  assert_text(secret, "host secret");
  g_assert_cmpint(g_unlink(into_a), ==, 0);
  g_assert_true(hutch_ssh_download(ssh, "ltree", into, TRUE, &error));
  g_assert_no_error(error);
  assert_text(into_a, "a");

  /* A FIFO as the destination fails at once instead of blocking hutch. */
  g_autofree char *fifo = g_build_filename(fx.dir, "fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  signal(SIGALRM, on_alarm);
  alarm(30);
  g_assert_false(hutch_ssh_download(ssh, "guest.txt", fifo, FALSE, &error));
  alarm(0);
  signal(SIGALRM, SIG_DFL);
  assert_error_has(&error, "fifo: not a regular file");

  /* Uploads: a source named through a planted link is refused; links inside a tree (to a
   * file or a directory) are skipped, so no secret leaves the host. */
  g_assert_false(hutch_ssh_upload(ssh, file_link, "~/leak", FALSE, &error));
  g_clear_pointer(&want, g_free);
  want = g_strdup_printf("refusing to follow the symbolic link %s (", file_link);
  assert_error_has(&error, want);
  g_autofree char *via_dir_link = g_build_filename(dir_link, "x", NULL);
  g_assert_false(hutch_ssh_upload(ssh, via_dir_link, "~/leak", FALSE, &error));
  g_clear_error(&error);
  g_autofree char *leak = g_build_filename(fx.home, "leak", NULL);
  g_assert_false(g_file_test(leak, G_FILE_TEST_EXISTS));
  g_autofree char *utree = g_build_filename(fx.dir, "utree", NULL);
  g_assert_cmpint(g_mkdir(utree, 0755), ==, 0);
  g_autofree char *plain = g_build_filename(utree, "plain", NULL);
  g_assert_true(g_file_set_contents(plain, "plain", -1, NULL));
  g_autofree char *key = g_build_filename(utree, "key", NULL);
  g_autofree char *keydir = g_build_filename(utree, "keydir", NULL);
  g_autofree char *secret_in_dir = g_build_filename(secret_dir, "id", NULL);
  g_assert_true(g_file_set_contents(secret_in_dir, "host secret", -1, NULL));
  plant_link(secret, key);
  plant_link(secret_dir, keydir);
  g_assert_true(hutch_ssh_upload(ssh, utree, "~/utree-up", TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *up = g_build_filename(fx.home, "utree-up", NULL);
  g_autofree char *up_plain = g_build_filename(up, "plain", NULL);
  g_autofree char *up_key = g_build_filename(up, "key", NULL);
  g_autofree char *up_keydir = g_build_filename(up, "keydir", NULL);
  assert_text(up_plain, "plain");
  g_assert_false(g_file_test(up_key, G_FILE_TEST_EXISTS | G_FILE_TEST_IS_SYMLINK));
  g_assert_false(g_file_test(up_keydir, G_FILE_TEST_EXISTS | G_FILE_TEST_IS_SYMLINK));
}

/* A file name with a newline (legal, and a guest's to choose, in the guest or in a share) is
 * copied, but never printed raw: in an error it is shown escaped, so it cannot add lines of its
 * own to hutch's output. */
static void assert_error_one_line(GError **error, const char *needle) {
  g_assert_nonnull(*error);
  if (strchr((*error)->message, '\n') || !strstr((*error)->message, needle))
    g_error("expected one line with \"%s\" in: %s", needle, (*error)->message);
  g_clear_error(error);
}

static void test_sftp_name_shown(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  const char *evil = "evil\nhutch: forged line";
  /* downloading: a link where the guest's file goes (a share of the same VM) */
  g_autofree char *remote_tree = g_build_filename(fx.home, "nl-tree", NULL);
  g_assert_cmpint(g_mkdir(remote_tree, 0755), ==, 0);
  g_autofree char *remote_evil = g_build_filename(remote_tree, evil, NULL);
  g_assert_true(g_file_set_contents(remote_evil, "from the guest", -1, NULL));
  g_autofree char *secret = g_build_filename(fx.dir, "nl-secret", NULL);
  g_assert_true(g_file_set_contents(secret, "host secret", -1, NULL));
  g_autofree char *into = g_build_filename(fx.dir, "nl-into", NULL);
  g_autofree char *into_tree = g_build_filename(into, "nl-tree", NULL);
  g_assert_cmpint(g_mkdir_with_parents(into_tree, 0700), ==, 0);
  g_autofree char *into_evil = g_build_filename(into_tree, evil, NULL);
  plant_link(secret, into_evil);
  g_assert_false(hutch_ssh_download(ssh, "nl-tree", into, TRUE, &error));
  assert_error_one_line(&error, "nl-tree/evil\\x0ahutch: forged line");
  assert_text(secret, "host secret");
  g_assert_cmpint(g_unlink(into_evil), ==, 0);
  g_assert_true(hutch_ssh_download(ssh, "nl-tree", into, TRUE, &error));
  g_assert_no_error(error);
  assert_text(into_evil, "from the guest");

  /* the guest's names in a path the guest's server is asked about */
  g_autoptr(GString) deep = g_string_new(fx.home);
  g_string_append(deep, "/nl-deep/a\nb");
  for (guint i = 0; i < 130; i++)
    g_string_append(deep, "/d");
  g_assert_cmpint(g_mkdir_with_parents(deep->str, 0700), ==, 0);
  g_autofree char *down = g_build_filename(fx.dir, "nl-deep-down", NULL);
  g_assert_false(hutch_ssh_download(ssh, "nl-deep", down, TRUE, &error));
  assert_error_one_line(&error, "nl-deep/a\\x0ab/d/d");

  /* uploading a tree with such a name (a share's, the guest's): the guest's server refuses */
  g_autofree char *up = g_build_filename(fx.dir, "nl-up", NULL);
  g_autofree char *up_evil = g_build_filename(up, evil, NULL);
  g_assert_cmpint(g_mkdir_with_parents(up_evil, 0700), ==, 0);
  g_autofree char *up_dest = g_build_filename(fx.home, "nl-up-dest", "nl-up", NULL);
  g_assert_cmpint(g_mkdir_with_parents(up_dest, 0755), ==, 0);
  g_autofree char *up_dest_evil = g_build_filename(up_dest, evil, NULL);
  g_assert_true(g_file_set_contents(up_dest_evil, "a file, not a directory", -1, NULL));
  g_assert_false(hutch_ssh_upload(ssh, up, "~/nl-up-dest", TRUE, &error));
  assert_error_one_line(&error, "creating the directory nl-up-dest/nl-up/evil\\x0ahutch: forged");
  /* and one too deep, shown on the host's side */
  g_autoptr(GString) local_deep = g_string_new(fx.dir);
  g_string_append(local_deep, "/nl-deep-up/a\nb");
  for (guint i = 0; i < 130; i++)
    g_string_append(local_deep, "/d");
  g_assert_cmpint(g_mkdir_with_parents(local_deep->str, 0700), ==, 0);
  g_autofree char *local_top = g_build_filename(fx.dir, "nl-deep-up", NULL);
  g_assert_false(hutch_ssh_upload(ssh, local_top, "~/nl-deep-up", TRUE, &error));
  assert_error_one_line(&error, "nl-deep-up/a\\x0ab/d/d");
}

/* A tree deeper than hutch copies (a hostile server can list a directory in every directory):
 * an error, both ways. */
static void test_sftp_depth(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autoptr(GString) deep = g_string_new(fx.home);
  g_string_append(deep, "/deep");
  for (guint i = 0; i < 130; i++)
    g_string_append(deep, "/d");
  g_assert_cmpint(g_mkdir_with_parents(deep->str, 0700), ==, 0);
  g_autofree char *down = g_build_filename(fx.dir, "deep-down", NULL);
  g_assert_false(hutch_ssh_download(ssh, "deep", down, TRUE, &error));
  assert_error_has(&error, "more than 128 directory levels (refusing to copy deeper)");
  g_autofree char *local = g_build_filename(fx.dir, "deep-up", NULL);
  g_autoptr(GString) local_deep = g_string_new(local);
  for (guint i = 0; i < 130; i++)
    g_string_append(local_deep, "/d");
  g_assert_cmpint(g_mkdir_with_parents(local_deep->str, 0700), ==, 0);
  g_assert_false(hutch_ssh_upload(ssh, local, "~/deep-up", TRUE, &error));
  assert_error_has(&error, "more than 128 directory levels (refusing to copy deeper)");
}

/* "NAME:", "NAME:~" and "x/..": no name of their own, and the guest's REALPATH answer must
 * not give one (it could say ".bashrc"): into an existing directory they are refused; to a
 * new path they are copied. */
static void test_sftp_no_guest_name(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *remote = g_build_filename(fx.home, "rp", "inner", NULL);
  g_assert_cmpint(g_mkdir_with_parents(remote, 0755), ==, 0);
  g_autofree char *file = g_build_filename(remote, "f", NULL);
  g_assert_true(g_file_set_contents(file, "f", -1, NULL));
  g_autofree char *dest = g_build_filename(fx.dir, "rp-dest", NULL);
  g_assert_cmpint(g_mkdir(dest, 0700), ==, 0);
  const char *nameless[] = {"~/rp/inner/..", "rp/inner/.", "~", "", NULL};
  for (guint i = 0; nameless[i]; i++) {
    g_assert_false(hutch_ssh_download(ssh, nameless[i], dest, TRUE, &error));
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
    g_assert_nonnull(strstr(error->message, "name a destination that does not exist yet"));
    g_clear_error(&error);
  }
  g_autoptr(GDir) dir = g_dir_open(dest, 0, NULL);
  g_assert_null(g_dir_read_name(dir));
  /* To a path that does not exist yet, the user's name is used. */
  g_autofree char *fresh = g_build_filename(dest, "fresh", NULL);
  g_assert_true(hutch_ssh_download(ssh, "~/rp/inner/..", fresh, TRUE, &error));
  g_assert_no_error(error);
  g_autofree char *got = g_build_filename(fresh, "inner", "f", NULL);
  assert_text(got, "f");
  /* The guest's / has no name either. */
  g_assert_false(hutch_ssh_download(ssh, "/", dest, TRUE, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
}

/* The guest's modes pass through the user's umask; a directory that was there keeps its own. */
static void test_sftp_modes(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *remote = g_build_filename(fx.home, "modes", "sub", NULL);
  g_assert_cmpint(g_mkdir_with_parents(remote, 0777), ==, 0);
  g_autofree char *remote_top = g_build_filename(fx.home, "modes", NULL);
  g_assert_cmpint(chmod(remote_top, 0777), ==, 0);
  g_assert_cmpint(chmod(remote, 0777), ==, 0);
  g_autofree char *file = g_build_filename(remote, "w", NULL);
  g_assert_true(g_file_set_contents(file, "w", -1, NULL));
  g_assert_cmpint(chmod(file, 04777), ==, 0);
  g_autofree char *dest = g_build_filename(fx.dir, "modes-dest", NULL);
  g_assert_cmpint(g_mkdir(dest, 0700), ==, 0);
  /* an existing directory inside the destination tree */
  g_autofree char *existing = g_build_filename(dest, "modes", "sub", NULL);
  g_assert_cmpint(g_mkdir_with_parents(existing, 0700), ==, 0);
  mode_t old_umask = umask(022);
  gboolean ok = hutch_ssh_download(ssh, "modes", dest, TRUE, &error);
  umask(old_umask);
  g_assert_no_error(error);
  g_assert_true(ok);
  g_autofree char *got = g_build_filename(existing, "w", NULL);
  g_assert_cmpint(file_mode(got), ==, 0755);
  g_assert_cmpint(file_mode(existing), ==, 0700);
}

/* ---- Keys ----------------------------------------------------------------------------- */

static void test_generate_keypair(void) {
  g_autofree char *private_key = NULL;
  g_autofree char *public_key = NULL;
  g_autoptr(GError) error = NULL;
  g_assert_true(hutch_ssh_generate_keypair("guest-host", &private_key, &public_key, &error));
  g_assert_no_error(error);
  g_assert_true(g_str_has_prefix(private_key, "-----BEGIN OPENSSH PRIVATE KEY-----\n"));
  g_assert_true(g_str_has_prefix(public_key, "ssh-ed25519 AAAA"));
  g_assert_true(g_str_has_suffix(public_key, " guest-host"));
  g_autofree char *second = NULL;
  g_assert_true(hutch_ssh_generate_keypair("guest-host", NULL, &second, &error));
  g_assert_cmpstr(second, !=, public_key);
}

static void test_client_key(void) {
  g_autoptr(GError) error = NULL;
  g_autofree char *public_key = NULL;
  /* main() pointed XDG_DATA_HOME into the test's directory. */
  g_assert_true(g_str_has_prefix(g_get_user_data_dir(), fx.dir));
  g_autofree char *path = hutch_ssh_client_key(&public_key, &error);
  g_assert_no_error(error);
  g_autofree char *want =
      g_build_filename(g_get_user_data_dir(), "hutch", "ssh", "id_ed25519", NULL);
  g_assert_cmpstr(path, ==, want);
  g_autofree char *dir = g_path_get_dirname(path);
  g_assert_cmpint(file_mode(dir), ==, 0700);
  g_assert_cmpint(file_mode(path), ==, 0600);
  g_assert_true(g_str_has_prefix(public_key, "ssh-ed25519 AAAA"));
  g_assert_true(g_str_has_suffix(public_key, " hutch"));
  g_autofree char *hash = sha256_file(path);

  /* Used again, not made again. */
  g_autofree char *public_again = NULL;
  g_autofree char *path_again = hutch_ssh_client_key(&public_again, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(path_again, ==, path);
  g_assert_cmpstr(public_again, ==, public_key);
  g_autofree char *hash_again = sha256_file(path);
  g_assert_cmpstr(hash_again, ==, hash);

  /* A lost public half is derived from the private key, and a loose mode is tightened. */
  g_autofree char *pub = g_strconcat(path, ".pub", NULL);
  g_assert_cmpint(g_unlink(pub), ==, 0);
  g_assert_cmpint(g_chmod(path, 0644), ==, 0);
  g_autofree char *public_derived = NULL;
  g_free(hutch_ssh_client_key(&public_derived, &error));
  g_assert_no_error(error);
  g_auto(GStrv) a = g_strsplit(public_key, " ", 3);
  g_auto(GStrv) b = g_strsplit(public_derived, " ", 3);
  g_assert_cmpstr(a[1], ==, b[1]);
  g_assert_cmpint(file_mode(path), ==, 0600);

  /* And libssh2 can log in with it. */
  if (!sshd_fixture_ready(&fx))
    return;
  g_autofree char *line = g_strconcat(public_key, "\n", NULL);
  g_autoptr(GString) keys = g_string_new(NULL);
  g_autofree char *old = NULL;
  g_assert_true(g_file_get_contents(fx.authorized_keys, &old, NULL, NULL));
  g_string_append_printf(keys, "%s%s", old, line);
  g_assert_true(g_file_set_contents(fx.authorized_keys, keys->str, -1, NULL));
  g_autoptr(HutchSsh) ssh = hutch_ssh_connect("127.0.0.1", fx.port, g_get_user_name(), path,
                                              fx.host_key, TIMEOUT_MS, &error);
  g_assert_no_error(error);
  g_autofree char *out = NULL;
  g_assert_cmpint(hutch_ssh_exec_capture(ssh, "echo ok", NULL, &out, NULL, &error), ==, 0);
  g_assert_cmpstr(out, ==, "ok\n");
}

static gboolean always_cancelled(gpointer data) {
  (void)data;
  return TRUE;
}

/* A copy cancelled (its command left the supervisor) stops before it writes: an existing
 * destination keeps its contents, on either side. */
static void test_sftp_cancelled(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *remote = g_build_filename(fx.home, "cancel-src.txt", NULL);
  g_assert_true(g_file_set_contents(remote, "from the server\n", -1, NULL));
  g_autofree char *local = g_build_filename(fx.dir, "cancel-dst.txt", NULL);
  g_assert_true(g_file_set_contents(local, "keep\n", -1, NULL));
  hutch_ssh_set_copy_caller(ssh, always_cancelled, NULL, -1);
  g_assert_false(hutch_ssh_download(ssh, "cancel-src.txt", local, FALSE, &error));
  g_assert_nonnull(strstr(error->message, "the copy was cancelled"));
  g_clear_error(&error);
  g_autofree char *kept = NULL;
  g_assert_true(g_file_get_contents(local, &kept, NULL, NULL));
  g_assert_cmpstr(kept, ==, "keep\n");
  g_autofree char *up = g_build_filename(fx.home, "cancel-up.txt", NULL);
  g_assert_true(g_file_set_contents(up, "remote keeps\n", -1, NULL));
  g_assert_false(hutch_ssh_upload(ssh, local, "~/cancel-up.txt", FALSE, &error));
  g_assert_nonnull(strstr(error->message, "the copy was cancelled"));
  g_clear_error(&error);
  g_autofree char *sent = NULL;
  g_assert_true(g_file_get_contents(up, &sent, NULL, NULL));
  g_assert_cmpstr(sent, ==, "remote keeps\n");
  /* not cancelled any more: the same copy works */
  hutch_ssh_set_copy_caller(ssh, NULL, NULL, -1);
  g_assert_true(hutch_ssh_download(ssh, "cancel-src.txt", local, FALSE, &error));
  g_assert_no_error(error);
}

static gboolean cancelled_on_second_call(gpointer data) {
  guint *calls = data;
  return ++*calls >= 2;
}

/* An existing destination is replaced, never written into: a hard link into the destination
 * (uv and pnpm caches share files with every project that way) leaves the file outside
 * unchanged, and a download that fails after it began (cancelled at the second check, with
 * the destination open) keeps the old content and leaves no temporary file. */
static void test_sftp_replace(void) {
  if (!sshd_fixture_ready(&fx))
    return;
  g_autoptr(HutchSsh) ssh = connect_ok();
  g_autoptr(GError) error = NULL;
  g_autofree char *remote = g_build_filename(fx.home, "replace-src.txt", NULL);
  g_assert_true(g_file_set_contents(remote, "from the guest\n", -1, NULL));
  g_assert_cmpint(g_chmod(remote, 0644), ==, 0);
  g_autofree char *outside = g_build_filename(fx.dir, "replace-cache", NULL);
  g_autofree char *dest = g_build_filename(fx.dir, "replace-dest", NULL);
  g_assert_cmpint(g_mkdir(outside, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(dest, 0700), ==, 0);
  g_autofree char *shared = g_build_filename(outside, "shared.py", NULL);
  g_assert_true(g_file_set_contents(shared, "the cache's\n", -1, NULL));
  g_autofree char *linked = g_build_filename(dest, "linked.py", NULL);
  g_assert_cmpint(link(shared, linked), ==, 0);

  g_assert_true(hutch_ssh_download(ssh, "replace-src.txt", linked, FALSE, &error));
  g_assert_no_error(error);
  assert_text(linked, "from the guest\n");
  assert_text(shared, "the cache's\n");
  GStatBuf st;
  g_assert_cmpint(g_stat(shared, &st), ==, 0);
  g_assert_cmpint(st.st_nlink, ==, 1);

  /* the same into the directory, recursively */
  g_autofree char *tree = g_build_filename(fx.home, "replace-tree", NULL);
  g_assert_cmpint(g_mkdir(tree, 0755), ==, 0);
  g_autofree char *tree_file = g_build_filename(tree, "shared.py", NULL);
  g_assert_true(g_file_set_contents(tree_file, "tree\n", -1, NULL));
  g_autofree char *dest_tree = g_build_filename(dest, "replace-tree", NULL);
  g_assert_cmpint(g_mkdir(dest_tree, 0700), ==, 0);
  g_autofree char *tree_linked = g_build_filename(dest_tree, "shared.py", NULL);
  g_assert_cmpint(link(shared, tree_linked), ==, 0);
  g_assert_true(hutch_ssh_download(ssh, "replace-tree", dest, TRUE, &error));
  g_assert_no_error(error);
  assert_text(tree_linked, "tree\n");
  assert_text(shared, "the cache's\n");

  /* failed midway: the old file, no temporary one */
  g_autofree char *kept = g_build_filename(dest, "kept.txt", NULL);
  g_assert_true(g_file_set_contents(kept, "keep\n", -1, NULL));
  guint calls = 0;
  hutch_ssh_set_copy_caller(ssh, cancelled_on_second_call, &calls, -1);
  g_assert_false(hutch_ssh_download(ssh, "replace-src.txt", kept, FALSE, &error));
  hutch_ssh_set_copy_caller(ssh, NULL, NULL, -1);
  assert_error_has(&error, "the copy was cancelled");
  g_assert_cmpuint(calls, ==, 2);
  assert_text(kept, "keep\n");
  g_autoptr(GDir) dir = g_dir_open(dest, 0, NULL);
  g_assert_nonnull(dir);
  const char *name;
  guint count = 0;
  while ((name = g_dir_read_name(dir))) {
    g_assert_true(g_str_equal(name, "linked.py") || g_str_equal(name, "replace-tree") ||
                  g_str_equal(name, "kept.txt"));
    count++;
  }
  g_assert_cmpuint(count, ==, 3);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  sshd_fixture_start(&fx, "ssh", "the SSH tests");
  /* Before anything asks GLib for it (it is cached): the client key goes into the test's
   * directory, never into the user's. G_TEST_OPTION_ISOLATE_DIRS would do it per test, but
   * GLib 2.74 leaks its old values, which valgrind counts against us. */
  g_autofree char *data_home = g_build_filename(fx.dir, "data", NULL);
  g_setenv("XDG_DATA_HOME", data_home, TRUE);

  g_test_add_func("/ssh/exec-capture", test_exec_capture);
  g_test_add_func("/ssh/exec-stdin", test_exec_stdin);
  g_test_add_func("/ssh/exec-capture-bounded", test_exec_capture_bounded);
  g_test_add_func("/ssh/exec-stream", test_exec_stream);
  g_test_add_func("/ssh/host-key-mismatch", test_host_key_mismatch);
  g_test_add_func("/ssh/connect-failures", test_connect_failures);
  g_test_add_func("/ssh/quote", test_quote);
  g_test_add_func("/ssh/interactive-stream", test_interactive_stream);
  g_test_add_func("/ssh/interactive-pty", test_interactive_pty);
  g_test_add_func("/ssh/sftp-flood", test_sftp_flood);
  g_test_add_func("/ssh/sftp-file", test_sftp_file);
  g_test_add_func("/ssh/sftp-cancelled", test_sftp_cancelled);
  g_test_add_func("/ssh/sftp-replace", test_sftp_replace);
  g_test_add_func("/ssh/sftp-recursive", test_sftp_recursive);
  g_test_add_func("/ssh/sftp-planted-links", test_sftp_planted_links);
  g_test_add_func("/ssh/sftp-no-guest-name", test_sftp_no_guest_name);
  g_test_add_func("/ssh/sftp-modes", test_sftp_modes);
  g_test_add_func("/ssh/sftp-depth", test_sftp_depth);
  g_test_add_func("/ssh/sftp-name-shown", test_sftp_name_shown);
  g_test_add_func("/ssh/generate-keypair", test_generate_keypair);
  g_test_add_func("/ssh/client-key", test_client_key);
  return g_test_run();
}
