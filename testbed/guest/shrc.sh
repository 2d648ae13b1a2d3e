# Read by the tiny guest's interactive shells (init.sh exports ENV). busybox's shell runs its own applet for
# a command name before it looks at PATH, so the image's /bin/wget (guest/wget.sh: -T without the crash)
# is only reached by its path: `wget` typed into a shell goes there through this function.
wget() { /bin/wget "$@"; }
