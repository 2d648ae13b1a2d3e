"""The program a deploy runs on a host: stdlib-only Python, shipped as source with every call.

`deployer.tasks.program` assembles it from modules of this package: `host` (what any host runs, and an agent's
steps) alone for an agent's deploy, `node` (a control node's steps, built on `host`) after it for `hs-ctl
install`. The engine runs `python3 -c <program> <function>` with the call's JSON arguments on stdin (so
secrets never show in `ps`); the function's return value comes back as one JSON line on stdout. A failure exits
2 with ONE line on stderr naming the cause ("apt: package x not found", "disk full: /opt/hoststack/kvmagent").
Hosts do not have HostStack installed (that is the point), so these modules import only the standard library
and each other, and `host.sh` is this side's only way to run a command. Every path arrives in the arguments,
which keeps the functions testable against a temporary directory. This file is not shipped (the program makes
an empty package in its place), so it holds nothing but this text.
"""
