"""The mmaction2 1.2.0 wheel's defects are handled in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def test_backbones_import_in_a_fresh_process() -> None:
    code = (
        "import sys\n"
        "from vfx_tasks.models._mmaction_compat import import_mmaction_backbones\n"
        "backbones = import_mmaction_backbones()\n"
        "assert hasattr(backbones, 'ResNet3d') and hasattr(backbones, 'SwinTransformer3D')\n"
        "assert 'importlib_metadata' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "MultiScaleDeformableAttention" not in result.stderr
