"""Makes tests/support importable from every test tree (`from eventually import eventually`).

pytest's prepend import mode put tests/ itself on sys.path to import this file; it comes off
again, or tests/offchain (no __init__.py) would shadow the `offchain` package as a namespace.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [entry for entry in sys.path if str(Path(entry or ".").resolve()) != _HERE]
sys.path.insert(0, str(Path(_HERE) / "support"))
