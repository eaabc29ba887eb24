import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # not MPLBACKEND: notebook kernels started by tests inherit the environment

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DETRLIB_PROFILE", "smoke")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
