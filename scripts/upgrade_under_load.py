#!/usr/bin/env python3
"""make upgrade-under-load: harness/upgrade.py (`upgrade_under_load.py --help`)."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from harness.upgrade import main  # noqa: E402

sys.exit(main())
