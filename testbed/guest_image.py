"""The tiny guest the project boots: Debian's kernel plus a busybox-static initramfs.

`build()` returns a `GuestImage` with
- `kernel`: the ELF vmlinux extracted from /boot/vmlinuz-* (direct kernel boot via PVH: ~7 s to
  userspace under TCG instead of ~19 s for the bzImage),
- `initrd`: a gzip'd newc cpio with busybox, the virtio/cdrom/ACPI-button modules, `guest/init.sh` and
  its hooks (DHCP, ACPI power button, NIC hot-plug), and `guest/wget.sh` in place of busybox's wget
  (with `guest/shrc.sh`, what the guest's shells read first),
- `disk`: a raw FAT "superfloppy" with syslinux that boots the same kernel+initrd (cmdline
  `hsboot=disk hsaction=hold`): a root volume image, usable as a qcow2 backing file or RBD import,
- `iso`: an isolinux installer CD (`hsboot=cdrom hsaction=reboot`) for the "VM from ISO" flow.

Outputs are cached under /var/cache/hoststack/guest/<hash of every input>, so a test run builds at
most once per kernel/busybox/script change. Treat them as read-only (qcow2 overlays, copies).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentkit.proc import run

CACHE_ROOT = Path(os.environ.get("HS_GUEST_CACHE", "/var/cache/hoststack/guest"))
DATA = Path(__file__).with_name("guest")
BUSYBOX = Path("/bin/busybox")
SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
# Top-level modules; their dependencies come from modules.dep.
MODULES = ["virtio_pci", "virtio_net", "virtio_blk", "ata_piix", "sr_mod", "isofs", "button", "evdev", "bochs"]
DISK_MIB = 48
# Applets replaced by a script of guest/ that runs busybox's own: wget's -T crashes Debian's (see wget.sh;
# busybox's shell prefers its applets to PATH, so the shells reach it through a function, guest/shrc.sh).
WRAPPED = {"wget": "wget.sh"}
CMDLINE = "console=ttyS0 panic=-1 quiet"


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    disk: Path
    iso: Path

    def cmdline(self, action: str = "poweroff", extra: str = "") -> str:
        """Kernel command line for direct kernel boot of this image."""
        return f"{CMDLINE} hsaction={action} {extra}".strip()


def kernel_version(boot: Path = Path("/boot")) -> str:
    """Newest Debian kernel installed under /boot that also has its modules."""
    found = [p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*")]
    found = [v for v in found if Path("/lib/modules", v, "modules.dep").exists()]
    if not found:
        raise RuntimeError("no /boot/vmlinuz-* with modules: install linux-image-amd64")
    return max(found, key=lambda v: [int(x) if x.isdigit() else x for x in v.replace("-", ".").split(".")])


def extract_elf(vmlinuz: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage (xz or gzip payload), as PVH direct boot needs it."""
    payloads: tuple[tuple[bytes, Callable[[bytes], bytes]], ...] = (
        (b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
        (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b)))
    for magic, unpack in payloads:
        at = vmlinuz.find(magic)
        while at >= 0:
            try:
                elf = unpack(vmlinuz[at:])
            except (lzma.LZMAError, zlib.error):
                elf = b""
            if elf.startswith(b"\x7fELF"):
                return elf
            at = vmlinuz.find(magic, at + 1)
    raise RuntimeError("no xz/gzip ELF payload found in the kernel image")



def module_paths(kver: str, wanted: list[str] = MODULES) -> list[Path]:
    """`wanted` and their dependencies as .ko paths, in load order (dependencies first)."""
    root = Path("/lib/modules", kver)
    deps: dict[str, list[str]] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        for dep in reversed(deps[mod]):
            visit(dep)
        if mod not in order:
            order.append(mod)

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
    return [root / m for m in order]


class Cpio:
    """Writer of a newc archive with fixed metadata, so identical inputs give identical bytes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        self.out += b"\0" * (-len(self.out) % 4) + data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.out) + b"\0" * (-len(self.out) % 512)


def initramfs(mods: list[Path]) -> bytes:
    """The gzip'd initramfs: busybox applets, modules (+ /etc/modules load order) and the scripts."""
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "mnt", "etc", "etc/acpi", "etc/acpi/PWRF",
              "lib", "lib/mod", "usr", "usr/share", "usr/share/udhcpc", "var"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    applets = run([str(BUSYBOX), "--list"]).stdout.split()
    for a in applets:
        if a in WRAPPED:
            c.file(f"bin/{a}", (DATA / WRAPPED[a]).read_bytes(), 0o755)
        elif a != "busybox":
            c.symlink(f"bin/{a}", "busybox")
    names = []
    for m in mods:
        name = m.name.split(".ko")[0]
        data = m.read_bytes()
        c.file(f"lib/mod/{name}.ko", lzma.decompress(data) if m.name.endswith(".xz") else data)
        names.append(name)
    c.file("etc/modules", ("\n".join(names) + "\n").encode())
    c.file("init", (DATA / "init.sh").read_bytes(), 0o755)
    c.file("usr/share/udhcpc/default.script", (DATA / "udhcpc.sh").read_bytes(), 0o755)
    c.file("etc/acpi/PWRF/00000080", (DATA / "acpi-power.sh").read_bytes(), 0o755)
    c.file("etc/hs-hotplug.sh", (DATA / "hotplug.sh").read_bytes(), 0o755)
    c.file("etc/hs-shrc", (DATA / "shrc.sh").read_bytes())
    return gzip.compress(c.finish(), compresslevel=9, mtime=0)


def _syslinux_cfg(append: str) -> str:
    return (f"SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT hs\nLABEL hs\n"
            f"  KERNEL /vmlinuz\n  APPEND initrd=/initrd.gz {append}\n")


def build_disk(out: Path, vmlinuz: Path, initrd: Path) -> None:
    """A raw FAT superfloppy whose syslinux boot sector boots kernel+initrd (no partition table)."""
    work = out.parent
    (work / "syslinux.cfg").write_text(_syslinux_cfg(f"{CMDLINE} hsboot=disk hsaction=hold"))
    run(["mkfs.fat", "-C", "-n", "HSBOOT", str(out), str(DISK_MIB * 1024)])
    for src, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.gz"), (work / "syslinux.cfg", "syslinux.cfg")):
        run(["mcopy", "-i", str(out), str(src), f"::/{name}"])
    run(["syslinux", "--install", str(out)])
    (work / "syslinux.cfg").unlink()


def build_iso(out: Path, vmlinuz: Path, initrd: Path) -> None:
    """An isolinux CD that boots the guest as an 'installer' which reboots when done."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        root = Path(tmp)
        (root / "isolinux").mkdir()
        shutil.copy(ISOLINUX_BIN, root / "isolinux/isolinux.bin")
        shutil.copy(SYSLINUX_BIOS / "ldlinux.c32", root / "isolinux/ldlinux.c32")
        (root / "isolinux/isolinux.cfg").write_text(_syslinux_cfg(f"{CMDLINE} hsboot=cdrom hsaction=reboot"))
        shutil.copy(vmlinuz, root / "vmlinuz")
        shutil.copy(initrd, root / "initrd.gz")
        (root / "hs-iso.txt").write_text("hs-installer\n")
        run(["genisoimage", "-quiet", "-o", str(out), "-V", "HSINSTALL", "-J", "-R",
             "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
             "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(root)])


def make_data_iso(out: Path, text: str, label: str = "HSDATA") -> Path:
    """A small ISO holding `hs-iso.txt` = text; the holding guest prints it as `HS-CDROM content=`."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        (Path(tmp) / "hs-iso.txt").write_text(text + "\n")
        run(["genisoimage", "-quiet", "-o", str(out), "-V", label, "-J", "-R", tmp])
    return out


def _inputs_hash(kver: str, mods: list[Path]) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in [Path(f"/boot/vmlinuz-{kver}"), BUSYBOX, *sorted(DATA.iterdir())]:
        h.update(p.name.encode() + p.read_bytes())
    for p in [*mods, ISOLINUX_BIN, SYSLINUX_BIOS / "ldlinux.c32"]:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build(cache_root: Path = CACHE_ROOT) -> GuestImage:
    """Build (or reuse from the cache) the tiny guest's kernel, initrd, disk and installer ISO."""
    kver = kernel_version()
    mods = module_paths(kver)
    final = cache_root / _inputs_hash(kver, mods)
    image = GuestImage(final / "vmlinux", final / "initrd.gz", final / "disk.raw", final / "install.iso")
    if image.iso.exists():
        return image
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_root))
    tmp.chmod(0o755)
    try:
        vmlinuz = Path(f"/boot/vmlinuz-{kver}")
        (tmp / "vmlinux").write_bytes(extract_elf(vmlinuz.read_bytes()))
        (tmp / "initrd.gz").write_bytes(initramfs(mods))
        build_disk(tmp / "disk.raw", vmlinuz, tmp / "initrd.gz")
        build_iso(tmp / "install.iso", vmlinuz, tmp / "initrd.gz")
        (tmp / "kernel-version").write_text(kver + "\n")
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same build first
            if not image.iso.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return image


if __name__ == "__main__":
    print(build())
