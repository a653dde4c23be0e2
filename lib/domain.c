/* domain.c: see domain-private.h. */
#include "config.h"

#include <stdarg.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlsave.h>

#include "domain-private.h"

#define QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"
/* QEMU's default translation cache is 1 GiB and doubled the RSS of a 1 GiB guest. */
#define TCG_TB_CACHE_MIB "256"
/* The slot of the passt NIC on pcie.0. libvirt puts its own devices behind root ports at
 * 0x1.x, 0x2.x, ... and the SATA controller at 0x1f: 0x10 stays free. */
#define NET_PCI_ADDR "0x10"
#define NET_ID "hutchnet0"
/* The longest tag virtio-fs accepts. */
#define FS_TAG_MAX 36

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlParserCtxt, xmlFreeParserCtxt)

void hutch_domain_fs_free(HutchDomainFs *fs) {
  if (!fs)
    return;
  g_free(fs->tag);
  g_free(fs->socket);
  g_free(fs);
}

void hutch_domain_meta_free(HutchDomainMeta *meta) {
  if (!meta)
    return;
  g_free(meta->profile_name);
  g_free(meta->instance_dir);
  g_free(meta->runtime_dir);
  g_free(meta->guest_user);
  g_free(meta->accel);
  g_free(meta);
}

/* ---- Validation ----------------------------------------------------------------------- */

/* libxml2 writes control characters as character references that XML 1.0 forbids, and
 * libvirt then refuses the whole document: catch them here with the field's name. */
static gboolean check_text(const char *field, const char *value, GError **error) {
  if (!g_utf8_validate(value, -1, NULL)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "%s is not valid UTF-8", field);
    return FALSE;
  }
  for (const char *p = value; *p; p++) {
    if ((guchar)*p < 0x20 || *p == 0x7f) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "%s contains a control character", field);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean check_path(const char *field, const char *path, gboolean required,
                           GError **error) {
  if (!path || !*path) {
    if (!required)
      return TRUE;
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "%s is missing", field);
    return FALSE;
  }
  if (!g_path_is_absolute(path)) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "%s '%s' is not an absolute path",
                field, path);
    return FALSE;
  }
  return check_text(field, path, error);
}

static gboolean check_uuid(const char *uuid, GError **error) {
  gboolean ok = uuid && strlen(uuid) == 36;
  for (int i = 0; ok && i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23)
      ok = uuid[i] == '-';
    else
      ok = g_ascii_isxdigit(uuid[i]);
  }
  if (!ok)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "invalid uuid '%s': expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
                uuid ? uuid : "");
  return ok;
}

static gboolean check_mac(const char *mac, GError **error) {
  gboolean ok = mac && strlen(mac) == 17;
  for (int i = 0; ok && i < 17; i++)
    ok = (i % 3 == 2) ? mac[i] == ':' : g_ascii_isxdigit(mac[i]);
  /* A multicast address (low bit of the first octet) cannot be a NIC's address. */
  if (ok && (g_ascii_xdigit_value(mac[1]) & 1))
    ok = FALSE;
  if (!ok)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "invalid MAC address '%s': expected a unicast xx:xx:xx:xx:xx:xx",
                mac ? mac : "");
  return ok;
}

static gboolean check_tag(const char *tag, GError **error) {
  gsize len = tag ? strlen(tag) : 0;
  gboolean ok = len >= 1 && len <= FS_TAG_MAX;
  for (gsize i = 0; ok && i < len; i++)
    ok = g_ascii_isalnum(tag[i]) || tag[i] == '-' || tag[i] == '_' || tag[i] == '.';
  if (!ok)
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "invalid share tag '%s': use 1 to %d letters, digits, '-', '_' or '.'",
                tag ? tag : "", FS_TAG_MAX);
  return ok;
}

static gboolean check_filesystems(GPtrArray *filesystems, GError **error) {
  g_autoptr(GHashTable) tags = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint i = 0; filesystems && i < filesystems->len; i++) {
    const HutchDomainFs *fs = g_ptr_array_index(filesystems, i);
    if (!check_tag(fs->tag, error))
      return FALSE;
    if (!g_hash_table_add(tags, fs->tag)) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "share tag '%s' is used twice",
                  fs->tag);
      return FALSE;
    }
    if (!check_path("share socket", fs->socket, TRUE, error))
      return FALSE;
  }
  return TRUE;
}

static gboolean check_config(const HutchProfile *profile, const HutchDomainConfig *c,
                             GError **error) {
  if (!hutch_name_is_valid(c->name, error) || !check_uuid(c->uuid, error))
    return FALSE;
  if (g_strcmp0(c->domain_type, "kvm") != 0 && g_strcmp0(c->domain_type, "qemu") != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "invalid domain type '%s': expected kvm or qemu",
                c->domain_type ? c->domain_type : "");
    return FALSE;
  }
  if (profile->cpus == 0 && c->cpus == 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "cpus must be at least 1");
    return FALSE;
  }
  /* libvirt counts memory in KiB; refusing a remainder beats rounding behind the user's
   * back. */
  if (profile->memory == 0 || profile->memory % 1024 != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "memory must be a positive whole number of KiB (%" G_GUINT64_FORMAT
                " bytes)",
                profile->memory);
    return FALSE;
  }
  if (c->ssh_port > G_MAXUINT16) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "invalid SSH port %u", c->ssh_port);
    return FALSE;
  }
  if (!check_path("emulator", c->emulator, FALSE, error) ||
      !check_path("disk", c->disk_path, TRUE, error) ||
      !check_path("seed", c->seed_path, FALSE, error) ||
      !check_path("kernel", c->kernel, FALSE, error) ||
      !check_path("initrd", c->initrd, FALSE, error) ||
      !check_path("console log", c->console_log, !c->system, error) ||
      !check_path("passt socket", c->passt_socket, FALSE, error) ||
      !check_path("ready socket", c->ready_socket, !c->system, error) ||
      !check_path("agent socket", c->agent_socket, FALSE, error) ||
      !check_path("instance directory", c->instance_dir, TRUE, error) ||
      !check_path("runtime directory", c->runtime_dir, TRUE, error))
    return FALSE;
  if ((c->initrd || c->cmdline) && !c->kernel) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE, "initrd and cmdline need a kernel");
    return FALSE;
  }
  if (c->cmdline && !check_text("kernel command line", c->cmdline, error))
    return FALSE;
  if (c->profile_name && !check_text("profile name", c->profile_name, error))
    return FALSE;
  if (c->guest_user && !check_text("guest user", c->guest_user, error))
    return FALSE;
  if (c->system && !c->net_vhost_user) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "on qemu:///system, passt serves the NIC through its vhost-user mode only");
    return FALSE;
  }
  if (c->passt_socket) {
    if (!check_mac(c->mac, error))
      return FALSE;
    /* The socket path lands inside a QEMU option string, where ',' separates options: a
     * comma would let the path add options of its own. */
    if (strchr(c->passt_socket, ',')) {
      g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                  "passt socket '%s' contains a comma", c->passt_socket);
      return FALSE;
    }
  }
  return check_filesystems(c->filesystems, error);
}

/* ---- vCPUs ---------------------------------------------------------------------------- */

guint hutch_domain_vcpus(guint wanted, gboolean tcg, guint host_cores, guint limit,
                         char **ret_notice) {
  if (!tcg)
    return wanted;
  guint cap = limit ? limit : MAX(1, host_cores / 2);
  if (wanted <= cap)
    return wanted;
  if (ret_notice && limit)
    *ret_notice = g_strdup_printf("cpus: %u capped to %u under TCG emulation "
                                  "(HUTCH_TCG_MAX_CPUS=%u)",
                                  wanted, cap, limit);
  else if (ret_notice)
    *ret_notice = g_strdup_printf(
        "cpus: %u capped to %u under TCG emulation on this %u-core host (more vCPUs stall the "
        "guest); give the profile cpus: %u to silence this, or set HUTCH_TCG_MAX_CPUS=%u to "
        "keep %u",
        wanted, cap, host_cores, cap, wanted, wanted);
  return cap;
}

/* ---- Building ------------------------------------------------------------------------- */

/* Text children and attributes go through libxml2's own escaping: xmlNewTextChild and
 * xmlSetProp take raw text (unlike xmlNewChild, which would parse '&' as an entity). */
static xmlNodePtr add_text(xmlNodePtr parent, xmlNsPtr ns, const char *name, const char *text) {
  return xmlNewTextChild(parent, ns, BAD_CAST name, BAD_CAST text);
}

static xmlNodePtr add_node(xmlNodePtr parent, const char *name) {
  return xmlNewChild(parent, NULL, BAD_CAST name, NULL);
}

static void set_attr(xmlNodePtr node, const char *name, const char *value) {
  xmlSetProp(node, BAD_CAST name, BAD_CAST value);
}

/* An element with up to two attributes (a NULL name ends the list). */
static xmlNodePtr add_elem(xmlNodePtr parent, const char *name, const char *attr1,
                           const char *value1, const char *attr2, const char *value2) {
  xmlNodePtr node = add_node(parent, name);
  if (attr1)
    set_attr(node, attr1, value1);
  if (attr2)
    set_attr(node, attr2, value2);
  return node;
}

static void add_metadata(xmlNodePtr domain, const HutchDomainConfig *c) {
  xmlNodePtr metadata = add_node(domain, "metadata");
  xmlNodePtr instance = xmlNewChild(metadata, NULL, BAD_CAST "instance", NULL);
  xmlNsPtr ns = xmlNewNs(instance, BAD_CAST HUTCH_METADATA_NS, BAD_CAST HUTCH_METADATA_PREFIX);
  xmlSetNs(instance, ns);
  g_autofree char *port = g_strdup_printf("%u", c->ssh_port);
  if (c->profile_name)
    add_text(instance, ns, "profile", c->profile_name);
  add_text(instance, ns, "ssh-port", port);
  add_text(instance, ns, "instance-dir", c->instance_dir);
  add_text(instance, ns, "runtime-dir", c->runtime_dir);
  if (c->guest_user)
    add_text(instance, ns, "user", c->guest_user);
  /* kept here so that `hutch list` need not fetch the whole domain XML to tell */
  add_text(instance, ns, "accel", g_strcmp0(c->domain_type, "qemu") == 0 ? "tcg" : "kvm");
}

static void add_os(xmlNodePtr domain, const HutchDomainConfig *c) {
  xmlNodePtr os = add_node(domain, "os");
  xmlNodePtr type = add_text(os, NULL, "type", "hvm");
  set_attr(type, "arch", "x86_64");
  set_attr(type, "machine", "q35");
  /* No <loader>: SeaBIOS, because libvirt 9.0 refuses internal snapshots with UEFI pflash. */
  if (c->kernel) {
    add_text(os, NULL, "kernel", c->kernel);
    if (c->initrd)
      add_text(os, NULL, "initrd", c->initrd);
    if (c->cmdline)
      add_text(os, NULL, "cmdline", c->cmdline);
  } else {
    add_elem(os, "boot", "dev", "hd", NULL, NULL);
  }
}

static void add_features_cpu(xmlNodePtr domain, const HutchDomainConfig *c) {
  gboolean tcg = strcmp(c->domain_type, "qemu") == 0;
  xmlNodePtr features = add_node(domain, "features");
  add_node(features, "acpi");
  add_node(features, "apic");
  if (tcg) {
    xmlNodePtr cache = add_text(add_node(features, "tcg"), NULL, "tb-cache", TCG_TB_CACHE_MIB);
    set_attr(cache, "unit", "MiB");
  }
  /* host-model needs KVM. Under TCG the maximum model (QEMU's -cpu max: avx, avx2, bmi2, fma
   * with QEMU 7.2), not libvirt's default qemu64, on which current binaries (Claude Code's)
   * die of SIGILL. Not migratable: nothing migrates, and snapshots are taken shut off. */
  if (!tcg)
    add_elem(domain, "cpu", "mode", "host-model", NULL, NULL);
  else if (!c->tcg_qemu64)
    add_elem(domain, "cpu", "mode", "maximum", "migratable", "off");
}

/* path NULL: libvirt picks the socket's place (its own directory, which only QEMU's user and
 * libvirt can reach on qemu:///system) */
static void add_channel(xmlNodePtr devices, const char *path, const char *name) {
  xmlNodePtr channel = add_elem(devices, "channel", "type", "unix", NULL, NULL);
  add_elem(channel, "source", "mode", "bind", path ? "path" : NULL, path);
  add_elem(channel, "target", "type", "virtio", "name", name);
}

static void add_filesystem(xmlNodePtr devices, const HutchDomainFs *fs) {
  xmlNodePtr node = add_elem(devices, "filesystem", "type", "mount", NULL, NULL);
  /* A virtiofsd hutch starts itself: libvirt 9.0 refuses to run one in session mode. */
  add_elem(node, "driver", "type", "virtiofs", "queue", "1024");
  add_elem(node, "source", "socket", fs->socket, NULL, NULL);
  add_elem(node, "target", "dir", fs->tag, NULL, NULL);
}

/* qemu:///system: passt's vhost-user socket as libvirt's own interface, which libvirt hands
 * QEMU (running as libvirt's user) by path; the socket's ACL lets that user connect. */
static void add_interface(xmlNodePtr devices, const HutchDomainConfig *c) {
  xmlNodePtr interface = add_elem(devices, "interface", "type", "vhostuser", NULL, NULL);
  add_elem(interface, "mac", "address", c->mac, NULL, NULL);
  xmlNodePtr source = add_elem(interface, "source", "type", "unix", "path", c->passt_socket);
  set_attr(source, "mode", "client");
  add_elem(interface, "model", "type", "virtio", NULL, NULL);
}

static void add_devices(xmlNodePtr domain, const HutchDomainConfig *c) {
  xmlNodePtr devices = add_node(domain, "devices");
  if (c->emulator)
    add_text(devices, NULL, "emulator", c->emulator);
  if (c->passt_socket && c->system)
    add_interface(devices, c);

  xmlNodePtr disk = add_elem(devices, "disk", "type", "file", "device", "disk");
  xmlNodePtr driver = add_elem(disk, "driver", "name", "qemu", "type", "qcow2");
  /* The guest's discards, and its writes of zeros, leave the overlay's clusters unallocated:
   * a template's throwaway copy writes its whole free space with zeros (hutch-provision
   * generalise) without growing. */
  set_attr(driver, "discard", "unmap");
  set_attr(driver, "detect_zeroes", "unmap");
  add_elem(disk, "source", "file", c->disk_path, NULL, NULL);
  /* qemu:///system: the disk stands alone, whatever its header says. libvirt (root) would
   * otherwise read the backing chain from the file, which QEMU's user owns while the VM
   * runs, and give whatever file it names to that user at the next start. */
  if (c->system)
    add_node(disk, "backingStore");
  add_elem(disk, "target", "dev", "vda", "bus", "virtio");

  /* The seed is a cdrom on virtio-scsi, not SATA: Debian's cloud kernels
   * (linux-image-cloud-amd64, also in the official cloud images) have no AHCI driver, but
   * have virtio_scsi and sr_mod. A cdrom (rather than a read-only virtio disk) keeps
   * internal snapshots possible. */
  if (c->seed_path) {
    add_elem(devices, "controller", "type", "scsi", "model", "virtio-scsi");
    xmlNodePtr cdrom = add_elem(devices, "disk", "type", "file", "device", "cdrom");
    add_elem(cdrom, "driver", "name", "qemu", "type", "raw");
    add_elem(cdrom, "source", "file", c->seed_path, NULL, NULL);
    add_elem(cdrom, "target", "dev", "sda", "bus", "scsi");
    add_node(cdrom, "readonly");
  }

  add_elem(devices, "controller", "type", "usb", "model", "none");

  for (guint i = 0; c->filesystems && i < c->filesystems->len; i++)
    add_filesystem(devices, g_ptr_array_index(c->filesystems, i));

  /* A plain file that hutch reads without libvirt. The guest writes it, as much as it likes,
   * and it must not fill the host's disk: with qemu.conf's stdio_handler = "logd" (libvirt's
   * default, session mode included: ~/.config/libvirt/qemu.conf) libvirt does not give QEMU
   * the file but a pipe to virtlogd (qemuProcessPrepareHostBackendChardevFileHelper in
   * libvirt 9.0's qemu_process.c), and virtlogd rolls the file over at max_size (2 MiB),
   * keeping max_backups (3) as console.log.0-.2 (virtlogd.conf). A <log> on a pty serial
   * would go the same way, so it would bound nothing more. With stdio_handler = "file" QEMU
   * writes the file itself and nothing bounds it.
   * Without console_log (qemu:///system), a pty: the system virtlogd would write the file as
   * root, 0600, which its user could not read; hutch reads the console through libvirt
   * (virDomainOpenConsole) instead. */
  const char *serial_type = c->console_log ? "file" : "pty";
  xmlNodePtr serial = add_elem(devices, "serial", "type", serial_type, NULL, NULL);
  if (c->console_log)
    add_elem(serial, "source", "path", c->console_log, NULL, NULL);
  add_elem(serial, "target", "port", "0", NULL, NULL);
  xmlNodePtr console = add_elem(devices, "console", "type", serial_type, NULL, NULL);
  if (c->console_log)
    add_elem(console, "source", "path", c->console_log, NULL, NULL);
  add_elem(console, "target", "type", "serial", "port", "0");

  if (c->agent_socket)
    add_channel(devices, c->agent_socket, "org.qemu.guest_agent.0");
  add_channel(devices, c->ready_socket, HUTCH_READY_CHANNEL);

  add_elem(devices, "memballoon", "model", "virtio", NULL, NULL);
  /* Without entropy, a TCG guest waited long for its RNG to seed during boot. */
  xmlNodePtr rng = add_elem(devices, "rng", "model", "virtio", NULL, NULL);
  xmlNodePtr backend = add_text(rng, NULL, "backend", "/dev/urandom");
  set_attr(backend, "model", "random");
}

/* A <qemu:arg> put before `before` (NULL: at the end). */
static void add_qemu_arg(xmlNodePtr commandline, xmlNsPtr ns, xmlNodePtr before,
                         const char *value) {
  xmlNodePtr arg = xmlNewNode(ns, BAD_CAST "arg");
  set_attr(arg, "value", value);
  if (before)
    xmlAddPrevSibling(before, arg);
  else
    xmlAddChild(commandline, arg);
}

#define NET_CHARDEV_ID "hutchnetchr0"

/* The back end's arguments (-netdev, and -chardev for vhost-user) for the passt socket, put
 * before `before` (NULL: at the end). Stream: QEMU's virtio-net parses the virtqueues and
 * sends frames to passt over the socket. vhost-user (passt 2024-11 and later): passt maps
 * the guest's memory and serves the virtqueues itself, one copy less per packet; the memory
 * has to be shareable then. */
static void add_net_backend(xmlNodePtr commandline, xmlNsPtr ns, xmlNodePtr before,
                            const char *socket, gboolean vhost_user) {
  if (vhost_user) {
    g_autofree char *chardev = g_strdup_printf("socket,id=" NET_CHARDEV_ID ",path=%s", socket);
    add_qemu_arg(commandline, ns, before, "-chardev");
    add_qemu_arg(commandline, ns, before, chardev);
    add_qemu_arg(commandline, ns, before, "-netdev");
    add_qemu_arg(commandline, ns, before, "vhost-user,id=" NET_ID ",chardev=" NET_CHARDEV_ID);
  } else {
    g_autofree char *netdev =
        g_strdup_printf("stream,id=" NET_ID ",server=off,addr.type=unix,addr.path=%s", socket);
    add_qemu_arg(commandline, ns, before, "-netdev");
    add_qemu_arg(commandline, ns, before, netdev);
  }
}

/* Debian's libvirt 9.0 has no passt backend and its slirp ignores port forwards: hutch runs
 * passt itself and hands QEMU the socket. */
static void add_network(xmlNodePtr domain, xmlNsPtr qemu_ns, const HutchDomainConfig *c) {
  xmlNodePtr commandline = xmlNewChild(domain, qemu_ns, BAD_CAST "commandline", NULL);
  add_net_backend(commandline, qemu_ns, NULL, c->passt_socket, c->net_vhost_user);
  g_autofree char *device = g_strdup_printf(
      "virtio-net-pci,netdev=" NET_ID ",mac=%s,bus=pcie.0,addr=" NET_PCI_ADDR, c->mac);
  add_qemu_arg(commandline, qemu_ns, NULL, "-device");
  add_qemu_arg(commandline, qemu_ns, NULL, device);
}

static gboolean has_virtiofs(GPtrArray *filesystems) {
  for (guint i = 0; filesystems && i < filesystems->len; i++) {
    const HutchDomainFs *fs = g_ptr_array_index(filesystems, i);
    if (fs->socket)
      return TRUE;
  }
  return FALSE;
}

static char *doc_to_string(xmlDocPtr doc, GError **error) {
  xmlBufferPtr buffer = xmlBufferCreate();
  xmlSaveCtxtPtr save =
      xmlSaveToBuffer(buffer, "UTF-8", XML_SAVE_FORMAT | XML_SAVE_NO_DECL | XML_SAVE_AS_XML);
  if (!save) {
    xmlBufferFree(buffer);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing domain XML failed");
    return NULL;
  }
  long written = xmlSaveDoc(save, doc);
  xmlSaveClose(save);
  if (written < 0) {
    xmlBufferFree(buffer);
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "writing domain XML failed");
    return NULL;
  }
  char *text = g_strdup((const char *)xmlBufferContent(buffer));
  xmlBufferFree(buffer);
  return text;
}

/* The named child elements of node. */
static GPtrArray *children_named(xmlNodePtr node, const char *name) {
  GPtrArray *found = g_ptr_array_new();
  for (xmlNodePtr child = node ? node->children : NULL; child; child = child->next)
    if (child->type == XML_ELEMENT_NODE && xmlStrEqual(child->name, BAD_CAST name))
      g_ptr_array_add(found, child);
  return found;
}

static void remove_node(xmlNodePtr node) {
  xmlUnlinkNode(node);
  xmlFreeNode(node);
}

/* Sets the text of root's first child `name` (made at the end when missing), keeping its
 * attributes but `unit`, which becomes unit (when non-NULL). */
static xmlNodePtr set_child_text(xmlNodePtr root, const char *name, const char *text,
                                 const char *unit) {
  g_autoptr(GPtrArray) nodes = children_named(root, name);
  xmlNodePtr node = nodes->len ? g_ptr_array_index(nodes, 0) : add_node(root, name);
  xmlNodeSetContent(node, BAD_CAST text);
  if (unit)
    set_attr(node, "unit", unit);
  return node;
}

/* The domain's <qemu:commandline> (hutch's network), or NULL. */
static xmlNodePtr qemu_commandline(xmlNodePtr domain) {
  for (xmlNodePtr child = xmlFirstElementChild(domain); child; child = xmlNextElementSibling(child))
    if (xmlStrEqual(child->name, BAD_CAST "commandline") && child->ns &&
        xmlStrEqual(child->ns->href, BAD_CAST QEMU_NS))
      return child;
  return NULL;
}

/* An <arg>'s value, or NULL (g_free it). */
static char *arg_value(xmlNodePtr arg) {
  xmlChar *value = xmlGetProp(arg, BAD_CAST "value");
  char *copy = g_strdup((const char *)value);
  xmlFree(value);
  return copy;
}

/* Whether a QEMU option string (TYPE,KEY=VALUE,...) has the whole option `option`. */
static gboolean has_option(const char *value, const char *option) {
  g_auto(GStrv) options = g_strsplit(value, ",", -1);
  return g_strv_contains((const char *const *)options, option);
}

/* The arguments of the <qemu:commandline> of hutch's network: those of a domain with hutch's
 * network device (-device virtio-net-pci,netdev=hutchnet0,...), else NULL. */
static GPtrArray *hutch_net_args(xmlNodePtr domain) {
  xmlNodePtr commandline = qemu_commandline(domain);
  g_autoptr(GPtrArray) args = commandline ? children_named(commandline, "arg") : NULL;
  for (guint i = 0; args && i < args->len; i++) {
    g_autofree char *value = arg_value(g_ptr_array_index(args, i));
    if (value && g_str_has_prefix(value, "virtio-net-pci,") && has_option(value, "netdev=" NET_ID))
      return g_steal_pointer(&args);
  }
  return NULL;
}

static gboolean has_vhostuser_interface(xmlNodePtr domain);

static gboolean net_is_vhost_user(xmlNodePtr domain) {
  if (has_vhostuser_interface(domain))
    return TRUE;
  g_autoptr(GPtrArray) args = hutch_net_args(domain);
  for (guint i = 0; args && i < args->len; i++) {
    g_autofree char *value = arg_value(g_ptr_array_index(args, i));
    if (value && g_str_has_prefix(value, "vhost-user,") && has_option(value, "id=" NET_ID))
      return TRUE;
  }
  return FALSE;
}

static xmlNodePtr first_child_named(xmlNodePtr node, const char *name) {
  g_autoptr(GPtrArray) found = children_named(node, name);
  return found->len ? g_ptr_array_index(found, 0) : NULL;
}

static gboolean attr_is(xmlNodePtr node, const char *name, const char *value) {
  xmlChar *got = node ? xmlGetProp(node, BAD_CAST name) : NULL;
  gboolean same = got && xmlStrEqual(got, BAD_CAST value);
  xmlFree(got);
  return same;
}

/* libvirt's own vhost-user interface (qemu:///system) */
static gboolean has_vhostuser_interface(xmlNodePtr domain) {
  g_autoptr(GPtrArray) devices = children_named(domain, "devices");
  for (guint d = 0; d < devices->len; d++) {
    g_autoptr(GPtrArray) interfaces = children_named(g_ptr_array_index(devices, d), "interface");
    for (guint i = 0; i < interfaces->len; i++)
      if (attr_is(g_ptr_array_index(interfaces, i), "type", "vhostuser"))
        return TRUE;
  }
  return FALSE;
}

static gboolean memory_is_shared(xmlNodePtr domain) {
  xmlNodePtr backing = first_child_named(domain, "memoryBacking");
  return backing && attr_is(first_child_named(backing, "source"), "type", "memfd") &&
         attr_is(first_child_named(backing, "access"), "mode", "shared");
}

/* Shareable guest memory (memfd) exactly when shared is set: vhost-user back ends map it.
 * Only <source> and <access> are hutch's: anything else in <memoryBacking> (hugepages,
 * locked, discard: a user's virsh edit) stays. */
static void set_memory_shared(xmlDocPtr doc, xmlNodePtr domain, gboolean shared) {
  xmlNodePtr backing = first_child_named(domain, "memoryBacking");
  if (backing) {
    g_autoptr(GPtrArray) sources = children_named(backing, "source");
    g_autoptr(GPtrArray) access = children_named(backing, "access");
    for (guint i = 0; i < sources->len; i++)
      remove_node(g_ptr_array_index(sources, i));
    for (guint i = 0; i < access->len; i++)
      remove_node(g_ptr_array_index(access, i));
  }
  if (shared) {
    if (!backing) {
      backing = xmlNewDocNode(doc, NULL, BAD_CAST "memoryBacking", NULL);
      xmlNodePtr current = first_child_named(domain, "currentMemory");
      if (current)
        xmlAddNextSibling(current, backing);
      else
        xmlAddChild(domain, backing);
    }
    add_elem(backing, "source", "type", "memfd", NULL, NULL);
    add_elem(backing, "access", "mode", "shared", NULL, NULL);
  } else if (backing && !xmlFirstElementChild(backing)) {
    remove_node(backing);
  }
}

static gboolean has_filesystem(xmlNodePtr domain) {
  g_autoptr(GPtrArray) devices = children_named(domain, "devices");
  for (guint d = 0; d < devices->len; d++)
    if (first_child_named(g_ptr_array_index(devices, d), "filesystem"))
      return TRUE;
  return FALSE;
}

char *hutch_domain_build_xml(const HutchProfile *profile, const HutchDomainConfig *config,
                             GError **error) {
  if (!check_config(profile, config, error)) {
    g_prefix_error(error, "building domain XML: ");
    return NULL;
  }

  g_autoptr(xmlDoc) doc = xmlNewDoc(BAD_CAST "1.0");
  xmlNodePtr domain = xmlNewDocNode(doc, NULL, BAD_CAST "domain", NULL);
  xmlDocSetRootElement(doc, domain);
  set_attr(domain, "type", config->domain_type);
  xmlNsPtr qemu_ns = xmlNewNs(domain, BAD_CAST QEMU_NS, BAD_CAST "qemu");

  add_text(domain, NULL, "name", config->name);
  add_text(domain, NULL, "uuid", config->uuid);
  add_metadata(domain, config);

  g_autofree char *kib = g_strdup_printf("%" G_GUINT64_FORMAT, profile->memory / 1024);
  set_attr(add_text(domain, NULL, "memory", kib), "unit", "KiB");
  set_attr(add_text(domain, NULL, "currentMemory", kib), "unit", "KiB");
  /* vhost-user (virtiofsd, passt) maps the guest's memory: it has to be shareable */
  set_memory_shared(doc, domain,
                    has_virtiofs(config->filesystems) ||
                        (config->passt_socket && config->net_vhost_user));
  g_autofree char *cpus = g_strdup_printf("%u", config->cpus ? config->cpus : profile->cpus);
  add_text(domain, NULL, "vcpu", cpus);

  add_os(domain, config);
  add_features_cpu(domain, config);
  add_elem(domain, "clock", "offset", "utc", NULL, NULL);
  add_text(domain, NULL, "on_poweroff", "destroy");
  add_text(domain, NULL, "on_reboot", "restart");
  add_text(domain, NULL, "on_crash", "destroy");
  add_devices(domain, config);
  if (config->passt_socket && !config->system)
    add_network(domain, qemu_ns, config);

  char *text = doc_to_string(doc, error);
  if (!text)
    g_prefix_error(error, "building domain XML: ");
  return text;
}

char *hutch_domain_edit_xml(const char *xml, const HutchProfile *profile, guint vcpus,
                            GPtrArray *filesystems, GError **error) {
  if (!check_filesystems(filesystems, error)) {
    g_prefix_error(error, "editing domain XML: ");
    return NULL;
  }
  if (profile->memory == 0 || profile->memory % 1024 != 0) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "editing domain XML: memory must be a positive whole number of KiB");
    return NULL;
  }
  g_autoptr(xmlDoc) doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                                        XML_PARSE_NONET | XML_PARSE_NOBLANKS);
  xmlNodePtr domain = doc ? xmlDocGetRootElement(doc) : NULL;
  g_autoptr(GPtrArray) devices = children_named(domain, "devices");
  if (!domain || !xmlStrEqual(domain->name, BAD_CAST "domain") || devices->len != 1) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "editing domain XML: not a domain with one <devices>");
    return NULL;
  }
  g_autofree char *kib = g_strdup_printf("%" G_GUINT64_FORMAT, profile->memory / 1024);
  set_child_text(domain, "memory", kib, "KiB");
  set_child_text(domain, "currentMemory", kib, "KiB");
  g_autofree char *cpus = g_strdup_printf("%u", vcpus);
  set_child_text(domain, "vcpu", cpus, NULL);

  /* the shares: those of the profile now, and shareable memory exactly when one is virtiofs */
  g_autoptr(GPtrArray) old_fs = children_named(g_ptr_array_index(devices, 0), "filesystem");
  for (guint i = 0; i < old_fs->len; i++)
    remove_node(g_ptr_array_index(old_fs, i));
  for (guint i = 0; filesystems && i < filesystems->len; i++)
    add_filesystem(g_ptr_array_index(devices, 0), g_ptr_array_index(filesystems, i));
  set_memory_shared(doc, domain, has_virtiofs(filesystems) || net_is_vhost_user(domain));
  char *text = doc_to_string(doc, error);
  if (!text)
    g_prefix_error(error, "editing domain XML: ");
  return text;
}

char *hutch_domain_set_net_backend(const char *xml, const char *passt_socket, gboolean vhost_user,
                                   gboolean *ret_changed, GError **error) {
  *ret_changed = FALSE;
  if (strchr(passt_socket, ',')) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_USAGE,
                "setting the network back end: passt socket '%s' contains a comma", passt_socket);
    return NULL;
  }
  g_autoptr(xmlDoc) doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                                        XML_PARSE_NONET | XML_PARSE_NOBLANKS);
  xmlNodePtr domain = doc ? xmlDocGetRootElement(doc) : NULL;
  if (!domain || !xmlStrEqual(domain->name, BAD_CAST "domain")) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED,
                "setting the network back end: not a domain");
    return NULL;
  }
  g_autoptr(GPtrArray) args = hutch_net_args(domain);
  if (!args)
    return g_strdup(xml); /* no network of hutch's: left alone */
  gboolean virtiofs = has_filesystem(domain);
  if (net_is_vhost_user(domain) == vhost_user &&
      memory_is_shared(domain) == (vhost_user || virtiofs))
    return g_strdup(xml); /* as wanted already */
  /* hutch's back end arguments go (-netdev with id=hutchnet0, -chardev with
   * id=hutchnetchr0, each with its value); the device and anything else stay */
  for (guint i = 0; i + 1 < args->len; i++) {
    xmlNodePtr arg = g_ptr_array_index(args, i);
    xmlNodePtr next = g_ptr_array_index(args, i + 1);
    g_autofree char *value = arg_value(arg);
    g_autofree char *next_value = arg_value(next);
    if (!value || !next_value)
      continue;
    if ((strcmp(value, "-netdev") == 0 && has_option(next_value, "id=" NET_ID)) ||
        (strcmp(value, "-chardev") == 0 && has_option(next_value, "id=" NET_CHARDEV_ID))) {
      remove_node(arg);
      remove_node(next);
      i++;
    }
  }
  xmlNodePtr commandline = qemu_commandline(domain);
  add_net_backend(commandline, commandline->ns, xmlFirstElementChild(commandline), passt_socket,
                  vhost_user);
  set_memory_shared(doc, domain, virtiofs || vhost_user);
  char *text = doc_to_string(doc, error);
  if (!text)
    g_prefix_error(error, "setting the network back end: ");
  *ret_changed = text != NULL;
  return text;
}

/* ---- Metadata ------------------------------------------------------------------------- */

/* libvirt stores the element with its namespace but virDomainGetMetadata returns it without
 * (seen with libvirt 9.0, qemu and test drivers): accept both, and nothing in another
 * namespace. */
static gboolean is_hutch_element(xmlNodePtr node, const char *name) {
  return node->type == XML_ELEMENT_NODE && xmlStrEqual(node->name, BAD_CAST name) &&
         (!node->ns || xmlStrEqual(node->ns->href, BAD_CAST HUTCH_METADATA_NS));
}

static gboolean meta_error(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static gboolean meta_error(GError **error, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_NOT_HUTCH, "invalid hutch metadata: %s",
              message);
  return FALSE;
}

static gboolean take_text(xmlNodePtr node, char **field, GError **error) {
  if (*field)
    return meta_error(error, "<%s> appears twice", (const char *)node->name);
  xmlChar *content = xmlNodeGetContent(node);
  *field = g_strdup(content ? (const char *)content : "");
  xmlFree(content);
  return TRUE;
}

static gboolean parse_port(const char *text, guint *ret) {
  guint64 value = 0;
  if (!g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT16, &value, NULL))
    return FALSE;
  *ret = (guint)value;
  return TRUE;
}

HutchDomainMeta *hutch_domain_meta_parse(const char *xml, GError **error) {
  if (!xml || strlen(xml) > G_MAXINT) {
    meta_error(error, "missing or too large");
    return NULL;
  }
  g_autoptr(xmlParserCtxt) ctxt = xmlNewParserCtxt();
  if (!ctxt) {
    g_set_error(error, HUTCH_ERROR, HUTCH_ERROR_FAILED, "out of memory");
    return NULL;
  }
  /* No entity expansion, no network, and no printing: the library never prints. */
  g_autoptr(xmlDoc) doc =
      xmlCtxtReadMemory(ctxt, xml, (int)strlen(xml), "metadata.xml", "UTF-8",
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (!doc) {
    const xmlError *err = xmlCtxtGetLastError(ctxt);
    g_autofree char *message =
        g_strstrip(g_strdup(err && err->message ? err->message : "not XML"));
    meta_error(error, "%s", message);
    return NULL;
  }
  /* libvirt never hands back a DTD; refusing one rules out entity tricks. */
  if (doc->intSubset || doc->extSubset) {
    meta_error(error, "a document type declaration is not allowed");
    return NULL;
  }
  xmlNodePtr root = xmlDocGetRootElement(doc);
  if (!root || !is_hutch_element(root, "instance")) {
    meta_error(error, "the root element is not <%s:instance>", HUTCH_METADATA_PREFIX);
    return NULL;
  }

  g_autoptr(HutchDomainMeta) meta = g_new0(HutchDomainMeta, 1);
  g_autofree char *port = NULL, *provisioned = NULL;
  for (xmlNodePtr child = root->children; child; child = child->next) {
    char **field = NULL;
    if (is_hutch_element(child, "profile"))
      field = &meta->profile_name;
    else if (is_hutch_element(child, "ssh-port"))
      field = &port;
    else if (is_hutch_element(child, "instance-dir"))
      field = &meta->instance_dir;
    else if (is_hutch_element(child, "runtime-dir"))
      field = &meta->runtime_dir;
    else if (is_hutch_element(child, "user"))
      field = &meta->guest_user;
    else if (is_hutch_element(child, "accel"))
      field = &meta->accel;
    else if (is_hutch_element(child, "provisioned"))
      field = &provisioned;
    /* Unknown elements are skipped: a newer hutch may add some. */
    if (field && !take_text(child, field, error))
      return NULL;
  }
  meta->provisioned = g_strcmp0(provisioned, "yes") == 0  ? 1
                      : g_strcmp0(provisioned, "no") == 0 ? 0
                                                          : -1;
  if (!port || !parse_port(port, &meta->ssh_port)) {
    meta_error(error, "missing or invalid <ssh-port>");
    return NULL;
  }
  if (!meta->instance_dir || !g_path_is_absolute(meta->instance_dir) || !meta->runtime_dir ||
      !g_path_is_absolute(meta->runtime_dir)) {
    meta_error(error, "missing or relative <instance-dir> or <runtime-dir>");
    return NULL;
  }
  return g_steal_pointer(&meta);
}
