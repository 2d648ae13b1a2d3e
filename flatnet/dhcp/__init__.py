"""DHCP of the flat L3s: the wire format (`codec`), what each NIC is offered (`leases`), the protocol and its
socket loop (`server`)."""
