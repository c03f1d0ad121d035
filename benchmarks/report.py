"""Formats the records collected by `run_all.py` as BENCHMARKS.md."""

import datetime
import json
import pathlib

BENCH_DIR = pathlib.Path(__file__).resolve().parent
LARGE_CASES = ("ds_stage4", "cityscapes_os16")


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(value):
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 10000 else f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _records(results, section, **match):
    return [
        record
        for result_section, _, records, _ in results
        if result_section == section
        for record in records
        if all(record.get(key) == value for key, value in match.items())
    ]


def _one(results, section, **match):
    found = _records(results, section, **match)
    return found[0] if found else None


def _status(results, section, argument):
    """Status of the first run of `section` whose arguments contain `argument`."""
    for result_section, args, _, status in results:
        if result_section == section and argument in args:
            return status
    return "not run"


def _yes_no(condition):
    return "**yes**" if condition else "no"


def _remeasured_lines(remeasured):
    """Header lines naming the sections measured again after the run (`run_all.py --sections`)."""
    lines = []
    for entry in remeasured:
        quick = ", quick" if entry["quick"] else ""
        lines.append(f"- Section `{entry['section']}` measured again separately (`--sections`{quick}): "
                     f"{datetime.datetime.fromisoformat(entry['started']):%Y-%m-%d %H:%M} on {entry['cpu']}, "
                     f"load average at start {entry['load'][0]}, at end {entry['load'][1]}.\n")
    return "".join(lines)


def _header(versions, quick, started, elapsed_seconds, load, baseline_commit, remeasured=()):
    mode = " (quick smoke run: small sizes, one round — not the reference numbers)" if quick else ""
    exceptions = ("the quoted reference numbers, the sections measured again separately (listed below) and\n"
                  "the separately run offline demo") if remeasured else (
        "the quoted reference numbers and the separately run offline demo")
    return f"""# Benchmarks{mode}

Regenerate with `python benchmarks/run_all.py` (about {max(1, round(elapsed_seconds / 60))} min here;
`--quick` for a smoke run; `--report_only` rewrites this file from the raw results in
`benchmarks/results/run_all.json`). Every number below was measured in that one run, except
{exceptions}, which are labelled.

- Date: {started:%Y-%m-%d %H:%M} (run took {elapsed_seconds / 60:.1f} min)
{_remeasured_lines(remeasured)}- Machine: {versions.get("cpu", "?")}, {versions.get("cpu_count", "?")} CPUs, {versions.get("memory_gb", "?")} GB RAM;
  TensorFlow runs on 2 intra-op and 2 inter-op threads in every benchmark process.
- Versions: Python {versions.get("python", "?")}, TensorFlow {versions.get("tensorflow", "?")},
  Keras {versions.get("keras", "?")}, numpy {versions.get("numpy", "?")}; oneDNN: {versions.get("onednn", "?")}.
- Load average (1/5/15 min) at start: {load[0]}; at end: {load[1]}. The machine is shared with other
  jobs, so absolute times are noisy (a busy neighbour can double a time); ratios come from
  interleaved timing in one process and are more stable than absolute numbers.
- "baseline" is the layer as first committed (`git show {baseline_commit}:axial_tf/layers/...`,
  loaded into a private module at benchmark time); "current" is the package's layer.
- Times are medians over the timed calls after one warm-up call ("best" = fastest call);
  training = forward +
  backward (gradients w.r.t. the input and every weight, for a fixed random gradient of the
  output: no loss ops in the timed step). GFLOP/s use the analytic count
  of `bench_utils.attention_2d_flops` (qkv projection + 3 similarity products + 2
  retrievals per pass; backward counted as 2x forward).
"""


def _peak_section(results):
    rows = []
    for when, (section, args, records, _) in zip(("start", "end"), [r for r in results if r[0] == "peak"]):
        for record in records:
            rows.append([record["library"], when, record["size"], f"{record['gflops_per_s']:.0f}",
                         f"{record['best_gflops_per_s']:.0f}"])
    return "## Machine peak (FP32 matmul, 2 threads)\n\n" + _table(
        ["library", "measured at", "n (n x n @ n x n)", "median GFLOP/s", "best GFLOP/s"], rows
    )


def _layer_section(results, quoted):
    deeplab2, pytorch = quoted
    peaks = _records(results, "peak", library="tensorflow")
    peak_rate = max(record["best_gflops_per_s"] for record in peaks) if peaks else None
    rows = []
    for (case, mode) in [(c, m) for c in ("ds_stage4", "cityscapes_os16", "resnet_s_stage2", "local_span65")
                         for m in ("forward", "training")]:
        current = _one(results, "layer", case=case, mode=mode, impl="current")
        baseline = _one(results, "layer", case=case, mode=mode, impl="baseline")
        if current is None:
            status = _status(results, "layer", case)
            if status != "not run":
                rows.append([case, mode, "—", "—", "—", "—", "—", "—", "—", "—", "—", status])
            continue
        ours = current["median_ms"]
        fraction = current["gflops_per_s"] / peak_rate if peak_rate else None
        alongside = _one(results, "layer", benchmark="layer_matmul_alongside", case=case, mode=mode)
        fraction_alongside = current["gflops_per_s"] / alongside["gflops_per_s"] if alongside else None
        reference = deeplab2.get((case, mode))
        torch = pytorch.get((case, mode))
        checks = []
        if reference:
            checks.append(f"≥1.5x DeepLab2: {_yes_no(reference / ours >= 1.5)}")
        if torch:
            checks.append(f"faster than PyTorch: {_yes_no(ours < torch)}")
        if case in LARGE_CASES and fraction is not None:
            checks.append(f"≥50% peak: {_yes_no(fraction >= 0.5)}")
        if case in LARGE_CASES and fraction_alongside is not None:
            checks.append(f"≥50% of the matmul alongside: {_yes_no(fraction_alongside >= 0.5)}")
        rows.append([
            case, mode, _ms(baseline["median_ms"]) if baseline else "—", _ms(ours), _ms(min(current["times_ms"])),
            f"{baseline['median_ms'] / ours:.2f}x" if baseline else "—",
            f"{current['gflops_per_s']:.1f}", f"{100 * fraction:.1f}%" if fraction is not None else "—",
            f"{100 * fraction_alongside:.1f}%" if fraction_alongside is not None else "—",
            _ms(reference) if reference else "—", _ms(torch) if torch else "—",
            "; ".join(checks) or "—",
        ])
    text = """## AxialAttention2D layer cases (float32, tf.function)

8 heads, key_expansion 1, value_expansion 2. `ds_stage4`: x [2,33,33,512], filters 256;
`cityscapes_os16`: x [1,65,129,1024], filters 512; `resnet_s_stage2`: x [8,56,56,64],
filters 32; `local_span65`: x [1,129,257,256], filters 128, span 65. DeepLab2 and PyTorch
columns are **quoted from issue 8** (measured there on this machine class, median of 3
interleaved rounds on a busy 2-core machine), not re-measured here: the references are not
installed in this project. The implementations and the matmul take turns of three
consecutive timed calls (the median is over repeated calls, as a training loop makes them;
the first call of a turn follows a 4096^2 matmul that evicts the caches and runs a few
percent slower). "% of peak" is the layer's median GFLOP/s over the best
TensorFlow matmul rate above (measured at the start and at the end of the run); "% of matmul
alongside" divides by the median rate of a 4096 x 4096 float32 matmul timed in the same
interleaved rounds as the layer (same load; the fairer ratio on a shared machine).

"""
    return text + _table(
        ["case", "mode", "baseline", "current", "current (best)", "speed-up", "GFLOP/s", "% of peak",
         "% of matmul alongside",
         "DeepLab2 (quoted)",
         "PyTorch (quoted)", "targets"],
        rows,
    )


def _variants_section(results, section, key, values, title, note):
    rows = []
    for case in ("ds_stage4", "resnet_s_stage2"):
        for mode in ("forward", "training"):
            cells = []
            for value in values:
                record = _one(results, section, case=case, mode=mode, **{key: value})
                cells.append(_ms(record["median_ms"]) if record else "—")
            if any(cell != "—" for cell in cells):
                reference = _one(results, section, case=case, mode=mode, **{key: values[0]})
                ratios = []
                for value in values[1:]:
                    record = _one(results, section, case=case, mode=mode, **{key: value})
                    if record and reference:
                        ratios.append(f"{value}: {reference['median_ms'] / record['median_ms']:.2f}x")
                rows.append([case, mode, *cells, ", ".join(ratios)])
    return f"## {title}\n\n{note}\n\n" + _table(["case", "mode", *values, f"speed-up vs {values[0]}"], rows)


def _onednn_section(results):
    rows = []
    for mode in ("forward", "training"):
        off = _one(results, "onednn_off", case="ds_stage4", mode=mode)
        on = _one(results, "layer", case="ds_stage4", mode=mode, impl="current")
        if off:
            rows.append([mode, _ms(on["median_ms"]) if on else "—", _ms(off["median_ms"])])
    return """## oneDNN

`ds_stage4`, current layer, graph mode, float32. oneDNN on (axial_tf turns it on when it loads
before TensorFlow; TensorFlow's own default leaves it off on some CPUs) against
`TF_ENABLE_ONEDNN_OPTS=0`; separate processes, so not interleaved.

""" + _table(["mode", "oneDNN on (axial_tf default)", "oneDNN off"], rows)


def _block_section(results):
    rows = []
    for mode in ("forward", "training"):
        attention = _one(results, "block", block="axial_attention_block", mode=mode)
        conv = _one(results, "block", block="conv3x3_bottleneck", mode=mode)
        if attention and conv:
            rows.append([mode, _ms(conv["median_ms"]), _ms(attention["median_ms"]),
                         f"{attention['median_ms'] / conv['median_ms']:.2f}x",
                         f"{conv['params'] / 1e6:.2f} M / {attention['params'] / 1e6:.2f} M"])
    shape = _records(results, "block")
    described = f"x {shape[0]['shape']}, filters_list {shape[0]['filters']}" if shape else ""
    return f"""## Axial-attention block vs the 3x3-conv bottleneck it replaces

`AxialBlock` with and without `attention` ({described}; global span, 8 heads), interleaved.

""" + _table(["mode", "conv bottleneck", "axial-attention block", "attention / conv", "weights conv / attention"],
             rows)


def _scaling_section(results):
    sides = sorted({record["side"] for record in _records(results, "scaling")} |
                   {int(args[args.index("--side") + 1]) for section, args, _, _ in results if section == "scaling"})
    rows = []
    for side in sides:
        row = [f"{side} x {side}"]
        for method in ("global", "local", "full"):
            record = _one(results, "scaling", method=method, side=side)
            if record:
                row.append(f"{_ms(record['median_ms'])}, {record['working_memory_mb']:.0f} MB")
            else:
                status = next((s for sec, args, _, s in results if sec == "scaling" and args[1] == method
                               and int(args[3]) == side), None)
                row.append("—" if status is None else status)
        rows.append(row)
    return """## Scaling with image side L (forward, x [1, L, L, 128], filters 64, 8 heads)

Time and working memory (peak resident memory of the process minus its resident memory
before the first call; one process per cell). Local span 33. "full" is
`keras.layers.MultiHeadAttention` over all L*L positions with the same widths (O((L^2)^2)).

""" + _table(["L", "global axial", "local axial (span 33)", "full 2-D self-attention"], rows)


def _model_section(results):
    rows = []
    for section, args, records, status in results:
        if section != "model":
            continue
        backbone, size = args[args.index("--backbone") + 1], args[args.index("--size") + 1]
        if records:
            record = records[0]
            rows.append([backbone, size.replace(",", " x "), f"{record['params_m']:.1f} M", _ms(record["median_ms"]),
                         f"{record['working_memory_mb'] / 1024:.1f} GB", f"{record['peak_rss_mb'] / 1024:.1f} GB",
                         status])
        else:
            rows.append([backbone, size.replace(",", " x "), "—", "—", "—", "—", status])
    return """## Whole models: Axial-DeepLab inference (batch 1, float32, tf.function)

Registry settings (output stride 16, global axial attention, 19 classes). Working memory =
peak resident memory minus resident memory before the first call. A case stopped by the
suite's limits (14 GB resident memory or its time limit) says so. For reference, issue 8
quotes DeepLab2: MaX-S backbone about 1.9 s at 513x513; its fully axial Axial-DeepLab-S
cannot run at 513x513 (no local attention) and takes about 1.7 s at 257x257.

Size note for 1025 x 2049 with global span: the first axial stage (stride 2, 513 x 1025)
attends along 1025-long rows, whose logits would be 513 x 8 x 1025 x 1025 per similarity
term (4.3 G elements, 17 GB). Global attention therefore loops over chunks of sequences
(`max_chunk_logits`, 64 Mi elements per term); before that, this size crashed inside
TensorFlow. A local `span` (e.g. 65) makes the work O(L * span) instead of O(L^2). The
stem's dense convolutions at 513 x 1025 run on row bands (`ConvBN.max_im2col_elements`):
in one call, oneDNN's im2col buffer would pass 1 GB and it would fall back to its reference
kernel (on AVX2-only CPUs one call did not finish in 536 s).

""" + _table(["model", "image", "weights", "latency", "working memory", "peak RSS", "status"], rows)


def _training_section(results):
    lines = ["## Training step and input pipeline", ""]
    step = _one(results, "train_step")
    if step:
        lines.append(
            f"- `{step['config']}` (batch {step['batch_size']}, crop {step['crop_size'][0]}x{step['crop_size'][1]}): "
            f"**{step['seconds_per_step']:.2f} s per training step** over {step['steps']} steps (project `Trainer`, "
            f"input pipeline and end-of-call checkpoint included; first steps with tracing took "
            f"{step['warmup_seconds']:.0f} s)."
        )
    else:
        lines.append(f"- Demo training step: {_status(results, 'train_step', '--steps')}")
    pipeline = _one(results, "input_pipeline")
    if pipeline:
        lines.append(
            f"- Input pipeline alone (`benchmarks/input_pipeline.py`, {pipeline['dataset']}, crop "
            f"{pipeline['crop_size']}, batch {pipeline['batch_size']}): **{pipeline['examples_per_second']:.0f} "
            f"examples/s** over {pipeline['batches']} batches."
        )
    else:
        lines.append(f"- Input pipeline: {_status(results, 'input_pipeline', '--batches')}")
    return "\n".join(lines)


def _resume_rows(records):
    """Table rows: one per resume position, both methods side by side."""
    by_position = {}
    for record in records:
        by_position.setdefault(record["position"], {})[record["method"]] = record
    rows = []
    for position, methods in sorted(by_position.items()):
        any_record = next(iter(methods.values()))
        old, new = methods.get("skip_decoded"), methods.get("epoch_seeded")
        epoch, offset = divmod(position, any_record["epoch_size"])
        rows.append([
            f"{position:,}" + (" (worst case of epoch seeded)" if any_record["worst_case"] else ""),
            f"{position / any_record['batch_size']:,.0f}", f"{epoch:,} + {offset:,}",
            f"{old['median_seconds']:.2f} s" if old else "not timed",
            f"{new['median_seconds']:.2f} s" if new else "—",
            f"{old['median_seconds'] / new['median_seconds']:.1f}x" if old and new else "—",
        ])
    return rows


def _resume_extrapolation(records, position):
    """Lines estimating both methods at `position` examples from the measured ones (labelled)."""
    old = {r["position"]: r["median_seconds"] for r in records if r["method"] == "skip_decoded"}
    new = [r["median_seconds"] for r in records if r["method"] == "epoch_seeded"]
    if 0 not in old or len(old) < 2 or not new:
        return []
    farthest = max(old)
    per_example = (old[farthest] - old[0]) / farthest
    return [
        f"- Skip decoded costs {1e3 * per_example:.3f} ms per skipped example here (slope from position 0 "
        f"to {farthest:,}).",
        f"- **Extrapolated, not measured**: at {position:,} examples (step 100k at batch 64), skip decoded "
        f"would take about {old[0] + per_example * position:,.0f} s here; epoch seeded stays at most "
        f"{max(new):.2f} s (its slowest measured resume, whatever the step). On COCO the issue quotes "
        f"0.9 ms per decoded example, {0.9e-3 * position / 3600:.1f} h for the same position; epoch seeded "
        "reads at most one epoch of records there (118k), without decoding them.",
    ]


def _resume_section(results):
    records = _records(results, "resume_cost", benchmark="resume_cost")
    title = "## Resume cost: time to the first batch of a resumed training input\n\n"
    if not records:
        return title + f"Not measured: {_status(results, 'resume_cost', '--positions')}."
    first = records[0]
    rounds = len(first["seconds"])
    size = f"{first['crop_size']}x{first['crop_size']}"
    text = title + f"""`benchmarks/resume_cost.py`: the panoptic training input of `panoptic_train_dataset_fn`
on `{first['dataset']}` (epoch of {first['epoch_size']:,} examples; batch {first['batch_size']}, crop {size}),
one input pipeline, rebuilt at a stream position as a resumed run does; time from building it to
its first batch, median of {rounds} alternating round(s) in one process. "skip decoded" is the
pipeline at commit {first['baseline_commit']} (loaded from git): one endless reshuffled stream from
which the consumed examples were skipped after reading and decoding them. "epoch seeded" is the
current pipeline: each epoch's order is a function of (seed, pipeline, epoch), so the run starts
at its epoch and skips only the rest of it, before decoding. At position 0 the current pipeline
is faster too: it decodes the first batch's examples, not the whole shuffle buffer.

"""
    table = _table(["position (examples)", "step at this batch", "epoch + offset", "skip decoded",
                    "epoch seeded", "skip decoded / epoch seeded"], _resume_rows(records))
    return text + table + "\n\n" + "\n".join(_resume_extrapolation(records, 100_000 * 64))


def _demo_section():
    """The offline demo's end-to-end result, measured separately by `benchmarks/demo_run.py`."""
    path = BENCH_DIR / "results" / "demo.json"
    title = "## Offline demo end to end (`benchmarks/demo_run.py`, run separately)\n\n"
    if not path.exists():
        return title + "Not measured yet: run `python benchmarks/demo_run.py`, then `run_all.py --report_only`."
    demo = json.loads(path.read_text())
    metric_keys = ("pq", "sq", "rq", "pq_things", "pq_stuff", "miou")
    single = demo.get("single_scale_no_flip")
    metric_rows = [["config's evaluation (its eval_scales and flip)", *(f"{demo[k]:.4f}" for k in metric_keys)]]
    if single:
        metric_rows.append(["same weights, single scale, no flip", *(f"{single[k]:.4f}" for k in metric_keys)])
    wall = demo["wall_seconds_end_to_end"]
    reached = demo["pq"] >= 0.70 and wall <= 15 * 60
    rows = [[key, value] for key, value in demo.items()
            if key not in metric_keys and isinstance(value, (int, float, str)) and value != ""]
    return (
        title + f"From `{path.relative_to(BENCH_DIR.parent)}` (its own date and machine are listed). "
        f"Target of issue 6, PQ >= 0.70 within 15 minutes end to end: {_yes_no(reached)} "
        f"(PQ {demo['pq']:.3f} in {wall / 60:.1f} min).\n\n"
        + _table(["evaluation", "PQ", "SQ", "RQ", "PQ things", "PQ stuff", "mIoU"], metric_rows)
        + "\n\n" + _table(["key", "value"], rows)
    )


def _problems(results):
    failed = [(section, " ".join(args), status) for section, args, _, status in results if status != "ok"]
    if not failed:
        return "## Runs that did not complete\n\nNone."
    return "## Runs that did not complete\n\n" + _table(["section", "arguments", "status"], failed)


def write_report(path, results, versions, quick, started, elapsed_seconds, load, quoted, baseline_commit,
                 remeasured=()):
    """Writes the markdown report of one `run_all.py` run to `path`.

    Args:
        remeasured: Entries of `run_all.merge_sections` for sections measured again
            after the run; the other arguments describe the run itself.
    """
    optimisations = (BENCH_DIR / "OPTIMISATIONS.md").read_text().strip()
    sections = [
        _header(versions, quick, started, elapsed_seconds, load, baseline_commit, remeasured),
        _peak_section(results),
        _layer_section(results, quoted),
        optimisations,
        _variants_section(results, "execution", "execution", ["graph", "eager", "xla"],
                          "Execution: tf.function vs eager vs XLA",
                          "Current layer, float32, interleaved in one process. graph = `tf.function`; "
                          "xla = `tf.function(jit_compile=True)`."),
        _variants_section(results, "precision", "policy", ["float32", "mixed_float16", "mixed_bfloat16"],
                          "Precision: float32 vs mixed precision",
                          "Current layer, graph mode, Keras dtype policies, interleaved in one process "
                          "(softmax and batch-norm statistics stay float32)."),
        _onednn_section(results),
        _block_section(results),
        _scaling_section(results),
        _model_section(results),
        _training_section(results),
        _resume_section(results),
        _demo_section(),
        _problems(results),
    ]
    pathlib.Path(path).write_text("\n\n".join(sections) + "\n")
