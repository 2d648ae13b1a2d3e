#!/bin/sh
# busybox acpid runs this on the ACPI power button (libvirt's graceful shutdown and ACPI reboot).
echo "HS-ACPI-POWERBUTTON" > /dev/console
poweroff -f
