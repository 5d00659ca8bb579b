#!/usr/bin/env python
"""Convert torchvision / timm / EfficientNet-PyTorch weights into a mobilenets checkpoint.

A thin wrapper kept for source checkouts; installed, the same command is ``mobilenets convert``:

    python scripts/convert_weights.py SRC OUT.safetensors --from LIBRARY:MODEL
    mobilenets convert SRC OUT.safetensors --from LIBRARY:MODEL
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout without installing

from mobilenets.convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
