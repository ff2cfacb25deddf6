#!/bin/sh
# L2 init (busybox): the test VM whose VMBus host is QEMU. Loads hv_vmbus and uio_hv_generic, mounts the
# host filesystem (9p, read-only) and runs the guest program once with the host's node, in a chroot.
# The two VMBus modules are copied to a tmpfs the program can reach, so it can reload them (hv-balloon
# accepts one channel open per VMBus connection).
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
while read m; do insmod "$m" 2>/dev/null; done < /modules.order
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
echo "@@L2 up: $(uname -r)"
if mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host; then
  mount --bind /dev /host/dev; mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t tmpfs run /host/run
  mkdir -p /host/run/dm-vm && cp /lib/modules/hv_vmbus.ko /lib/modules/uio_hv_generic.ko /host/run/dm-vm/
  t0=$(date +%s)
  chroot /host "$(arg dmnode)" "$(arg dmguest)"; echo "@@L2 guest rc=$? after $(( $(date +%s) - t0 )) s"
else
  echo "@@L2 9p mount failed"
fi
poweroff -f
