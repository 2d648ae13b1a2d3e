"""Global configs from the seeds (`UpdateGlobalConfig category=kvm name=vm.cpuMode value=…`).

Values are validated against a declared set and streamed to every host as `config/<category>.<name>`;
per-VM settings override them.
"""

from __future__ import annotations

from pydantic import BaseModel

from agentkit.errors import Invalid, NotFound
from agentkit.model import stream_key_config
from coordinator.etcd import keys
from coordinator.etcd.store import Store

OVER_PROVISIONING = "mevoco.overProvisioning.primaryStorage"
MEMORY_OVER_PROVISIONING = "mevoco.overProvisioning.memory"
RESERVED_MEMORY = "kvm.reservedMemory"
# name -> (allowed values, default, description); no allowed values: a positive number (or zero, ZERO_OK)
DEFINITIONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "kvm.vm.cpuMode": (("none", "host-model", "host-passthrough"), "none", "CPU model exposed to guests"),
    "kvm.vm.cacheMode": (("none", "writeback", "writethrough"), "writethrough", "disk cache mode of VM volumes"),
    "kvm.vm.consoleMode": (("vnc", "spice"), "vnc", "graphics console protocol"),
    OVER_PROVISIONING: ((), "1.0", "virtual bytes file-based primary storage may promise per byte it has (thin "
                        "volumes); 2.0 promises twice its capacity"),
    MEMORY_OVER_PROVISIONING: ((), "1.0", "MiB of memory placement may give VMs per MiB a KVM host has (after "
                               "kvm.reservedMemory); 1.5 lets VMs that are not Stopped have half as much again"),
    RESERVED_MEMORY: ((), "512", "MiB of each KVM host's memory kept for the host itself (its agent, qemu's own "
                      "overhead, the page cache): placement never gives it to VMs"),
}
ZERO_OK = {RESERVED_MEMORY}


class Config(BaseModel):
    category: str
    name: str
    value: str
    default: str
    allowed: list[str]
    description: str


def _config(full: str, value: object) -> Config:
    allowed, default, desc = DEFINITIONS[full]
    category, _, name = full.partition(".")
    return Config(category=category, name=name, value=value if isinstance(value, str) and value else default,
                  default=default, allowed=list(allowed), description=desc)


def _unknown(category: str, full: str) -> NotFound:
    """A config that does not exist, with the names of its category (else the categories) to pick from."""
    names = [n.partition(".")[2] for n in DEFINITIONS if n.partition(".")[0] == category]
    if names:
        return NotFound(f"global config {full} does not exist; {category} has {', '.join(names)}", field="name")
    categories = dict.fromkeys(n.partition(".")[0] for n in DEFINITIONS)
    return NotFound(f"global config {full} does not exist; the categories are {', '.join(categories)}",
                    field="category")


def check(category: str, name: str, value: str) -> str:
    """The config's full name, if it exists and `value` is one of its allowed values."""
    full = f"{category}.{name}"
    if full not in DEFINITIONS:
        raise _unknown(category, full)
    allowed = DEFINITIONS[full][0]
    if not allowed:
        if not _number(full, value):
            kind = "a number, 0 or more" if full in ZERO_OK else "a positive number"
            raise Invalid(f"{full} must be {kind}; got {value!r}", field="value")
    elif value not in allowed:
        raise Invalid(f"{full} must be one of {', '.join(allowed)}; got {value!r}", field="value")
    return full


def _number(full: str, value: str) -> bool:
    try:
        n = float(value)
    except ValueError:
        return False
    return (0 <= n if full in ZERO_OK else 0 < n) and n < float("inf")


async def number(store: Store, full: str) -> float:
    """The current value of a numeric config (its default when unset or not a number)."""
    entry = await store.get(keys.desired_all(stream_key_config(full)))
    value = entry.value if entry is not None and isinstance(entry.value, str) else ""
    return float(value) if _number(full, value) else float(DEFINITIONS[full][1])


async def all_configs(store: Store) -> list[Config]:
    """Every declared config with its current value (its default when unset)."""
    entries, _ = await store.list(keys.desired_all("config/"))
    values = {e.key.rsplit("/", 1)[1]: e.value for e in entries}
    return [_config(k, values.get(k)) for k in DEFINITIONS]


async def update(store: Store, category: str, name: str, value: str) -> Config:
    """A validated value, effective on every host (VMs pick it up when redefined)."""
    full = check(category, name, value)
    await store.put(keys.desired_all(stream_key_config(full)), value)
    return _config(full, value)
