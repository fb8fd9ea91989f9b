"""Rewrite the schema tables of docs/explanation-schema.md from finexl/schemas/*.schema.json.

python scripts/schema_docs.py           # rewrite the page
python scripts/schema_docs.py --check   # exit 1 if the page differs from the schemas (tests/test_validation.py)
"""

import argparse
import sys
from pathlib import Path

from finexl.validation import fill_schema_tables

PAGE = Path(__file__).resolve().parents[1] / "docs" / "explanation-schema.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the page is out of date")
    args = parser.parse_args()
    text = PAGE.read_text(encoding="utf-8")
    filled = fill_schema_tables(text)
    if args.check:
        if filled != text:
            print(f"{PAGE} is out of date: run python scripts/schema_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(filled, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
