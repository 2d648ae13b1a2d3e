"""The coordinator's only door to etcd: the store driver, the key schema, and helpers on top of it.

gRPC's fork support is turned off before gRPC is loaded (its modules import it after this package):
every child of the coordinator is a fork followed by an exec (uvloop forks for the deployer, etcdctl...),
and with the support on, gRPC ran its fork handlers in the child, which aborted there now and then
(`ev_epoll1_linux.cc: Check failed: next_worker->state == KICKED`: the deploy failed, "killed by
SIGABRT"), and logged a line at every fork made while its threads were busy."""

import os

os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
