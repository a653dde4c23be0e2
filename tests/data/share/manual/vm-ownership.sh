#!/bin/bash
# Manual check of share ownership (not run by meson): boots a Debian test image under TCG with
# one writable virtiofs share started by libhutch (hutch_share_start, guest uid/gid 1000), has
# cloud-init create files as guest uid 1000, 0 and 1234, and lists the owners on both sides.
# Run as an unprivileged user with /etc/subuid and /etc/subgid ranges. Seen 2026-11-27 as
# hutch-test (uid 1001, subuids 100000+65536): host owners 1001, 100000, 101233.
set -u
mkdir -p "${W:-/tmp/sharevm}" && cd "${W:-/tmp/sharevm}"
IMG=${1:?usage: vm-ownership.sh IMAGE_DIR (with disk.qcow2, vmlinuz, initrd.img)}
W=${W:-/tmp/sharevm}  # holds ./driver, built from share-driver.c against libhutch-internal.a
rm -rf share run overlay.qcow2 console.log seed seed.iso
mkdir -m 0755 share; mkdir -m 0700 run
qemu-img create -q -f qcow2 -F qcow2 -b "$IMG/disk.qcow2" overlay.qcow2
read SOCK PIDFILE < <(./driver $W/share $W/run 1000 1000) || exit 1
echo "virtiofsd pid $(cat $PIDFILE) uid_map:"; cat /proc/$(cat $PIDFILE)/uid_map; cat /proc/$(cat $PIDFILE)/gid_map
U='setpriv --reuid=1000 --regid=1000 --clear-groups'
mkdir -p seed
cat > seed/meta-data <<'EOM'
instance-id: sharetest-1
local-hostname: sharetest
EOM
cat > seed/user-data <<EOM
#cloud-config
locale: false
runcmd:
  - [sh, -c, "exec >/dev/ttyS0 2>&1; modprobe virtiofs; mkdir -p /mnt/x; mount -t virtiofs hutchfs0 /mnt/x && { echo GUESTVIEW-BEFORE; ls -lnd /mnt/x; $U touch /mnt/x/by-user; $U mkdir /mnt/x/dir-by-user; $U chmod 777 /mnt/x/dir-by-user; touch /mnt/x/by-root; setpriv --reuid=1234 --regid=1234 --clear-groups touch /mnt/x/dir-by-user/by-1234; echo GUESTVIEW-AFTER; ls -lnR /mnt/x; umount /mnt/x; }; echo SHARETEST-DONE; sync; echo o > /proc/sysrq-trigger"]
EOM
printf 'version: 2\nethernets: {}\n' > seed/network-config
(cd seed && bsdtar --format iso9660 --options 'iso9660:volume-id=cidata,iso9660:rockridge,iso9660:joliet' -cf ../seed.iso meta-data user-data network-config)
timeout 900 qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -display none -no-reboot -nic none \
  -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \
  -chardev socket,id=fs0,path="$SOCK" -device vhost-user-fs-pci,chardev=fs0,tag=hutchfs0 \
  -drive file=overlay.qcow2,if=virtio,format=qcow2 \
  -drive file=seed.iso,if=virtio,format=raw,readonly=on \
  -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
  -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 net.ifnames=0" \
  -serial file:console.log
echo "qemu exit $?"
sleep 1
echo "virtiofsd still running? $(test -e /proc/$(cat $PIDFILE 2>/dev/null || echo 0) && echo yes || echo no)"
./driver stop $W/run
echo HOSTVIEW; ls -lnR share; ls -la run
