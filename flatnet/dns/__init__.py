"""DNS of the flat L3s: the names of the L3's VMs (`zone`), answered or forwarded by `server`."""
