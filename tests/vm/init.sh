#!/bin/busybox sh
# SPDX-License-Identifier: Apache-2.0
# /init of a kernel-matrix guest (tests/vm/matrix.py): mount what cniprof reads, load the lab's modules, run
# tests/vm/guest.py at the level named on the kernel command line (cniprof_vm=load|full), power off.
/bin/busybox mkdir -p /usr/local/bin
/bin/busybox --install -s /usr/local/bin  # applets only where Debian's tools are missing (PATH order)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin
export HOME=/root PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/cniprof LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs run /run
mkdir -p /run/netns /sys/fs/bpf /root
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
echo /sbin/modprobe >/proc/sys/kernel/modprobe
for m in $(cat /vm/modules); do /sbin/modprobe "$m" 2>&1 | head -n 2 | sed "s/^/init: modprobe $m: /"; done
level=$(sed -n 's/.*cniprof_vm=\([a-z]*\).*/\1/p' /proc/cmdline)
echo "init: $(uname -r) $(uname -m), up $(cut -d' ' -f1 /proc/uptime) s, level $level"
[ -x /vm/debug.sh ] && /vm/debug.sh 2>&1 | sed 's/^/debug: /'  # matrix.py run --debug-script FILE
python3 /vm/guest.py "$level"
echo "init: done, up $(cut -d' ' -f1 /proc/uptime) s"
sync
poweroff -f
