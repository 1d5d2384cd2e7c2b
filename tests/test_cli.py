import subprocess
import sys


def test_cli_import_stays_light():
    """`egovlm --help` must not pay for torch/transformers/GStreamer: stage CLIs import lazily."""
    code = "import sys, egovlm.cli; heavy = [m for m in ('torch', 'transformers', 'gi', 'cv2') if m in sys.modules]; print(heavy)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
