#!/bin/bash
# Runs in L1 (chroot of the host's filesystem): starts the test VM (L2) with QEMU's vmbus-bridge and
# hv-balloon (status reports on), keeps its human monitor (HMP) and QMP on FIFOs, and forwards the
# commands the guest program prints (`@@HMP <command>`, `@@QMP <json>`) to them. Transcripts:
# $OUT/hmp.log (each command preceded by `### <command>`), $OUT/qmp.log, $OUT/l2-console.log,
# $OUT/l2-trace.log (QEMU's hv_balloon_* trace events).
set -u
. "$1"
export QEMU_MODULE_DIR
HV=hv-relaxed,hv-vpindex,hv-synic,hv-time,hv-stimer,hv-vapic,hv-runtime
for f in hmp qmp; do rm -f /run/dm-$f.in /run/dm-$f.out; mkfifo /run/dm-$f.in /run/dm-$f.out; done
# Read-write opens of a FIFO never block; QEMU opens its ends read-write too.
exec 7<>/run/dm-hmp.in 8<>/run/dm-hmp.out 5<>/run/dm-qmp.in 6<>/run/dm-qmp.out
cat <&8 >> "$OUT/hmp.log" &
cat <&6 >> "$OUT/qmp.log" &
printf '{"execute":"qmp_capabilities"}\n' >&5
t0=$(date +%s)
echo "@@L1 starting L2"
# kvm=off: otherwise Linux prefers KVM over Hyper-V and hv_vmbus finds no bus.
$QEMU -M q35 -enable-kvm -cpu host,$HV,kvm=off -m 512 -smp 1 -display none -serial stdio -no-reboot \
  -chardev pipe,id=hmp,path=/run/dm-hmp -mon chardev=hmp,mode=readline \
  -chardev pipe,id=qmp,path=/run/dm-qmp -mon chardev=qmp,mode=control \
  -device vmbus-bridge -device hv-balloon,id=hvb,status-report=on \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on \
  -trace 'hv_balloon_*' -D "$OUT/l2-trace.log" \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 quiet panic=-1 dmnode=$NODE dmguest=$GUEST" < /dev/null 2>&1 |
while IFS= read -r line; do
  line=${line%$'\r'}
  printf '[%4d s] %s\n' "$(( $(date +%s) - t0 ))" "$line" >> "$OUT/l2-console.log"
  case $line in
    *@@HMP\ *) cmd=${line#*@@HMP }; printf '### %s\n' "$cmd" >> "$OUT/hmp.log"; printf '%s\n' "$cmd" >&7 ;;
    *@@QMP\ *) printf '%s\n' "${line#*@@QMP }" >&5 ;;
    *@@L2*|*@@CASE*) echo "$line" ;;
  esac
done
echo "@@L1 L2 exited after $(( $(date +%s) - t0 )) s"
sleep 1
kill %1 %2 2>/dev/null
