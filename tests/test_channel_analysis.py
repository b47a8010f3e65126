"""What each channel adds (``channel_analysis``) against brute-force counts on random lists, and a merged row in
the benchmark: its channel table in results.md, its analysis in results.json and the overlap heatmap."""

import json
import random

import pytest

from spark_retrieval.benchmark import run_benchmark
from spark_retrieval.channel_analysis import channel_analysis
from spark_retrieval.columns import ITEM_ID, QUERY_ID, RECOMMENDATIONS, SCORE
from spark_retrieval.models.item_cf import ItemCF
from spark_retrieval.models.registry import MODELS, RegisteredModel
from spark_retrieval.report import OVERLAP_FILE
from spark_retrieval.retrieval.merge import merge_lists

SCHEMA = f"{QUERY_ID} long, {RECOMMENDATIONS} array<struct<{ITEM_ID}: long, {SCORE}: double>>"
K = 5


@pytest.fixture(scope="module")
def random_lists(spark):
    rng = random.Random(11)
    names = ["a", "b", "c"]
    lists = {q: {n: rng.sample(range(15), rng.randint(0, 7)) for n in names} for q in range(60)}
    labels = {q: set(rng.sample(range(15), rng.randint(1, 3))) for q in range(60)}
    frames = {
        n: spark.createDataFrame(
            [(q, [(item, float(-i)) for i, item in enumerate(by[n])]) for q, by in lists.items() if by[n]], SCHEMA
        )
        for n in names
    }
    test = spark.createDataFrame([(q, item) for q, items in labels.items() for item in items], f"{QUERY_ID} long, {ITEM_ID} long")
    return names, lists, labels, frames, test


def test_unique_hits_overlap_and_shares_match_a_brute_force_count(random_lists):
    names, lists, labels, frames, test = random_lists
    merged = merge_lists(frames, K, "rrf")
    got = channel_analysis(frames, test, K, merged=merged)
    hits = {q: {n for n in names if set(by[n][:K]) & labels[q]} for q, by in lists.items()}
    for n in names:
        assert got["channels"][n]["hit_queries"] == sum(n in h for h in hits.values())
        assert got["channels"][n]["unique_hits"] == sum(h == {n} for h in hits.values())
    for a in names:
        for b in names:
            if a == b:
                continue
            pairs = [(set(by[a][:K]), set(by[b][:K])) for by in lists.values()]
            values = [len(x & y) / len(x | y) for x, y in pairs if x | y]
            assert got["overlap"][a][b] == pytest.approx(sum(values) / len(values), abs=1e-12)
    slots = [[c["channel"] for c in p["channels"]] for row in merged.collect() for p in row["provenance"][:K]]
    for n in names:
        assert got["channels"][n]["merged_share"] == pytest.approx(sum(n in s for s in slots) / len(slots))
        assert got["channels"][n]["sole_share"] == pytest.approx(sum(s == [n] for s in slots) / len(slots))
    recall = [len(set(row_items) & labels[q]) / len(labels[q]) for q, row_items in
              {r[QUERY_ID]: [e[ITEM_ID] for e in r[RECOMMENDATIONS][:K]] for r in merged.collect()}.items()]
    assert got["merged"]["recall"] == pytest.approx(sum(recall) / len(labels))  # queries without a list count 0


def test_figures_the_caller_already_has_are_taken_not_computed_again(random_lists):
    names, _, _, frames, test = random_lists
    merged = merge_lists(frames, K, "rrf")
    computed = channel_analysis(frames, test, K, merged=merged)
    known = {name: {key: computed["channels"][name][key] for key in ("recall", "ndcg")} for name in names[:2]}
    assert channel_analysis(frames, test, K, merged=merged, known=known, merged_metrics=computed["merged"]) == computed
    marked = channel_analysis(frames, test, K, merged=merged, known={"a": {"recall": -1.0, "ndcg": -2.0}},
                              merged_metrics={"recall": -3.0, "ndcg": -4.0, "map": 0.5})
    assert (marked["channels"]["a"]["recall"], marked["channels"]["a"]["ndcg"]) == (-1.0, -2.0)
    assert marked["channels"]["b"]["recall"] == computed["channels"]["b"]["recall"]
    assert marked["merged"] == {"recall": -3.0, "ndcg": -4.0}


def test_merged_rows_in_the_benchmark_share_fits_and_report_their_channels(spark, tmp_path, monkeypatch):
    rows = [(u, 10 + (u * 5 + t * (1 + u % 3)) % 23, float(1 + (u + t) % 5), t) for u in range(30) for t in range(10)]
    ratings = spark.createDataFrame(rows, "user_id long, item_id long, rating double, timestamp long")
    merged = "spark_retrieval.models.multi_channel:MultiChannel"
    both = ["item_cf", "global_hot"]
    monkeypatch.setitem(MODELS, "quota_small", RegisteredModel("quota_small", merged, {"channels": both, "strategy": "quota", "shares": [3, 1]}, in_all=False))
    monkeypatch.setitem(MODELS, "rrf_small", RegisteredModel("rrf_small", merged, {"channels": both, "strategy": "rrf"}, in_all=False))
    fits = []
    original = ItemCF._fit_interactions
    monkeypatch.setattr(ItemCF, "_fit_interactions", lambda self, train: fits.append(1) or original(self, train))

    result = run_benchmark(spark, ratings, "tiny", both + ["quota_small", "rrf_small"], k=[K, 8], holdout=2, bootstrap=20)
    assert len(fits) == 1  # the item_cf row's fit serves both merged rows
    by_model = {row["model"]: row for row in result.results}
    alone = run_benchmark(spark, ratings, "tiny", both, k=K, holdout=2, bootstrap=0)
    for row in alone.results:  # the table's K is unchanged by also measuring at a longer K
        assert {m: by_model[row["model"]][m] for m in ("recall", "ndcg", "coverage")} == {m: row[m] for m in ("recall", "ndcg", "coverage")}
    analysis = by_model["quota_small"]["channel_analysis"]
    assert list(analysis["channels"]) == both and analysis["k"] == K
    for channel in both:  # a channel's own figures are its single row's, at each K
        assert analysis["channels"][channel]["recall"] == by_model[channel]["recall"]
        longer = by_model["quota_small"]["at_k"]["8"]["channel_analysis"]["channels"][channel]
        assert longer["recall"] == by_model[channel]["at_k"]["8"]["recall"]
    assert analysis["merged"]["recall"] == by_model["quota_small"]["recall"]
    assert by_model["rrf_small"]["at_k"]["8"]["recall"] == by_model["rrf_small"]["at_k"]["8"]["channel_analysis"]["merged"]["recall"]
    assert by_model["quota_small"]["seeds"] == "deterministic"  # neither channel samples
    best_channel = max(both, key=lambda name: by_model[name]["recall"])
    for name in ("quota_small", "rrf_small"):  # each merged row against the better of its channels, paired
        against = by_model[name]["vs_best_channel"]
        assert against["baseline"] == best_channel
        assert against["recall"]["difference"] == pytest.approx(by_model[name]["recall"] - by_model[best_channel]["recall"])
        # and at the longer K, against the channel that is best at that K
        best_at_8 = max(both, key=lambda channel: by_model[channel]["at_k"]["8"]["recall"])
        at_8 = by_model[name]["at_k"]["8"]["vs_best_channel"]
        assert at_8["baseline"] == best_at_8
        assert at_8["recall"]["difference"] == pytest.approx(
            by_model[name]["at_k"]["8"]["recall"] - by_model[best_at_8]["at_k"]["8"]["recall"])
        assert at_8["recall"]["ci_low"] <= at_8["recall"]["difference"] <= at_8["recall"]["ci_high"]
    assert "vs_best_channel" not in by_model["item_cf"]["at_k"]["8"]  # single rows have no channels
    result.write(str(tmp_path))
    assert (tmp_path / OVERLAP_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "results.md").read_text()
    assert "Channels of quota_small" in report and f"![channel overlap]({OVERLAP_FILE})" in report
    assert "| R@8 | NDCG@8 |" in report and f"rrf_small against its best channel at K = {K}, {best_channel}: R@{K}" in report
    assert f"rrf_small against its best channel at K = 8, {best_at_8}: R@8" in report
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["ks"] == [K, 8] and document["results"][2]["channel_analysis"]["k"] == K
