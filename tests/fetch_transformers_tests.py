"""Fetch transformers' shared model tests for the installed transformers version.

The wheel does not ship ``tests/``; the source distribution on PyPI does (the top-level common files only). This
script downloads the sdist of exactly the installed version, extracts ``test_modeling_common.py`` and
``test_configuration_common.py`` into a package, and adds the three small modules they import that the sdist lacks
(stand-ins with the same names: two empty mixins for generation/export tests that do not apply to CNN encoders, and
the common config kwargs). Run by ``make test`` once per version; ``tests/test_transformers_common.py`` imports the
result. Nothing from transformers' test suite is committed to this repository.

Usage: python tests/fetch_transformers_tests.py DEST
"""

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

FILES = ("test_modeling_common.py", "test_configuration_common.py")

STUBS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # The values transformers' own tests use (tests/utils/test_configuration_utils.py, v5).
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "output_attentions": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["BertModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


def main(dest: str) -> None:
    version = transformers.__version__
    package = Path(dest) / version / "transformers_shared_tests"
    if all((package / name).exists() for name in FILES):
        print(f"transformers {version} shared tests already in {package}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"transformers=={version}", "-d", tmp],
            check=True,
        )  # fmt: skip
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        package.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as archive:
            for name in FILES:
                member = archive.getmember(f"transformers-{version}/tests/{name}")
                (package / name).write_bytes(archive.extractfile(member).read())
    for relative, text in {"__init__.py": "", **STUBS}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    print(f"transformers {version} shared tests written to {package}")


if __name__ == "__main__":
    main(sys.argv[1])
