#!/bin/sh
# /init of the HostStack tiny guest (busybox). Everything it learns goes to the serial console as
# "HS-<WHAT> ..." lines that tests grep. Kernel command line:
#   hsboot=<where the kernel came from: disk|cdrom; default kernel>
#   hsaction=poweroff|hold|reboot|flood  (what to do once DHCP and user-data are done; default poweroff;
#            flood: write numbered lines to the serial console as fast as it goes, forever)
#   hsnet=dhcp|raw  (raw: NICs up without addresses and no DHCP: the host drives them, testbed.guesttap)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /mnt /var/run

arg() {
  for kv in $(cat /proc/cmdline); do
    case "$kv" in "$1"=*) echo "${kv#*=}"; return;; esac
  done
  echo "$2"
}
up() { cut -d' ' -f1 /proc/uptime; }

BOOT=$(arg hsboot kernel)
ACTION=$(arg hsaction poweroff)
NET=$(arg hsnet dhcp)
echo "HS-INIT-START boot=$BOOT action=$ACTION uptime=$(up)"
for m in $(cat /etc/modules); do insmod "/lib/mod/$m.ko" 2>/dev/null; done
ip link set lo up

# Power button -> orderly poweroff (graceful stop and libvirt's ACPI reboot rely on it).
acpid -c /etc/acpi -l /dev/null

for f in sys_vendor product_name product_serial product_uuid chassis_asset_tag; do
  echo "HS-DMI $f=$(cat /sys/class/dmi/id/$f 2>/dev/null)"
done
echo "HS-CPU model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
for d in /sys/bus/pci/devices/*; do
  case "$(cat "$d/class")" in 0x03*) echo "HS-DISPLAY $(cat "$d/vendor"):$(cat "$d/device")";; esac
done

# Print each virtio disk once: serial (the volume id), the write cache mode the host gave it, and the
# letters and digits among its first 16 bytes (what the volume holds: a template's data, zeros...).
disks() {
  for b in /sys/block/vd*; do
    [ -e "$b" ] || continue
    n=${b##*/}
    grep -qx "$n" /tmp/disks.seen 2>/dev/null && continue
    echo "$n" >> /tmp/disks.seen
    echo "HS-DISK $n serial=$(cat "$b/serial" 2>/dev/null) write_cache=$(cat "$b/queue/write_cache" 2>/dev/null)" \
      "head=$(head -c 16 "/dev/$n" 2>/dev/null | tr -dc 'A-Za-z0-9')"
  done
}

# NICs: wait for the ones the PCI bus announces (class 0x0200), then DHCP on every one.
nics=0
for d in /sys/bus/pci/devices/*; do
  case "$(cat "$d/class")" in 0x0200*) nics=$((nics+1));; esac
done
i=0
while [ "$(ls /sys/class/net | grep -c '^eth')" -lt "$nics" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
disks
bound=0
unbound=
for n in $(ls /sys/class/net | grep '^eth'); do
  ip link set "$n" up
  echo "HS-NIC $n mac=$(cat /sys/class/net/$n/address)"
  [ "$NET" = raw ] && continue
  if udhcpc -i "$n" -n -q -t 4 -T 1 -s /usr/share/udhcpc/default.script; then
    bound=1
  else
    echo "HS-DHCP-FAIL $n"
    unbound="$unbound $n"
  fi
done
# NICs plugged from now on get DHCP from the uevent hook (/etc/hs-hotplug.sh).
[ "$NET" = raw ] || uevent /bin/sh /etc/hs-hotplug.sh &
if [ $bound = 1 ]; then
  echo "HS-USERDATA-BEGIN"
  if timeout 10 wget -q -O- http://169.254.169.254/latest/user-data; then
    echo; echo "HS-USERDATA-END"
  else
    echo "HS-USERDATA-FAIL"
  fi
fi
echo "HS-READY uptime=$(up)"

if [ "$ACTION" = hold ]; then
  echo "HS-HOLD"
  # Shells to type into: one on the serial port, one on the screen (VNC/SPICE), each in its own session
  # so the terminal becomes its controlling tty. The screen first shows a banner a test can look for.
  echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null  # a still screen compares pixel for pixel
  printf '\033[2J\033[HHS-SCREEN HostStack tiny guest %s\n' "$(cat /sys/class/dmi/id/product_serial 2>/dev/null)" > /dev/tty1
  export ENV=/etc/hs-shrc  # what the interactive shells read first (wget with -T, guest/shrc.sh)
  setsid sh -c 'exec sh -i <>/dev/ttyS0 >&0 2>&0' &
  setsid sh -c 'exec sh -i <>/dev/tty1 >&0 2>&0' &
  echo "HS-SHELLS ttyS0 tty1"
  # A NIC no server answered keeps asking, as a guest's DHCP client does (a DHCP service attached to its
  # L3 later leases it).
  for n in $unbound; do
    udhcpc -i "$n" -t 4 -T 1 -A 3 -p "/var/run/udhcpc.$n.pid" -s /usr/share/udhcpc/default.script &
  done
  lastcd=
  while [ ! -e /tmp/hs-poweroff ]; do
    ls /sys/block > /tmp/blk.new 2>/dev/null
    if ! cmp -s /tmp/blk.new /tmp/blk.old; then
      echo "HS-BLOCKDEVS $(tr '\n' ' ' < /tmp/blk.new)"
      mv /tmp/blk.new /tmp/blk.old
      disks
    fi
    cd=empty
    if [ -b /dev/sr0 ] && mount -t iso9660 -o ro /dev/sr0 /mnt 2>/dev/null; then
      cd=$(cat /mnt/*.txt 2>/dev/null | head -c 200)
      umount /mnt
    fi
    [ "$cd" != "$lastcd" ] && echo "HS-CDROM content=$cd"
    lastcd=$cd
    sleep 1
  done
fi
if [ "$ACTION" = flood ]; then
  n=0
  while :; do n=$((n+1)); echo "HS-FLOOD $n ........................................................................"; done
fi
if [ "$ACTION" = reboot ]; then
  echo "HS-REBOOT uptime=$(up)"
  reboot -f
fi
echo "HS-POWEROFF uptime=$(up)"
poweroff -f
