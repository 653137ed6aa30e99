"""sepkit: deep clustering, mask inference and Chimera networks for music separation."""
import re
from pathlib import Path

from setuptools import find_packages, setup

_here = Path(__file__).parent
_version = re.search(r'__version__ = "([^"]+)"', (_here / "sepkit" / "__init__.py").read_text()).group(1)

setup(
    name="sepkit",
    version=_version,
    description="Kaldi-style recipes for music source separation with deep clustering and Chimera networks",
    long_description=(_here / "README.md").read_text() if (_here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sepkit", "sepkit.*"]),
    python_requires=">=3.9",
    install_requires=[
        # torch is pinned by tools/install.sh (TORCH_SPEC); any torch >= 2.1 works here.
        "torch>=2.1",
        "numpy",
        "librosa>=0.10",
        "soxr",
        "soundfile",
        "kaldiio",
        "configargparse",
        "PyYAML",
        "tensorboard",
        "mir_eval<0.9",
        "scikit-learn",
        "tqdm",
        "huggingface_hub>=0.24",  # sepkit-separate --model <owner>/<name> (sepkit/hub.py; its errors module)
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "pytest-xdist", "museval", "hypothesis"],  # pytest-xdist: make test runs 2 workers; museval: the live BSS eval v4 cross-check (tests/test_metrics_v4.py); hypothesis: hostile model files
        "musdb": ["av"],
        "onnx": ["onnx>=1.14", "onnxruntime>=1.16"],  # sepkit-export --onnx, sepkit-separate --backend onnxruntime
    },
    entry_points={
        "console_scripts": [
            "sepkit-separate=sepkit.bin.separate:console_main",
            "sepkit-export=sepkit.bin.export:console_main",
            "sepkit-pack=sepkit.bin.pack_hub:console_main",
            "sepkit-stream=sepkit.bin.stream:console_main",
        ]
    },
)
