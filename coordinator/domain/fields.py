"""Field rules shared by the coordinator's records."""

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # hosts, networks, VMs, EIPs, storages: also usable on a command line
IFNAME = r"^[A-Za-z0-9_.:-]{1,15}$"  # a Linux network device
