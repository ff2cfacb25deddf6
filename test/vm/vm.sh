#!/bin/bash
# The real-host VM for `npm run test:vm`, from Debian packages only.
#
#   vm.sh prepare           host packages, QEMU and a 6.12 kernel from bookworm-backports, two initramfs
#   vm.sh run GUEST.mjs     boots L1 (TCG, emulated AMD SVM; its KVM emulates Hyper-V) which runs L2
#                           (KVM + vmbus-bridge + hv-balloon) whose init runs `node GUEST.mjs` once
#
# Why two levels: this machine's /dev/kvm has no Hyper-V emulation (SynIC, VP index), QEMU's VMBus host
# needs it, and L1's Debian kernel has it. L1 and L2 see this machine's filesystem read-only over 9p and
# chroot into it, so L2 runs this machine's node on the project's files. The guest program drives QEMU's
# monitor by printing `@@HMP <command>` / `@@QMP <json>` lines on its console; L1 forwards them (see
# l1-job.sh). Everything L2 and its QEMU say lands in $WORK/out.
#
# Facts this relies on (found by /work/shared/vmbus-vm): `kvm=off` or the guest sees KVM, not Hyper-V;
# the guest kernel must be >= 6.12 (6.1's uio_hv_generic refuses QEMU's unmonitored channel); hv-balloon
# accepts one channel open per VMBus connection (the guest program reloads hv_vmbus between cases).
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-${TMPDIR:-/tmp}/effect-vmbus-vm}
mkdir -p "$WORK"/{apt/lists/partial,apt/cache/archives/partial,guest,out}
APTCONF=$WORK/apt/apt.conf

prepare_packages() {
  local need=""
  for p in busybox-static cpio xz-utils zstd kmod python3; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done
  if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
}

prepare_apt() {
  [ -s "$WORK/apt/lists.ok" ] && return 0
  local mirror
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "no Debian mirror configured in /etc/apt" >&2; return 1; }
  printf 'deb %s bookworm main\ndeb %s bookworm-backports main\n' "$mirror" "$mirror" > "$WORK/apt/sources.list"
  printf 'Dir::Etc::SourceList "%s";\nDir::Etc::SourceParts "/nonexistent";\nDir::State::Lists "%s";\nDir::Cache "%s";\n' \
    "$WORK/apt/sources.list" "$WORK/apt/lists" "$WORK/apt/cache" > "$APTCONF"
  APT_CONFIG=$APTCONF apt-get update -qq
  date > "$WORK/apt/lists.ok"
}

prepare_qemu() {
  local bin=$WORK/qemu-root/usr/bin/qemu-system-x86_64 version
  if [ ! -x "$bin" ]; then
    version=$(APT_CONFIG=$APTCONF apt-cache madison qemu-system-x86 | awk -F'|' '/bookworm-backports/{gsub(/ /,"",$2); print $2; exit}')
    rm -rf "$WORK/qemu-debs" "$WORK/qemu-root" && mkdir -p "$WORK/qemu-debs" "$WORK/qemu-root"
    (cd "$WORK/qemu-debs" && APT_CONFIG=$APTCONF apt-get download -qq \
      "qemu-system-x86=$version" "qemu-system-common=$version" "qemu-system-data=$version" 2>/dev/null)
    for deb in "$WORK"/qemu-debs/*.deb; do dpkg -x "$deb" "$WORK/qemu-root"; done
    # Its shared libraries are plain bookworm packages: install them before the first run.
    local libs
    libs=$(APT_CONFIG=$APTCONF apt-cache depends "qemu-system-x86=$version" | awk '/Depends: lib/{print $2}' | sort -u)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $libs >/dev/null
  fi
  if ldd "$bin" | grep -q "not found"; then echo "QEMU libraries missing:" >&2; ldd "$bin" | grep "not found" >&2; return 1; fi
}

prepare_kernel() {
  [ -s "$WORK/guest/vmlinux" ] && [ -d "$WORK/guest/kroot/lib/modules" ] && return 0
  local pkg
  pkg=$(APT_CONFIG=$APTCONF apt-cache depends -t bookworm-backports linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  rm -rf "$WORK/guest/kroot" "$WORK"/guest/*.deb && mkdir -p "$WORK/guest/kroot"
  (cd "$WORK/guest" && APT_CONFIG=$APTCONF apt-get download -qq "$pkg" 2>/dev/null)
  dpkg -x "$WORK"/guest/linux-image-*.deb "$WORK/guest/kroot"
  local kver; kver=$(ls "$WORK/guest/kroot/lib/modules" | head -1)
  # Boot the uncompressed ELF through its PVH entry: no decompressor to run under TCG.
  python3 - "$WORK/guest/kroot/boot/vmlinuz-$kver" "$WORK/guest/vmlinux" <<'PY'
import lzma, subprocess, sys
image = open(sys.argv[1], "rb").read()
at = image.find(b"\xfd7zXZ\x00")
if at >= 0:
    elf = lzma.LZMADecompressor().decompress(image[at:])
else:
    at = image.find(b"\x28\xb5\x2f\xfd")
    elf = subprocess.run(["zstd", "-dc"], input=image[at:], capture_output=True).stdout
assert elf[:4] == b"\x7fELF", "no ELF kernel inside the bzImage"
open(sys.argv[2], "wb").write(elf)
PY
}

# initramfs OUT INIT MODULES...: busybox, the modules with their dependencies (in load order), INIT as /init
make_initramfs() {
  local out=$1 init=$2; shift 2
  local kver mdir tmp; kver=$(ls "$WORK/guest/kroot/lib/modules" | head -1); mdir=$WORK/guest/kroot/lib/modules/$kver
  tmp=$(mktemp -d)
  mkdir -p "$tmp"/{bin,proc,sys,dev,tmp,run,host,lib/modules}
  cp /bin/busybox "$tmp/bin/busybox"
  for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$tmp/bin/$applet"; done
  declare -A seen=(); local order=()
  visit() {
    local m=$1 file dep; [ -n "${seen[$m]:-}" ] && return 0; seen[$m]=1
    file=$(find "$mdir" -name "$m.ko*" -o -name "$(echo "$m" | tr _ -).ko*" | head -1)
    if [ -z "$file" ]; then grep -q -E "/($m|$(echo "$m" | tr _ -))\.ko" "$mdir/modules.builtin" && return 0; echo "module $m missing" >&2; return 1; fi
    for dep in $(modinfo -F depends "$file" | tr , ' '); do visit "$dep"; done
    order+=("$file")
  }
  for m in "$@"; do visit "$m"; done
  : > "$tmp/modules.order"
  for file in "${order[@]}"; do
    local name; name=$(basename "$file"); name=${name%.xz}; name=${name%.zst}
    case $file in *.xz) xz -dc "$file" ;; *.zst) zstd -q -dc "$file" ;; *) cat "$file" ;; esac > "$tmp/lib/modules/$name"
    echo "/lib/modules/$name" >> "$tmp/modules.order"
  done
  cp "$init" "$tmp/init" && chmod +x "$tmp/init"
  (cd "$tmp" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
  rm -rf "$tmp"
}

prepare() {
  local t0; t0=$(date +%s)
  prepare_packages
  prepare_apt
  prepare_qemu
  prepare_kernel
  make_initramfs "$WORK/guest/initrd-l1.gz" "$HERE/init-l1.sh" kvm_amd 9p 9pnet_virtio virtio_pci
  make_initramfs "$WORK/guest/initrd-l2.gz" "$HERE/init-l2.sh" hv_vmbus uio_hv_generic 9p 9pnet_virtio virtio_pci
  echo "prepared $WORK in $(( $(date +%s) - t0 )) s"
}

run() {
  local guest=$1 node; node=$(command -v node)
  [ -f "$guest" ] || { echo "no guest program $guest" >&2; return 1; }
  rm -f "$WORK"/out/*
  cat > "$WORK/job.env" <<EOF
WORK=$WORK
OUT=$WORK/out
NODE=$node
GUEST=$guest
QEMU_MODULE_DIR=$WORK/qemu-root/usr/lib/x86_64-linux-gnu/qemu
QEMU="$WORK/qemu-root/usr/bin/qemu-system-x86_64 -L $WORK/qemu-root/usr/share/qemu -nic none -vga none -bios $WORK/qemu-root/usr/share/qemu/qboot.rom"
KERNEL=$WORK/guest/vmlinux
INITRD=$WORK/guest/initrd-l2.gz
EOF
  export QEMU_MODULE_DIR=$WORK/qemu-root/usr/lib/x86_64-linux-gnu/qemu
  timeout "${VM_TIMEOUT:-900}" "$WORK/qemu-root/usr/bin/qemu-system-x86_64" -L "$WORK/qemu-root/usr/share/qemu" -nic none -vga none \
    -bios "$WORK/qemu-root/usr/share/qemu/qboot.rom" -M q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
    -display none -serial stdio -monitor none -no-reboot \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on \
    -virtfs "local,path=$WORK/out,mount_tag=out,security_model=none" \
    -kernel "$WORK/guest/vmlinux" -initrd "$WORK/guest/initrd-l1.gz" \
    -append "console=ttyS0 quiet panic=-1 dmjob=$HERE/l1-job.sh dmenv=$WORK/job.env" < /dev/null > "$WORK/out/l1-console.log" 2>&1
}

case ${1:-} in
  prepare) prepare ;;
  run) run "$2" ;;
  *) echo "usage: $0 prepare | run GUEST.mjs" >&2; exit 2 ;;
esac
