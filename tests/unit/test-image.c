/* test-image.c: image inspection, cache keys, downloads (against tools/http-test-server.py on
 * 127.0.0.1), the cache's list/remove, overlays. With HUTCH_TEST_IMAGE_BUILD=1 also a real
 * mmdebstrap build of tests/image/test-guest.yaml's image (minutes, needs the mirror). */
#include "config.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "image-private.h"
#include "instance-private.h"

static char *tmp_root;  /* everything a test makes lives below */
static char *images;    /* $XDG_CACHE_HOME/hutch/images */
static char *instances; /* $XDG_DATA_HOME/hutch/instances */

static char *tmp_path(const char *name) {
  return g_build_filename(tmp_root, name, NULL);
}

static void run_ok(const char *const *argv) {
  g_autoptr(GError) error = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  int status = 0;
  g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                             &status, &error));
  if (!g_spawn_check_wait_status(status, NULL))
    g_error("%s failed: %s", argv[0], err);
}

static void write_random(const char *path, gsize size) {
  g_autofree guchar *data = g_malloc(size);
  GRand *rand = g_rand_new();
  for (gsize i = 0; i < size; i++)
    data[i] = (guchar)g_rand_int_range(rand, 0, 256);
  g_rand_free(rand);
  /* A raw image that does not start with any known magic. */
  memset(data, 0, MIN(size, 512));
  g_assert_true(g_file_set_contents(path, (char *)data, (gssize)size, NULL));
}

static char *file_digest(const char *path) {
  g_autofree char *data = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  g_autofree char *hex = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (guchar *)data, len);
  return g_strconcat("sha256:", hex, NULL);
}

static gboolean dir_has_prefix(const char *dir_path, const char *prefix) {
  g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
  const char *name;
  while (dir && (name = g_dir_read_name(dir)))
    if (g_str_has_prefix(name, prefix))
      return TRUE;
  return FALSE;
}

/* ---- inspect -------------------------------------------------------------------------- */

static void assert_refused(const char *path, const char *needle) {
  g_autoptr(GError) error = NULL;
  g_autofree char *format = NULL;
  g_assert_false(hutch_image_inspect(path, &format, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE);
  g_assert_null(format);
  if (!strstr(error->message, needle))
    g_error("'%s' does not mention '%s'", error->message, needle);
}

static void assert_format(const char *path, const char *want) {
  g_autoptr(GError) error = NULL;
  g_autofree char *format = NULL;
  g_assert_true(hutch_image_inspect(path, &format, &error));
  g_assert_no_error(error);
  g_assert_cmpstr(format, ==, want);
}

static void test_inspect_accepts(void) {
  g_autofree char *raw = tmp_path("plain.raw");
  g_autofree char *qcow2 = tmp_path("plain.qcow2");
  g_autofree char *v2 = tmp_path("plain-v2.qcow2");
  write_random(raw, 65536);
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "qcow2", qcow2, "16M", NULL});
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "16M",
                          NULL});
  assert_format(raw, "raw");
  assert_format(qcow2, "qcow2");
  assert_format(v2, "qcow2");
}

static void test_inspect_backing_file(void) {
  g_autofree char *base = tmp_path("base.qcow2");
  g_autofree char *overlay = tmp_path("with-backing.qcow2");
  g_autofree char *overlay_v2 = tmp_path("with-backing-v2.qcow2");
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "qcow2", base, "16M", NULL});
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base,
                          overlay, NULL});
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-F",
                          "qcow2", "-b", base, overlay_v2, NULL});
  assert_refused(overlay, "backing file");
  assert_refused(overlay, base);
  assert_refused(overlay, "arbitrary host files");
  assert_refused(overlay_v2, "backing file");
}

static void test_inspect_data_file(void) {
  g_autofree char *data = tmp_path("external.data");
  g_autofree char *image = tmp_path("with-data-file.qcow2");
  g_autofree char *opt = g_strdup_printf("data_file=%s", data);
  run_ok(
      (const char *[]){"qemu-img", "create", "-q", "-f", "qcow2", "-o", opt, image, "16M", NULL});
  assert_refused(image, "external data file");

  /* Without the incompatible-feature bit the header extension alone must be refused. */
  g_autofree char *bytes = NULL;
  gsize len = 0;
  g_assert_true(g_file_get_contents(image, &bytes, &len, NULL));
  g_assert_cmpuint(len, >, 80);
  g_assert_true(bytes[79] & 0x04);
  bytes[79] &= ~0x04;
  g_autofree char *patched = tmp_path("data-file-ext-only.qcow2");
  g_assert_true(g_file_set_contents(patched, bytes, (gssize)len, NULL));
  assert_refused(patched, "external data file");
  assert_refused(patched, data);
}

static void test_inspect_foreign(void) {
  g_autofree char *vmdk = tmp_path("disk.vmdk");
  g_autofree char *vdi = tmp_path("disk.vdi");
  g_autofree char *vhdx = tmp_path("disk.vhdx");
  g_autofree char *qed = tmp_path("disk.qed");
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "vmdk", vmdk, "16M", NULL});
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "vdi", vdi, "16M", NULL});
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "vhdx", vhdx, "16M", NULL});
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "qed", qed, "16M", NULL});
  assert_refused(vmdk, "VMDK");
  assert_refused(vdi, "VDI");
  assert_refused(vhdx, "VHDX");
  assert_refused(qed, "QED");

  g_autofree char *luks = tmp_path("disk.luks");
  static const char luks_header[] = "LUKS\xba\xbe\0\x01 padding";
  g_assert_true(g_file_set_contents(luks, luks_header, sizeof(luks_header) - 1, NULL));
  assert_refused(luks, "LUKS");
  g_autofree char *empty = tmp_path("empty.img");
  g_assert_true(g_file_set_contents(empty, "", 0, NULL));
  assert_refused(empty, "empty");
  g_autofree char *truncated = tmp_path("truncated.qcow2");
  static const char qcow2_start[] = "QFI\xfb\0\0\0\x03";
  g_assert_true(g_file_set_contents(truncated, qcow2_start, sizeof(qcow2_start) - 1, NULL));
  assert_refused(truncated, "truncated");

  g_autoptr(GError) error = NULL;
  g_autofree char *missing = tmp_path("missing.img");
  g_assert_false(hutch_image_inspect(missing, NULL, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  g_clear_error(&error);
  g_assert_false(hutch_image_inspect(tmp_root, NULL, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE);
}

/* ---- keys and checksums --------------------------------------------------------------- */

static void test_build_key(void) {
  HutchImageSpec a = {.kind = HUTCH_IMAGE_BUILD, .suite = "bookworm"};
  char *pkgs_a[] = {"python3", "curl", NULL};
  char *pkgs_b[] = {"curl", "python3", "curl", "cloud-init", NULL};
  char *pkgs_c[] = {"curl", NULL};
  a.packages = pkgs_a;
  g_autofree char *ka = hutch_image_build_key(&a);
  g_autofree char *ka2 = hutch_image_build_key(&a);
  HutchImageSpec b = a;
  b.packages = pkgs_b; /* same set: order, duplicates and minimum packages do not count */
  g_autofree char *kb = hutch_image_build_key(&b);
  HutchImageSpec c = a;
  c.packages = pkgs_c;
  g_autofree char *kc = hutch_image_build_key(&c);
  HutchImageSpec d = a;
  d.suite = "trixie";
  g_autofree char *kd = hutch_image_build_key(&d);
  HutchImageSpec e = a;
  e.mirror = "http://mirror.example/debian";
  g_autofree char *ke = hutch_image_build_key(&e);
  /* the default kernel named explicitly is the same image; another kernel is not */
  HutchImageSpec f = a;
  f.kernel = "linux-image-cloud-amd64";
  g_autofree char *kf = hutch_image_build_key(&f);
  HutchImageSpec g = a;
  g.kernel = "linux-image-amd64";
  g_autofree char *kg = hutch_image_build_key(&g);

  g_assert_true(g_str_has_prefix(ka, "build-"));
  g_assert_cmpuint(strlen(ka), ==, 6 + 16);
  for (const char *p = ka + 6; *p; p++)
    g_assert_true(g_ascii_isxdigit(*p) && !g_ascii_isupper(*p));
  g_assert_cmpstr(ka, ==, ka2);
  g_assert_cmpstr(ka, ==, kb);
  g_assert_cmpstr(ka, !=, kc);
  g_assert_cmpstr(ka, !=, kd);
  g_assert_cmpstr(ka, ==, kf);
  g_assert_cmpstr(ka, !=, kg);
  g_assert_cmpstr(ka, !=, ke);
}

static void test_url_key(void) {
  g_autoptr(GError) error = NULL;
  const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  g_autofree char *lower = g_strconcat("sha256:", hex, NULL);
  g_autofree char *upper_hex = g_ascii_strup(hex, -1);
  g_autofree char *upper = g_strconcat("SHA256:", upper_hex, NULL);
  g_autofree char *other = g_strconcat("sha256:1", hex + 1, NULL);
  g_autofree char *k1 = hutch_image_url_key(lower, &error);
  g_assert_no_error(error);
  g_autofree char *k2 = hutch_image_url_key(upper, &error);
  g_autofree char *k3 = hutch_image_url_key(other, &error);
  g_assert_true(g_str_has_prefix(k1, "url-"));
  g_assert_cmpuint(strlen(k1), ==, 4 + 16);
  g_assert_cmpstr(k1, ==, k2);
  g_assert_cmpstr(k1, !=, k3);
  const char *bad[] = {"sha256:abc", "md5:0123", "0123456789abcdef", "sha256:", NULL};
  for (const char **b = bad; *b; b++) {
    g_autoptr(GError) e = NULL;
    g_assert_null(hutch_image_url_key(*b, &e));
    g_assert_error(e, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  }
}

static void test_find_checksum(void) {
  const char *h1 = "1111111111111111111111111111111111111111111111111111111111111111";
  const char *h2 = "2222222222222222222222222222222222222222222222222222222222222222";
  g_autofree char *h3 = g_strnfill(128, 'a');
  g_autofree char *sums = g_strdup_printf("%s  other.qcow2\n%s *debian-12.qcow2\n"
                                          "SHA512 (bsd.img) = %s\n%s  ./dot.raw\n",
                                          h1, h2, h3, h1);
  g_autoptr(GError) error = NULL;
  g_autofree char *d1 = hutch_image_find_checksum(sums, "debian-12.qcow2", &error);
  g_assert_no_error(error);
  g_autofree char *want1 = g_strconcat("sha256:", h2, NULL);
  g_assert_cmpstr(d1, ==, want1);
  g_autofree char *d2 = hutch_image_find_checksum(sums, "bsd.img", &error);
  g_autofree char *want2 = g_strconcat("sha512:", h3, NULL);
  g_assert_cmpstr(d2, ==, want2);
  g_autofree char *d3 = hutch_image_find_checksum(sums, "dot.raw", &error);
  g_autofree char *want3 = g_strconcat("sha256:", h1, NULL);
  g_assert_cmpstr(d3, ==, want3);
  g_assert_null(hutch_image_find_checksum(sums, "debian-12", &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
}

static void test_host_mirror(void) {
  g_autofree char *apt = tmp_path("apt");
  g_autofree char *list_d = g_build_filename(apt, "sources.list.d", NULL);
  g_assert_cmpint(g_mkdir_with_parents(list_d, 0700), ==, 0);
  g_assert_null(hutch_image_host_mirror(apt));

  /* deb822 in sources.list.d; the security archive and third-party repositories do not count. */
  g_autofree char *sources = g_build_filename(list_d, "debian.sources", NULL);
  g_assert_true(g_file_set_contents(sources,
                                    "Types: deb\nURIs: http://security.example/debian-security\n"
                                    "Suites: bookworm-security\n\n"
                                    "Types: deb\nURIs: http://mirror.example/debian/\n"
                                    "Suites: bookworm\nComponents: main\n",
                                    -1, NULL));
  g_autofree char *other = g_build_filename(list_d, "0-node.list", NULL);
  g_assert_true(g_file_set_contents(other,
                                    "deb https://deb.nodesource.com/node_20.x nodistro "
                                    "main\n",
                                    -1, NULL));
  g_autofree char *m1 = hutch_image_host_mirror(apt);
  g_assert_cmpstr(m1, ==, "http://mirror.example/debian");

  /* One-line sources.list comes first, options in brackets skipped. */
  g_autofree char *list = g_build_filename(apt, "sources.list", NULL);
  g_assert_true(g_file_set_contents(list,
                                    "# deb http://commented.example/debian bookworm main\n"
                                    "deb [arch=amd64 signed-by=/k.gpg] "
                                    "https://one.example/debian bookworm main\n",
                                    -1, NULL));
  g_autofree char *m2 = hutch_image_host_mirror(apt);
  g_assert_cmpstr(m2, ==, "https://one.example/debian");
}

static void test_build_refuses_bad_spec(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  const struct {
    const char *suite;
    const char *package;
    const char *mirror;
  } bad[] = {
      {"bookworm", "vim,--root-owner", NULL},
      {"bookworm", "--hook=x", NULL},
      {"bookworm", "Vim", NULL},
      {"../sid", "vim", NULL},
      {"bookworm", "vim", "--customize-hook=rm"},
      {"bookworm", "vim", "http://mirror.example/debian bookworm main"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
    profile->image.kind = HUTCH_IMAGE_BUILD;
    profile->image.suite = g_strdup(bad[i].suite);
    profile->image.packages = g_new0(char *, 2);
    profile->image.packages[0] = g_strdup(bad[i].package);
    profile->image.mirror = g_strdup(bad[i].mirror);
    g_autofree char *key = hutch_image_build(ctx, profile, &error);
    g_assert_null(key);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_PROFILE);
    g_clear_error(&error);
  }
  g_autoptr(HutchProfile) file = hutch_profile_new_defaults();
  file->image.kind = HUTCH_IMAGE_FILE;
  g_assert_null(hutch_image_build(ctx, file, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_false(g_file_test(images, G_FILE_TEST_EXISTS) && dir_has_prefix(images, "build-"));
}

/* ---- downloads ------------------------------------------------------------------------ */

typedef struct {
  GSubprocess *proc;
  char *root; /* served directory */
  char *log;  /* one JSON line per request */
  char *base; /* http://127.0.0.1:PORT/ */
} Server;

static void server_start(Server *s, const char *name, const char *const *extra) {
  g_autoptr(GError) error = NULL;
  s->root = tmp_path(name);
  g_assert_cmpint(g_mkdir_with_parents(s->root, 0700), ==, 0);
  g_autofree char *dir = g_strconcat(s->root, "-server", NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  s->log = g_build_filename(dir, "log", NULL);
  g_autofree char *port_file = g_build_filename(dir, "port", NULL);
  g_autofree char *script =
      g_build_filename(g_getenv("HUTCH_SOURCE_DIR"), "tools", "http-test-server.py", NULL);
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  const char *base_argv[] = {"python3",     script,    "--root", s->root,
                             "--port-file", port_file, "--log",  s->log};
  for (gsize i = 0; i < G_N_ELEMENTS(base_argv); i++)
    g_ptr_array_add(argv, (gpointer)base_argv[i]);
  for (const char *const *e = extra; e && *e; e++)
    g_ptr_array_add(argv, (gpointer)*e);
  g_ptr_array_add(argv, NULL);
  s->proc = g_subprocess_newv((const char *const *)argv->pdata, G_SUBPROCESS_FLAGS_STDOUT_SILENCE,
                              &error);
  g_assert_no_error(error);
  g_autofree char *port = NULL;
  for (int i = 0; i < 200 && !g_file_get_contents(port_file, &port, NULL, NULL); i++)
    g_usleep(50000);
  g_assert_nonnull(port);
  s->base = g_strdup_printf("http://127.0.0.1:%d/", atoi(port));
}

static void server_stop(Server *s) {
  g_subprocess_force_exit(s->proc);
  g_subprocess_wait(s->proc, NULL, NULL);
  g_clear_object(&s->proc);
  g_free(s->root);
  g_free(s->log);
  g_free(s->base);
}

/* The logged requests, as "METHOD PATH RANGE STATUS" lines. */
static GPtrArray *server_requests(Server *s) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(s->log, &text, NULL, NULL))
    return out;
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (!**l)
      continue;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_assert_true(json_parser_load_from_data(parser, *l, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    g_ptr_array_add(out,
                    g_strdup_printf("%s %s %s %" G_GINT64_FORMAT,
                                    json_object_get_string_member(o, "method"),
                                    json_object_get_string_member(o, "path"),
                                    json_object_get_string_member_with_default(o, "range", NULL)
                                        ? json_object_get_string_member(o, "range")
                                        : "-",
                                    json_object_get_int_member(o, "status")));
  }
  return out;
}

static void assert_cached(const char *key, const char *digest) {
  g_autofree char *json = g_build_filename(images, key, "image.json", NULL);
  g_autofree char *disk = g_build_filename(images, key, "disk.raw", NULL);
  g_assert_true(g_file_test(json, G_FILE_TEST_IS_REGULAR));
  g_autofree char *got = file_digest(disk);
  g_assert_cmpstr(got, ==, digest);
  GStatBuf st;
  g_autofree char *dir = g_build_filename(images, key, NULL);
  g_assert_cmpint(g_stat(dir, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0700);
  g_assert_cmpint(g_stat(disk, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);
}

static void assert_nothing_left(const char *url) {
  g_autofree char *url_sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, url, -1);
  g_autofree char *partial = g_build_filename(images, ".partial", url_sum, NULL);
  g_assert_false(g_file_test(partial, G_FILE_TEST_EXISTS));
  /* nor its lock, whether the pull worked or not */
  g_autofree char *lock = g_strconcat(partial, ".lock", NULL);
  g_assert_false(g_file_test(lock, G_FILE_TEST_EXISTS));
  g_assert_false(dir_has_prefix(images, ".tmp-"));
}

typedef struct {
  int begins, ends, updates;
} Counts;

static void count_progress(const HutchProgress *p, gpointer data) {
  Counts *c = data;
  if (g_strcmp0(p->phase, "download") != 0)
    return;
  c->begins += p->kind == HUTCH_PROGRESS_BEGIN;
  c->ends += p->kind == HUTCH_PROGRESS_END;
  c->updates += p->kind == HUTCH_PROGRESS_UPDATE;
}

static void test_pull_ok_then_cache_hit(void) {
  Server s = {0};
  server_start(&s, "srv-ok", NULL);
  g_autofree char *file = g_build_filename(s.root, "good.img", NULL);
  write_random(file, 3 << 20);
  g_autofree char *digest = file_digest(file);
  g_autofree char *url = g_strconcat(s.base, "good.img", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  Counts counts = {0};
  hutch_context_set_progress(ctx, count_progress, &counts);

  g_autofree char *key = hutch_image_pull(ctx, url, digest, &error);
  g_assert_no_error(error);
  g_autofree char *want_key = hutch_image_url_key(digest, NULL);
  g_assert_cmpstr(key, ==, want_key);
  assert_cached(key, digest);
  assert_nothing_left(url);
  g_assert_cmpint(counts.begins, ==, 1);
  g_assert_cmpint(counts.ends, ==, 1);
  g_autoptr(GPtrArray) before = server_requests(&s);
  g_assert_cmpuint(before->len, ==, 1);
  g_assert_cmpstr(g_ptr_array_index(before, 0), ==, "GET /good.img - 200");

  double start = hutch_now();
  g_autofree char *again = hutch_image_pull(ctx, url, digest, &error);
  g_assert_no_error(error);
  g_assert_cmpfloat(hutch_now() - start, <, 1.0);
  g_assert_cmpstr(again, ==, key);
  g_autoptr(GPtrArray) after = server_requests(&s);
  g_assert_cmpuint(after->len, ==, 1);
  g_assert_cmpint(counts.begins, ==, 1);
  server_stop(&s);
}

static void test_pull_wrong_digest(void) {
  Server s = {0};
  server_start(&s, "srv-wrong", NULL);
  g_autofree char *file = g_build_filename(s.root, "evil.img", NULL);
  g_autofree char *other = tmp_path("other.img");
  write_random(file, 1 << 20);
  write_random(other, 1 << 20);
  g_autofree char *actual = file_digest(file);
  g_autofree char *digest = file_digest(other);
  g_autofree char *url = g_strconcat(s.base, "evil.img", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);

  g_autofree char *key = hutch_image_pull(ctx, url, digest, &error);
  g_assert_null(key);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_DIGEST);
  g_assert_nonnull(strstr(error->message, digest));
  g_assert_nonnull(strstr(error->message, actual));
  g_autofree char *would_be = hutch_image_url_key(digest, NULL);
  g_autofree char *dir = g_build_filename(images, would_be, NULL);
  g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
  g_autofree char *right = hutch_image_url_key(actual, NULL);
  g_autofree char *right_dir = g_build_filename(images, right, NULL);
  g_assert_false(g_file_test(right_dir, G_FILE_TEST_EXISTS));
  assert_nothing_left(url);
  server_stop(&s);
}

typedef struct {
  const char *url, *digest;
  char *key;
} PullJob;

static gpointer pull_thread(gpointer data) {
  PullJob *job = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  job->key = hutch_image_pull(ctx, job->url, job->digest, &error);
  g_assert_no_error(error);
  return NULL;
}

/* Pulls of one URL at once: one download, the others find it cached; the lock file that
 * serialised them is gone (each removes it while holding it, the next locks a new one). */
static void test_pull_concurrent(void) {
  Server s = {0};
  server_start(&s, "srv-concurrent", NULL);
  g_autofree char *file = g_build_filename(s.root, "same.img", NULL);
  write_random(file, 2 << 20);
  g_autofree char *digest = file_digest(file);
  g_autofree char *url = g_strconcat(s.base, "same.img", NULL);
  PullJob jobs[4];
  GThread *threads[G_N_ELEMENTS(jobs)];
  for (gsize i = 0; i < G_N_ELEMENTS(jobs); i++) {
    jobs[i] = (PullJob){url, digest, NULL};
    threads[i] = g_thread_new("pull", pull_thread, &jobs[i]);
  }
  for (gsize i = 0; i < G_N_ELEMENTS(jobs); i++) {
    g_thread_join(threads[i]);
    g_assert_nonnull(jobs[i].key);
    assert_cached(jobs[i].key, digest);
    g_free(jobs[i].key);
  }
  g_autoptr(GPtrArray) requests = server_requests(&s);
  g_assert_cmpuint(requests->len, ==, 1);
  assert_nothing_left(url);
  server_stop(&s);
}

static void test_pull_resumes(void) {
  Server s = {0};
  server_start(&s, "srv-resume", (const char *[]){"--drop-after", "1000000", NULL});
  g_autofree char *file = g_build_filename(s.root, "big.img", NULL);
  write_random(file, 3 << 20);
  g_autofree char *digest = file_digest(file);
  g_autofree char *url = g_strconcat(s.base, "big.img", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);

  g_autofree char *key = hutch_image_pull(ctx, url, digest, &error);
  g_assert_no_error(error);
  assert_cached(key, digest);
  g_autoptr(GPtrArray) requests = server_requests(&s);
  g_assert_cmpuint(requests->len, ==, 2);
  g_assert_cmpstr(g_ptr_array_index(requests, 0), ==, "GET /big.img - 200");
  g_assert_cmpstr(g_ptr_array_index(requests, 1), ==, "GET /big.img bytes=1000000- 206");
  server_stop(&s);
}

static void test_pull_server_ignores_range(void) {
  Server s = {0};
  server_start(&s, "srv-norange",
               (const char *[]){"--drop-after", "500000", "--ignore-range", NULL});
  g_autofree char *file = g_build_filename(s.root, "big.img", NULL);
  write_random(file, 2 << 20);
  g_autofree char *digest = file_digest(file);
  g_autofree char *url = g_strconcat(s.base, "big.img", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);

  g_autofree char *key = hutch_image_pull(ctx, url, digest, &error);
  g_assert_no_error(error);
  assert_cached(key, digest);
  g_autoptr(GPtrArray) requests = server_requests(&s);
  g_assert_cmpuint(requests->len, ==, 3);
  g_assert_cmpstr(g_ptr_array_index(requests, 1), ==, "GET /big.img bytes=500000- 200");
  g_assert_cmpstr(g_ptr_array_index(requests, 2), ==, "GET /big.img - 200");
  server_stop(&s);
}

static void test_pull_refuses_backing_file(void) {
  Server s = {0};
  server_start(&s, "srv-backing", NULL);
  g_autofree char *file = g_build_filename(s.root, "backed.qcow2", NULL);
  run_ok((const char *[]){"qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b",
                          "/etc/shadow", file, "16M", NULL});
  g_autofree char *digest = file_digest(file);
  g_autofree char *url = g_strconcat(s.base, "backed.qcow2", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autofree char *key = hutch_image_pull(ctx, url, digest, &error);
  g_assert_null(key);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE);
  g_assert_nonnull(strstr(error->message, "/etc/shadow"));
  g_autofree char *would_be = hutch_image_url_key(digest, NULL);
  g_autofree char *dir = g_build_filename(images, would_be, NULL);
  g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
  assert_nothing_left(url);
  server_stop(&s);
}

static void test_pull_checksums_and_resolve(void) {
  Server s = {0};
  server_start(&s, "srv-sums", NULL);
  g_autofree char *file = g_build_filename(s.root, "cloud.img", NULL);
  write_random(file, 1 << 20);
  g_autofree char *digest = file_digest(file);
  g_autofree char *unrelated = g_strdup(digest + 7);
  unrelated[0] = unrelated[0] == '0' ? '1' : '0';
  g_autofree char *sums_text =
      g_strdup_printf("%s  unrelated.img\n%s *cloud.img\n", unrelated, digest + 7);
  g_autofree char *sums = g_build_filename(s.root, "SHA256SUMS", NULL);
  g_assert_true(g_file_set_contents(sums, sums_text, -1, NULL));
  g_autofree char *url = g_strconcat(s.base, "cloud.img", NULL);
  g_autofree char *sums_url = g_strconcat(s.base, "SHA256SUMS", NULL);

  g_autoptr(GError) error = NULL;
  g_autofree char *found = hutch_image_fetch_digest(url, sums_url, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(found, ==, digest);

  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  profile->image.kind = HUTCH_IMAGE_URL;
  profile->image.url = g_strdup(url);
  profile->image.checksums = g_strdup(sums_url);
  g_autoptr(HutchImage) image = hutch_image_resolve(ctx, profile, &error);
  g_assert_no_error(error);
  g_autofree char *key = hutch_image_url_key(digest, NULL);
  g_assert_cmpstr(image->key, ==, key);
  g_assert_cmpstr(image->format, ==, "raw");
  g_autofree char *disk = g_build_filename(images, key, "disk.raw", NULL);
  g_assert_cmpstr(image->disk, ==, disk);
  g_assert_null(image->kernel);
  g_assert_null(image->cmdline);

  /* Offline (checksums file gone): the cached image from the same url and checksums. */
  g_assert_cmpint(g_unlink(sums), ==, 0);
  g_autoptr(HutchImage) offline = hutch_image_resolve(ctx, profile, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(offline->key, ==, key);

  g_autofree char *missing_url = g_strconcat(s.base, "nothing.img", NULL);
  g_assert_null(hutch_image_fetch_digest(url, missing_url, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
  server_stop(&s);
}

static void test_pull_file_url(void) {
  g_autofree char *file = tmp_path("local source.img");
  write_random(file, 200000);
  g_autofree char *digest = file_digest(file);
  g_autofree char *url = g_filename_to_uri(file, NULL, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autofree char *key = hutch_image_pull(ctx, url, digest, &error);
  g_assert_no_error(error);
  assert_cached(key, digest);
}

/* ---- fallback: build when the download cannot be made ---------------------------------- */

static void test_curl_unreachable(void) {
  static const int unreachable[] = {
      CURLE_COULDNT_RESOLVE_HOST,
      CURLE_COULDNT_RESOLVE_PROXY,
      CURLE_COULDNT_CONNECT,
      CURLE_OPERATION_TIMEDOUT,
      CURLE_HTTP_RETURNED_ERROR,
      CURLE_SSL_CONNECT_ERROR,
      CURLE_PEER_FAILED_VERIFICATION,
      CURLE_RECV_ERROR,
      CURLE_SEND_ERROR,
      CURLE_GOT_NOTHING,
      CURLE_PARTIAL_FILE,
      CURLE_TOO_MANY_REDIRECTS,
      CURLE_FILE_COULDNT_READ_FILE,
      CURLE_RANGE_ERROR,
  };
  for (gsize i = 0; i < G_N_ELEMENTS(unreachable); i++)
    g_assert_true(hutch_image_curl_unreachable(unreachable[i]));
  /* hutch's own side: a full disk or an oversized checksums file is no network trouble */
  static const int local[] = {CURLE_OK, CURLE_WRITE_ERROR, CURLE_OUT_OF_MEMORY, CURLE_FAILED_INIT,
                              CURLE_ABORTED_BY_CALLBACK};
  for (gsize i = 0; i < G_N_ELEMENTS(local); i++)
    g_assert_false(hutch_image_curl_unreachable(local[i]));
}

typedef struct {
  GPtrArray *notes;
  GPtrArray *ends; /* "phase: detail" */
} Seen;

static void record_progress(const HutchProgress *p, gpointer data) {
  Seen *seen = data;
  if (p->kind == HUTCH_PROGRESS_NOTE)
    g_ptr_array_add(seen->notes, g_strdup(p->detail));
  else if (p->kind == HUTCH_PROGRESS_END)
    g_ptr_array_add(seen->ends, g_strdup_printf("%s: %s", p->phase, p->detail ? p->detail : ""));
}

/* A URL image with a fallback whose build is in the cache already (a real build takes
 * minutes): resolving it tells which way the decision went without mmdebstrap. */
static HutchProfile *fallback_profile(const char *url, const char *digest, const char *sums,
                                      char **ret_fallback_key) {
  HutchProfile *profile = hutch_profile_new_defaults();
  profile->name = g_strdup("fb");
  profile->image.kind = HUTCH_IMAGE_URL;
  profile->image.url = g_strdup(url);
  profile->image.digest = g_strdup(digest);
  profile->image.checksums = g_strdup(sums);
  HutchImageSpec *fb = g_new0(HutchImageSpec, 1);
  fb->kind = HUTCH_IMAGE_BUILD;
  fb->suite = g_strdup("bookworm");
  fb->packages = g_strsplit("python3,curl,hutch-fallback-test", ",", -1);
  profile->image.fallback = fb;

  char *key = hutch_image_build_key(fb);
  g_autofree char *dir = g_build_filename(images, key, NULL);
  g_autofree char *disk = g_build_filename(dir, "disk.raw", NULL);
  g_autofree char *json = g_build_filename(dir, "image.json", NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  write_random(disk, 65536);
  g_autofree char *text = g_strdup_printf(
      "{\"key\": \"%s\", \"kind\": \"build\", \"spec\": {\"suite\": \"bookworm\"}, "
      "\"format\": \"raw\", \"disk\": \"disk.raw\", \"created\": \"2025-01-01T00:00:00Z\"}",
      key);
  g_assert_true(g_file_set_contents(json, text, -1, NULL));
  *ret_fallback_key = key;
  return profile;
}

static void assert_fell_back(const char *url, const char *digest, const char *sums,
                             const char *cause) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  Seen seen = {g_ptr_array_new_with_free_func(g_free), g_ptr_array_new_with_free_func(g_free)};
  hutch_context_set_progress(ctx, record_progress, &seen);
  g_autofree char *fb_key = NULL;
  g_autoptr(HutchProfile) profile = fallback_profile(url, digest, sums, &fb_key);
  g_autoptr(HutchImage) image = hutch_image_resolve(ctx, profile, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(image->key, ==, fb_key);
  g_assert_cmpuint(seen.notes->len, ==, 1);
  const char *note = g_ptr_array_index(seen.notes, 0);
  g_autofree char *want = g_strdup_printf("cannot download %s (", cause);
  if (!g_str_has_prefix(note, want) ||
      !g_str_has_suffix(note, "): building Debian bookworm locally from the Debian mirror "
                              "instead"))
    g_error("unexpected note '%s' (wanted '%s...')", note, want);
  g_autofree char *end = g_strdup_printf("image: %s, built locally (cached)", fb_key);
  g_assert_true(g_ptr_array_find_with_equal_func(seen.ends, end, g_str_equal, NULL));
  g_ptr_array_unref(seen.notes);
  g_ptr_array_unref(seen.ends);
}

/* The image is wrong, not missing: an error, and the fallback is not taken. */
static void assert_no_fallback(const char *url, const char *digest, const char *sums, int code,
                               const char *needle) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  Seen seen = {g_ptr_array_new_with_free_func(g_free), g_ptr_array_new_with_free_func(g_free)};
  hutch_context_set_progress(ctx, record_progress, &seen);
  g_autofree char *fb_key = NULL;
  g_autoptr(HutchProfile) profile = fallback_profile(url, digest, sums, &fb_key);
  g_autoptr(HutchImage) image = hutch_image_resolve(ctx, profile, &error);
  g_assert_null(image);
  g_assert_error(error, HUTCH_ERROR, code);
  if (!strstr(error->message, needle))
    g_error("'%s' does not mention '%s'", error->message, needle);
  g_assert_null(strstr(error->message, "fallback"));
  g_assert_cmpuint(seen.notes->len, ==, 0);
  g_ptr_array_unref(seen.notes);
  g_ptr_array_unref(seen.ends);
}

static void test_fallback_when_unreachable(void) {
  const char *digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
  /* Nothing listens on port 1: connection refused, for the file and for its checksums. */
  assert_fell_back("http://127.0.0.1:1/x.qcow2", digest, NULL, "http://127.0.0.1:1/x.qcow2");
  assert_fell_back("https://127.0.0.1:1/x.qcow2", NULL, "https://127.0.0.1:1/SHA512SUMS",
                   "https://127.0.0.1:1/SHA512SUMS");

  /* A server that answers 404, for the checksums and for the file. */
  Server s = {0};
  server_start(&s, "srv-fallback", NULL);
  g_autofree char *url = g_strconcat(s.base, "gone.qcow2", NULL);
  g_autofree char *sums = g_strconcat(s.base, "SHA512SUMS", NULL);
  assert_fell_back(url, NULL, sums, sums);
  assert_fell_back(url, digest, NULL, url);
  server_stop(&s);
}

static void test_no_fallback_when_wrong(void) {
  Server s = {0};
  server_start(&s, "srv-nofallback", NULL);
  /* a digest mismatch: a wrong image is never swapped for a built one */
  g_autofree char *file = g_build_filename(s.root, "evil.img", NULL);
  g_autofree char *other = tmp_path("other-fb.img");
  write_random(file, 1 << 16);
  write_random(other, 1 << 16);
  g_autofree char *wrong = file_digest(other);
  g_autofree char *url = g_strconcat(s.base, "evil.img", NULL);
  assert_no_fallback(url, wrong, NULL, HUTCH_ERROR_DIGEST, "digest mismatch");

  /* checksums that do not list the file */
  g_autofree char *sums = g_build_filename(s.root, "SHA256SUMS", NULL);
  g_autofree char *right = file_digest(file);
  g_autofree char *sums_text = g_strdup_printf("%s  other.img\n", right + 7);
  g_assert_true(g_file_set_contents(sums, sums_text, -1, NULL));
  g_autofree char *sums_url = g_strconcat(s.base, "SHA256SUMS", NULL);
  assert_no_fallback(url, NULL, sums_url, HUTCH_ERROR_NOT_FOUND, "no checksum for 'evil.img'");

  /* a file that arrives but is refused (a backing file) */
  g_autofree char *backed = g_build_filename(s.root, "backed.qcow2", NULL);
  run_ok((const char *[]){"qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b",
                          "/etc/shadow", backed, "16M", NULL});
  g_autofree char *backed_digest = file_digest(backed);
  g_autofree char *backed_url = g_strconcat(s.base, "backed.qcow2", NULL);
  assert_no_fallback(backed_url, backed_digest, NULL, HUTCH_ERROR_IMAGE, "/etc/shadow");
  server_stop(&s);
}

/* Without a fallback the error says what a profile could do about it. */
static void test_unreachable_without_fallback(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  profile->image.kind = HUTCH_IMAGE_URL;
  profile->image.url = g_strdup("https://127.0.0.1:1/x.qcow2");
  profile->image.checksums = g_strdup("https://127.0.0.1:1/SHA256SUMS");
  g_autoptr(HutchImage) image = hutch_image_resolve(ctx, profile, &error);
  g_assert_null(image);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE);
  g_assert_true(g_str_has_prefix(
      error->message,
      "resolving image https://127.0.0.1:1/x.qcow2: downloading https://127.0.0.1:1/SHA256SUMS: "));
  g_assert_true(g_str_has_suffix(
      error->message,
      " (the profile's image has no fallback: to build instead; see hutch-profile(5))"));
}

/* `hutch image build` of a downloaded image's profile builds (here: finds) its fallback. */
static void test_build_fallback_ahead(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autofree char *fb_key = NULL;
  g_autoptr(HutchProfile) profile = fallback_profile("https://127.0.0.1:1/x.qcow2", NULL,
                                                     "https://127.0.0.1:1/SHA256SUMS", &fb_key);
  g_autofree char *key = hutch_image_build(ctx, profile, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(key, ==, fb_key);
}

/* ---- list, remove, stale work directories, overlays ----------------------------------- */

static char *pull_local(HutchContext *ctx, gsize size) {
  g_autoptr(GError) error = NULL;
  g_autofree char *file = g_build_filename(tmp_root, "src-XXXXXX", NULL);
  int fd = g_mkstemp(file);
  g_assert_cmpint(fd, >=, 0);
  close(fd);
  write_random(file, size);
  g_autofree char *digest = file_digest(file);
  g_autofree char *url = g_filename_to_uri(file, NULL, NULL);
  char *key = hutch_image_pull(ctx, url, digest, &error);
  g_assert_no_error(error);
  return key;
}

static void test_list_and_remove(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autofree char *key = pull_local(ctx, 100000);

  g_autofree char *inst = g_build_filename(instances, "dev", NULL);
  g_assert_cmpint(g_mkdir_with_parents(inst, 0700), ==, 0);
  g_autofree char *ref = g_build_filename(inst, HUTCH_INSTANCE_IMAGE_KEY_FILE, NULL);
  g_autofree char *ref_text = g_strconcat(key, "\n", NULL);
  g_assert_true(g_file_set_contents(ref, ref_text, -1, NULL));
  /* a VM on qemu:///system has its own copies: not a user of the image */
  g_autofree char *sys_inst = g_build_filename(instances, "sysdev", NULL);
  g_assert_cmpint(g_mkdir_with_parents(sys_inst, 0700), ==, 0);
  g_autofree char *sys_ref = g_build_filename(sys_inst, HUTCH_INSTANCE_IMAGE_KEY_FILE, NULL);
  g_assert_true(g_file_set_contents(sys_ref, ref_text, -1, NULL));
  g_autofree char *sys_connection = g_build_filename(sys_inst, HUTCH_INSTANCE_CONNECTION, NULL);
  g_assert_true(g_file_set_contents(sys_connection, "qemu:///system\n", -1, NULL));

  g_autoptr(JsonArray) list = hutch_image_list(ctx, &error);
  g_assert_no_error(error);
  JsonObject *found = NULL;
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *o = json_array_get_object_element(list, i);
    if (g_strcmp0(json_object_get_string_member(o, "key"), key) == 0)
      found = o;
  }
  g_assert_nonnull(found);
  g_assert_cmpstr(json_object_get_string_member(found, "kind"), ==, "url");
  g_assert_true(g_str_has_prefix(json_object_get_string_member(found, "source"), "file://"));
  g_assert_cmpint(json_object_get_int_member(found, "size"), ==, 100000);
  g_assert_false(json_object_get_boolean_member(found, "kernel"));
  JsonArray *used = json_object_get_array_member(found, "used_by");
  g_assert_cmpuint(json_array_get_length(used), ==, 1);
  g_assert_cmpstr(json_array_get_string_element(used, 0), ==, "dev");

  g_assert_false(hutch_image_remove(ctx, key, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_STATE);
  g_assert_nonnull(strstr(error->message, "dev"));
  g_clear_error(&error);
  g_autofree char *dir = g_build_filename(images, key, NULL);
  g_assert_true(g_file_test(dir, G_FILE_TEST_IS_DIR));

  g_assert_cmpint(g_unlink(ref), ==, 0);
  /* A unique prefix names the image too. */
  g_autofree char *prefix = g_strndup(key, strlen(key) - 2);
  g_assert_true(hutch_image_remove(ctx, prefix, &error));
  g_assert_no_error(error);
  g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
  g_assert_false(dir_has_prefix(images, ".tmp-"));
  g_assert_false(hutch_image_remove(ctx, key, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_FOUND);
}

static void test_stale_work_dirs(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_assert_cmpint(g_mkdir_with_parents(images, 0700), ==, 0);
  g_autofree char *stale = g_build_filename(images, ".tmp-stale1", NULL);
  g_autofree char *busy = g_build_filename(images, ".tmp-busy01", NULL);
  g_assert_cmpint(g_mkdir(stale, 0700), ==, 0);
  g_assert_cmpint(g_mkdir(busy, 0700), ==, 0);
  g_autofree char *stale_lock = g_build_filename(stale, "lock", NULL);
  g_autofree char *stale_disk = g_build_filename(stale, "disk.qcow2", NULL);
  g_autofree char *busy_lock = g_build_filename(busy, "lock", NULL);
  g_assert_true(g_file_set_contents(stale_lock, "", 0, NULL));
  g_assert_true(g_file_set_contents(stale_disk, "half", 4, NULL));
  int fd = open(busy_lock, O_RDWR | O_CREAT, 0600);
  g_assert_cmpint(flock(fd, LOCK_EX), ==, 0);

  g_autofree char *key = pull_local(ctx, 4096);
  g_assert_false(g_file_test(stale, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(busy, G_FILE_TEST_IS_DIR));
  close(fd);
  g_assert_true(hutch_rmtree(busy, NULL));
}

static void test_overlay(void) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autofree char *base = tmp_path("overlay-base.qcow2");
  run_ok((const char *[]){"qemu-img", "create", "-q", "-f", "qcow2", base, "64M", NULL});
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  profile->image.kind = HUTCH_IMAGE_FILE;
  profile->image.file = g_strdup(base);
  g_autoptr(HutchImage) image = hutch_image_resolve(ctx, profile, &error);
  g_assert_no_error(error);
  g_assert_null(image->key);
  g_assert_cmpstr(image->format, ==, "qcow2");

  g_autofree char *small = tmp_path("overlay-small.qcow2");
  g_autofree char *large = tmp_path("overlay-large.qcow2");
  g_assert_true(hutch_image_create_overlay(image, small, 1 << 20, &error));
  g_assert_no_error(error);
  g_assert_true(hutch_image_create_overlay(image, large, 1ULL << 30, &error));
  GStatBuf st;
  g_assert_cmpint(g_stat(large, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);
  /* The overlay is what hutch_image_inspect exists to refuse as a base. */
  assert_refused(large, "backing file");

  const struct {
    const char *path;
    gint64 size;
  } want[] = {{small, 64 << 20}, {large, 1 << 30}};
  for (gsize i = 0; i < G_N_ELEMENTS(want); i++) {
    g_autofree char *out = NULL;
    const char *argv[] = {"qemu-img", "info", "-U", "--output=json", want[i].path, NULL};
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out,
                               NULL, NULL, &error));
    g_autoptr(JsonParser) parser = json_parser_new();
    g_assert_true(json_parser_load_from_data(parser, out, -1, &error));
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    g_assert_cmpint(json_object_get_int_member(o, "virtual-size"), ==, want[i].size);
    g_assert_cmpstr(json_object_get_string_member(o, "backing-filename"), ==, base);
    g_assert_cmpstr(json_object_get_string_member(o, "backing-filename-format"), ==, "qcow2");
  }

  g_autofree char *bad = tmp_path("overlay-of-overlay.qcow2");
  g_autoptr(HutchImage) wrong = g_new0(HutchImage, 1);
  wrong->disk = g_strdup(large);
  wrong->format = g_strdup("qcow2");
  g_assert_false(hutch_image_create_overlay(wrong, bad, 1 << 20, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_IMAGE);
  g_assert_false(g_file_test(bad, G_FILE_TEST_EXISTS));
}

/* ---- a real build (opt-in) ------------------------------------------------------------ */

static void test_build_real(void) {
  if (!g_getenv("HUTCH_TEST_IMAGE_BUILD")) {
    g_test_skip("set HUTCH_TEST_IMAGE_BUILD=1 for a real mmdebstrap build (minutes)");
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchContext) ctx = hutch_context_new("test:///default", &error);
  g_autoptr(HutchProfile) profile = hutch_profile_new_defaults();
  profile->image.kind = HUTCH_IMAGE_BUILD;
  profile->image.suite = g_strdup("bookworm");
  profile->image.packages = g_strsplit("python3,curl", ",", -1);
  g_autoptr(HutchImage) image = hutch_image_resolve(ctx, profile, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(image->format, ==, "qcow2");
  g_assert_true(g_file_test(image->kernel, G_FILE_TEST_IS_REGULAR));
  g_assert_true(g_file_test(image->initrd, G_FILE_TEST_IS_REGULAR));
  g_assert_nonnull(strstr(image->cmdline, "root=/dev/vda"));
  double start = hutch_now();
  g_autofree char *key = hutch_image_build(ctx, profile, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(key, ==, image->key);
  g_assert_cmpfloat(hutch_now() - start, <, 1.0);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  tmp_root = g_dir_make_tmp("hutch-test-image-XXXXXX", NULL);
  g_assert_nonnull(tmp_root);
  /* Before GLib reads and caches the XDG directories. */
  g_autofree char *cache = g_build_filename(tmp_root, "cache", NULL);
  g_autofree char *data = g_build_filename(tmp_root, "data", NULL);
  g_setenv("XDG_CACHE_HOME", cache, TRUE);
  g_setenv("XDG_DATA_HOME", data, TRUE);
  g_autofree char *cache_dir = hutch_cache_dir();
  g_autofree char *data_dir = hutch_data_dir();
  images = g_build_filename(cache_dir, "images", NULL);
  instances = g_build_filename(data_dir, "instances", NULL);
  hutch_init();

  g_test_add_func("/image/inspect/accepts", test_inspect_accepts);
  g_test_add_func("/image/inspect/backing-file", test_inspect_backing_file);
  g_test_add_func("/image/inspect/data-file", test_inspect_data_file);
  g_test_add_func("/image/inspect/foreign", test_inspect_foreign);
  g_test_add_func("/image/key/build", test_build_key);
  g_test_add_func("/image/key/url", test_url_key);
  g_test_add_func("/image/checksums/find", test_find_checksum);
  g_test_add_func("/image/build/host-mirror", test_host_mirror);
  g_test_add_func("/image/build/refuses-bad-spec", test_build_refuses_bad_spec);
  g_test_add_func("/image/pull/ok-then-cache-hit", test_pull_ok_then_cache_hit);
  g_test_add_func("/image/pull/wrong-digest", test_pull_wrong_digest);
  g_test_add_func("/image/pull/resumes", test_pull_resumes);
  g_test_add_func("/image/pull/concurrent", test_pull_concurrent);
  g_test_add_func("/image/pull/server-ignores-range", test_pull_server_ignores_range);
  g_test_add_func("/image/pull/refuses-backing-file", test_pull_refuses_backing_file);
  g_test_add_func("/image/pull/checksums-and-resolve", test_pull_checksums_and_resolve);
  g_test_add_func("/image/pull/file-url", test_pull_file_url);
  g_test_add_func("/image/fallback/curl-unreachable", test_curl_unreachable);
  g_test_add_func("/image/fallback/when-unreachable", test_fallback_when_unreachable);
  g_test_add_func("/image/fallback/not-when-wrong", test_no_fallback_when_wrong);
  g_test_add_func("/image/fallback/none", test_unreachable_without_fallback);
  g_test_add_func("/image/fallback/build-ahead", test_build_fallback_ahead);
  g_test_add_func("/image/cache/list-and-remove", test_list_and_remove);
  g_test_add_func("/image/cache/stale-work-dirs", test_stale_work_dirs);
  g_test_add_func("/image/overlay", test_overlay);
  g_test_add_func("/image/build/real", test_build_real);
  int status = g_test_run();
  hutch_rmtree(tmp_root, NULL);
  g_free(tmp_root);
  g_free(images);
  g_free(instances);
  return status;
}
