"""BENCHMARKS.md from the suite's results (bench/results.json)."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _f(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render_markdown(r: dict[str, Any]) -> str:
    out = [
        "# Benchmarks",
        "",
        "Written by `python bench/run.py` (add `--quick` for the few-minute version that CI",
        "runs). Every figure is a ratio or a comparison measured side by side in one run:",
        "the machines are shared and noisy, so absolute seconds are context, not claims.",
        "",
        f"Last run: {r.get('when', '?')} on {r.get('machine', '?')}, "
        f"command `{r.get('command', '?')}`"
        + (" (quick mode: small sizes)" if r.get("quick") else "")
        + ". Raw numbers: `bench/results.json`.",
        "",
    ]
    if "privacy" in r:
        out += _privacy(r["privacy"])
    if "export" in r:
        out += _export(r["export"])
    if "federation" in r:
        out += _federation(r["federation"])
    if "overhead" in r:
        out += _overhead(r["overhead"])
    if "deployment" in r:
        out += _deployment(r["deployment"])
    if "robustness" in r:
        out += _robustness(r["robustness"])
    out += [
        "## GPU",
        "",
        "No GPU machine was lent to the session that produced these numbers; the device",
        "check is prepared in `bench/gpu_check.py` (one call: trainer epoch on CUDA with and",
        "without AMP against the CPU) for a session that has one.",
        "",
    ]
    return "\n".join(out)


def _privacy(p: dict[str, Any]) -> list[str]:
    s, e = p["storage"], p["dp_epoch"]
    lines = [
        "## Privacy: encryption at rest and DP-SGD",
        "",
        "`python bench/bench_privacy.py" + (" --quick" if p.get("quick") else "") + "`",
        "",
        f"Encrypted `store.save_state`/`load_state` (AES-256-GCM, chunked, atomic with fsync)"
        f" against plain `torch.save`/`torch.load` of the same {s['state_dict_mb']} MB state"
        " dict; medians of interleaved repeats. `torch.save + fsync` is a plain save made"
        " as durable as ours (temp file, fsync, rename): the part of our cost that is not"
        " encryption.",
        "",
        "| operation | seconds | MB/s | ratio to torch |",
        "| --- | --- | --- | --- |",
    ]
    secs, mbs = s["seconds"], s["mb_per_s"]
    for arm in secs:
        ratio = "1.00"
        if arm.startswith("save_state"):
            backend = arm[arm.index("[") + 1 : -1]
            ratio = (
                f"{s[f'save_ratio[{backend}]']:.2f} (vs durable save: "
                f"{s[f'save_ratio_vs_atomic[{backend}]']:.2f})"
            )
        elif arm.startswith("load_state"):
            backend = arm[arm.index("[") + 1 : -1]
            ratio = f"{s[f'load_ratio[{backend}]']:.2f}"
        elif arm == "torch_save_atomic":
            ratio = f"{secs[arm] / secs['torch_save']:.2f}"
        lines.append(f"| {arm} | {secs[arm]:.3f} | {mbs[arm]:.0f} | {ratio} |")
    lines += [
        "",
        f"Default AES backend: `{s['default_backend']}` (OpenSSL through `cryptography`;"
        " pycryptodome is the fallback). Target: encrypted save at most 1.3 times plain"
        " `torch.save`.",
        "",
        f"One local epoch of the shared trainer, private (Opacus DP-SGD, Poisson sampling)"
        f" against plain, same MLP (128, 64) and data ({e['rows']} rows x {e['features']}"
        f" features, batch {e['batch_size']}, {e['torch_threads']} torch thread). fedsilo"
        " uses Opacus's ghost clipping; the classic hooks mode is shown for comparison.",
        "",
        "| | plain | private (ghost) | private (hooks) | ghost / plain | hooks / plain |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| epoch seconds | {e['epoch_seconds']['plain']:.3f} |"
        f" {e['epoch_seconds']['private']:.3f} | {e['epoch_seconds']['private_hooks']:.3f} |"
        f" **{e['time_ratio']:.2f}** | {e['time_ratio_hooks']:.2f} |",
    ]
    mem = e.get("memory", {})
    if "epoch_peak_extra_ratio" in e:
        extra = {a: mem[a]["peak_extra_mb"] for a in mem}
        peak = {a: mem[a]["process_peak_mb"] for a in mem}
        lines.append(
            f"| memory added by the epoch (MB) | {extra['plain']:.1f} | {extra['private']:.1f} |"
            f" {extra['private_hooks']:.1f} | {e['epoch_peak_extra_ratio']:.2f} |"
            f" {extra['private_hooks'] / max(extra['plain'], 0.1):.2f} |"
        )
        lines.append(
            f"| process peak RSS (MB) | {peak['plain']:.1f} | {peak['private']:.1f} |"
            f" {peak['private_hooks']:.1f} | {e['process_peak_ratio']:.2f} |"
            f" {peak['private_hooks'] / peak['plain']:.2f} |"
        )
    lines += ["", "Target: private epoch at most 2.0 times the plain one.", ""]
    return lines


def _federation(f: dict[str, Any]) -> list[str]:
    c = f["centralized"]
    lines = [
        "## Federated against centralized accuracy (digits)",
        "",
        "`python bench/bench_federation.py" + (" --quick" if f.get("quick") else "") + "`",
        "",
        f"Real `flwr run .` simulations with {f['clients']} silos; every model is scored on"
        " the same held-out 25% split (stratified, seed 0). The centralized baseline trains"
        f" the same model ({c['model']}) with the same trainer on the pooled rest for"
        f" {c['epochs']} epochs.",
        "",
        "| setting | accuracy | balanced acc. | macro-F1 | points below centralized |"
        " rounds (best) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| centralized | {_pct(c['accuracy'])} | {_pct(c['balanced_accuracy'])} |"
        f" {_pct(c['macro_f1'])} | 0 | - |",
    ]
    names = {
        "iid_fedavg": "IID, FedAvg",
        "dirichlet0.3_fedavg": "Dirichlet 0.3, FedAvg",
        "dirichlet0.3_fedprox": "Dirichlet 0.3, FedProx",
        "dirichlet0.3_fedadam": "Dirichlet 0.3, FedAdam (server lr 0.01)",
        "dirichlet0.3_fedadam_eta0.03": "Dirichlet 0.3, FedAdam (server lr 0.03)",
    }
    for key, label in names.items():
        if key in f:
            v = f[key]
            lines.append(
                f"| {label} | {_pct(v['accuracy'])} | {_pct(v['balanced_accuracy'])} |"
                f" {_pct(v['macro_f1'])} | {_f(v['points_below_centralized'])} |"
                f" {v['rounds_completed']} ({v['best_round']}) |"
            )
    t = f.get("timing_10_rounds")
    if t:
        lines += [
            "",
            "Target: IID within 1.5 points of centralized.",
            "",
            f"### Where a {t['rounds_completed']}-round, {t['clients']}-client simulation's"
            " time goes",
            "",
            "| measure | seconds |",
            "| --- | --- |",
            f"| `flwr run .` wall time (SuperLink, Ray start, rounds, export) |"
            f" {t['flwr_run_seconds']:.1f} |",
            f"| ServerApp (statistics query, rounds, export) | {t['server_seconds']:.1f} |",
            f"| rounds | {t['round_seconds_sum']:.1f} |",
            f"| local training, summed over clients and rounds | {t['train_seconds_sum']:.1f} |",
            "",
            f"Ratio of the ServerApp's wall time to summed local training:"
            f" **{t['wall_over_training']:.2f}**; of the whole `flwr run` command:"
            f" {t['flwr_run_over_training']:.2f}.",
            "",
        ]
    return lines


def _export(x: dict[str, Any]) -> list[str]:
    lines = [
        "## int8 export against fp32",
        "",
        "`python bench/bench_export.py" + (" --quick" if x.get("quick") else "") + "`",
        "",
        "Dynamic int8 quantization of the linear layers (the server's export), same model,"
        " same held-out 25% split; CPU latency of one forward pass, median of interleaved"
        f" repeats, {x['torch_threads']} torch thread, engine `{x['engine']}`.",
        "",
        "| model | params | fp32 bytes | int8 bytes | size ratio | accuracy fp32 / int8"
        " | latency ratio batch 1 | latency ratio batch 256 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in x["models"]:
        lines.append(
            f"| {m['model']} | {m['parameters']} | {m['fp32_bytes']} | {m['int8_bytes']} |"
            f" **{m['size_ratio']:.2f}** | {_pct(m['fp32_accuracy'])} /"
            f" {_pct(m['int8_accuracy'])} | {m['latency_ratio_batch1']:.2f} |"
            f" **{m['latency_ratio_batch256']:.2f}** |"
        )
    lines += [
        "",
        "Targets: size ratio at most 0.30, accuracy change at most 1 point, latency ratio at"
        " batch 256 at most 0.6. Dynamic quantization quantizes activations on every call:"
        " for small layers that cost exceeds the int8 matrix product's saving, so int8 is"
        " faster only once layers are wide enough (and at large batches).",
        "",
    ]
    return lines


def _overhead(o: dict[str, Any]) -> list[str]:
    a, b, c = o["fedsilo"], o["plain_flower"], o["sequential"]
    return [
        "## Framework overhead: fedsilo against plain Flower and no Flower",
        "",
        "`python bench/bench_overhead.py" + (" --quick" if o.get("quick") else "") + "`",
        "",
        f"The same federation ({o['clients']} clients, synthetic data, 20 features,"
        f" {o['rows_per_client']} training rows per client, MLP (128, 64), 2 local epochs,"
        f" {o['rounds']} rounds) run (a) by fedsilo via `flwr run .`, (b) by a plain Flower"
        " FedAvg app (`bench/plain_flower`, Flower's `Strategy.start`) with the same trainer,"
        " (c) sequentially in one process without Flower.",
        "",
        "| | (a) fedsilo | (b) plain Flower | (c) no Flower | (a)/(b) | (a)/(c) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| round loop seconds | {a['rounds_seconds']:.1f} | {b['rounds_seconds']:.1f} |"
        f" {c['seconds']:.1f} | **{o['rounds_a_over_b']:.2f}** |"
        f" **{o['rounds_a_over_c']:.2f}** |",
        f"| whole `flwr run` seconds | {a['flwr_run_seconds']:.1f} | {b['flwr_run_seconds']:.1f}"
        f" | - | {o['flwr_run_a_over_b']:.2f} | {o['flwr_run_a_over_c']:.2f} |",
        "",
        "Targets: (a)/(b) at most 1.10, (a)/(c) at most 1.5.",
        "",
    ]


def _deployment(d: dict[str, Any]) -> list[str]:
    peak = d["peak_rss_mib"]
    return [
        "## Deployment load: one SuperLink, many SuperNodes",
        "",
        "`python bench/bench_deployment.py" + (" --quick" if d.get("quick") else "") + "`",
        "",
        f"One TLS SuperLink with SuperNode authentication ({d['superlink_state']} state) and"
        f" {d['nodes']} SuperNodes on loopback, each with its own silo folder, through a"
        f" {d['rounds']}-round {d['dataset']} federation; resident memory sampled over the"
        " run.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| rounds completed | {d['rounds_completed']} |",
        f"| seconds per round (mean / median / max) | {d['round_seconds_mean']:.2f} /"
        f" {d['round_seconds_median']:.2f} / {d['round_seconds_max']:.2f} |",
        f"| peak RSS, SuperLink process (MiB) | {peak['superlink_process']:.0f} |",
        f"| peak RSS, SuperLink and its ServerApp (MiB) | {peak['superlink_tree']:.0f} |",
        f"| peak RSS, largest SuperNode with its ClientApp (MiB) |"
        f" {peak['largest_supernode_tree']:.0f} |",
        f"| peak RSS, all processes (MiB) | {peak['all_processes']:.0f} |",
        f"| final validation accuracy | {_pct(d['final_val_accuracy'])} |",
        "",
    ]


def _robustness(r: dict[str, Any]) -> list[str]:
    acc = r["final_val_accuracy"]
    strategies = list(next(iter(acc.values())))
    lines = [
        "## Robustness: one hostile silo",
        "",
        "`python bench/bench_deployment.py --robustness`",
        "",
        f"{r['silos']} silos on loopback (real SuperNodes), {r['rounds']} rounds of"
        f" {r['dataset']}; one silo sends scaled-up or sign-flipped updates (node-config"
        " `attack`). Final validation accuracy:",
        "",
        "| attack | " + " | ".join(strategies) + " |",
        "| --- | " + " | ".join("---" for _ in strategies) + " |",
    ]
    for attack, row in acc.items():
        lines.append(f"| {attack} | " + " | ".join(_pct(row[s]) for s in strategies) + " |")
    lines += ["", "Target: trimmed-mean or Krum within 2 points of the all-honest run.", ""]
    return lines
