"""The fixed top-level folders import as sdbnn.kernels / sdbnn.pipelines, installed or from a source tree."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_namespaced_folders_when_installed():
    import sdbnn.kernels
    import sdbnn.pipelines

    assert Path(sdbnn.pipelines.__file__).parent.name == "pipelines"
    assert Path(sdbnn.kernels.__file__).parent.name == "kernels"


def test_source_tree_without_install():
    # As on the GPU machines (PYTHONPATH=., nothing installed): drop the editable-install finder first.
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in str(getattr(f, '__module__', ''))];"
        f"sys.path.insert(0, {str(ROOT)!r});"
        "import sdbnn, sdbnn.pipelines; from sdbnn.pipelines import load_digits;"
        "print(sdbnn.__file__, sdbnn.pipelines.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT / "sdbnn" / "__init__.py"), str(ROOT / "pipelines" / "__init__.py")]
