"""The host's VMs: desired `VmSpec`s in, libvirt domains out, observed VM state reported back.

Level-triggered: every pass compares the desired specs with what libvirt has (domains marked with
our metadata; foreign domains are never touched) and defines, starts, pauses, resumes, stops,
attaches, detaches, destroys and undefines until they agree. Domains of ours absent from the desired
state are destroyed and undefined (so a VM deleted while the agent was down goes away when it returns).
The L2 bridges the NICs plug into are the bridges component's (`kvmagent/bridges.py`), applied first.

One concept per module, behind the `VmReconciler` facade (`reconciler.py`, the order of the passes):
- `converge.py`: one VM's domain to its spec (disks, definition by fingerprint, live devices, then power);
- `disks.py`: qcow2 files created on first use; cdrom media and volume hot-plug on a running domain;
- `power.py`: the power state machine and the drift policy (`restart` or `adopt`);
- `install.py`: the ISO-install boot order switch at the guest's first reboot;
- `observe.py`: libvirt events in, one report per change out (drift reported for the coordinator to adopt);
- `serial.py`: each VM's serial console log, bounded (copy and truncate past a cap; removed with the VM);
- `ledger.py`: what these parts share; `settings.py`: the `[vm]` section of the agent's config.
"""

from kvmagent.vms.install import effective_boot_order
from kvmagent.vms.reconciler import VmReconciler
from kvmagent.vms.settings import VmSettings

__all__ = ["VmReconciler", "VmSettings", "effective_boot_order"]
