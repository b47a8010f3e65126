"""Cost growth of Item CF, Swing, ALS, DSSM and SimpleX and the evaluator at 1M, 5M and 20M interactions.

Data per size: ``synthetic_interactions`` with users and items grown with √(size / 1M) from MovieLens-1M's
6,040 × 3,706 (5M: 13,506 × 8,287; 20M: 27,012 × 16,574), split by the protocol (each user's last 3 events
held out; held-out events rated above 2 are queries). Fits run on the train part.

Every (size, phase) runs in its own Python process with a fresh ``local[2]`` session (``--driver-memory``,
8g by default; the executors are threads of that driver JVM in local mode), so each phase's memory peak is its
own. Phases:

* ``data``: generate the interactions (executors, ``mapInPandas``) and write them and the split to parquet
  (timed once, no requirement on it);
* ``item_cf``, ``swing``, ``als``: ``fit`` (Item CF: the defaults, 100 neighbours; Swing: the defaults, default
  caps; ALS: rank 64, 15 iterations, implicit — the settings the table was first measured with, pinned so that
  its rows compare across dates), the model's tables materialised; ``item_cf`` also writes
  Item CF's top-20 lists for the test queries, untimed, for the evaluator phase;
* ``dssm_softmax``, ``simplex_ccl``: the benchmark rows (``models.registry``: their presets, seed 0, the
  default backend and processes), ``fit`` then the top-20 lists of the test queries materialised (fit +
  recommend); the training processes are Python processes below the JVM, so they count as Python workers;
* ``evaluate``: ``evaluate(recommendations, test, k=20, catalog=train)`` on those lists.

Per phase: wall time of each of ``--runs`` runs (after the session has started and the input is cached;
the first run includes Python worker start-up) and their median; peak resident memory sampled every 0.2 s
(psutil) of the driver Python process, the driver JVM (= driver + executors in local mode) and the Python
workers (where ``mapInArrow``/``mapInPandas`` kernels run), plus the JVM heap peak Spark itself reports;
and where the time went: the stages of the median run from the Spark UI's REST API
(``/api/v1/applications/<id>/stages``, UI bound to 127.0.0.1 on a free port), grouped by stage name.

Results go to ``benchmarks/results/growth.json`` as each phase finishes (``{size: {phase: {...}}}``); a later
call skips (size, phase) pairs already there unless ``--force``, so a long run can be resumed. The table of
all recorded sizes is printed at the end; the last line is the 20M/1M time ratio of each phase (or the
largest size's).

    .venv/bin/python benchmarks/growth.py [--sizes 1M,5M,20M]
                                          [--phases data,item_cf,swing,als,dssm_softmax,simplex_ccl,evaluate]
                                          [--runs 3] [--driver-memory 8g] [--force] [--java-blas]

``--java-blas`` makes MLlib use its pure-Java BLAS/LAPACK even where OpenBLAS is installed (the "before" of
the native-BLAS comparison; use another ``--output``). Every phase records which BLAS its JVM used (``blas``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _harness import (add_run_options, JAVA_BLAS_OPTIONS, RESULTS, MemorySampler, StageLog, bench_session,
                      load_average, load_text,
                      machine, median, movielens_shape, parse_size, reference_data, session_settings, size_label,
                      stage_lines, timed_cpu)

PHASES = ("data", "item_cf", "swing", "als", "dssm_softmax", "simplex_ccl", "evaluate")
TWO_TOWER_PHASES = ("dssm_softmax", "simplex_ccl")
K = 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,5M,20M", help="comma-separated interaction counts (1M, 5M, 20M…)")
    parser.add_argument("--phases", default=",".join(PHASES))
    add_run_options(parser, driver_memory="8g")
    parser.add_argument("--output", default=str(RESULTS / "growth.json"))
    parser.add_argument("--force", action="store_true", help="rerun phases already recorded")
    parser.add_argument("--java-blas", action="store_true", help="MLlib's pure-Java BLAS even where OpenBLAS is installed")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds one phase may take")
    parser.add_argument("--epochs", type=int, help="two-tower phases: this many epochs instead of the row's preset "
                        "(a per-epoch cost where the preset's epochs would take hours; recorded with the result)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # "size:phase", run in a child process
    return parser.parse_args(argv)


# -- paths --------------------------------------------------------------------------------------------------
def size_dir(args, interactions: int) -> Path:
    users, items, _ = movielens_shape(interactions)
    return Path(args.data_dir) / f"growth_{size_label(interactions)}_u{users}_i{items}_s{args.seed}"


# -- one phase, in a child process ------------------------------------------------------------------------
def run_worker(args) -> None:
    size_text, phase = args.worker.split(":")
    interactions = parse_size(size_text)
    users, items, _ = movielens_shape(interactions)
    folder = size_dir(args, interactions)
    memory = MemorySampler()
    conf = {}
    if args.java_blas:
        from spark_retrieval.session import LOG_CONFIG

        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()} {JAVA_BLAS_OPTIONS}"
    spark = bench_session(master=args.master, app_name=f"growth-{size_text}-{phase}",
                          driver_memory=args.driver_memory, ui=True, conf=conf)
    stages = StageLog(spark)
    result = {"interactions_target": interactions, "users": users, "items": items, "settings": session_settings(spark)}

    if phase == "data":
        memory.reset()
        start = time.perf_counter()
        path = reference_data(spark, users, items, interactions, args.seed, args.data_dir)
        generate_s = time.perf_counter() - start
        from spark_retrieval.data.split import temporal_split

        split = temporal_split(spark.read.parquet(path))
        split.train.write.mode("overwrite").parquet(str(folder / "train"))
        split.test.write.mode("overwrite").parquet(str(folder / "test"))
        counts = split.counts()
        result.update(runs_s=[time.perf_counter() - start], generate_s=generate_s, counts=counts,
                      memory_mib=memory.peaks_mib(), run_loads=[load_average()])
        emit(result, memory, spark)
        return

    from pyspark import StorageLevel

    train = spark.read.parquet(str(folder / "train")).persist(StorageLevel.MEMORY_AND_DISK)
    test = spark.read.parquet(str(folder / "test")).persist(StorageLevel.MEMORY_AND_DISK)
    result["train_events"], result["test_queries"] = train.count(), test.count()
    trainings = []
    action = phase_action(phase, spark, train, test, folder, args.epochs, trainings)
    runs, cpu, loads, stage_runs = [], [], [], []
    memory.reset()
    for run in range(args.runs):
        with stages.group(f"run-{run}"):
            _, seconds, cpu_s = timed_cpu(action)
            runs.append(seconds)
            cpu.append(cpu_s)
        loads.append(load_average())
        stage_runs.append(stages.summary(f"run-{run}"))
    middle = sorted(range(len(runs)), key=runs.__getitem__)[len(runs) // 2]
    peaks = stages.executor_peaks()
    result.update(runs_s=runs, cpu_s=cpu, run_loads=loads, memory_mib=memory.peaks_mib(), stages=stage_runs[middle],
                  jvm_heap_peak_mib=peaks.get("JVMHeapMemory"), executor_metrics_mib=peaks)
    if trainings:
        result.update(epochs=trainings[middle]["epochs"], training_seconds=[t["seconds"] for t in trainings])
    if phase == "item_cf":
        write_item_cf_lists(spark, train, test, folder)
    from spark_retrieval.session import blas_in_use

    result["blas"] = blas_in_use(spark)
    emit(result, memory, spark)


def phase_action(phase: str, spark, train, test, folder: Path, epochs: int | None = None,
                 trainings: list | None = None):
    from spark_retrieval.evaluation import evaluate
    from spark_retrieval.models import ALS, ItemCF, Swing

    def fit(estimator):
        def action():
            model = estimator.fit(train)
            model.materialize()
            model.unpersist()
        return action

    if phase == "item_cf":
        return fit(ItemCF())
    if phase == "swing":
        return fit(Swing())
    if phase == "als":
        return fit(ALS(rank=64, max_iter=15, reg_param=0.05, alpha=20.0))
    if phase in TWO_TOWER_PHASES:
        from spark_retrieval.models.registry import build_estimator

        params = {"epochs": epochs} if epochs else None

        def fit_and_recommend():
            estimator = build_estimator(phase, 0, params=params, verbose=False)
            model = estimator.fit(train)
            model.recommend(test, K).count()
            if trainings is not None:
                trainings.append({"epochs": estimator.get("epochs"), "seconds": model.metadata["training"]["seconds"]})
            model.unpersist()
        return fit_and_recommend
    if phase == "evaluate":
        lists_path = folder / "item_cf_lists"
        if not (lists_path / "_SUCCESS").exists():
            raise SystemExit(f"{lists_path} is missing: run the item_cf phase of this size first")
        recommendations = spark.read.parquet(str(lists_path))
        return lambda: evaluate(recommendations, test, k=K, catalog=train)
    raise SystemExit(f"unknown phase {phase!r}")


def write_item_cf_lists(spark, train, test, folder: Path) -> None:
    from spark_retrieval.models import ItemCF

    model = ItemCF().fit(train)
    model.recommend(test, K).write.mode("overwrite").parquet(str(folder / "item_cf_lists"))


def emit(result: dict, memory: MemorySampler, spark) -> None:
    memory.stop()
    spark.stop()
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver of the whole benchmark --------------------------------------------------------------------
def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def run_phase(args, size_text: str, phase: str) -> dict:
    command = [sys.executable, __file__, "--worker", f"{size_text}:{phase}", "--runs", str(args.runs),
               "--seed", str(args.seed), "--master", args.master, "--driver-memory", args.driver_memory,
               "--data-dir", args.data_dir] + (["--java-blas"] if args.java_blas else []) + (
                  ["--epochs", str(args.epochs)] if args.epochs else [])
    started = load_average()
    start = time.perf_counter()
    # Own process group, so a phase past --timeout is killed with its JVM and Python workers.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"failed": True, "timed_out": True, "returncode": None, "elapsed_s": time.perf_counter() - start,
                "stderr_tail": f"stopped after --timeout {args.timeout:.0f} s", "load_at_start": started}
    completed = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    elapsed = time.perf_counter() - start
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        tail = "\n".join(completed.stderr.splitlines()[-15:])
        return {"failed": True, "returncode": completed.returncode, "stderr_tail": tail, "elapsed_s": elapsed,
                "load_at_start": started}
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(process_s=elapsed, load_at_start=started, load_at_end=load_average(), machine=machine())
    return result


def print_phase(size_text: str, phase: str, result: dict) -> None:
    if result.get("failed"):
        print(f"{size_text} {phase}: FAILED (exit {result['returncode']})\n{result['stderr_tail']}")
        return
    memory = result["memory_mib"]
    runs = ", ".join(f"{value:.1f}" for value in result["runs_s"])
    cpu = ", ".join(f"{value:.1f}" for value in result.get("cpu_s", []))
    print(f"{size_text} {phase}: median {median(result['runs_s']):.1f} s (runs {runs}; CPU s {cpu}); peak RSS driver python "
          f"{memory['driver_python']} MiB, JVM {memory['jvm']} MiB, Python workers {memory['python_workers']} MiB, "
          f"total {memory['total']} MiB; loads {result.get('run_loads')}; BLAS {result.get('blas', '?')}", flush=True)
    for seconds in result.get("training_seconds", []):
        print(f"  {phase_name(phase, result)}: " + ", ".join(f"{key} {value:.1f} s" for key, value in seconds.items()), flush=True)
    for line in stage_lines(result.get("stages", {})):
        print(line, flush=True)


def table(results: dict) -> list[str]:
    sizes = sorted(results, key=parse_size)
    lines = ["| size | users × items | train events | phase | median s | runs s | CPU s (median) | peak RSS: JVM / "
             "Python workers / driver Python / total (MiB) | JVM heap peak (MiB) | load (1-min) during runs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for size_text in sizes:
        phases = results[size_text]
        data = phases.get("data", {})
        for phase in PHASES:
            entry = phases.get(phase)
            if not entry or entry.get("failed"):
                continue
            memory = entry["memory_mib"]
            loads = "–".join(f"{load[0]:.1f}" for load in entry.get("run_loads", [])[:1] + entry.get("run_loads", [])[-1:])
            train_events = entry.get("train_events") or data.get("counts", {}).get("train_events", "")
            cpu = f"{median(entry['cpu_s']):.1f}" if entry.get("cpu_s") else ""
            lines.append(
                f"| {size_text} | {entry['users']:,} × {entry['items']:,} | {train_events:,} | {phase_name(phase, entry)} | "
                f"{median(entry['runs_s']):.1f} | {', '.join(f'{v:.1f}' for v in entry['runs_s'])} | {cpu} | "
                f"{memory['jvm']:,} / {memory['python_workers']:,} / {memory['driver_python']:,} / {memory['total']:,} | "
                f"{entry.get('jvm_heap_peak_mib') or ''} | {loads} |"
            )
    return lines


def epochs_of(phase: str, entry: dict) -> int | None:
    """A two-tower phase's epochs (results recorded before ``--epochs`` existed ran the row's preset)."""
    if phase not in TWO_TOWER_PHASES:
        return None
    from spark_retrieval.models.registry import build_estimator

    return entry.get("epochs") or build_estimator(phase).get("epochs")


def phase_name(phase: str, entry: dict) -> str:
    epochs = epochs_of(phase, entry)
    return f"{phase} ({epochs} epoch{'' if epochs == 1 else 's'})" if epochs else phase


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results = load_results(output)
    sizes = [size_label(parse_size(text)) for text in args.sizes.split(",")]
    phases = [phase for phase in args.phases.split(",") if phase]
    for size_text in sizes:
        for phase in phases:
            if phase not in PHASES:
                raise SystemExit(f"unknown phase {phase!r}; phases: {', '.join(PHASES)}")
            if not args.force and phase in results.get(size_text, {}) and not results[size_text][phase].get("failed"):
                print(f"{size_text} {phase}: recorded already (use --force to rerun)")
                continue
            print(f"{size_text} {phase}: running, {load_text()}", flush=True)
            result = run_phase(args, size_text, phase)
            results = load_results(output)  # another invocation may have written meanwhile
            results.setdefault(size_text, {})[phase] = result
            output.write_text(json.dumps(results, indent=1))
            print_phase(size_text, phase, result)

    print()
    print("\n".join(table(results)))
    ratios = growth_ratios(results)
    if ratios:
        print(ratios)


def growth_ratios(results: dict) -> str:
    sizes = sorted((s for s in results if any(not p.get("failed") for p in results[s].values())), key=parse_size)
    if len(sizes) < 2:
        return ""
    small, large = sizes[0], sizes[-1]
    parts = []
    for phase in PHASES[1:]:
        a, b = results[small].get(phase), results[large].get(phase)
        if a and b and not a.get("failed") and not b.get("failed") and epochs_of(phase, a) == epochs_of(phase, b):
            parts.append(f"{phase} {median(b['runs_s']) / median(a['runs_s']):.1f}x")
    factor = parse_size(large) / parse_size(small)
    return f"time growth {large}/{small} ({factor:g}x the interactions): " + ", ".join(parts)


if __name__ == "__main__":
    main()
