#!/bin/sh
# udhcpc hook of the tiny guest: configure the lease and its routes, log the lease.
# Classless static routes (option 121, $staticroutes: "dest/len gw ...") win over the router option
# (RFC 3442); they carry 169.254.169.254/32 via the DHCP server's address.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        if [ "$1" = "0.0.0.0/0" ]; then
          ip route | grep -q '^default' || ip route add default via "$2" dev "$interface"
        else
          ip route replace "$1" via "$2" dev "$interface"
        fi
        shift 2
      done
    elif ! ip route | grep -q '^default'; then
      for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    fi
    echo "HS-DHCP-BOUND iface=$interface ip=$ip mask=$mask router=$router routes=$staticroutes"
    ;;
esac
exit 0
