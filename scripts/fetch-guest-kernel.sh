#!/usr/bin/env bash
# Fetches the microVM guest kernel (Debian's cloud kernel) into a cache and builds the tiny
# initramfs the microvm driver boots with. Run once at set-up (as root); the node never
# downloads anything at run time. Idempotent: an up-to-date cache is left alone.
#
#   scripts/fetch-guest-kernel.sh [CACHE_DIR]      (default: $HANGAR_GUEST_KERNEL_DIR or
#                                                   /var/cache/hangar/guest-kernel)
#
# Result (CACHE_DIR):
#   vmlinuz       the kernel (ext4 and the 8250 serial console are built in)
#   initrd.img    busybox-static + the virtio modules (virtio-pci, -blk, -net) and qemu_fw_cfg,
#                 and /init: mounts the root disk (/dev/vda), brings up lo and eth0 (10.0.2.15,
#                 no default route), reads the sandbox's settings from fw_cfg (opt/hangar/*),
#                 grows the root filesystem to the disk and switch_roots to envd (/.hangar/envd)
#   kernel.json   {"package": ..., "version": ...}
# Needs: apt-get (Debian's registry), dpkg-deb, cpio, gzip, busybox-static (/bin/busybox).
set -euo pipefail

CACHE="${1:-${HANGAR_GUEST_KERNEL_DIR:-/var/cache/hangar/guest-kernel}}"
META_PKG=linux-image-cloud-amd64
# Load order matters: insmod does not resolve dependencies.
MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk
  failover net_failover virtio_net qemu_fw_cfg)

die() { echo "fetch-guest-kernel: $*" >&2; exit 1; }
command -v apt-cache >/dev/null || die "apt-cache not found (Debian host required)"
[[ -x /bin/busybox ]] || die "/bin/busybox not found (install busybox-static)"
command -v cpio >/dev/null || die "cpio not found"

# The package the meta-package points at, e.g. linux-image-6.1.0-57-cloud-amd64.
PKG=$(apt-cache depends "$META_PKG" 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
[[ -n "$PKG" ]] || die "cannot resolve $META_PKG (apt-get update?)"
VERSION=$(apt-cache policy "$PKG" | awk '/Candidate:/ {print $2}')
SCRIPT_SUM=$(sha256sum "$0" | cut -c1-16)  # a changed module list or /init rebuilds the cache
WANT="{\"package\": \"$PKG\", \"version\": \"$VERSION\", \"script\": \"$SCRIPT_SUM\"}"
if [[ -f "$CACHE/kernel.json" && -f "$CACHE/vmlinuz" && -f "$CACHE/initrd.img" ]] &&
  [[ "$(cat "$CACHE/kernel.json")" == "$WANT" ]]; then
  echo "fetch-guest-kernel: $PKG $VERSION already in $CACHE"
  exit 0
fi

mkdir -p "$(dirname "$CACHE")"
WORK=$(mktemp -d "$(dirname "$CACHE")/.guest-kernel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 0755 "$WORK"
(cd "$WORK" && apt-get download -q "$PKG" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
DEB=$(ls "$WORK"/"$PKG"_*.deb 2>/dev/null | head -1)
[[ -n "$DEB" ]] || die "apt-get download $PKG failed"
dpkg-deb -x "$DEB" "$WORK/pkg"
KVER=${PKG#linux-image-}
MODDIR="$WORK/pkg/lib/modules/$KVER"

# --- initramfs ---
IRD="$WORK/initrd"
mkdir -p "$IRD"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$IRD/bin/busybox"
for a in sh mount umount insmod ip hostname switch_root mkdir cat sleep cp echo; do
  ln -s busybox "$IRD/bin/$a"
done
for m in "${MODULES[@]}"; do
  f=$(find "$MODDIR" -name "$m.ko" | head -1)
  [[ -n "$f" ]] || die "module $m not found in $PKG"
  cp "$f" "$IRD/lib/modules/"
done
printf '%s\n' "${MODULES[@]}" >"$IRD/modules.order"
cat >"$IRD/init" <<'EOF'
#!/bin/sh
# Hangar microVM stage 1: root disk, network, settings, then envd as PID 1 of the real root.
export PATH=/bin
fail() { echo "hangar-init: $*"; exec sh -c 'echo o > /proc/sysrq-trigger; sleep 5'; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev ||
  fail "mounting /proc /sys /dev"
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko || fail "insmod $m"; done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1)); [ $i -gt 1000 ] && fail "no /dev/vda"; sleep 0.01
done
C=/sys/firmware/qemu_fw_cfg/by_name/opt/hangar
[ -r $C/hostname/raw ] || fail "no opt/hangar settings in fw_cfg"
mount -t ext4 -o noatime /dev/vda /newroot || fail "mounting /dev/vda"
hostname "$(cat $C/hostname/raw)"
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up || fail "configuring eth0"
fi
for d in proc sys dev tmp .hangar/run; do mkdir -p /newroot/$d; done
mount -t tmpfs -o mode=0700,size=1m hangar /newroot/.hangar/run || fail "mounting .hangar/run"
cp $C/token/raw /newroot/.hangar/run/token && cp $C/env/raw /newroot/.hangar/run/env ||
  fail "copying settings"
/newroot/.hangar/envd --grow-fs /newroot || fail "growing the root filesystem"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /newroot/tmp
mount --move /dev /newroot/dev && mount --move /sys /newroot/sys && mount --move /proc /newroot/proc
exec switch_root /newroot /.hangar/envd --listen tcp:0.0.0.0:49983 \
  --access-token-file /.hangar/run/token --env-file /.hangar/run/env
EOF
chmod 0755 "$IRD/init"
(cd "$IRD" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) >"$WORK/initrd.img"

mkdir -p "$CACHE.new"
cp "$WORK/pkg/boot/vmlinuz-$KVER" "$CACHE.new/vmlinuz"
cp "$WORK/initrd.img" "$CACHE.new/initrd.img"
cp "$WORK/pkg/boot/config-$KVER" "$CACHE.new/config"
echo "$WANT" >"$CACHE.new/kernel.json"
rm -rf "$CACHE.old"
[[ -d "$CACHE" ]] && mv "$CACHE" "$CACHE.old"
mv "$CACHE.new" "$CACHE"
rm -rf "$CACHE.old"
echo "fetch-guest-kernel: $PKG $VERSION -> $CACHE"
