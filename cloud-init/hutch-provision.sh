#!/bin/sh
# hutch-provision: the guest side of hutch's provisioning. hutch's cloud-init seed installs it
# as /usr/local/lib/hutch/hutch-provision and runs it from runcmd (first boot only).
#
#   hutch-provision run               mount the shares, run the steps, report, disable cloud-init
#   hutch-provision ready             grow the root file system to its disk if that grew, report
#                                     READY (or FAILED) again, warning first when sshd failed:
#                                     hutch-ready.service, later boots
#   hutch-provision mounts [FILE]     take a new share table (stdin, or FILE) after `hutch edit`:
#                                     unmount and forget the shares it no longer lists, mount
#                                     the ones it does
#   hutch-provision install-packages PKG...   what a `packages:` step runs
#   hutch-provision generalise        make this disk a template's (hutch template create runs
#                                     it in a throwaway clone, never in the source VM)
#   hutch-provision identity          at the first boot of a VM made from a template
#                                     (hutch-identity.service, before sshd): take host key,
#                                     hostname and the user's authorized key from the seed
#
# Progress goes to the host over a virtio-serial port, one line each:
#   STEP i/n NAME | OK i NAME | FAIL i NAME STATUS REASON | WARN TEXT | READY | FAILED
# REASON is the step's last line saying "error:" or the like (else its last line), so that `hutch start`
# can say why an optional step failed without the user digging in the logs.
# The host must ignore lines it does not know. Everything is also printed on stdout, which
# cloud-init keeps in /var/log/cloud-init-output.log; each step's output is also kept in
# /var/log/hutch/steps/NN-NAME.log.
#
# Every path and command below can be overridden from the environment so that the unit tests
# can run this script outside a guest.
set -u

HUTCH_CONF=${HUTCH_CONF:-/etc/hutch/provision.conf}
if [ -r "$HUTCH_CONF" ]; then
  # Written by hutch: HUTCH_USER and HUTCH_READY_CHANNEL, shell-quoted.
  # shellcheck source=/dev/null
  . "$HUTCH_CONF"
fi
HUTCH_USER=${HUTCH_USER:-}
HUTCH_READY_CHANNEL=${HUTCH_READY_CHANNEL:-org.hutch.ready.0}
STEPS_DIR=${HUTCH_STEPS_DIR:-/var/lib/hutch/steps}
STATE_DIR=${HUTCH_STATE_DIR:-/var/lib/hutch}
LOG_DIR=${HUTCH_LOG_DIR:-/var/log/hutch/steps}
CHANNEL=${HUTCH_CHANNEL_PATH:-/dev/virtio-ports/$HUTCH_READY_CHANNEL}
# A write to a virtio port blocks while no host process holds the other end open.
CHANNEL_TIMEOUT=${HUTCH_CHANNEL_TIMEOUT:-15}
MOUNTS=${HUTCH_MOUNTS:-/etc/hutch/fstab}
FSTAB=${HUTCH_FSTAB:-/etc/fstab}
CLOUD_INIT_DISABLED=${HUTCH_CLOUD_INIT_DISABLED:-/etc/cloud/cloud-init.disabled}
RUNUSER=${HUTCH_RUNUSER:-runuser}
SYSTEMCTL=${HUTCH_SYSTEMCTL:-systemctl}
MOUNT=${HUTCH_MOUNT:-mount}
UMOUNT=${HUTCH_UMOUNT:-umount}
MOUNTPOINT=${HUTCH_MOUNTPOINT:-mountpoint}
SSH_WAIT=${HUTCH_SSH_WAIT:-120}
SSHD_RETRY_WAIT=${HUTCH_SSHD_RETRY_WAIT:-20}
# Provisioning-time speedups (see speedups_on): dpkg without fsync, man-db's index not rebuilt
# after every install. Both cost minutes under TCG and are put back when provisioning ends.
DPKG_CFG=${HUTCH_DPKG_CFG:-/etc/dpkg/dpkg.cfg.d/hutch-provisioning}
MANDB_FLAG=${HUTCH_MANDB_FLAG:-/var/lib/man-db/auto-update}
# Later boots raise the network without waiting for every device (quick_network_boot): the
# drop-in that says so, and ifupdown's tool that names the interface it configures.
IFUPDOWN_PRE_DROPIN=${HUTCH_IFUPDOWN_PRE_DROPIN:-/etc/systemd/system/ifupdown-pre.service.d/hutch-quick-network.conf}
IFQUERY=${HUTCH_IFQUERY:-ifquery}
# The root file system's block device in sysfs (found from / when empty), and the tools that
# grow a partition and an ext2/3/4 file system.
ROOT_SYSFS=${HUTCH_ROOT_SYSFS:-}
ROOT_FSTYPE=${HUTCH_ROOT_FSTYPE:-}
GROWPART=${HUTCH_GROWPART:-growpart}
RESIZE2FS=${HUTCH_RESIZE2FS:-resize2fs}
# Identity (generalise / identity): the seed volume's label, or a directory holding its files
# (tests); where the host key, hostname and machine-id live; the homes to clean.
SEED_LABEL=${HUTCH_SEED_LABEL:-cidata}
SEED_DIR=${HUTCH_SEED_DIR:-}
# (the seed's CD drive can take long to appear when the host runs several TCG guests: sshd
# waits for the identity anyway, so waiting longer costs nothing when all is well)
SEED_WAIT=${HUTCH_SEED_WAIT:-120}
SSH_DIR=${HUTCH_SSH_DIR:-/etc/ssh}
ETC=${HUTCH_ETC:-/etc}
HOMES=${HUTCH_HOMES:-/root /home/*}
HOSTNAME_CMD=${HUTCH_HOSTNAME_CMD:-hostname}
CLOUD_INIT_CMD=${HUTCH_CLOUD_INIT_CMD:-cloud-init}
# generalise: where dbus keeps its copy of the machine-id and dhclient its leases, and the
# journal's tool (a test run as root must not clean the host's).
VAR_LIB=${HUTCH_VAR_LIB:-/var/lib}
JOURNALCTL=${HUTCH_JOURNALCTL:-journalctl}
# generalise zeroes the free space of these file systems ("DEVICE MOUNT-POINT TYPE" lines; empty:
# every read-write one on a block device, from PROC_MOUNTS) with DD, letting ext4's reserved
# clusters go meanwhile (SYS_FS_EXT4), and asks STAT whether any space is left.
ZERO_MOUNTS=${HUTCH_ZERO_MOUNTS:-}
PROC_MOUNTS=${HUTCH_PROC_MOUNTS:-/proc/self/mounts}
DD=${HUTCH_DD:-dd}
SYS_FS_EXT4=${HUTCH_SYS_FS_EXT4:-/sys/fs/ext4}
STAT=${HUTCH_STAT:-stat}

case "$0" in
  /*) HUTCH_RUNNER=$0 ;;
  *) HUTCH_RUNNER=$(pwd)/$0 ;;
esac
export HUTCH_RUNNER HUTCH_STATE_DIR="$STATE_DIR"

channel_broken=

say() {
  printf 'hutch: %s\n' "$*"
}

# Sends one line to the host. The channel is missing when the guest was not started by hutch
# (or in tests), and a write blocks when nobody listens: then say so once and stop trying,
# provisioning itself goes on.
report() {
  say "$*"
  [ -z "$channel_broken" ] || return 0
  if [ ! -e "$CHANNEL" ]; then
    say "no ready channel at $CHANNEL; progress is not reported to the host"
    channel_broken=1
    return 0
  fi
  # shellcheck disable=SC2016 # expanded by the inner shell
  if ! timeout "$CHANNEL_TIMEOUT" sh -c 'printf "%s\n" "$1" >>"$2"' sh "$*" "$CHANNEL"; then
    say "writing to $CHANNEL failed; progress is no longer reported to the host"
    channel_broken=1
  fi
  return 0
}

user_home() {
  if [ -n "${HUTCH_USER_HOME:-}" ]; then
    printf '%s\n' "$HUTCH_USER_HOME"
  elif [ -n "$HUTCH_USER" ]; then
    getent passwd "$HUTCH_USER" | cut -d: -f6
  fi
}

# The shares are mounted here rather than by cloud-init's mounts module because that module
# runs before users-groups: it would create the user's home directory as root, and useradd
# would then leave it root-owned. Entries go into fstab (with nofail) so later boots mount
# them too.
mount_shares() {
  [ -r "$MOUNTS" ] || return 0
  home=$(user_home)
  while IFS= read -r line <&4; do
    case "$line" in '' | '#'*) continue ;; esac
    set -f
    # shellcheck disable=SC2086 # split the fstab line into its fields
    set -- $line
    set +f
    path=$2
    if [ ! -d "$path" ]; then
      case "$path" in
        "$home"/*)
          if [ -n "$home" ] && [ -n "$HUTCH_USER" ]; then
            "$RUNUSER" -u "$HUTCH_USER" -- mkdir -p "$path" </dev/null
          else
            mkdir -p "$path"
          fi
          ;;
        *) mkdir -p "$path" ;;
      esac
    fi
    if ! grep -qxF -e "$line" "$FSTAB" 2>/dev/null; then
      printf '%s\n' "$line" >>"$FSTAB"
    fi
    if "$MOUNTPOINT" -q "$path" 2>/dev/null; then
      continue
    fi
    if "$MOUNT" --fstab "$FSTAB" "$path" </dev/null; then
      say "mounted $path"
    else
      report "WARN mount $path failed"
      printf '%s\n' "$path" >>"$STATE_DIR/mount-failed"
    fi
  done 4<"$MOUNTS"
}

# Why a step failed, in one line of at most 200 characters: the last line of its log that says
# "error:" (the scripts' "hutch-NAME: error: ..."), "E: " (apt), "ERR!" (npm) or "fatal:" (git),
# else the log's last line. Not a bare "error": package names such as libgpg-error0 have it.
# Reads only this run's part of the log: the lines after the first $2.
failure_reason() {
  this_run=$(tail -n +$(($2 + 1)) "$1" 2>/dev/null | grep -v '^hutch: ')
  reason=$(printf '%s\n' "$this_run" | grep -iE 'error:|^E: |ERR!|fatal:' | tail -n 1)
  [ -n "$reason" ] || reason=$(printf '%s\n' "$this_run" | grep . | tail -n 1)
  [ -n "$reason" ] || reason="no output"
  printf '%s\n' "$reason" | tr -d '\r' | tr '\t' ' ' | cut -c 1-200
}

# dpkg's fsyncs and man-db's trigger (mandb over every manual page, after each apt-get run)
# make a package step minutes slower under TCG. A crash during first provisioning means
# creating the VM again anyway, so the fsyncs buy nothing then. Both go back in speedups_off.
speedups_on() {
  if [ -d "$(dirname "$DPKG_CFG")" ]; then
    printf '# written by hutch-provision while provisioning; removed when it ends\nforce-unsafe-io\n' \
      >"$DPKG_CFG"
  fi
  if [ -e "$MANDB_FLAG" ]; then
    mv -f "$MANDB_FLAG" "$MANDB_FLAG.hutch-off"
  fi
}

speedups_off() {
  rm -f "$DPKG_CFG"
  if [ -e "$MANDB_FLAG.hutch-off" ]; then
    mv -f "$MANDB_FLAG.hutch-off" "$MANDB_FLAG"
  fi
}

# Runs step i of n; returns its exit status. A step that succeeded once is not run again.
run_step() {
  step_i=$1 step_n=$2 num=$3 name=$4 who=$5
  file=$STEPS_DIR/$num-$name.sh
  stamp=$STATE_DIR/done/$num-$name
  log=$LOG_DIR/$num-$name.log
  report "STEP $step_i/$step_n $name"
  if [ -e "$stamp" ]; then
    say "step $name succeeded before; not running it again"
    report "OK $step_i $name"
    return 0
  fi
  status_file=$STATE_DIR/.status
  rm -f "$status_file"
  log_lines_before=0
  [ ! -r "$log" ] || log_lines_before=$(wc -l <"$log")
  {
    say "step $name (as $who) started $(date -Iseconds)"
    # The steps get neither the lock nor the lists being read.
    if [ "$who" = user ]; then
      "$RUNUSER" -l "$HUTCH_USER" -c "$file" </dev/null 3<&- 4<&- 9>&-
    else
      HOME=${HOME:-/root} "$file" </dev/null 3<&- 4<&- 9>&-
    fi
    echo $? >"$status_file"
  } 2>&1 | tee -a "$log"
  status=$(cat "$status_file" 2>/dev/null || echo 255)
  rm -f "$status_file"
  if [ "$status" = 0 ]; then
    : >"$stamp"
    report "OK $step_i $name"
  else
    report "FAIL $step_i $name $status $(failure_reason "$log" "$log_lines_before")"
  fi
  return "$status"
}

wait_for_ssh() {
  waited=0
  while [ "$waited" -lt "$SSH_WAIT" ]; do
    for unit in ssh.service sshd.service ssh.socket; do
      if "$SYSTEMCTL" is-active --quiet "$unit" </dev/null 2>/dev/null; then
        return 0
      fi
    done
    sleep 1
    waited=$((waited + 1))
  done
  say "sshd is not active after ${SSH_WAIT}s; reporting anyway"
}

# ifupdown raises the network only after `udevadm settle`, i.e. once udev has handled every
# device of the boot: 9-11 s of a 22 s restart under TCG, where only the one interface it
# configures matters. Later boots wait for that interface alone (it exists once the kernel
# has it under its final name); a guest without ifupdown, or with no interface or several,
# keeps the full wait.
quick_network_boot() {
  command -v "$IFQUERY" >/dev/null 2>&1 || return 0
  ifaces=$("$IFQUERY" --list --exclude=lo 2>/dev/null)
  [ -n "$ifaces" ] && [ "$(printf '%s\n' "$ifaces" | wc -l)" -eq 1 ] || return 0
  case $ifaces in *[!A-Za-z0-9_.-]*) return 0 ;; esac
  if ! mkdir -p "$(dirname "$IFUPDOWN_PRE_DROPIN")" ||
    ! printf '%s\n' "# written by hutch-provision: wait for $ifaces, not for every device" \
      '[Service]' 'ExecStart=' \
      "ExecStart=/bin/udevadm settle --timeout=120 --exit-if-exists=/sys/class/net/$ifaces" \
      >"$IFUPDOWN_PRE_DROPIN"; then
    say "could not write $IFUPDOWN_PRE_DROPIN; later boots wait for every device"
  fi
}

# cloud-init costs 25-35 s a boot under TCG and has nothing left to do; hutch-ready.service
# reports readiness on later boots instead.
finish() {
  result=$1
  speedups_off
  quick_network_boot
  printf '%s\n' "$result" >"$STATE_DIR/status"
  mkdir -p "$(dirname "$CLOUD_INIT_DISABLED")"
  : >"$CLOUD_INIT_DISABLED"
  if ! "$SYSTEMCTL" enable hutch-ready.service </dev/null; then
    say "could not enable hutch-ready.service; later boots will not report READY"
  fi
  if [ "$result" = ok ]; then
    wait_for_ssh
    report READY
    return 0
  fi
  report FAILED
  return 1
}

cmd_run() {
  mkdir -p "$STATE_DIR/done" "$LOG_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STATE_DIR/lock"
    if ! flock -n 9; then
      say "another hutch-provision is running"
      return 1
    fi
  fi
  list=$STEPS_DIR/steps.list
  if [ -r "$list" ]; then
    n=$(grep -c . "$list")
  else
    n=0
  fi
  : >"$STATE_DIR/optional-failed"
  rm -f "$STATE_DIR/mount-failed"
  mount_shares
  speedups_on
  i=0
  if [ "$n" -gt 0 ]; then
    # steps.list: one line a step, "NN NAME root|user required|optional".
    while read -r num name who need <&3; do
      [ -n "$num" ] || continue
      i=$((i + 1))
      run_step "$i" "$n" "$num" "$name" "$who"
      status=$?
      [ "$status" = 0 ] && continue
      if [ "$need" = optional ]; then
        printf '%s\n' "$name" >>"$STATE_DIR/optional-failed"
        say "optional step $name failed with status $status; going on"
        continue
      fi
      say "step $name failed with status $status; provisioning stopped"
      finish failed
      return 1
    done 3<"$list"
  fi
  finish ok
}

# `hutch edit --disk` grows the disk of a stopped VM. cloud-init grows the root file system at
# the first boot only (and is disabled after it), so every later boot does it here when the
# disk's size is not the one the root file system was last grown to: growpart for a root on a
# partition (Debian's cloud images), then resize2fs, online. Failing is a warning, never a
# reason not to report READY.
grow_root() {
  sys=$ROOT_SYSFS
  if [ -z "$sys" ]; then
    majmin=$(mountpoint -d / 2>/dev/null) || return 0
    sys=/sys/dev/block/$majmin
  fi
  sys=$(readlink -f "$sys") || return 0
  dev=/dev/$(basename "$sys")
  disk_sys=$sys
  [ -r "$sys/partition" ] && disk_sys=$(dirname "$sys")
  size=$(cat "$disk_sys/size" 2>/dev/null) || return 0
  [ "$size" != "$(cat "$STATE_DIR/root-size" 2>/dev/null)" ] || return 0
  if [ "$disk_sys" != "$sys" ] && command -v "$GROWPART" >/dev/null 2>&1; then
    # exit 1 with NOCHANGE: the partition fills the disk already
    "$GROWPART" "/dev/$(basename "$disk_sys")" "$(cat "$sys/partition")" </dev/null
  fi
  fstype=${ROOT_FSTYPE:-$(findmnt -n -o FSTYPE / 2>/dev/null)}
  case "$fstype" in
    ext2 | ext3 | ext4)
      if ! "$RESIZE2FS" "$dev" </dev/null; then
        report "WARN growing the root file system ($dev) failed"
        return 0
      fi
      ;;
    *)
      say "not growing the root file system: $fstype"
      ;;
  esac
  mkdir -p "$STATE_DIR"
  printf '%s\n' "$size" >"$STATE_DIR/root-size"
}

# Whether ssh.service failed at this boot. hutch-ready.service is ordered after its start
# job, so it is active, failed, or being restarted by systemd after failing (activating):
# then its retries are given up to SSHD_RETRY_WAIT seconds to end either way. Inactive is not
# failed (a guest whose sshd is socket-activated).
sshd_failed() {
  waited=0
  while :; do
    case $("$SYSTEMCTL" show -p ActiveState --value ssh.service </dev/null 2>/dev/null) in
      failed) return 0 ;;
      activating | deactivating) [ "$waited" -lt "$SSHD_RETRY_WAIT" ] || return 0 ;;
      *) return 1 ;;
    esac
    sleep 1
    waited=$((waited + 1))
  done
}

cmd_ready() {
  if [ -e "$STATE_DIR/identity-pending" ]; then
    why=$(head -c 300 "$STATE_DIR/identity-failed" 2>/dev/null | tr -d '\n')
    report "WARN this VM did not take its identity from its seed${why:+: $why} (journalctl -u hutch-identity)"
  fi
  grow_root
  # sshd failed at this boot: the host need not wait a minute for SSH (the text is
  # HUTCH_READY_WARN_SSHD_FAILED in lib/ready-private.h)
  if sshd_failed; then
    report "WARN ssh.service failed at this boot"
  fi
  if [ "$(cat "$STATE_DIR/status" 2>/dev/null)" = ok ]; then
    report READY
  else
    report FAILED
  fi
}

# hutch runs this over SSH at the first start after `hutch edit` changed the shares: the
# guest's fstab still holds the first boot's lines (and the boot has just mounted them, under
# mount tags that may now name other shares). Every hutch line (tag hutchfsN) that the new
# table does not hold exactly is unmounted and dropped from fstab; then the new table is
# mounted like at first boot. The ready channel is not used: the host is not listening.
cmd_mounts() {
  channel_broken=1
  mkdir -p "$STATE_DIR" "$(dirname "$MOUNTS")"
  new=$STATE_DIR/fstab.new
  cat ${1:+"$1"} >"$new" || return 1
  kept=$STATE_DIR/fstab.kept
  : >"$kept"
  if [ -r "$FSTAB" ]; then
    while IFS= read -r line <&4; do
      case "$line" in
        hutchfs[0-9]*' '*)
          if grep -qxF -e "$line" "$new"; then
            printf '%s\n' "$line" >>"$kept"
            continue
          fi
          set -f
          # shellcheck disable=SC2086 # split the fstab line into its fields
          set -- $line
          set +f
          if "$MOUNTPOINT" -q "$2" 2>/dev/null && ! "$UMOUNT" "$2" </dev/null; then
            say "unmounting $2 failed; detaching it"
            "$UMOUNT" -l "$2" </dev/null || true
          fi
          say "unmounted $2 ($1): no longer shared"
          ;;
        *) printf '%s\n' "$line" >>"$kept" ;;
      esac
    done 4<"$FSTAB"
    cat "$kept" >"$FSTAB"
  fi
  rm -f "$kept"
  mv -f "$new" "$MOUNTS"
  rm -f "$STATE_DIR/mount-failed"
  mount_shares
  [ ! -e "$STATE_DIR/mount-failed" ]
}

# Run as root in a throwaway clone of the VM a template is made from; the clone is shut down
# right after and its disk becomes the template. What made the source VM a particular machine
# goes: its shares' mount lines, SSH host keys, machine-id, cloud-init's instance state and
# logs, every authorized key, shell histories, DHCP leases, the journal. Provisioning records
# stay (status, done/, optional-failed: a VM from the template does not provision again), and
# cloud-init stays disabled: the first boot of a VM made from the template takes its identity
# from its seed through hutch-identity.service instead (cmd_identity).
# Its messages go to stderr, which hutch reads: "hutch: credential PATH" for what looks like a
# tool's sign-in (kept: it is the user's data, but hutch says so), and the reason it failed.
cmd_generalise() {
  cmd_mounts /dev/null >&2 || say "generalise: a share did not unmount cleanly" >&2
  mkdir -p "$STATE_DIR"
  : >"$STATE_DIR/identity-pending"
  if ! "$SYSTEMCTL" enable hutch-identity.service </dev/null >&2; then
    say "generalise: cannot enable hutch-identity.service" >&2
    return 1
  fi
  rm -f "$SSH_DIR"/ssh_host_*
  # a new, empty file: systemd gives it a value at the next boot (the old one is 0444, which
  # only root may truncate)
  rm -f "$ETC/machine-id"
  : >"$ETC/machine-id"
  chmod 0444 "$ETC/machine-id"
  rm -f "$VAR_LIB/dbus/machine-id"
  # systemd-creds' host key: credentials one VM encrypted would open on every other. (The
  # random seed stays: shutdown writes a new one anyway, systemd mixes it in without crediting
  # it, and every VM gets the host's entropy through virtio-rng.)
  rm -f "$VAR_LIB/systemd/credential.secret"
  # cloud-init's instance state holds the user-data, and with it the source's host key
  if ! "$CLOUD_INIT_CMD" clean --logs </dev/null >&2; then
    say "generalise: cloud-init clean failed" >&2
    return 1
  fi
  for home in $HOMES; do
    [ -d "$home" ] || continue
    rm -f "$home/.bash_history" "$home/.zsh_history" "$home/.python_history" \
      "$home/.node_repl_history" "$home/.lesshst" "$home/.viminfo" "$home/.wget-hsts" \
      "$home/.ssh/authorized_keys" "$home/.ssh/known_hosts"
    for f in .claude/.credentials.json .config/gh/hosts.yml .codex/auth.json \
      .gemini/oauth_creds.json .git-credentials .npmrc .docker/config.json .netrc \
      .ssh/id_rsa .ssh/id_ecdsa .ssh/id_ed25519; do
      [ -e "$home/$f" ] && say "credential $home/$f" >&2
    done
  done
  rm -f "$STATE_DIR/root-size" "$STATE_DIR/lock" "$STATE_DIR/mount-failed" \
    "$VAR_LIB"/dhcp/*.leases
  printf 'hutch\n' >"$ETC/hostname"
  if command -v "$JOURNALCTL" >/dev/null 2>&1; then
    "$JOURNALCTL" --rotate >/dev/null 2>&1 || true
    "$JOURNALCTL" --vacuum-time=1s >/dev/null 2>&1 || true
  fi
  sync
  # what must be gone is gone
  for f in "$SSH_DIR"/ssh_host_*; do
    if [ -e "$f" ]; then
      say "generalise: $f is still there" >&2
      return 1
    fi
  done
  if [ -s "$ETC/machine-id" ] || [ -d "$VAR_LIB/cloud/instances" ]; then
    say "generalise: the machine-id or cloud-init's instance state is still there" >&2
    return 1
  fi
  zero_free_space
}

# The disk's file systems, "DEVICE MOUNT-POINT TYPE" a line: read-write, on a block device,
# each device once (a bind mount is the same bytes). A mount point the kernel escapes (a
# space in it) is listed as it is written, and zero_free_space refuses it.
disk_mounts() {
  if [ -n "$ZERO_MOUNTS" ]; then
    printf '%s\n' "$ZERO_MOUNTS"
    return 0
  fi
  awk '$1 ~ /^\/dev\// && $4 ~ /^rw(,|$)/ && !seen[$1]++ { print $1, $2, $3 }' "$PROC_MOUNTS"
}

# Bytes free in the file system at $1, as root sees them (reserved blocks included), or
# nothing when statfs fails or says something that is not two numbers. Shell arithmetic:
# mawk prints a product of 2^31 or more as 2.14748e+09.
free_bytes() {
  # shellcheck disable=SC2046 # two numbers, split on purpose
  set -- $("$STAT" -f -c '%f %S' "$1" 2>/dev/null)
  case "${1:-x}${2:-x}" in *[!0-9]*) return 0 ;; esac
  echo $(($1 * $2))
}

# Every file generalise removed (the host key, cloud-init's copies of the user-data that
# carried it, the histories) leaves its bytes in the free blocks, which the template's disk
# would copy: root in any VM on the template reads /dev/vda. So the free space of each of the
# disk's file systems is written with zeros, in a file that fills it and is then removed. hutch
# gives the copy's disk detect_zeroes=unmap: zero writes become unallocated clusters, the
# copy does not grow, and the template's disk does not either. O_DIRECT, 4 MiB at a time, then
# the last blocks 4 KiB at a time (an O_DIRECT write larger than the space left fails whole),
# then what a smaller block holds, then synced: pages dd wrote buffered and never flushed
# would be dropped by the removal with their blocks never written. What is left after that
# (a block the fill file's extent tree could not take) is written as small files. ext4 keeps
# some free clusters from everyone, root included (reserved_clusters, up to 16 MiB): they are
# let go for the fill and kept again after it. Only ext2/3/4 and vfat are known to keep a
# removed file's bytes nowhere but in free blocks (btrfs and xfs keep small files in their
# metadata, and xfs a reserve statfs does not show): another type fails generalising.
zero_free_space() {
  mounts=$(disk_mounts) || return 1
  while read -r dev mnt fstype; do
    [ -n "$mnt" ] || continue
    case "$fstype" in
      ext2 | ext3 | ext4 | vfat) ;;
      *)
        say "generalise: cannot zero the free space of $mnt ($fstype): hutch zeroes ext2/3/4 and vfat only" >&2
        return 1
        ;;
    esac
    case "$mnt" in
      *\\*)
        say "generalise: cannot zero the free space of $mnt (a mount point with an escaped name)" >&2
        return 1
        ;;
    esac
    # the device's name in /sys/fs/ext4: through its number (a root shown as /dev/root)
    name=
    majmin=$("$MOUNTPOINT" -d "$mnt" 2>/dev/null) &&
      name=$(basename "$(readlink -f "/sys/dev/block/$majmin")" 2>/dev/null)
    [ -n "$name" ] && [ -d "$SYS_FS_EXT4/$name" ] || name=$(basename "$(readlink -f "$dev")")
    resv=$SYS_FS_EXT4/$name/reserved_clusters
    kept=$(cat "$resv" 2>/dev/null) && echo 0 >"$resv" 2>/dev/null || kept=
    fill=$mnt/.hutch-zero-fill
    began=$(date +%s)
    rm -rf "$fill" "$fill.d"
    mkdir "$fill.d"
    "$DD" if=/dev/zero of="$fill" bs=4M oflag=direct status=none 2>/dev/null
    "$DD" if=/dev/zero of="$fill" bs=4k oflag=append,direct conv=notrunc status=none 2>/dev/null
    "$DD" if=/dev/zero of="$fill" bs=512 oflag=append conv=notrunc status=none 2>/dev/null
    sync "$fill"
    i=0
    while [ "$i" -lt 256 ] && [ "$(free_bytes "$mnt")" != 0 ] &&
      "$DD" if=/dev/zero of="$fill.d/$i" bs=4k count=1 conv=fsync status=none 2>/dev/null; do
      i=$((i + 1))
    done
    sync "$fill.d" 2>/dev/null
    # full means full: a fill that stopped early (an I/O error, a quota) left free blocks
    left=$(free_bytes "$mnt")
    size=$("$STAT" -c %s "$fill" 2>/dev/null || echo 0)
    rm -rf "$fill" "$fill.d"
    [ -z "$kept" ] || echo "$kept" >"$resv"
    if [ "${left:-unknown}" != 0 ]; then
      say "generalise: could not zero the free space of $mnt (${left:-unknown} bytes were left)" >&2
      return 1
    fi
    say "zeroed $((size / 1048576)) MiB of free space in $mnt in $(($(date +%s) - began)) s" >&2
  done <<EOF
$mounts
EOF
  sync
}

# Why the identity was not taken, for the journal and for cmd_ready's warning to the host.
identity_failed() {
  say "identity: $1"
  mkdir -p "$STATE_DIR" && printf '%s\n' "$1" >"$STATE_DIR/identity-failed"
}

# hutch-identity.service, at boot before sshd, while $STATE_DIR/identity-pending exists: the
# seed hutch wrote for this VM holds hutch-identity ("hostname NAME", "authorized-key KEY")
# and hutch-host-key (the host key hutch made and pinned). Failing leaves the marker, so the
# next boot tries again; hutch start then fails to connect with the pinned key, and says so.
cmd_identity() {
  pending=$STATE_DIR/identity-pending
  [ -e "$pending" ] || return 0
  dir=$SEED_DIR
  mounted=
  if [ -z "$dir" ]; then
    dev=
    waited=0
    while [ "$waited" -lt "$SEED_WAIT" ]; do
      dev=$(blkid -L "$SEED_LABEL" 2>/dev/null) && [ -n "$dev" ] && break
      sleep 1
      waited=$((waited + 1))
    done
    if [ -z "$dev" ]; then
      identity_failed "no seed volume labelled $SEED_LABEL within $SEED_WAIT s"
      return 1
    fi
    # not under /tmp: systemd-tmpfiles-setup empties /tmp at this point of the boot (both
    # after local-fs.target), and took the mount point away ("mount point does not exist")
    dir=$(mktemp -d /run/hutch-seed.XXXXXX) || return 1
    if ! why=$("$MOUNT" -o ro "$dev" "$dir" 2>&1 </dev/null); then
      rmdir "$dir"
      identity_failed "mounting the seed ($dev) failed: $why"
      return 1
    fi
    mounted=1
  fi
  name=$(sed -n 's/^hostname //p' "$dir/hutch-identity" 2>/dev/null | head -n 1)
  key=$(sed -n 's/^authorized-key //p' "$dir/hutch-identity" 2>/dev/null | head -n 1)
  result=0
  if [ -z "$name" ] || [ -z "$key" ] || [ ! -s "$dir/hutch-host-key" ]; then
    identity_failed "the seed holds no hutch-identity and hutch-host-key"
    result=1
  else
    k=$SSH_DIR/ssh_host_ed25519_key
    rm -f "$SSH_DIR"/ssh_host_rsa_key* "$SSH_DIR"/ssh_host_ecdsa_key* "$SSH_DIR"/ssh_host_dsa_key*
    if (umask 077 && cp "$dir/hutch-host-key" "$k.new") &&
      ssh-keygen -y -f "$k.new" >"$k.pub.new" &&
      mv -f "$k.new" "$k" && mv -f "$k.pub.new" "$k.pub" && chmod 644 "$k.pub"; then
      :
    else
      identity_failed "installing the host key failed"
      result=1
    fi
    printf '%s\n' "$name" >"$ETC/hostname"
    "$HOSTNAME_CMD" "$name" 2>/dev/null || true
    if grep -q '^127\.0\.1\.1[[:space:]]' "$ETC/hosts" 2>/dev/null; then
      sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1 $name/" "$ETC/hosts"
    else
      printf '127.0.1.1 %s\n' "$name" >>"$ETC/hosts"
    fi
    home=$(user_home)
    if [ -n "$home" ]; then
      mkdir -p "$home/.ssh"
      printf '%s\n' "$key" >"$home/.ssh/authorized_keys"
      chmod 700 "$home/.ssh"
      chmod 600 "$home/.ssh/authorized_keys"
      [ -z "$HUTCH_USER" ] || chown -R "$HUTCH_USER:" "$home/.ssh" 2>/dev/null || true
    else
      identity_failed "no home for the user '$HUTCH_USER'"
      result=1
    fi
  fi
  if [ -n "$mounted" ]; then
    "$UMOUNT" "$dir" </dev/null || true
    rmdir "$dir" 2>/dev/null || true
  fi
  [ "$result" = 0 ] && rm -f "$pending" "$STATE_DIR/identity-failed"
  return "$result"
}

cmd_install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  # apt-daily may hold the lock on a first boot: wait for it rather than fail.
  apt="apt-get -o DPkg::Lock::Timeout=600"
  if [ ! -e "$STATE_DIR/apt-updated" ]; then
    $apt update || return
    mkdir -p "$STATE_DIR"
    : >"$STATE_DIR/apt-updated"
  fi
  # Recommends are left out: they are what made the base tools take 26 minutes under TCG
  # (smem recommends matplotlib and a Tk stack). Name a package to get it.
  $apt install -y --no-install-recommends "$@"
}

case "${1:-}" in
  run) cmd_run ;;
  ready) cmd_ready ;;
  mounts) cmd_mounts "${2:-}" ;;
  generalise) cmd_generalise ;;
  identity) cmd_identity ;;
  install-packages)
    shift
    cmd_install_packages "$@"
    ;;
  *)
    echo "usage: hutch-provision run | ready | mounts [FILE] | install-packages PACKAGE... |" \
      "generalise | identity" >&2
    exit 2
    ;;
esac
