#!/bin/bash
# Install the Debian 12 packages HostStack and its test bed need; installs only what is missing.
# Idempotent: a second run with everything present costs one dpkg query.
set -euo pipefail
PKGS=(
  etcd-server etcd-client
  ceph-mon ceph-osd ceph-mgr ceph-common python3-rados python3-rbd
  libvirt-daemon-system libvirt-dev qemu-system-x86 qemu-utils qemu-block-extra pkg-config
  busybox-static linux-image-amd64 cpio genisoimage syslinux syslinux-common isolinux mtools dosfstools
  dnsmasq isc-dhcp-client udhcpc dhcpcd-base kea-admin lighttpd wrk iperf3 rsync
  openssh-server sshpass systemd nftables iptables ebtables iproute2 iputils-ping tcpdump cloud-init curl
  python3-venv python3-dev
  novnc libjs-term.js spice-html5 chromium chromium-driver python3-selenium python3-pil
  spice-client-gtk
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "install-system: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# services must not start on install: PID 1 is not systemd here, and tests start their own.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
