/* doctor.c: what `hutch doctor` checks on the host, and the fix for each problem. */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "doctor-private.h"
#include "net-private.h"
#include "instance-private.h"
#include "share-private.h"

/* Adds one result. fix is only kept when the check failed. */
static void add(JsonArray *results, const char *check, gboolean ok, const char *severity,
                const char *detail, const char *fix) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "check", check);
  json_object_set_boolean_member(o, "ok", ok);
  json_object_set_string_member(o, "severity", ok ? "info" : severity);
  json_object_set_string_member(o, "detail", detail);
  if (!ok && fix)
    json_object_set_string_member(o, "fix", fix);
  json_array_add_object_element(results, o);
}

static char *host_path(const HutchDoctorEnv *env, const char *path) {
  return g_strconcat(env->root ? env->root : "", path, NULL);
}

/* Like g_find_program_in_path, but in env->path rather than the process's PATH. */
static char *find_program(const HutchDoctorEnv *env, const char *program) {
  if (strchr(program, '/'))
    return g_file_test(program, G_FILE_TEST_IS_EXECUTABLE) ? g_strdup(program) : NULL;
  g_auto(GStrv) dirs = g_strsplit(env->path ? env->path : "", ":", -1);
  for (guint i = 0; dirs[i]; i++) {
    if (!*dirs[i])
      continue;
    g_autofree char *candidate = g_build_filename(dirs[i], program, NULL);
    if (g_file_test(candidate, G_FILE_TEST_IS_EXECUTABLE) &&
        !g_file_test(candidate, G_FILE_TEST_IS_DIR))
      return g_steal_pointer(&candidate);
  }
  return NULL;
}

/* kvm_pvm is a paravirtual KVM: /dev/kvm works and libvirt offers kvm, but stock guest
 * kernels hang in their decompressor under it. It shows as a module in /sys/module, or in
 * /proc/modules where /sys is not mounted. */
static gboolean host_has_kvm_pvm(const HutchDoctorEnv *env) {
  g_autofree char *sys = host_path(env, "/sys/module/kvm_pvm");
  if (g_file_test(sys, G_FILE_TEST_EXISTS))
    return TRUE;
  g_autofree char *modules_path = host_path(env, "/proc/modules");
  g_autofree char *modules = NULL;
  if (!g_file_get_contents(modules_path, &modules, NULL, NULL))
    return FALSE;
  return g_str_has_prefix(modules, "kvm_pvm ") || strstr(modules, "\nkvm_pvm ") != NULL;
}

/* How the user gets to open /dev/kvm. Joining its group helps only when that group may read
 * and write it and is not root's (on some hosts /dev/kvm is root's alone, mode 0600). */
static char *kvm_access_fix(const char *dev, const char *user) {
  struct stat st = {0};
  if (stat(dev, &st) == 0 && st.st_gid != 0 && (st.st_mode & 0060) == 0060) {
    struct group *group = getgrgid(st.st_gid);
    g_autofree char *name =
        group ? g_strdup(group->gr_name) : g_strdup_printf("%u", (unsigned)st.st_gid);
    return g_strdup_printf("add yourself to the group of /dev/kvm (sudo usermod -aG %s %s) and "
                           "log in again; until then guests run under TCG emulation",
                           name, user);
  }
  return g_strdup_printf(
      "/dev/kvm is not open to a group you could join (mode %04o, group id %u): give it to "
      "group kvm with mode 0660 (a udev rule KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\", "
      "then sudo udevadm trigger), then sudo usermod -aG kvm %s and log in again; until then "
      "guests run under TCG emulation",
      (unsigned)(st.st_mode & 07777), (unsigned)st.st_gid, user);
}

static void check_kvm(JsonArray *results, const HutchDoctorEnv *env) {
  static const char tcg_fix[] =
      "guests need TCG emulation: set `accel: tcg` in your profiles (and `cpus: 1` on small "
      "hosts), or export HUTCH_ACCEL=tcg to override every profile";
  g_autofree char *dev = host_path(env, "/dev/kvm");
  gboolean pvm = host_has_kvm_pvm(env);
  if (!g_file_test(dev, G_FILE_TEST_EXISTS)) {
    if (pvm)
      add(results, "kvm", FALSE, "warning",
          "KVM unavailable: there is no /dev/kvm, and the host's KVM is the paravirtual kvm_pvm "
          "(on which stock guest kernels hang)",
          tcg_fix);
    else
      add(results, "kvm", FALSE, "warning", "KVM unavailable: there is no /dev/kvm",
          "enable virtualization (VT-x/AMD-V) in the firmware and load kvm_intel or kvm_amd "
          "(in a VM: enable nested virtualization); until then guests need TCG emulation: "
          "`accel: tcg` in profiles or HUTCH_ACCEL=tcg");
    return;
  }
  gboolean usable = access(dev, R_OK | W_OK) == 0;
  int access_errno = errno;
  /* kvm_pvm first: on such a host access to /dev/kvm would not help, so advising a group
   * (perhaps root's) would send the user the wrong way. */
  if (pvm) {
    g_autofree char *detail = g_strdup_printf(
        "/dev/kvm is the paravirtual kvm_pvm: stock guest kernels hang under it%s%s%s",
        usable ? "" : " (and you cannot open it: ", usable ? "" : g_strerror(access_errno),
        usable ? "" : ")");
    add(results, "kvm", FALSE, "warning", detail, tcg_fix);
    return;
  }
  if (!usable) {
    g_autofree char *detail =
        g_strdup_printf("cannot open /dev/kvm: %s", g_strerror(access_errno));
    g_autofree char *fix = kvm_access_fix(dev, env->user);
    add(results, "kvm", FALSE, "warning", detail, fix);
    return;
  }
  add(results, "kvm", TRUE, NULL, "/dev/kvm is usable", NULL);
}

static void check_libvirt(JsonArray *results, HutchContext *ctx) {
  g_autoptr(GError) error = NULL;
  virConnectPtr conn = hutch_context_connect(ctx, &error);
  if (conn == NULL && g_error_matches(error, HUTCH_ERROR, HUTCH_ERROR_USAGE)) {
    /* a URI hutch does not run VMs on: installing libvirt would not help */
    add(results, "libvirt", FALSE, "error", error->message,
        "hutch doctor -c qemu:///session (and unset LIBVIRT_DEFAULT_URI if it names another)");
    return;
  }
  if (!conn) {
    g_autofree char *detail = g_strdup_printf("libvirt unreachable: %s", error->message);
    add(results, "libvirt", FALSE, "error", detail,
        "apt-get install libvirt-daemon libvirt-clients (as an ordinary user, qemu:///session "
        "starts its own daemon when XDG_RUNTIME_DIR is set); check with: virsh -c "
        "qemu:///session uri");
    return;
  }
  unsigned long lib = 0, hv = 0;
  if (virConnectGetLibVersion(conn, &lib) < 0) {
    add(results, "libvirt", FALSE, "error", "libvirt did not say its version",
        "check the daemon: virsh version");
    return;
  }
  const char *hv_type = virConnectGetType(conn);
  g_autofree char *hv_text = NULL;
  if (virConnectGetVersion(conn, &hv) == 0 && hv > 0)
    hv_text = g_strdup_printf(", %s %lu.%lu.%lu", hv_type ? hv_type : "hypervisor", hv / 1000000,
                              hv / 1000 % 1000, hv % 1000);
  g_autofree char *detail =
      g_strdup_printf("libvirt %lu.%lu.%lu on %s%s", lib / 1000000, lib / 1000 % 1000, lib % 1000,
                      hutch_context_get_uri(ctx), hv_text ? hv_text : "");
  if (lib < 9000000)
    add(results, "libvirt", FALSE, "error", detail, "hutch needs libvirt 9.0 or later");
  else
    add(results, "libvirt", TRUE, NULL, detail, NULL);
}

/* The session daemon serving $XDG_RUNTIME_DIR/libvirt: its pid (from its pid file, libvirtd's
 * or the modular virtqemud's) and the config tree it keeps domains in (its XDG_CONFIG_HOME,
 * else $HOME/.config), when /proc lets us read its environment. FALSE when unknown. */
static gboolean session_daemon_config(const HutchDoctorEnv *env, char **ret_pid,
                                      char **ret_config) {
  if (!env->runtime_dir)
    return FALSE;
  for (const char *const *daemon = (const char *const[]){"libvirtd", "virtqemud", NULL}; *daemon;
       daemon++) {
    g_autofree char *pidfile_name = g_strconcat(*daemon, ".pid", NULL);
    g_autofree char *pidfile = g_build_filename(env->runtime_dir, "libvirt", pidfile_name, NULL);
    g_autofree char *pid = NULL;
    if (!g_file_get_contents(pidfile, &pid, NULL, NULL))
      continue;
    g_strstrip(pid);
    if (!*pid || strspn(pid, "0123456789") != strlen(pid))
      continue;
    g_autofree char *environ_rel = g_strdup_printf("/proc/%s/environ", pid);
    g_autofree char *environ_path = host_path(env, environ_rel);
    g_autofree char *text = NULL;
    gsize len = 0;
    if (!g_file_get_contents(environ_path, &text, &len, NULL))
      continue;
    const char *config = NULL, *home = NULL;
    for (const char *p = text; p < text + len; p += strlen(p) + 1) {
      if (g_str_has_prefix(p, "XDG_CONFIG_HOME="))
        config = p + strlen("XDG_CONFIG_HOME=");
      else if (g_str_has_prefix(p, "HOME="))
        home = p + strlen("HOME=");
    }
    if (!config && !home)
      continue;
    *ret_pid = g_steal_pointer(&pid);
    *ret_config = config && *config ? g_strdup(config) : g_build_filename(home, ".config", NULL);
    return TRUE;
  }
  return FALSE;
}

/* Instance directories whose domain libvirt does not know: the VMs that vanished from view. */
static void check_instances(JsonArray *results, HutchContext *ctx, const HutchDoctorEnv *env) {
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) missing = hutch_instance_missing(ctx, env->instances_dir, &error);
  if (!missing)
    return; /* the libvirt check says why */
  g_autofree char *pid = NULL, *daemon_config = NULL;
  gboolean known = session_daemon_config(env, &pid, &daemon_config);
  g_autofree char *ours = env->config_dir ? g_canonicalize_filename(env->config_dir, "/") : NULL;
  g_autofree char *theirs = known ? g_canonicalize_filename(daemon_config, "/") : NULL;
  gboolean foreign = known && ours && g_strcmp0(ours, theirs) != 0;
  g_autofree char *fix = NULL;
  if (foreign)
    fix = g_strdup_printf(
        "the libvirt session daemon serving %s/libvirt (pid %s) keeps its domains under "
        "XDG_CONFIG_HOME=%s, not %s: it was started by something with other XDG directories "
        "(a test or benchmark run) and does not know your VMs. Stop it (kill %s; it also exits "
        "after 120 s without clients and VMs), then hutch list",
        env->runtime_dir, pid, daemon_config, ours, pid);
  if (missing->len == 0) {
    if (foreign) {
      g_autofree char *detail = g_strdup_printf(
          "the session daemon (pid %s) keeps its domains under XDG_CONFIG_HOME=%s, not %s", pid,
          daemon_config, ours);
      add(results, "instances", FALSE, "warning", detail, fix);
      return;
    }
    add(results, "instances", TRUE, NULL, "every instance directory has its libvirt domain", NULL);
    return;
  }
  g_autoptr(GString) names = g_string_new(NULL);
  for (guint i = 0; i < missing->len; i++)
    g_string_append_printf(names, "%s%s", i ? ", " : "", (char *)g_ptr_array_index(missing, i));
  g_autofree char *detail = g_strdup_printf(
      "%u VM%s whose files are in %s but whose domain %s does not know: %s", missing->len,
      missing->len == 1 ? "" : "s", env->instances_dir, hutch_context_get_uri(ctx), names->str);
  if (!fix)
    fix = g_strdup_printf(
        "a libvirt session daemon started with another XDG_CONFIG_HOME may be serving this "
        "socket: does virsh -c %s list --all show your VMs? If not, stop that daemon (it exits "
        "by itself after 120 s without clients and VMs) and try again. A VM whose domain was "
        "removed for good (virsh undefine) is gone: remove its directory",
        hutch_context_get_uri(ctx));
  add(results, "instances", FALSE, "warning", detail, fix);
}

/* A program hutch runs: found or not, with the package that has it. */
static void check_program(JsonArray *results, const HutchDoctorEnv *env, const char *check,
                          const char *program, const char *severity, const char *needed_for,
                          const char *fix) {
  g_autofree char *found = find_program(env, program);
  g_autofree char *detail = found
                                ? g_strdup_printf("%s (%s)", found, needed_for)
                                : g_strdup_printf("%s not found in PATH (%s)", program, needed_for);
  add(results, check, found != NULL, severity, detail, fix);
}

/* The egress policy's needs: ip and nft (in /usr/sbin, which a user's PATH often lacks: the
 * helper looks there too) and user namespaces an unprivileged user may make. */
static void check_egress(JsonArray *results, const HutchDoctorEnv *env) {
  g_autofree char *sbin = host_path(env, "/usr/sbin");
  g_autofree char *path = g_strconcat(env->path ? env->path : "", ":", sbin, NULL);
  HutchDoctorEnv with_sbin = *env;
  with_sbin.path = path;
  g_autofree char *nft = find_program(&with_sbin, "nft");
  g_autofree char *ip = find_program(&with_sbin, "ip");
  /* asked of util-linux's unshare, a program of its own: this process may have threads (or
   * run under valgrind), and a process with threads cannot make a user namespace */
  gboolean userns = FALSE;
  const char *argv[] = {"unshare", "--user", "--net", "true", NULL};
  int status = 0;
  if (g_spawn_sync(NULL, (char **)argv, NULL,
                   G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                   NULL, NULL, NULL, NULL, &status, NULL))
    userns = g_spawn_check_wait_status(status, NULL);
  g_autofree char *detail = g_strdup_printf(
      "nft %s, ip %s, unprivileged user namespaces %s (the egress policy: every mode but "
      "unrestricted)",
      nft ? nft : "missing", ip ? ip : "missing", userns ? "allowed" : "refused");
  add(results, "egress", nft && ip && userns, "error", detail,
      "apt-get install nftables iproute2; user namespaces: sysctl kernel.unprivileged_userns_clone=1 "
      "(Ubuntu: an AppArmor profile that allows them for hutch); or egress: unrestricted");
}

static void check_virtiofsd(JsonArray *results) {
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchVirtiofsd) virtiofsd = hutch_virtiofsd_find(&error);
  if (!virtiofsd) {
    add(results, "virtiofsd", FALSE, "warning", error->message,
        "apt-get install qemu-system-common (Debian 12) or virtiofsd (newer distributions); "
        "only profiles with shares need it");
    return;
  }
  /* hutch makes read-only shares read-only itself (a read-only bind mount in virtiofsd's
   * mount namespace), so --readonly is informational. */
  g_autofree char *detail = g_strdup_printf(
      "%s (%s virtiofsd, %s); read-only shares are enforced by hutch with a read-only bind "
      "mount either way",
      virtiofsd->path, virtiofsd->kind == HUTCH_VIRTIOFSD_RUST ? "Rust" : "C",
      virtiofsd->has_readonly ? "has --readonly" : "no --readonly");
  add(results, "virtiofsd", TRUE, NULL, detail, NULL);
}

/* A share's virtiofsd keeps one open descriptor for every file and directory the guest has
 * looked up, and it can raise its soft limit only as far as the hard one (lib/share.c). */
#define NOFILE_WANTED 65536

static void check_open_files(JsonArray *results, const HutchDoctorEnv *env) {
  gboolean ok = env->nofile_hard >= NOFILE_WANTED;
  g_autofree char *limit = env->nofile_hard == G_MAXUINT64
                               ? g_strdup("unlimited")
                               : g_strdup_printf("%" G_GUINT64_FORMAT, env->nofile_hard);
  g_autofree char *detail = g_strdup_printf(
      "hard limit %s: %s", limit,
      ok ? "a share can hold that many files and directories"
         : "virtiofsd keeps a descriptor open for every file the guest has looked up in a "
           "share, so a share holding more than about that many files and directories (a "
           "node_modules) fails in the guest with 'Too many open files'");
  g_autofree char *fix = g_strdup_printf(
      "raise the hard limit to %d or more for %s: a line '%s hard nofile 524288' in "
      "/etc/security/limits.conf and a new login (systemd login sessions have 524288)",
      NOFILE_WANTED, env->user, env->user);
  add(results, "open-files", ok, "warning", detail, fix);
}

static void check_subids(JsonArray *results, const HutchDoctorEnv *env) {
  if (env->uid == 0) {
    add(results, "subuid", FALSE, "error",
        "running as root: hutch refuses to run VMs as root (QEMU would run as root, and "
        "virtiofsd without a user namespace)",
        "run hutch as your own user");
    return;
  }
  g_autofree char *fix = g_strdup_printf(
      "add the line '%s:100000:65536' to /etc/subuid and /etc/subgid, with a range no other "
      "user has (or: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 "
      "%s); only profiles with shares need it",
      env->user, env->user);
  GString *missing = g_string_new(NULL);
  for (const char *const *tool = (const char *const[]){"newuidmap", "newgidmap", NULL}; *tool;
       tool++) {
    g_autofree char *found = find_program(env, *tool);
    if (!found)
      g_string_append_printf(missing, "%s%s", missing->len ? ", " : "", *tool);
  }
  if (missing->len) {
    g_autofree char *detail = g_strdup_printf(
        "%s not found: virtiofsd cannot run in a user namespace without root", missing->str);
    g_string_free(missing, TRUE);
    add(results, "subuid", FALSE, "warning", detail,
        "apt-get install uidmap; only profiles with shares need it");
    return;
  }
  g_string_free(missing, TRUE);
  g_autoptr(GString) ranges = g_string_new(NULL);
  for (const char *const *file = (const char *const[]){"/etc/subuid", "/etc/subgid", NULL}; *file;
       file++) {
    g_autofree char *path = host_path(env, *file);
    g_autofree char *text = NULL;
    guint32 start = 0, count = 0;
    if (!g_file_get_contents(path, &text, NULL, NULL) ||
        !hutch_share_parse_subid(text, env->user, env->uid, &start, &count)) {
      g_autofree char *detail = g_strdup_printf(
          "%s has no range for %s: virtiofsd cannot run in a user namespace", *file, env->user);
      add(results, "subuid", FALSE, "warning", detail, fix);
      return;
    }
    g_string_append_printf(ranges, "%s%s %u+%u", ranges->len ? ", " : "", *file, start, count);
  }
  g_autofree char *detail = g_strdup_printf("%s; newuidmap and newgidmap found", ranges->str);
  add(results, "subuid", TRUE, NULL, detail, NULL);
}

static void check_runtime_dir(JsonArray *results, const HutchDoctorEnv *env) {
  static const char fix[] =
      "log in through a session that sets it (systemd-logind), or create it yourself: "
      "sudo install -d -m 0700 -o $USER /run/user/$(id -u) and export "
      "XDG_RUNTIME_DIR=/run/user/$(id -u)";
  if (!env->runtime_dir || !*env->runtime_dir) {
    add(results, "runtime-dir", FALSE, "error",
        "XDG_RUNTIME_DIR is not set: libvirt's session daemon and hutch's sockets live there", fix);
    return;
  }
  if (!g_file_test(env->runtime_dir, G_FILE_TEST_IS_DIR) ||
      access(env->runtime_dir, W_OK | X_OK) != 0) {
    g_autofree char *detail =
        g_strdup_printf("XDG_RUNTIME_DIR=%s is not a directory you can write to", env->runtime_dir);
    add(results, "runtime-dir", FALSE, "error", detail, fix);
    return;
  }
  g_autofree char *detail = g_strdup_printf("XDG_RUNTIME_DIR=%s", env->runtime_dir);
  add(results, "runtime-dir", TRUE, NULL, detail, NULL);
}

static void check_cache_space(JsonArray *results, const HutchDoctorEnv *env) {
  /* The cache may not exist yet: measure the filesystem it will be made on. */
  g_autofree char *dir = g_strdup(env->cache_dir);
  while (!g_file_test(dir, G_FILE_TEST_IS_DIR) && strcmp(dir, "/") != 0 && strcmp(dir, ".") != 0) {
    char *parent = g_path_get_dirname(dir);
    g_free(dir);
    dir = parent;
  }
  struct statvfs fs;
  if (statvfs(dir, &fs) != 0) {
    g_autofree char *detail =
        g_strdup_printf("cannot measure free space of %s: %s", env->cache_dir, g_strerror(errno));
    add(results, "cache-space", FALSE, "warning", detail,
        "check that the cache directory ($XDG_CACHE_HOME/hutch) can be made");
    return;
  }
  guint64 free_bytes = (guint64)fs.f_bavail * fs.f_frsize;
  g_autofree char *free_text = g_format_size_full(free_bytes, G_FORMAT_SIZE_IEC_UNITS);
  g_autofree char *min_text = g_format_size_full(env->min_free, G_FORMAT_SIZE_IEC_UNITS);
  g_autofree char *detail = g_strdup_printf("%s free for %s", free_text, env->cache_dir);
  g_autofree char *fix = g_strdup_printf(
      "images and VM disks need room (%s or more): free some space, or point XDG_CACHE_HOME "
      "and XDG_DATA_HOME at a larger filesystem",
      min_text);
  add(results, "cache-space", free_bytes >= env->min_free, "warning", detail, fix);
}

JsonArray *hutch_doctor_run(HutchContext *ctx, const HutchDoctorEnv *env) {
  JsonArray *results = json_array_new();
  check_kvm(results, env);
  if (ctx)
    check_libvirt(results, ctx);
  if (ctx && env->instances_dir)
    check_instances(results, ctx, env);
  check_program(results, env, "qemu", "qemu-system-x86_64", "error", "runs the guests",
                "apt-get install qemu-system-x86");
  const char *passt = g_getenv("HUTCH_PASST");
  /* which of passt's paths this host gets (lib/domain.c, add_net_backend) */
  gboolean vhost_user = FALSE;
  g_autoptr(GError) backend_error = NULL;
  g_autofree char *needed_for = NULL;
  g_autofree char *passt_found = find_program(env, passt && *passt ? passt : "passt");
  if (!passt_found)
    needed_for = g_strdup("the guests' network");
  else if (!hutch_net_vhost_user(&vhost_user, &backend_error))
    needed_for = g_strdup_printf("the guests' network; %s", backend_error->message);
  else if (vhost_user)
    needed_for = g_strdup("the guests' network; vhost-user: passt serves the network card's "
                          "queues (VMs on qemu:///system need it)");
  else
    needed_for = g_strdup_printf(
        "the guests' network; a stream socket: %s",
        g_strcmp0(g_getenv("HUTCH_PASST_VHOST_USER"), "0") == 0
            ? "HUTCH_PASST_VHOST_USER=0"
            : "this passt has no vhost-user mode (passt 2024-11 and later have it, one copy "
              "less per packet; VMs on qemu:///system need it)");
  check_program(results, env, "passt", passt && *passt ? passt : "passt", "error", needed_for,
                "apt-get install passt");
  if (backend_error)
    add(results, "passt-backend", FALSE, "error", backend_error->message,
        "unset HUTCH_PASST_VHOST_USER (hutch then takes what passt offers)");
  check_egress(results, env);
  check_virtiofsd(results);
  check_open_files(results, env);
  check_subids(results, env);
  check_program(results, env, "mmdebstrap", "mmdebstrap", "warning",
                "builds images of profiles with `image: build:`", "apt-get install mmdebstrap");
  check_runtime_dir(results, env);
  check_cache_space(results, env);
  return results;
}

JsonArray *hutch_doctor(HutchContext *ctx) {
  struct rlimit nofile = {0};
  getrlimit(RLIMIT_NOFILE, &nofile);
  g_autofree char *cache = hutch_cache_dir();
  g_autofree char *images = g_build_filename(cache, "images", NULL);
  g_autofree char *data = hutch_data_dir();
  g_autofree char *instances = g_build_filename(data, "instances", NULL);
  HutchDoctorEnv env = {
      .root = "",
      .path = g_getenv("PATH"),
      .runtime_dir = g_getenv("XDG_RUNTIME_DIR"),
      .cache_dir = images,
      .user = g_get_user_name(),
      .uid = getuid(),
      .min_free = (guint64)10 << 30,
      .nofile_hard = nofile.rlim_max == RLIM_INFINITY ? G_MAXUINT64 : (guint64)nofile.rlim_max,
      .instances_dir = instances,
      .config_dir = g_get_user_config_dir(),
  };
  return hutch_doctor_run(ctx, &env);
}
