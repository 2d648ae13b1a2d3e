"""What one source may take of a process's connections, shared by the flat services' guest-facing servers
(DHCP, DNS, metadata): connection tables with per-source caps and eviction (`connections`), an accept loop that
backs off when the process is out of descriptors (`accept`), a descriptor budget derived from the process limit
(`fdlimit`) and log lines bounded per cause (`ratelog`).
"""
