#!/bin/sh
# uevent hook of the tiny guest (busybox `uevent` runs it for every kernel uevent): a NIC plugged at run
# time is brought up and gets DHCP like the ones present at boot, its client kept running (it retries
# until a server answers, then renews); an unplugged one is logged and its client stopped.
[ "$SUBSYSTEM" = net ] || exit 0
case "$INTERFACE" in eth*) ;; *) exit 0;; esac
pid=/var/run/udhcpc.$INTERFACE.pid
case "$ACTION" in
  add)
    ip link set "$INTERFACE" up
    echo "HS-NIC-HOTPLUG $INTERFACE mac=$(cat "/sys/class/net/$INTERFACE/address")" > /dev/console
    udhcpc -i "$INTERFACE" -t 4 -T 1 -A 3 -p "$pid" -s /usr/share/udhcpc/default.script > /dev/console 2>&1 &
    ;;
  remove)
    [ -e "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
    echo "HS-NIC-UNPLUG $INTERFACE" > /dev/console
    ;;
esac
exit 0
