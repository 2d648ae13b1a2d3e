"""The console proxy: browsers' websockets in, VM consoles (VNC, SPICE, serial) out, through the hosts' agents."""
