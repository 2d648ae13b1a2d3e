"""Per-host flat network services: distributed DHCP, DNS and metadata inside agent-owned namespaces."""
