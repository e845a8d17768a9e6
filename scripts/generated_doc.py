"""What the two doc generators (gen-man.py, gen-cli-doc.py) share: write the file, or with --check
fail when the committed file is not what the code says now (a unit test runs the check)."""

import sys
from pathlib import Path


def write_or_check(path: Path, text: str, argv: list[str], script: str) -> int:
    if "--check" in argv:
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is out of date: run python scripts/{script}", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    return 0
