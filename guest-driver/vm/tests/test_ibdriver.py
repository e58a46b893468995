"""ibdriver.py: the provider's build inputs and the guest's load snippet."""

import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(VM_DIR))

import ibdriver  # noqa: E402

ABI = ibdriver.ABI_HEADER.read_text()


def abi_define(name):
    m = re.search(rf"^#define {name}\s+(\S+)", ABI, re.M)
    return m.group(1) if m else None


class Provider(unittest.TestCase):
    def test_vendored_headers_are_the_pabi_the_runner_installs(self):
        self.assertEqual(ibdriver.vendored_pabi(), ibdriver.PABI)
        self.assertTrue(ibdriver.PROVIDER_LIB.endswith(f"-rdmav{ibdriver.PABI}.so"))

    def test_vendored_pabi_reads_config_h(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "config.h"
            cfg.write_text("#define X 1\n#define IBVERBS_PABI_VERSION 65\n")
            self.assertEqual(ibdriver.vendored_pabi(cfg), 65)
            cfg.write_text("#define X 1\n")
            self.assertIsNone(ibdriver.vendored_pabi(cfg))

    def test_provider_compiles_against_vendored_headers_first(self):
        cmd = ibdriver.provider_command(Path("/o"))
        incs = [a for a in cmd if a.startswith("-I")]
        self.assertEqual(incs, [f"-I{ibdriver.PROVIDER_HEADERS}", f"-I{ibdriver.INCLUDE}"])
        self.assertIn("-Wl,-z,defs", cmd)
        self.assertIn(f"/o/{ibdriver.PROVIDER_LIB}", cmd)

    def test_sources_take_shared_facts_from_the_abi_header(self):
        for src in (ibdriver.PROVIDER_SRC / "pinlease.c", ibdriver.CHECK_SRC):
            text = src.read_text()
            self.assertIn('#include "pinlease_ib_abi.h"', text, src)
            for name in ("PINLEASE_IB_NAME_PREFIX", "PINLEASE_AUX_DEVICE_NAME"):
                value = abi_define(name)
                self.assertIsNotNone(value, name)
                # no value of the header written out by hand in C code
                code = re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)
                self.assertFalse(value in code, f"{src}: {name}'s value {value} written by hand")


class LoadSnippet(unittest.TestCase):
    def test_ib_sh_is_valid_sh(self):
        r = subprocess.run(["sh", "-n"], input=ibdriver.IB_SH, text=True, capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_ib_sh_loads_only_outside_the_suite(self):
        with tempfile.TemporaryDirectory() as d:
            script = Path(d) / "t.sh"
            calls = Path(d) / "calls"
            script.write_text(
                "say() { echo \"say: $*\"; }\n"
                f"pl_ib_load_stub() {{ echo load >>{calls}; }}\n"
                + ibdriver.IB_SH.replace("\tpl_ib_load\n", "\tpl_ib_load_stub\n"))
            for mode, loads in (("suite", False), ("nodevice", False), ("bench", False),
                                ("exec", True), ("keep", True)):
                calls.unlink(missing_ok=True)
                r = subprocess.run(["sh", str(script)], env={"MODE": mode, "PATH": "/bin:/usr/bin"},
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(calls.is_file(), loads, mode)
                if not loads:
                    self.assertIn(f"not loaded in MODE {mode}", r.stdout)


if __name__ == "__main__":
    unittest.main()
