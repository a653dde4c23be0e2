/* test-domain.c: domain XML against golden files, libvirt's test:///default driver, and
 * metadata parsing. */
#include "config.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "domain-private.h"
#include "util-private.h"

#define QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)

/* One golden shape: a profile plus a config whose strings are static or owned here. */
typedef struct {
  HutchProfile *profile;
  HutchDomainConfig config;
  GPtrArray *filesystems;
} Shape;

static void shape_free(Shape *shape) {
  hutch_profile_free(shape->profile);
  if (shape->filesystems)
    g_ptr_array_unref(shape->filesystems);
  g_free(shape);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Shape, shape_free)

static HutchDomainFs *fs_new(const char *tag, const char *socket) {
  HutchDomainFs *fs = g_new0(HutchDomainFs, 1);
  fs->tag = g_strdup(tag);
  fs->socket = g_strdup(socket);
  return fs;
}

/* The fields every shape has, for an instance named name. */
static Shape *shape_base(const char *name, const char *uuid, const char *type) {
  Shape *s = g_new0(Shape, 1);
  s->profile = hutch_profile_new_defaults();
  s->profile->name = g_strdup("default");
  HutchDomainConfig *c = &s->config;
  c->name = name;
  c->uuid = uuid;
  c->domain_type = type;
  c->disk_path = "/home/dev/.local/share/hutch/instances/x/disk.qcow2";
  c->console_log = "/home/dev/.local/share/hutch/instances/x/console.log";
  c->ready_socket = "/run/user/1000/hutch/x/ready.sock";
  c->profile_name = "default";
  c->instance_dir = "/home/dev/.local/share/hutch/instances/x";
  c->runtime_dir = "/run/user/1000/hutch/x";
  c->guest_user = "dev";
  return s;
}

static void shape_add_seed_agent(Shape *s) {
  s->config.seed_path = "/home/dev/.local/share/hutch/instances/x/seed.iso";
  s->config.agent_socket = "/run/user/1000/hutch/x/agent.sock";
}

static void shape_add_network(Shape *s) {
  s->config.passt_socket = "/run/user/1000/hutch/x/passt.sock";
  s->config.mac = "52:54:00:12:34:56";
  s->config.ssh_port = 40022;
}

static Shape *shape_new(const char *which) {
  Shape *s = NULL;
  if (strcmp(which, "minimal") == 0) {
    s = shape_base("minimal", "4e7f8a52-1b63-4c1e-9d3e-2a5b6c7d8e9f", "kvm");
    g_free(s->profile->name);
    s->profile->name = g_strdup("minimal");
    s->config.profile_name = "minimal";
  } else if (strcmp(which, "shares") == 0) {
    s = shape_base("shares", "0b9c1d2e-3f40-4152-8637-48596a7b8c9d", "kvm");
    s->filesystems = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_domain_fs_free);
    g_ptr_array_add(s->filesystems,
                    fs_new("hutch-share0", "/run/user/1000/hutch/x/virtiofs0.sock"));
    g_ptr_array_add(s->filesystems,
                    fs_new("hutch-share1", "/run/user/1000/hutch/x/virtiofs1.sock"));
    s->config.filesystems = s->filesystems;
  } else if (strcmp(which, "ports") == 0) {
    s = shape_base("ports", "6a1b2c3d-4e5f-4061-9273-8495a6b7c8d9", "kvm");
    shape_add_seed_agent(s);
    shape_add_network(s);
  } else if (strcmp(which, "direct-kernel") == 0) {
    /* The test guest: TCG, 1 vCPU, kernel and initrd booted directly. */
    s = shape_base("direct-kernel", "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", "qemu");
    s->profile->cpus = 1;
    s->profile->memory = 1ULL << 30;
    s->config.emulator = "/usr/bin/qemu-system-x86_64";
    s->config.kernel = "/home/dev/.cache/hutch/images/test/vmlinuz";
    s->config.initrd = "/home/dev/.cache/hutch/images/test/initrd.img";
    s->config.cmdline = "root=/dev/vda rw console=ttyS0 net.ifnames=0";
    shape_add_seed_agent(s);
    shape_add_network(s);
  } else if (strcmp(which, "system") == 0) {
    /* qemu:///system: QEMU runs as libvirt's user; the console and the ready channel are
     * libvirt's own, passt's socket is libvirt's vhost-user interface */
    s = shape_base("system", "7d8e9fa0-b1c2-4d3e-8f40-5162738495a6", "qemu");
    s->config.console_log = NULL;
    s->config.ready_socket = NULL;
    s->config.system = TRUE;
    s->config.net_vhost_user = TRUE;
    s->config.seed_path = "/var/lib/libvirt/images/hutch-1000/vms/x/seed.iso";
    s->config.disk_path = "/var/lib/libvirt/images/hutch-1000/vms/x/disk.qcow2";
    s->config.passt_socket = "/var/lib/libvirt/images/hutch-1000/run/x/passt.socket";
    s->config.mac = "52:54:00:12:34:56";
    s->filesystems = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_domain_fs_free);
    g_ptr_array_add(
        s->filesystems,
        fs_new("hutch-share0", "/var/lib/libvirt/images/hutch-1000/run/x/virtiofs0.sock"));
    s->config.filesystems = s->filesystems;
  } else if (strcmp(which, "tcg") == 0) {
    /* The profile asks for 4 vCPUs, the caller capped them (hutch_domain_vcpus). */
    s = shape_base("tcg", "2c3d4e5f-6071-4829-a3b4-c5d6e7f80912", "qemu");
    s->profile->cpus = 4;
    s->config.cpus = 1;
    s->profile->memory = 2ULL << 30;
    shape_add_seed_agent(s);
  }
  g_assert_nonnull(s);
  return s;
}

static char *golden_path(const char *which) {
  const char *data = g_getenv("HUTCH_TEST_DATA");
  g_assert_nonnull(data);
  g_autofree char *file = g_strdup_printf("%s.xml", which);
  return g_build_filename(data, "domain", file, NULL);
}

/* string(xpath) evaluated on xml, with the qemu namespace prefix known. */
static char *xpath_string(const char *xml, const char *expr) {
  g_autoptr(xmlDoc) doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                                        XML_PARSE_NONET | XML_PARSE_NOERROR |
                                            XML_PARSE_NOWARNING);
  g_assert_nonnull(doc);
  xmlXPathContextPtr ctx = xmlXPathNewContext(doc);
  xmlXPathRegisterNs(ctx, BAD_CAST "qemu", BAD_CAST QEMU_NS);
  xmlXPathRegisterNs(ctx, BAD_CAST "hutch", BAD_CAST HUTCH_METADATA_NS);
  g_autofree char *wrapped = g_strdup_printf("string(%s)", expr);
  xmlXPathObjectPtr obj = xmlXPathEvalExpression(BAD_CAST wrapped, ctx);
  g_assert_nonnull(obj);
  char *result = g_strdup((const char *)obj->stringval);
  xmlXPathFreeObject(obj);
  xmlXPathFreeContext(ctx);
  return result;
}

/* checks: NULL-terminated pairs of XPath expression and expected string value. */
static void assert_xpaths(const char *xml, const char *const *checks) {
  for (gsize i = 0; checks[i]; i += 2) {
    g_autofree char *value = xpath_string(xml, checks[i]);
    if (g_strcmp0(value, checks[i + 1]) == 0)
      continue;
    g_test_message("in:\n%s", xml);
    g_error("%s: expected '%s', got '%s'", checks[i], checks[i + 1], value);
  }
}

/* Defines xml on test:///default, checks what libvirt kept, reads the metadata back and
 * parses it; returns the parsed metadata. */
static HutchDomainMeta *define_on_test_driver(const char *name, const char *xml,
                                              const char *const *checks) {
  g_autoptr(virConnect) conn = virConnectOpen("test:///default");
  g_assert_nonnull(conn);
  /* The test driver has no parser for the qemu namespace and drops <qemu:commandline>
   * silently instead of refusing it; everything else of ours it accepts, tb-cache
   * included. */
  g_autoptr(virDomain) dom = virDomainDefineXML(conn, xml);
  if (!dom)
    g_error("defining %s: %s", name, virGetLastErrorMessage());
  g_autofree char *dumped = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
  g_assert_nonnull(dumped);
  assert_xpaths(dumped, checks);

  g_autofree char *meta_xml =
      virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, HUTCH_METADATA_NS, 0);
  g_assert_nonnull(meta_xml);
  g_autoptr(GError) error = NULL;
  HutchDomainMeta *meta = hutch_domain_meta_parse(meta_xml, &error);
  g_assert_no_error(error);
  g_assert_cmpint(virDomainUndefine(dom), ==, 0);
  return meta;
}

static void assert_meta_matches(const HutchDomainMeta *meta, const HutchDomainConfig *c) {
  g_assert_cmpstr(meta->profile_name, ==, c->profile_name);
  g_assert_cmpuint(meta->ssh_port, ==, c->ssh_port);
  g_assert_cmpstr(meta->instance_dir, ==, c->instance_dir);
  g_assert_cmpstr(meta->runtime_dir, ==, c->runtime_dir);
  g_assert_cmpstr(meta->guest_user, ==, c->guest_user);
  g_assert_cmpstr(meta->accel, ==, strcmp(c->domain_type, "qemu") == 0 ? "tcg" : "kvm");
}

typedef struct {
  const char *which;
  const char *const *checks;   /* on libvirt's dumpxml of the defined domain */
  const char *const *own;      /* on our XML only: what the test driver drops */
} GoldenCase;

static const char *const common_checks[] = {
    "/domain/os/type/@machine", "q35",
    "/domain/devices/disk[@device='disk']/driver/@discard", "unmap",
    "/domain/devices/disk[@device='disk']/driver/@detect_zeroes", "unmap",
    "/domain/devices/disk[@device='disk']/target/@dev", "vda",
    "/domain/devices/serial/source/@path",
    "/home/dev/.local/share/hutch/instances/x/console.log",
    "/domain/devices/console/@type", "file",
    "/domain/devices/channel[target/@name='org.hutch.ready.0']/source/@path",
    "/run/user/1000/hutch/x/ready.sock",
    "/domain/devices/rng/backend", "/dev/urandom",
    "/domain/devices/memballoon/@model", "virtio",
    "/domain/devices/controller[@type='usb']/@model", "none",
    "count(/domain/devices/graphics)", "0",
    "count(/domain/devices/input[@bus='usb'])", "0",
    "/domain/on_poweroff", "destroy",
    "/domain/on_crash", "destroy",
    NULL,
};

static const char *const minimal_checks[] = {
    "/domain/@type", "kvm",
    "/domain/memory", "4194304",
    "/domain/currentMemory", "4194304",
    "/domain/vcpu", "2",
    "/domain/cpu/@mode", "host-model",
    "count(/domain/features/tcg)", "0",
    "count(/domain/devices/disk)", "1",
    "count(/domain/devices/channel)", "1",
    "count(/domain/memoryBacking)", "0",
    "/domain/os/boot/@dev", "hd",
    NULL,
};

static const char *const minimal_own[] = {
    "count(/domain/qemu:commandline)", "0",
    NULL,
};

static const char *const shares_checks[] = {
    "/domain/memoryBacking/source/@type",
    "memfd",
    "/domain/memoryBacking/access/@mode",
    "shared",
    "count(/domain/devices/filesystem)",
    "2",
    "/domain/devices/filesystem[target/@dir='hutch-share0']/driver/@type",
    "virtiofs",
    "/domain/devices/filesystem[target/@dir='hutch-share0']/driver/@queue",
    "1024",
    "/domain/devices/filesystem[target/@dir='hutch-share0']/source/@socket",
    "/run/user/1000/hutch/x/virtiofs0.sock",
    "/domain/devices/filesystem[target/@dir='hutch-share1']/source/@socket",
    "/run/user/1000/hutch/x/virtiofs1.sock",
    /* read-only shares are enforced by virtiofsd on the host, never by the domain */
    "count(/domain/devices/filesystem/readonly)",
    "0",
    NULL,
};

static const char *const ports_checks[] = {
    "/domain/devices/disk[@device='cdrom']/target/@bus", "scsi",
    "/domain/devices/disk[@device='cdrom']/target/@dev", "sda",
    "count(/domain/devices/disk[@device='cdrom']/readonly)", "1",
    "/domain/devices/channel[target/@name='org.qemu.guest_agent.0']/source/@path",
    "/run/user/1000/hutch/x/agent.sock",
    "/domain/metadata/hutch:instance/hutch:ssh-port", "40022",
    NULL,
};

static const char *const network_own[] = {
    "count(/domain/qemu:commandline/qemu:arg)", "4",
    "/domain/qemu:commandline/qemu:arg[1]/@value", "-netdev",
    "/domain/qemu:commandline/qemu:arg[2]/@value",
    "stream,id=hutchnet0,server=off,addr.type=unix,addr.path=/run/user/1000/hutch/x/passt.sock",
    "/domain/qemu:commandline/qemu:arg[3]/@value", "-device",
    "/domain/qemu:commandline/qemu:arg[4]/@value",
    "virtio-net-pci,netdev=hutchnet0,mac=52:54:00:12:34:56,bus=pcie.0,addr=0x10",
    NULL,
};

static const char *const direct_kernel_checks[] = {
    "/domain/@type", "qemu",
    "/domain/devices/emulator", "/usr/bin/qemu-system-x86_64",
    "/domain/os/kernel", "/home/dev/.cache/hutch/images/test/vmlinuz",
    "/domain/os/initrd", "/home/dev/.cache/hutch/images/test/initrd.img",
    "/domain/os/cmdline", "root=/dev/vda rw console=ttyS0 net.ifnames=0",
    "/domain/features/tcg/tb-cache", "262144",
    "/domain/vcpu", "1",
    "/domain/memory", "1048576",
    "/domain/cpu/@mode", "maximum",
    "/domain/cpu/@migratable", "off",
    NULL,
};

static const char *const tcg_checks[] = {
    "/domain/@type", "qemu",
    "/domain/features/tcg/tb-cache", "262144",
    "/domain/features/tcg/tb-cache/@unit", "KiB",
    "count(/domain/cpu[@mode='host-model'])", "0",
    "/domain/cpu/@mode", "maximum",
    "/domain/cpu/@migratable", "off",
    "/domain/vcpu", "1",
    "/domain/memory", "2097152",
    "count(/domain/os/kernel)", "0",
    NULL,
};

static const char *const tcg_own[] = {
    "/domain/features/tcg/tb-cache", "256",
    "/domain/features/tcg/tb-cache/@unit", "MiB",
    NULL,
};

static const GoldenCase golden_cases[] = {
    {"minimal", minimal_checks, minimal_own},
    {"shares", shares_checks, minimal_own},
    {"ports", ports_checks, network_own},
    {"direct-kernel", direct_kernel_checks, network_own},
    {"tcg", tcg_checks, tcg_own},
};

static void test_golden(gconstpointer data) {
  const GoldenCase *gc = data;
  g_autoptr(Shape) shape = shape_new(gc->which);
  g_autoptr(GError) error = NULL;
  g_autofree char *xml = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  g_assert_nonnull(xml);

  g_autofree char *path = golden_path(gc->which);
  if (g_strcmp0(g_getenv("HUTCH_REGENERATE"), "1") == 0) {
    g_autofree char *dir = g_path_get_dirname(path);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    g_file_set_contents(path, xml, -1, &error);
    g_assert_no_error(error);
  } else {
    g_autofree char *expected = NULL;
    g_file_get_contents(path, &expected, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(xml, ==, expected);
  }

  assert_xpaths(xml, gc->own);
  assert_xpaths(xml, common_checks);
  g_autoptr(HutchDomainMeta) meta = define_on_test_driver(gc->which, xml, gc->checks);
  assert_meta_matches(meta, &shape->config);
}

/* pairs of expression and value, a pair a line */
/* clang-format off */
static const char *const system_checks[] = {
    "/domain/devices/serial/@type", "pty",
    "count(/domain/devices/serial/source)", "0",
    "/domain/devices/console/@type", "pty",
    "count(/domain/devices/channel[target/@name='org.qemu.guest_agent.0'])", "0",
    "count(/domain/devices/interface)", "1",
    "/domain/devices/interface/@type", "vhostuser",
    "/domain/devices/interface/source/@type", "unix",
    "/domain/devices/interface/source/@mode", "client",
    "/domain/devices/interface/source/@path",
    "/var/lib/libvirt/images/hutch-1000/run/x/passt.socket",
    "/domain/devices/interface/mac/@address", "52:54:00:12:34:56",
    "/domain/devices/interface/model/@type", "virtio",
    "/domain/devices/disk[@device='disk']/source/@file",
    "/var/lib/libvirt/images/hutch-1000/vms/x/disk.qcow2",
    "/domain/memoryBacking/access/@mode", "shared",
    "count(/domain/devices/disk[@device='disk']/backingStore)", "1",
    "count(/domain/devices/disk[@device='disk']/backingStore/*)", "0",
    NULL,
};
/* clang-format on */

/* qemu:///system: no path of the user's but the metadata's, libvirt's own console and ready
 * channel, the NIC as libvirt's vhost-user interface (no <qemu:commandline>), and shareable
 * memory that an edit removing every share keeps (passt maps it). */
static void test_system(void) {
  g_autoptr(Shape) shape = shape_new("system");
  g_autoptr(GError) error = NULL;
  g_autofree char *xml = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  assert_xpaths(xml, system_checks);
  /* our XML only: the test driver drops a channel's source without a path */
  assert_xpaths(xml, (const char *const[]){
                         "count(/domain/qemu:commandline)", "0",
                         "count(/domain/devices/channel/source/@path)", "0",
                         "/domain/devices/channel[target/@name='org.hutch.ready.0']/source/@mode",
                         "bind", NULL});
  g_autoptr(HutchDomainMeta) meta = define_on_test_driver("system", xml, system_checks);
  assert_meta_matches(meta, &shape->config);
  g_autofree char *edited = hutch_domain_edit_xml(xml, shape->profile, 1, NULL, &error);
  g_assert_no_error(error);
  assert_xpaths(edited, (const char *const[]){"count(/domain/devices/filesystem)", "0",
                                             "/domain/memoryBacking/access/@mode", "shared",
                                             NULL});
  /* passt's stream mode has no libvirt interface to go through */
  shape->config.net_vhost_user = FALSE;
  g_clear_pointer(&xml, g_free);
  xml = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_null(xml);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_nonnull(strstr(error->message, "vhost-user mode only"));
}

/* Values with XML's special characters and non-ASCII text survive as they were. */
static void test_escaping(void) {
  static const char *const nasty = "/tmp/a&b'c\"d<e>f]]>g é";
  g_autoptr(Shape) shape = shape_new("tcg");
  shape->config.name = "escaping";
  shape->config.disk_path = nasty;
  shape->config.console_log = "/tmp/&amp;.log";
  shape->config.kernel = "/tmp/k&'";
  shape->config.cmdline = "root=/dev/vda x=\"a b\" y='&lt;'";
  shape->config.instance_dir = nasty;
  shape->config.runtime_dir = "/run/<hutch>";
  shape->config.guest_user = "d&v";
  shape->config.profile_name = "p'q\"";
  shape->filesystems = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_domain_fs_free);
  g_ptr_array_add(shape->filesystems, fs_new("t", "/srv/it's & <that>.sock"));
  shape->config.filesystems = shape->filesystems;

  g_autoptr(GError) error = NULL;
  g_autofree char *xml = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  const char *const checks[] = {
      "/domain/devices/disk/source/@file",
      nasty,
      "/domain/devices/serial/source/@path",
      "/tmp/&amp;.log",
      "/domain/os/kernel",
      "/tmp/k&'",
      "/domain/os/cmdline",
      "root=/dev/vda x=\"a b\" y='&lt;'",
      "/domain/devices/filesystem/source/@socket",
      "/srv/it's & <that>.sock",
      "/domain/metadata/hutch:instance/hutch:instance-dir",
      nasty,
      "/domain/metadata/hutch:instance/hutch:user",
      "d&v",
      NULL,
  };
  assert_xpaths(xml, checks);
  g_autoptr(HutchDomainMeta) meta = define_on_test_driver("escaping", xml, checks);
  assert_meta_matches(meta, &shape->config);
}

/* HUTCH_TCG_CPU=qemu64 (the boot benchmark's baseline): no <cpu> under TCG, libvirt's
 * default model; KVM keeps host-model. */
static void test_tcg_qemu64(void) {
  g_autoptr(Shape) tcg = shape_new("tcg");
  tcg->config.tcg_qemu64 = TRUE;
  g_autoptr(GError) error = NULL;
  g_autofree char *xml = hutch_domain_build_xml(tcg->profile, &tcg->config, &error);
  g_assert_no_error(error);
  const char *const tcg_checks_qemu64[] = {"count(/domain/cpu)", "0", NULL};
  assert_xpaths(xml, tcg_checks_qemu64);

  g_autoptr(Shape) kvm = shape_new("minimal");
  kvm->config.tcg_qemu64 = TRUE;
  g_autofree char *kvm_xml = hutch_domain_build_xml(kvm->profile, &kvm->config, &error);
  g_assert_no_error(error);
  const char *const kvm_checks[] = {"/domain/cpu/@mode", "host-model", "/domain/vcpu", "2", NULL};
  assert_xpaths(kvm_xml, kvm_checks);
}

/* `hutch edit`: the vCPUs given (what the cap made of the profile's), not the profile's own;
 * the memory; the shares replaced, with shared memory exactly when one is left. */
static void test_edit_xml(void) {
  g_autoptr(Shape) shape = shape_new("shares");
  g_autoptr(GError) error = NULL;
  g_autofree char *xml = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  shape->profile->cpus = 2;
  shape->profile->memory = 3 * 1024 * 1024 * 1024ULL;
  g_autofree char *edited = hutch_domain_edit_xml(xml, shape->profile, 1, NULL, &error);
  g_assert_no_error(error);
  const char *const checks[] = {"/domain/vcpu", "1", "/domain/memory", "3145728",
                                "count(/domain/devices/filesystem)", "0",
                                "count(/domain/memoryBacking)", "0", NULL};
  assert_xpaths(edited, checks);
  g_autofree char *again =
      hutch_domain_edit_xml(edited, shape->profile, 2, shape->filesystems, &error);
  g_assert_no_error(error);
  g_autofree char *count = g_strdup_printf("%u", shape->filesystems->len);
  const char *const checks2[] = {"/domain/vcpu", "2", "count(/domain/devices/filesystem)", count,
                                 "/domain/memoryBacking/access/@mode", "shared", NULL};
  assert_xpaths(again, checks2);
}

/* text with its one occurrence of what replaced by with (the test fails if it is not there) */
static char *replace_once(const char *text, const char *what, const char *with) {
  const char *at = strstr(text, what);
  if (!at)
    g_error("'%s' not in:\n%s", what, text);
  return g_strdup_printf("%.*s%s%s", (int)(at - text), text, with, at + strlen(what));
}

/* The network's back end, set at each start: vhost-user (passt serves the virtqueues; the
 * memory becomes shareable) and back to a stream socket, the device untouched. */
static const char *const vhost_user_net[] = {
    "count(/domain/qemu:commandline/qemu:arg)",
    "6",
    "/domain/qemu:commandline/qemu:arg[1]/@value",
    "-chardev",
    "/domain/qemu:commandline/qemu:arg[2]/@value",
    "socket,id=hutchnetchr0,path=/run/user/1000/hutch/x/passt.sock",
    "/domain/qemu:commandline/qemu:arg[3]/@value",
    "-netdev",
    "/domain/qemu:commandline/qemu:arg[4]/@value",
    "vhost-user,id=hutchnet0,chardev=hutchnetchr0",
    "/domain/qemu:commandline/qemu:arg[5]/@value",
    "-device",
    "/domain/qemu:commandline/qemu:arg[6]/@value",
    "virtio-net-pci,netdev=hutchnet0,mac=52:54:00:12:34:56,bus=pcie.0,addr=0x10",
    "/domain/memoryBacking/source/@type",
    "memfd",
    "/domain/memoryBacking/access/@mode",
    "shared",
    NULL,
};

/* hutch_domain_set_net_backend returns xml unchanged and says so. */
static void assert_net_left_alone(const char *xml, const char *socket) {
  g_autoptr(GError) error = NULL;
  gboolean changed = TRUE;
  g_autofree char *set = hutch_domain_set_net_backend(xml, socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  g_assert_false(changed);
  g_assert_cmpstr(set, ==, xml);
}

static void test_net_backend(void) {
  g_autoptr(Shape) shape = shape_new("ports");
  g_autoptr(GError) error = NULL;
  const char *socket = shape->config.passt_socket;
  g_autofree char *stream = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  gboolean changed = FALSE;
  g_autofree char *vhost = hutch_domain_set_net_backend(stream, socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  g_assert_true(changed);
  assert_xpaths(vhost, vhost_user_net);
  /* what create would have made with vhost-user is the same */
  shape->config.net_vhost_user = TRUE;
  g_autofree char *built = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  assert_xpaths(built, vhost_user_net);
  shape->config.net_vhost_user = FALSE;
  /* asked again: nothing to change */
  g_autofree char *same = hutch_domain_set_net_backend(vhost, socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  g_assert_false(changed);
  g_assert_cmpstr(same, ==, vhost);
  /* `hutch edit` keeps the memory shareable for vhost-user, with no share left */
  g_autofree char *edited = hutch_domain_edit_xml(vhost, shape->profile, 1, NULL, &error);
  g_assert_no_error(error);
  assert_xpaths(edited, vhost_user_net);
  /* and back: the stream socket, the memory private again */
  g_autofree char *back = hutch_domain_set_net_backend(edited, socket, FALSE, &changed, &error);
  g_assert_no_error(error);
  g_assert_true(changed);
  assert_xpaths(back, network_own);
  const char *const private_memory[] = {"count(/domain/memoryBacking)", "0", NULL};
  assert_xpaths(back, private_memory);
  /* libvirt takes it */
  const char *const nothing[] = {NULL};
  g_autoptr(HutchDomainMeta) meta = define_on_test_driver("vhost-user", vhost, nothing);
  g_assert_nonnull(meta);
  /* a socket path with a comma would add options of its own */
  g_autofree char *bad =
      hutch_domain_set_net_backend(stream, "/tmp/p.sock,server=on", TRUE, &changed, &error);
  g_assert_null(bad);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_clear_error(&error);
  /* a domain without hutch's network is left alone */
  g_autoptr(Shape) bare = shape_new("minimal");
  g_autofree char *bare_xml = hutch_domain_build_xml(bare->profile, &bare->config, &error);
  g_assert_no_error(error);
  assert_net_left_alone(bare_xml, socket);
}

/* What a user's virsh edit may have done: the rewrite keeps their <memoryBacking> parts,
 * finds hutch's -netdev whatever its options' order, puts back shared memory that vhost-user
 * needs, and leaves a <qemu:commandline> without hutch's device alone. */
static void test_net_backend_edited(void) {
  g_autoptr(Shape) shape = shape_new("ports");
  g_autoptr(GError) error = NULL;
  const char *socket = shape->config.passt_socket;
  g_autofree char *stream = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  gboolean changed = FALSE;

  /* hugepages kept, through vhost-user and back */
  g_autofree char *huge = replace_once(stream, "<currentMemory",
                                       "<memoryBacking><hugepages/></memoryBacking><currentMemory");
  g_autofree char *vhost = hutch_domain_set_net_backend(huge, socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  const char *const huge_shared[] = {"count(/domain/memoryBacking/hugepages)", "1",
                                     "/domain/memoryBacking/access/@mode", "shared", NULL};
  assert_xpaths(vhost, huge_shared);
  g_autofree char *back = hutch_domain_set_net_backend(vhost, socket, FALSE, &changed, &error);
  g_assert_no_error(error);
  const char *const huge_private[] = {"count(/domain/memoryBacking/hugepages)", "1",
                                      "count(/domain/memoryBacking/access)", "0", NULL};
  assert_xpaths(back, huge_private);

  /* the id as the last option: still hutch's -netdev, replaced, not duplicated */
  g_autofree char *reordered = replace_once(
      stream,
      "stream,id=hutchnet0,server=off,addr.type=unix,addr.path=/run/user/1000/hutch/x/passt.sock",
      "stream,server=off,addr.type=unix,addr.path=/run/user/1000/hutch/x/passt.sock,id=hutchnet0");
  g_autofree char *from_reordered =
      hutch_domain_set_net_backend(reordered, socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  g_assert_true(changed);
  assert_xpaths(from_reordered, vhost_user_net);

  /* vhost-user without shared memory (removed by hand): put back */
  g_autofree char *vhost_plain =
      hutch_domain_set_net_backend(stream, socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  g_autofree char *no_memory = replace_once(vhost_plain,
                                            "<memoryBacking>\n    <source type=\"memfd\"/>\n    "
                                            "<access mode=\"shared\"/>\n  </memoryBacking>\n  ",
                                            "");
  const char *const memory_gone[] = {"count(/domain/memoryBacking)", "0", NULL};
  assert_xpaths(no_memory, memory_gone);
  g_autofree char *repaired =
      hutch_domain_set_net_backend(no_memory, socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  g_assert_true(changed);
  assert_xpaths(repaired, vhost_user_net);

  /* a command line of the user's own, without hutch's network device: left alone */
  g_autofree char *foreign =
      replace_once(stream, "virtio-net-pci,netdev=hutchnet0,", "e1000,netdev=hutchnet0,");
  assert_net_left_alone(foreign, socket);
}

/* With shares, the memory stays shareable whichever the network's back end. */
static void test_net_backend_with_shares(void) {
  g_autoptr(Shape) shape = shape_new("shares");
  shape_add_network(shape);
  g_autoptr(GError) error = NULL;
  g_autofree char *xml = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_no_error(error);
  gboolean changed = FALSE;
  g_autofree char *vhost =
      hutch_domain_set_net_backend(xml, shape->config.passt_socket, TRUE, &changed, &error);
  g_assert_no_error(error);
  g_autofree char *back =
      hutch_domain_set_net_backend(vhost, shape->config.passt_socket, FALSE, &changed, &error);
  g_assert_no_error(error);
  g_assert_true(changed);
  const char *const checks[] = {"/domain/memoryBacking/access/@mode",
                                "shared",
                                "count(/domain/memoryBacking)",
                                "1",
                                "count(/domain/devices/filesystem)",
                                "2",
                                NULL};
  assert_xpaths(vhost, checks);
  assert_xpaths(back, checks);
}

/* The TCG cap: max(1, cores / 2) unless HUTCH_TCG_MAX_CPUS gives another; never under KVM. */
static void test_vcpus(void) {
  static const struct {
    guint wanted;
    gboolean tcg;
    guint cores, limit, expected;
    const char *notice; /* NULL: no notice */
  } cases[] = {
      {2, FALSE, 2, 0, 2, NULL},
      {64, FALSE, 1, 0, 64, NULL},
      {1, TRUE, 2, 0, 1, NULL},
      {2, TRUE, 2, 0, 1,
       "cpus: 2 capped to 1 under TCG emulation on this 2-core host (more vCPUs stall the guest); "
       "give the profile cpus: 1 to silence this, or set HUTCH_TCG_MAX_CPUS=2 to keep 2"},
      {4, TRUE, 2, 0, 1,
       "cpus: 4 capped to 1 under TCG emulation on this 2-core host (more vCPUs stall the guest); "
       "give the profile cpus: 1 to silence this, or set HUTCH_TCG_MAX_CPUS=4 to keep 4"},
      {2, TRUE, 1, 0, 1,
       "cpus: 2 capped to 1 under TCG emulation on this 1-core host (more vCPUs stall the guest); "
       "give the profile cpus: 1 to silence this, or set HUTCH_TCG_MAX_CPUS=2 to keep 2"},
      {2, TRUE, 3, 0, 1,
       "cpus: 2 capped to 1 under TCG emulation on this 3-core host (more vCPUs stall the guest); "
       "give the profile cpus: 1 to silence this, or set HUTCH_TCG_MAX_CPUS=2 to keep 2"},
      {2, TRUE, 4, 0, 2, NULL},
      {8, TRUE, 16, 0, 8, NULL},
      {16, TRUE, 16, 0, 8,
       "cpus: 16 capped to 8 under TCG emulation on this 16-core host (more vCPUs stall the "
       "guest); give the profile cpus: 8 to silence this, or set HUTCH_TCG_MAX_CPUS=16 to keep "
       "16"},
      {4, TRUE, 2, 4, 4, NULL},
      {4, TRUE, 2, 8, 4, NULL},
      {4, TRUE, 16, 2, 2, "cpus: 4 capped to 2 under TCG emulation (HUTCH_TCG_MAX_CPUS=2)"},
      {4, FALSE, 2, 1, 4, NULL},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *notice = NULL;
    guint got = hutch_domain_vcpus(cases[i].wanted, cases[i].tcg, cases[i].cores, cases[i].limit,
                                   &notice);
    g_assert_cmpuint(got, ==, cases[i].expected);
    g_assert_cmpstr(notice, ==, cases[i].notice);
    g_assert_cmpuint(hutch_domain_vcpus(cases[i].wanted, cases[i].tcg, cases[i].cores,
                                        cases[i].limit, NULL),
                     ==, cases[i].expected);
  }
}

typedef void (*ShapeEdit)(Shape *s);

typedef struct {
  const char *what;
  ShapeEdit edit;
  const char *message;    /* a part of the expected error message */
} InvalidCase;

static void edit_name(Shape *s) { s->config.name = "Bad_Name"; }
static void edit_no_name(Shape *s) { s->config.name = NULL; }
static void edit_uuid(Shape *s) { s->config.uuid = "4e7f8a52-1b63-4c1e-9d3e-2a5b6c7d8e9"; }
static void edit_uuid_hex(Shape *s) { s->config.uuid = "4e7f8a52-1b63-4c1e-9d3e-2a5b6c7d8e9g"; }
static void edit_type(Shape *s) { s->config.domain_type = "xen"; }
static void edit_memory0(Shape *s) { s->profile->memory = 0; }
static void edit_memory_odd(Shape *s) { s->profile->memory = 1000; }
static void edit_cpus(Shape *s) { s->profile->cpus = 0; }
static void edit_disk_relative(Shape *s) { s->config.disk_path = "disk.qcow2"; }
static void edit_no_disk(Shape *s) { s->config.disk_path = NULL; }
static void edit_no_console(Shape *s) { s->config.console_log = NULL; }
static void edit_no_ready(Shape *s) { s->config.ready_socket = ""; }
static void edit_instance_dir(Shape *s) { s->config.instance_dir = "~/x"; }
static void edit_runtime_dir(Shape *s) { s->config.runtime_dir = NULL; }
static void edit_seed_relative(Shape *s) { s->config.seed_path = "./seed.iso"; }
static void edit_control(Shape *s) { s->config.console_log = "/tmp/a\nb"; }
static void edit_utf8(Shape *s) { s->config.disk_path = "/tmp/\xff\xfe"; }
static void edit_cmdline(Shape *s) {
  s->config.kernel = "/boot/vmlinuz";
  s->config.cmdline = "a\tb";
}
static void edit_initrd_alone(Shape *s) { s->config.initrd = "/boot/initrd"; }
static void edit_port(Shape *s) { s->config.ssh_port = 65536; }

static void edit_mac(Shape *s) {
  shape_add_network(s);
  s->config.mac = "52:54:00:12:34";
}

static void edit_mac_multicast(Shape *s) {
  shape_add_network(s);
  s->config.mac = "01:54:00:12:34:56";
}

static void edit_no_mac(Shape *s) {
  shape_add_network(s);
  s->config.mac = NULL;
}

static void edit_passt_comma(Shape *s) {
  shape_add_network(s);
  s->config.passt_socket = "/tmp/p.sock,server=on";
}

static void add_fs(Shape *s, HutchDomainFs *fs) {
  if (!s->filesystems)
    s->filesystems = g_ptr_array_new_with_free_func((GDestroyNotify)hutch_domain_fs_free);
  g_ptr_array_add(s->filesystems, fs);
  s->config.filesystems = s->filesystems;
}

static void edit_fs_dup(Shape *s) {
  add_fs(s, fs_new("t", "/tmp/a.sock"));
  add_fs(s, fs_new("t", "/tmp/b.sock"));
}

static void edit_fs_no_socket(Shape *s) {
  add_fs(s, fs_new("t", NULL));
}
static void edit_fs_tag(Shape *s) {
  add_fs(s, fs_new("a b", "/tmp/a.sock"));
}
static void edit_fs_relative(Shape *s) {
  add_fs(s, fs_new("t", "tmp/a.sock"));
}

static void edit_fs_long_tag(Shape *s) {
  add_fs(s, fs_new("0123456789012345678901234567890123456", "/tmp/a.sock"));
}

static const InvalidCase invalid_cases[] = {
    {"name", edit_name, "invalid name 'Bad_Name'"},
    {"no-name", edit_no_name, "invalid name ''"},
    {"uuid-short", edit_uuid, "invalid uuid"},
    {"uuid-hex", edit_uuid_hex, "invalid uuid"},
    {"type", edit_type, "invalid domain type 'xen'"},
    {"memory-zero", edit_memory0, "memory"},
    {"memory-not-kib", edit_memory_odd, "1000 bytes"},
    {"cpus", edit_cpus, "cpus"},
    {"disk-relative", edit_disk_relative, "disk 'disk.qcow2' is not an absolute path"},
    {"disk-missing", edit_no_disk, "disk is missing"},
    {"console-missing", edit_no_console, "console log is missing"},
    {"ready-missing", edit_no_ready, "ready socket is missing"},
    {"instance-dir", edit_instance_dir, "instance directory '~/x'"},
    {"runtime-dir", edit_runtime_dir, "runtime directory is missing"},
    {"seed-relative", edit_seed_relative, "seed './seed.iso'"},
    {"control-char", edit_control, "console log contains a control character"},
    {"utf8", edit_utf8, "disk is not valid UTF-8"},
    {"cmdline", edit_cmdline, "kernel command line contains a control character"},
    {"initrd-alone", edit_initrd_alone, "need a kernel"},
    {"ssh-port", edit_port, "SSH port 65536"},
    {"mac", edit_mac, "invalid MAC address"},
    {"mac-multicast", edit_mac_multicast, "invalid MAC address"},
    {"mac-missing", edit_no_mac, "invalid MAC address"},
    {"passt-comma", edit_passt_comma, "comma"},
    {"fs-dup", edit_fs_dup, "used twice"},
    {"fs-no-socket", edit_fs_no_socket, "share socket is missing"},
    {"fs-tag", edit_fs_tag, "invalid share tag 'a b'"},
    {"fs-long-tag", edit_fs_long_tag, "invalid share tag"},
    {"fs-relative", edit_fs_relative, "share socket 'tmp/a.sock'"},
};

static void test_invalid(gconstpointer data) {
  const InvalidCase *ic = data;
  g_autoptr(Shape) shape = shape_new("minimal");
  /* The unedited shape is valid, so the error comes from the edit. */
  g_autofree char *ok = hutch_domain_build_xml(shape->profile, &shape->config, NULL);
  g_assert_nonnull(ok);
  ic->edit(shape);
  g_autoptr(GError) error = NULL;
  g_autofree char *xml = hutch_domain_build_xml(shape->profile, &shape->config, &error);
  g_assert_null(xml);
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE);
  g_assert_true(g_str_has_prefix(error->message, "building domain XML: "));
  if (!strstr(error->message, ic->message))
    g_error("expected '%s' in '%s'", ic->message, error->message);
}

static void test_meta_forms(void) {
  /* As libvirt stores it (namespaced) and as virDomainGetMetadata returns it (stripped). */
  static const char *const forms[] = {
      "<hutch:instance xmlns:hutch=\"" HUTCH_METADATA_NS "\">\n"
      "  <hutch:profile>ai-dev</hutch:profile>\n"
      "  <hutch:ssh-port>2222</hutch:ssh-port>\n"
      "  <hutch:instance-dir>/d/i</hutch:instance-dir>\n"
      "  <hutch:runtime-dir>/r/i</hutch:runtime-dir>\n"
      "  <hutch:user>a&amp;b</hutch:user>\n"
      "  <hutch:future>ignored</hutch:future>\n"
      "</hutch:instance>",
      "<instance><profile>ai-dev</profile><ssh-port>2222</ssh-port>"
      "<instance-dir>/d/i</instance-dir><runtime-dir>/r/i</runtime-dir>"
      "<user>a&amp;b</user></instance>",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(forms); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchDomainMeta) meta = hutch_domain_meta_parse(forms[i], &error);
    g_assert_no_error(error);
    g_assert_cmpstr(meta->profile_name, ==, "ai-dev");
    g_assert_cmpuint(meta->ssh_port, ==, 2222);
    g_assert_cmpstr(meta->instance_dir, ==, "/d/i");
    g_assert_cmpstr(meta->runtime_dir, ==, "/r/i");
    g_assert_cmpstr(meta->guest_user, ==, "a&b");
  }
  /* profile, user and accel are optional (accel: domains from before it was recorded). */
  g_autoptr(GError) error = NULL;
  g_autoptr(HutchDomainMeta) meta = hutch_domain_meta_parse(
      "<instance><ssh-port>0</ssh-port><instance-dir>/d</instance-dir>"
      "<runtime-dir>/r</runtime-dir></instance>",
      &error);
  g_assert_no_error(error);
  g_assert_null(meta->profile_name);
  g_assert_null(meta->guest_user);
  g_assert_null(meta->accel);
  g_assert_cmpuint(meta->ssh_port, ==, 0);
}

static void test_meta_garbage(void) {
#define BODY "<instance-dir>/d</instance-dir><runtime-dir>/r</runtime-dir>"
  static const char *const garbage[] = {
      "",
      "not xml at all",
      "<instance>",
      "<other/>",
      "<instance xmlns=\"urn:someone-else\"><ssh-port>22</ssh-port>" BODY "</instance>",
      "<instance>" BODY "</instance>",
      "<instance><ssh-port>70000</ssh-port>" BODY "</instance>",
      "<instance><ssh-port>-1</ssh-port>" BODY "</instance>",
      "<instance><ssh-port>22x</ssh-port>" BODY "</instance>",
      "<instance><ssh-port></ssh-port>" BODY "</instance>",
      "<instance><ssh-port>22</ssh-port><ssh-port>23</ssh-port>" BODY "</instance>",
      "<instance><ssh-port>22</ssh-port><instance-dir>d</instance-dir>"
      "<runtime-dir>/r</runtime-dir></instance>",
      "<instance><ssh-port>22</ssh-port><instance-dir>/d</instance-dir></instance>",
      NULL,
  };
#undef BODY
  for (gsize i = 0; garbage[i]; i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchDomainMeta) meta = hutch_domain_meta_parse(garbage[i], &error);
    if (meta)
      g_error("accepted garbage %zu: %s", i, garbage[i]);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH);
  }
  g_autoptr(GError) error = NULL;
  g_assert_null(hutch_domain_meta_parse(NULL, &error));
  g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH);
}

/* libvirt never hands back a DTD: one in the metadata is refused, so no entity (external
 * or recursive) is ever expanded. */
static void test_meta_no_dtd(void) {
  static const char *const docs[] = {
      "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/hostname\">]>"
      "<instance><ssh-port>22</ssh-port><instance-dir>/d</instance-dir>"
      "<runtime-dir>/r</runtime-dir><user>&e;</user></instance>",
      "<!DOCTYPE instance SYSTEM \"file:///etc/hostname\">"
      "<instance><ssh-port>22</ssh-port><instance-dir>/d</instance-dir>"
      "<runtime-dir>/r</runtime-dir></instance>",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(docs); i++) {
    g_autoptr(GError) error = NULL;
    g_autoptr(HutchDomainMeta) meta = hutch_domain_meta_parse(docs[i], &error);
    g_assert_null(meta);
    g_assert_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  hutch_init();
  g_test_add_func("/domain/system", test_system);
  for (gsize i = 0; i < G_N_ELEMENTS(golden_cases); i++) {
    g_autofree char *path = g_strdup_printf("/domain/golden/%s", golden_cases[i].which);
    g_test_add_data_func(path, &golden_cases[i], test_golden);
  }
  g_test_add_func("/domain/escaping", test_escaping);
  g_test_add_func("/domain/tcg-qemu64", test_tcg_qemu64);
  g_test_add_func("/domain/vcpus", test_vcpus);
  g_test_add_func("/domain/edit-xml", test_edit_xml);
  g_test_add_func("/domain/net-backend", test_net_backend);
  g_test_add_func("/domain/net-backend/shares", test_net_backend_with_shares);
  g_test_add_func("/domain/net-backend/edited", test_net_backend_edited);
  for (gsize i = 0; i < G_N_ELEMENTS(invalid_cases); i++) {
    g_autofree char *path = g_strdup_printf("/domain/invalid/%s", invalid_cases[i].what);
    g_test_add_data_func(path, &invalid_cases[i], test_invalid);
  }
  g_test_add_func("/domain/meta/forms", test_meta_forms);
  g_test_add_func("/domain/meta/garbage", test_meta_garbage);
  g_test_add_func("/domain/meta/no-dtd", test_meta_no_dtd);
  return g_test_run();
}
