"""The KVM host agent: libvirt VMs and, in the same process, the flatnet network services."""
