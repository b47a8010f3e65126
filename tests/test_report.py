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


def result_with_intervals():
    result = sample_result()
    for row in result.results:
        row["ci"] = {name: {"ci_low": row[name] - 0.01, "ci_high": row[name] + 0.012} for name in
                     ("precision", "recall", "map", "ndcg", "hit_rate")}
        row["seeds"] = "deterministic"
    best = result.results[-1]
    best["vs_best"] = {"baseline": "als", "best": True}
    best["seeds"] = [0, 1, 2]
    best["seed_mean"] = {"recall": 0.395, "ndcg": 0.2}
    best["seed_std"] = {"recall": 0.004, "ndcg": 0.002}
    for row, low, high in zip(result.results[:3], (-0.35, -0.25, -0.02), (-0.25, -0.15, 0.003)):
        row["vs_best"] = {"baseline": "als", "best": False,
                          "recall": {"difference": row["recall"] - 0.4, "ci_low": low, "ci_high": high,
                                     "excludes_zero": high < 0}}
    result.settings["bootstrap"] = {"resamples": 1000, "seed": 0, "confidence": 0.95, "compared_by": "recall"}
    return result


def test_table_shows_intervals_the_comparison_with_the_best_and_the_seeds(tmp_path):
    table = result_with_intervals().to_markdown()
    header = table.splitlines()[0]
    assert "| vs best (R@20) |" in header and "| seeds: R@20 mean ± sd |" in header
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| 0.4000 ± 0.0110 |" in lines["| als"] and "| best |" in lines["| als"]
    assert "| 0.3950 ± 0.0040 (3 seeds) |" in lines["| als"]
    assert "| -0.3000 [-0.3500, -0.2500] |" in lines["| global_hot"] and "| deterministic |" in lines["| global_hot"]
    assert "Real differences (interval excludes 0): global_hot, item_cf." in table
    assert "Not distinguishable from als on these queries: swing." in table
    assert "1,000 Poisson resamples, seed 0" in table
    result_with_intervals().write(str(tmp_path / "out"))
    assert "| best |" in (tmp_path / "out" / "results.md").read_text()
    assert png_size((tmp_path / "out" / "results.png").read_bytes())[0] >= 600


def test_table_without_intervals_keeps_its_columns():
    header = sample_result().to_markdown().splitlines()[0]
    assert "vs best" not in header and "seeds" not in header and "±" not in sample_result().to_markdown()


def test_a_table_with_tuned_rows_says_which_rows_were_tuned_and_their_validation_score():
    result = sample_result()
    assert "| params |" not in result.to_markdown().splitlines()[0]  # nothing tuned: no column
    for row in result.results:
        row["params_source"] = "defaults"
    result.results[1].update(params_source="tuned", validation_score=0.04981)
    table = result.to_markdown()
    assert "| params |" in table.splitlines()[0]
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| tuned (validation 0.0498) |" in lines["| item_cf"] and "| defaults |" in lines["| swing"]
    assert "params: tuned = refitted on the whole train" in table
