#!/usr/bin/env python3
"""Strip outputs and execution counts from notebooks, so git holds only their source.

    .venv/bin/python scripts/strip_notebook_outputs.py notebooks/*.ipynb          # rewrite in place
    .venv/bin/python scripts/strip_notebook_outputs.py --check notebooks/*.ipynb  # exit 1 naming any with outputs

Clears every code cell's ``outputs`` and ``execution_count`` and the per-cell ``execution``/``collapsed``/``scrolled``
metadata that front ends add; the source, cell ids, tags and the notebook's kernelspec are kept. Needs nbformat.
"""

from __future__ import annotations

import argparse
import sys

import nbformat

VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def is_stripped(notebook) -> bool:
    return all(
        not cell.get("outputs") and cell.get("execution_count") is None
        and not any(key in cell.get("metadata", {}) for key in VOLATILE_CELL_METADATA)
        for cell in notebook.cells
        if cell.cell_type == "code"
    )


def strip(notebook):
    """The notebook, outputs removed (in place; also returned)."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = []
        cell.execution_count = None
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Strip outputs and execution counts from notebooks.")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any notebook has outputs")
    parser.add_argument("paths", nargs="+", metavar="NOTEBOOK")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths:
        notebook = nbformat.read(path, as_version=4)
        if is_stripped(notebook):
            continue
        dirty.append(path)
        if not args.check:
            nbformat.validate(strip(notebook))
            nbformat.write(notebook, path)
            print(f"stripped {path}")
    if args.check and dirty:
        print("outputs in: " + ", ".join(dirty) + " (run scripts/strip_notebook_outputs.py on them)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
