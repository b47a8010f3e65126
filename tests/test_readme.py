"""The README's cluster commands are the ones tests/test_cluster.py runs (it runs docs/cluster.md's marked blocks)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(markdown, after_marker=None):
    pattern = r"```bash\n(.*?)```" if after_marker is None else after_marker + r"\s*\n```bash\n(.*?)```"
    return [block for block in re.findall(pattern, markdown, flags=re.S)]


def test_readme_cluster_commands_are_the_tested_ones():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Run on a cluster") :]
    section = section[: section.index("\n## ", 4)]
    readme_lines = [line for block in bash_blocks(section) for line in block.splitlines() if line.strip()]
    assert readme_lines, "the README's 'Run on a cluster' section has no bash block"

    cluster_doc = (ROOT / "docs" / "cluster.md").read_text(encoding="utf-8")
    tested = {
        line
        for block in bash_blocks(cluster_doc, r"<!-- test_cluster\.py: \w+ -->")
        for line in block.splitlines()
        if line.strip()
    }
    assert tested, "docs/cluster.md has no block marked for tests/test_cluster.py"
    assert [line for line in readme_lines if line not in tested] == []
