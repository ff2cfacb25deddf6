#!/bin/sh
# L1 init (busybox): a TCG guest with emulated AMD SVM whose KVM emulates Hyper-V. Loads its modules,
# mounts this machine's filesystem (9p, read-only) and the writable out directory, and runs the job in a
# chroot of it: the job is bash on the host's own files.
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
while read m; do insmod "$m" 2>/dev/null; done < /modules.order
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
JOB=$(arg dmjob); ENV=$(arg dmenv)
if mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host; then
  . "/host$ENV"
  mount --bind /dev /host/dev; mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t tmpfs run /host/run
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "/host$OUT" || echo "@@L1 out mount failed"
  echo "@@L1 up: $(uname -r), svm=$(grep -c -w svm /proc/cpuinfo)"
  chroot /host /bin/bash "$JOB" "$ENV"; echo "@@L1 job rc=$?"
  sync; umount "/host$OUT" 2>/dev/null
else
  echo "@@L1 9p mount failed"
fi
poweroff -f
