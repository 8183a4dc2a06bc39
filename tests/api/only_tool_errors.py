"""Reads a schemathesis report (stdin) and exits 0 only when the run found no failure and
every error it counted is schemathesis' own crash inside its generator: CPython 3.11's
"AST constructor recursion depth mismatch", which hypothesis hits while describing a lambda
(it surfaces bare, or wrapped in a FlakyFailure). Any other error, or any failure, exits 1."""

import re
import sys

TOOL_BUG = "AST constructor recursion depth mismatch"


def error_blocks(report):
    """The blocks of the ERRORS section, one per operation heading."""
    section = re.search(r"^=+ ERRORS =+$(.*?)^=+ [A-Z ]+ =+$", report, re.M | re.S)
    if not section:
        return []
    return re.split(r"^_+ .+ _+$", section.group(1), flags=re.M)[1:]


def main():
    report = sys.stdin.read()
    if re.search(r"^Failures:", report, re.M):
        return 1
    blocks = error_blocks(report)
    if not blocks:
        return 1
    return 0 if all(TOOL_BUG in block for block in blocks) else 1


if __name__ == "__main__":
    sys.exit(main())
