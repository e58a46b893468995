"""The shipped integration files stay true to the runner: the libvirt
domain example (contrib/libvirt/pinlease-guest.xml) attaches the device with
the same QEMU arguments guest-driver/vm/qemu.py uses, on the socket the
systemd socket unit (contrib/systemd/pinlease@.socket) listens on, and is a
valid libvirt domain (virt-xml-validate, from libvirt-clients, which
scripts/install-host-deps installs)."""

import configparser
import shutil
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
REPO = VM_DIR.parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import qemu  # noqa: E402

DOMAIN_XML = REPO / "contrib" / "libvirt" / "pinlease-guest.xml"
SOCKET_UNIT = REPO / "contrib" / "systemd" / "pinlease@.socket"
QEMU_NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"
# %t of the system manager (systemd.unit(5), "Specifiers").
SYSTEM_RUNTIME_DIR = "/run"


def unit_value(path, section, key):
    """KEY of [SECTION] in a systemd unit file."""
    p = configparser.ConfigParser(interpolation=None, strict=False)
    p.optionxform = str
    p.read_string(path.read_text())
    return p[section][key]


def qemu_args(xml_path):
    root = ET.parse(xml_path).getroot()
    return [a.get("value") for a in root.iter(f"{QEMU_NS}arg")]


def chardev_options(value):
    kind, _, rest = value.partition(",")
    return kind, dict(kv.split("=", 1) for kv in rest.split(","))


class LibvirtExample(unittest.TestCase):
    def test_device_arguments_are_the_runners(self):
        args = qemu_args(DOMAIN_XML)
        self.assertEqual(args[0], "-chardev")
        kind, opts = chardev_options(args[1])
        self.assertEqual(kind, "socket")
        self.assertEqual(args[2:], qemu.device_args("carrier", chardev=opts["id"]))

    def test_socket_is_the_socket_units(self):
        root = ET.parse(DOMAIN_XML).getroot()
        instance = root.findtext("name").removeprefix("pinlease-")
        _, opts = chardev_options(qemu_args(DOMAIN_XML)[1])
        listen = unit_value(SOCKET_UNIT, "Socket", "ListenStream")
        want = listen.replace("%t", SYSTEM_RUNTIME_DIR).replace("%i", instance)
        self.assertEqual(opts["path"], want)

    def test_guest_ram_is_shared(self):
        root = ET.parse(DOMAIN_XML).getroot()
        mb = root.find("memoryBacking")
        self.assertEqual(mb.find("source").get("type"), "memfd")
        self.assertEqual(mb.find("access").get("mode"), "shared")

    def test_virt_xml_validate_accepts_it(self):
        tool = shutil.which("virt-xml-validate")
        if tool is None:
            self.fail("virt-xml-validate is missing (libvirt-clients and libxml2-utils; "
                      "scripts/install-host-deps installs them)")
        r = subprocess.run([tool, str(DOMAIN_XML), "domain"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
