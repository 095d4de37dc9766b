"""The README documents what the code does, not a drifting copy of it."""

from __future__ import annotations

import re
from pathlib import Path

from driftloop.schema import FIELDS

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_readme_schema_table_matches_the_arrow_schema():
    block = re.search(
        r"<!-- schema-table.*?-->\n(.*?)<!-- /schema-table -->", README, re.S
    )
    assert block, "the schema table markers are missing from README.md"
    rows = [line for line in block.group(1).splitlines() if line.startswith("| `")]
    documented = [
        tuple(cell.strip(" `") for cell in row.strip("|").split("|")) for row in rows
    ]
    expected = [
        (n, str(t), "" if nullable else "yes", doc) for n, t, nullable, doc in FIELDS
    ]
    assert documented == expected


def test_the_readme_gives_the_two_commands():
    assert "make demo" in README and "make test" in README
