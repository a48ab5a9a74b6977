#!/usr/bin/env python3
"""make scale-demo: harness/scale_demo.py (`scale_demo.py --help`)."""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from harness.scale_demo import main  # noqa: E402

sys.exit(main())
