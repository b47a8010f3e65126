import json
import struct

from spark_retrieval.benchmark import BenchmarkResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_result():
    rows = [
        {"model": name, "precision": 0.01 * i, "recall": 0.1 * i, "map": 0.03 * i, "ndcg": 0.05 * i,
         "hit_rate": 0.1 * i, "coverage": 0.2 * i, "queries": 100, "fit_seconds": 1.0, "recommend_seconds": 2.0}
        for i, name in enumerate(["global_hot", "item_cf", "swing", "als"], start=1)
    ]
    return BenchmarkResult(dataset="ml-1m", k=20, split={"users": 8, "test_queries": 100}, results=rows)


def png_size(data):
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_write_adds_a_png_that_the_markdown_embeds(tmp_path):
    sample_result().write(str(tmp_path / "out"))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "results.png"]
    width, height = png_size((out / "results.png").read_bytes())
    assert 600 <= width <= 3000 and 300 <= height <= 2000
    assert 10_000 < (out / "results.png").stat().st_size < 2_000_000
    markdown = (out / "results.md").read_text()
    assert "![results](results.png)" in markdown and "| item_cf |" in markdown
    assert json.loads((out / "results.json").read_text())["results"][3]["model"] == "als"


def test_rewrite_replaces_files_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "out"
    sample_result().write(str(out))
    result = sample_result()
    result.results = result.results[:1]
    result.write(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "results.png"]
    assert len(json.loads((out / "results.json").read_text())["results"]) == 1
