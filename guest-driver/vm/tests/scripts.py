"""The runner's scripts (campaign, soak: files without .py) imported as
modules, for the tests."""

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True


def load(name):
    """guest-driver/vm/NAME as the module NAME."""
    loader = importlib.machinery.SourceFileLoader(name, str(VM_DIR / name))
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod
