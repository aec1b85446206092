"""``python -m proxy.docgen [--check] [DOCS]``: write the generated reference pages, or check them.

``--check`` writes nothing and exits 1 when a committed page differs from what
the code renders now (the tests do the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxy.cli import _parser
from proxy.docgen.pages import pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.docgen", description=__doc__.splitlines()[0])
    parser.add_argument("docs", nargs="?", default="docs", help="the docs folder (default: docs)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for relative, text in pages(_parser).items():
        target = Path(args.docs) / relative
        if target.exists() and target.read_text() == text:
            continue
        stale.append(str(target))
        if not args.check:
            target.write_text(text)
    verb = "out of date" if args.check else "written"
    for name in stale:
        print(f"{name}: {verb}", file=sys.stderr if args.check else sys.stdout)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
