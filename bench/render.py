"""BENCHMARKS.md from the suite's results (bench/results.json)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# A figure in FINDINGS.md: {{suite/key/...|format}}, or the ratio of two figures,
# {{a/b over c/d|format}}; format is a format spec (".2f") or "pct". Missing: "not measured".
PLACEHOLDER = re.compile(r"\{\{\s*([^}|]+?)\s*(?:\|\s*([^}]+?)\s*)?\}\}")
NOT_MEASURED = "(not measured)"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _f(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _command(suite: str, r: dict[str, Any]) -> str:
    quick = " --quick" if r.get("quick") else ""
    when = f" (measured {r['when']})" if r.get("when") else ""
    command = r.get("command") or f"python bench/run.py --only {suite}{quick}"
    return f"`{command}`{when}"


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
        + ". Raw numbers: `bench/results.json`. A run of some suites (`--only`) keeps the"
        " others' last results; each section names when it was measured.",
        "",
    ]
    sections = {
        "privacy": _privacy,
        "export": _export,
        "federation": _federation,
        "dp_accuracy": _dp_accuracy,
        "accounting": _accounting,
        "overhead": _overhead,
        "scale": _scale,
        "personalization": _personalization,
        "deployment": _deployment,
        "robustness": _robustness,
    }
    for name, section in sections.items():
        if name in r:
            out += section(r[name])
    if "deployment" not in r or "robustness" not in r:
        out += [
            "## Deployment load and robustness",
            "",
            "Real SuperLink and SuperNode processes on loopback, outside this suite (they"
            " take long): `python bench/bench_deployment.py` (load) and"
            " `python bench/bench_deployment.py --robustness`. Their last figures are in"
            " [docs/deployment.md](docs/deployment.md).",
            "",
        ]
    findings = Path(__file__).with_name("FINDINGS.md")
    if findings.exists():
        current = {k: v for k, v in r.items() if k != "federation" or _current_rule(v)}
        out += [fill(findings.read_text().rstrip(), current), ""]
    out += _gpu(r.get("gpu"))
    return "\n".join(out)


def fill(text: str, r: dict[str, Any]) -> str:
    """Replace every {{path|format}} placeholder with that figure from the results."""

    def figure(path: str) -> Any:
        value: Any = r
        for key in path.strip().split("/"):
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    def one(match: re.Match[str]) -> str:
        spec = match.group(2) or "g"
        parts = match.group(1).split(" over ")
        values = [figure(p) for p in parts]
        if any(v is None for v in values) or (len(values) == 2 and not values[1]):
            return NOT_MEASURED
        value = values[0] / values[1] if len(values) == 2 else values[0]
        return _pct(value) if spec == "pct" else format(value, spec)

    return PLACEHOLDER.sub(one, text)


def _gpu(g: dict[str, Any] | None) -> list[str]:
    lines = ["## GPU", ""]
    if not g:
        return [
            *lines,
            "Not measured: `bench/results.json` holds no GPU measurement. The check is"
            " ready: `python bench/gpu_check.py` times one local epoch of the shared trainer"
            " on a model large enough to matter, on CUDA with AMP on and off, against the"
            " CPU, and checks that the trainer picked CUDA and ran autocast.",
            "",
        ]
    lines += [f"`python bench/gpu_check.py` (measured {g.get('when', '?')})", ""]
    lines += ["| measure | value |", "| --- | --- |"]
    for key, value in g.items():
        if key == "when":
            continue
        if isinstance(value, dict):  # an arm: the device and AMP it ran with, its epoch
            lines += [f"| {key}: {k} | {v} |" for k, v in value.items()]
        elif not isinstance(value, list):
            lines.append(f"| {key} | {value} |")
    return [*lines, ""]


def _privacy(p: dict[str, Any]) -> list[str]:
    storages = p.get("storages") or [p["storage"]]
    lines = [
        "## Privacy: encryption at rest and DP-SGD",
        "",
        _command("privacy", p),
        "",
        "Encrypted `store.save_state`/`load_state` (AES-256-GCM, chunked, atomic with fsync)"
        " against plain `torch.save`/`torch.load` of the same state dict; medians of"
        " interleaved repeats. `torch.save + fsync` is a plain save made as durable as ours"
        " (temp file, fsync, rename): the part of our cost that is not encryption.",
    ]
    for s in storages:
        lines += _storage(s)
    s = storages[-1]
    lines += [
        "",
        f"Default AES backend: `{s['default_backend']}` (OpenSSL through `cryptography`;"
        " pycryptodome is the fallback). Target: encrypted save at most 1.3 times plain"
        " `torch.save`.",
        "",
        "Local training through the shared trainer, private (DP-SGD, Poisson sampling)"
        " against plain, in each `grad_sample_mode`, side by side in one run. fedsilo uses"
        " book-keeping clipping (one backward pass; per-example norms and the clipped sum"
        " from each layer's inputs and output gradients; Opacus adds the noise and counts"
        " the steps); Opacus's ghost clipping takes a second backward pass; hooks,"
        " functorch and expanded weights materialize per-sample gradients. Memory: in a"
        " fresh process per arm.",
    ]
    for model, e in p["dp_epoch"].items():
        lines += _dp_epoch(model, e)
    lines += ["", "Target: private epoch at most 2.0 times the plain one, on both models.", ""]
    return lines


def _dp_epoch(model: str, e: dict[str, Any]) -> list[str]:
    data = (
        f"MLP {tuple(e['layers'])}, {e['rows']} synthetic rows x {e['features']} features"
        if model == "mlp"
        else f"digits CNN, channels {tuple(e['layers'])}, {e['rows']} digits rows (8x8)"
    )
    epochs = f"{e['epochs']} epoch" + ("s" if e["epochs"] != 1 else "")
    lines = [
        "",
        f"{data}, batch {e['batch_size']}, {epochs}, {e['torch_threads']} torch thread:",
        "",
        "| arm | seconds | time / plain | memory added (MB) | process peak RSS (MB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    labels = {
        "plain": "plain",
        "private": "DP, book-keeping (fedsilo)",
        "private_ghost": "DP, Opacus ghost",
        "private_hooks": "DP, hooks",
        "private_functorch": "DP, functorch",
        "private_ew": "DP, expanded weights",
    }
    secs, mem = e["epoch_seconds"], e.get("memory", {})
    for arm, seconds in secs.items():
        m = mem.get(arm, {})
        ratio = seconds / secs["plain"]
        lines.append(
            f"| {labels.get(arm, arm)} | {seconds:.3f} |"
            + (f" **{ratio:.2f}** |" if arm == "private" else f" {ratio:.2f} |")
            + f" {_f(m.get('peak_extra_mb'), '.1f')} | {_f(m.get('process_peak_mb'), '.1f')} |"
        )
    for arm, why in (e.get("failed_modes") or {}).items():
        lines.append(f"| {labels.get(arm, arm)} | does not run on this model: {why} | | | |")
    return lines


def _storage(s: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"{s['state_dict_mb']} MB state dict:",
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
                f"**{s[f'save_ratio[{backend}]']:.2f}** (vs durable save: "
                f"{s[f'save_ratio_vs_atomic[{backend}]']:.2f})"
            )
        elif arm.startswith("load_state"):
            backend = arm[arm.index("[") + 1 : -1]
            ratio = f"{s[f'load_ratio[{backend}]']:.2f}"
        elif arm == "torch_save_atomic":
            ratio = f"{secs[arm] / secs['torch_save']:.2f}"
        lines.append(f"| {arm} | {secs[arm]:.3f} | {mbs[arm]:.0f} | {ratio} |")
    return lines


FEDERATION_PARTS = {"iid": "IID", "dirichlet0.3": "Dirichlet 0.3", "dirichlet0.1": "Dirichlet 0.1"}
FEDERATION_STRATEGIES = {
    "fedavg": "FedAvg",
    "fedprox": "FedProx (mu 0.01)",
    "fedadam": "FedAdam (server lr 0.03)",
    "fedadam_eta0.01": "FedAdam (server lr 0.01)",
}


def _current_rule(f: dict[str, Any]) -> bool:
    """Results made with held-out test rows (older ones scored the picking split)."""
    return "test_fraction" in f


def _federation(f: dict[str, Any]) -> list[str]:
    if not _current_rule(f):
        return [
            "## Federated against centralized accuracy",
            "",
            "Not measured under the current rule (a best round picked on validation rows and"
            " scored on test rows that nothing chose on): run"
            " `python bench/run.py --only federation`.",
            "",
        ]
    c = f["centralized"]
    planned, done = f.get("arms_planned", []), f.get("arms_done", [])
    lines = [
        "## Federated against centralized accuracy",
        "",
        _command("federation", f),
        "",
        f"Digits, split once (stratified, seed {f['test_seed']}): {_share(f['test_fraction'])}"
        f" of the rows ({c['test_rows']}) are test rows that no run sees and no choice"
        " uses. The rest goes to a data file the federations run on: the server holds out"
        f" {_share(f['server_val_fraction'])} of it ({c['val_rows']} rows) as its"
        " validation split and keeps the round with the lowest validation loss; the"
        f" {f['clients']} simulated silos (real `flwr run .`) partition the remainder. The"
        f" centralized baseline trains the same model ({c['model']}) with the same trainer"
        f" on that remainder ({c['train_rows']} rows; each silo keeps part of its share as"
        " local validation rows, so the silos together train on fewer) for"
        f" {c['epochs']} epochs and keeps the"
        " epoch with the lowest loss on the same validation split. Each kept model is scored"
        " once on the test rows; points below centralized compare test accuracies only.",
        "",
        "| setting | validation accuracy (picks the round) | round kept (of run) |"
        " test accuracy | test balanced acc. | test macro-F1 |"
        " points below centralized (test) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| centralized | {_pct(c['val_accuracy'])} | epoch {c['best_epoch']} (of"
        f" {c['epochs']}) | {_pct(c['accuracy'])} | {_pct(c['balanced_accuracy'])} |"
        f" {_pct(c['macro_f1'])} | 0 |",
    ]
    for part, part_label in FEDERATION_PARTS.items():
        for arm, arm_label in FEDERATION_STRATEGIES.items():
            v = f.get(f"{part}_{arm}")
            if v is None:
                continue
            lines.append(
                f"| {part_label}, {arm_label} | {_pct(v['val_accuracy'])} |"
                f" {v['best_round']} ({v['rounds_completed']}) | {_pct(v['accuracy'])} |"
                f" {_pct(v['balanced_accuracy'])} | {_pct(v['macro_f1'])} |"
                f" {_f(v['points_below_centralized'])} |"
            )
    lines += ["", "Target: IID within 1.5 points of centralized (test accuracy).", ""]
    carried = f.get("arms_carried", [])
    if carried:
        lines += [
            "Measured by an earlier run of the same split, silos and settings, whose"
            " centralized baseline came out identical to this run's (a federated arm"
            " need not repeat exactly; a full run carries nothing): "
            + ", ".join(f"`{a}` ({f[a].get('measured', 'time not recorded')})" for a in carried)
            + ".",
            "",
        ]
    missing = [a for a in planned if a not in done]
    if missing:
        lines += [
            "This run stopped before it finished; arms not measured: "
            + ", ".join(f"`{a}`" for a in missing)
            + ".",
            "",
        ]
    return lines


def _share(x: float) -> str:
    return f"{100 * x:g}%"


def _dp_accuracy(d: dict[str, Any]) -> list[str]:
    lines = [
        "## Accuracy at a fixed epsilon",
        "",
        _command("dp_accuracy", d),
        "",
        "The same federation without DP and with Opacus DP-SGD in every silo at each target"
        f" epsilon (delta {d['delta']:g}), real `flwr run .` simulations whose run config"
        " names only the data, the silos and, for the private arms, `dp = true` and"
        " `target-epsilon`: everything else is fedsilo's default, so the private arms train"
        " with the DP recipe and the other with the plain one (columns below). Each data set"
        " is split once as in the federation section: test rows nothing chose on, the"
        " server's validation rows that pick the round, the rest IID over the silos. Each"
        " budget runs on silos of its own (a silo's ledger remembers what it spent).",
        "",
        "| data | silos | setting | local training | validation accuracy (picks the round) |"
        " round kept (of run) | test accuracy | points below no DP (test) |"
        " epsilon spent (max over silos) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("synthetic", "digits"):
        g = d.get(name)
        if g is None:
            continue
        data = f"{name} ({g['rows']:,} rows)"
        keys = ["no_dp", *(f"dp_eps{b:g}" for b in d["budgets"])]
        for key in keys:
            v = g.get(key)
            if v is None:
                continue
            s = v.get("settings", {})
            training = (
                f"{s.get('optimizer')}, lr {s.get('learning-rate')}, batch {s.get('batch-size')},"
                f" {s.get('local-epochs')} epoch(s); {s.get('model')}"
            )
            setting = "no DP" if key == "no_dp" else f"DP epsilon {key[6:]}"
            below = "0" if key == "no_dp" else f"**{_f(v['points_below_no_dp'])}**"
            spent = "-" if key == "no_dp" else _f(v["epsilon_max"])
            lines.append(
                f"| {data} | {g['clients']} | {setting} | {training} |"
                f" {_pct(v['val_accuracy'])} | {v['best_round']} ({v['rounds_completed']}) |"
                f" {_pct(v['accuracy'])} | {below} | {spent} |"
            )
    lines += [
        "",
        "Targets (synthetic, default settings): epsilon 8 within 3 points of no DP,"
        " epsilon 3 within 4 points.",
        "",
    ]
    return lines


def _accounting(a: dict[str, Any]) -> list[str]:
    lines = [
        "## Privacy accounting: RDP and PRV against an independent PLD",
        "",
        _command("accounting", a),
        "",
        f"Epsilon at delta {a['delta']:g} of DP-SGD histories like fedsilo's runs make"
        f" ({a['rounds']} rounds of the DP recipe: one local epoch in Poisson batches of"
        f" {a['batch_size']}, noise calibrated by PRV to the target), by Opacus's RDP"
        " accountant, by its PRV accountant (a silo's default; fedsilo asks it for an"
        f" upper estimate within {a['prv_eps_error']:g}) and by Google's dp_accounting PLD"
        " accountant, an independent computation of the same privacy loss distribution."
        " Seconds: median time of one evaluation.",
        "",
        "| history (sigma, q, steps) | RDP | PRV | PLD (dp_accounting) | PRV / PLD |"
        " RDP / PLD | seconds RDP / PRV / PLD |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, h in a["histories"].items():
        e, s = h["epsilon"], h["seconds"]
        events = "; ".join(f"{sig:.3f}, {q:.4g}, {n}" for sig, q, n in h["history"])
        lines.append(
            f"| {name} ({events}) | {e['rdp']:.3f} | {e['prv']:.3f} | {e['pld']:.3f} |"
            f" **{h['prv_over_pld']:.3f}** | {h['rdp_over_pld']:.3f} |"
            f" {s['rdp']:.3f} / {s['prv']:.3f} / {s['pld']:.3f} |"
        )
    lines += [
        "",
        "Noise each accountant needs for the same target over the same run (less noise,"
        " the same guarantee):",
        "",
        "| run | sample rate | steps | sigma by RDP | sigma by PRV | PRV / RDP |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, n in a["noise"].items():
        lines.append(
            f"| {name} | {n['sample_rate']:.4g} | {n['steps']} | {n['sigma']['rdp']:.3f} |"
            f" {n['sigma']['prv']:.3f} | **{n['prv_over_rdp']:.3f}** |"
        )
    lines += [
        "",
        "Checks (tests/privacy/test_accountants.py, in CI): PRV's epsilon is never below"
        " the PLD figure by more than its stated error and at most 2% above it.",
        "",
    ]
    return lines


def _export(x: dict[str, Any]) -> list[str]:
    lines = [
        "## int8 export against fp32",
        "",
        _command("export", x),
        "",
        "The server's export: static int8 (FX graph mode, x86 backend, per-tensor weight"
        " scales) calibrated on at most 300 validation rows (20% of the training rows),"
        " dynamic int8 of the linear layers where static quantization fails (the method"
        " column says which). Accuracy on the same held-out 25% test split, which neither"
        " training nor calibration sees. int8 bytes are the packed payload the export file"
        " stores; in brackets the same model as a plain quantized state dict. CPU latency"
        " of one forward pass, median of interleaved repeats,"
        f" {x['torch_threads']} torch thread, engine `{x['engine']}`.",
        "",
        "| model | params | method | fp32 bytes | int8 bytes (plain) | size ratio"
        " | accuracy fp32 / int8 (points) | latency ratio batch 1 | latency ratio batch 256"
        " | targets |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    skipped = []
    for m in x["models"]:
        if "skipped" in m:
            skipped.append(f"{m['model']}: not measured, {m['skipped']}.")
            continue
        method = m.get("int8_method", "dynamic")
        if m.get("int8_fallback_reason"):
            method += f" ({m['int8_fallback_reason']})"
        lines.append(
            f"| {m['model']} | {m['parameters']} | {method} | {m['fp32_bytes']} |"
            f" {m['int8_bytes']} ({m.get('int8_unpacked_bytes', '-')}) |"
            f" **{m['size_ratio']:.2f}** | {_pct(m['fp32_accuracy'])} /"
            f" {_pct(m['int8_accuracy'])} ({m['accuracy_change_points']:+.2f}) |"
            f" {m['latency_ratio_batch1']:.2f} | **{m['latency_ratio_batch256']:.2f}** |"
            f" {_export_targets(m)} |"
        )
    lines += [
        "",
        *skipped,
        "",
        "Targets per model (last column: each met or missed): size ratio, accuracy change"
        " at most 1 point either way, and for models large enough to gain from int8"
        " kernels the latency ratio at batch 256. The digits CNN keeps its GroupNorm"
        " layers in fp32 (the x86 backend quantizes none in FX mode), so its activations"
        " are dequantized and quantized again around each of them.",
        "",
    ]
    return lines


def _export_targets(m: dict[str, Any]) -> str:
    targets = m.get("targets") or {}
    found = {
        "size_ratio": m["size_ratio"],
        "accuracy_points": abs(m["accuracy_change_points"]),
        "latency_ratio_batch256": m["latency_ratio_batch256"],
    }
    names = {
        "size_ratio": "size",
        "accuracy_points": "accuracy",
        "latency_ratio_batch256": "latency",
    }
    parts = [
        f"{names[k]} <= {limit:g} {'met' if found[k] <= limit else 'MISSED'}"
        for k, limit in targets.items()
    ]
    return ", ".join(parts) or "-"


def _personalization(x: dict[str, Any]) -> list[str]:
    names = {
        "fedavg": "FedAvg (one global model)",
        "fedper": 'FedPer (`local-layers = "head.*"`)',
        "fedbn": 'FedBN (`personalization = "fedbn"`)',
        "transfer": 'transfer (FedAvg\'s best model, `freeze = "features.*"`)',
    }
    lines = [
        "## Personalization under label skew",
        "",
        _command("personalization", x),
        "",
        f"Digits in {x['clients']} silos, Dirichlet label skew (alpha"
        f" {x['dirichlet_alpha']:g}), the built-in CNN, {x['rounds']} rounds at most, federated"
        " validation in every arm. Mean over silos of each silo's accuracy: the personalized"
        " models in FedPer and FedBN, the one global model in FedAvg; the global model of a"
        " personalized run (shared layers, initial local ones) alongside.",
        "",
        "Each silo takes its test rows out (`silo-test-fraction ="
        f" {x['silo_test_fraction']:g}`) before its train/validation split. The"
        " run picks its round on the validation rows (lowest pooled validation loss);"
        " when it has ended the server sends the model of that round once to the silos,"
        " which score it on their test rows (a personalized model with its local layers"
        " of that round). The test columns are those held-out figures, and"
        " points above FedAvg compare them; the validation column is the rows that"
        " picked the round, shown for comparison.",
        "",
        "| arm | picked round | silos' mean accuracy (test) | points above FedAvg"
        " (test) | pooled accuracy (test) | global model's mean accuracy (test) |"
        " silos' mean accuracy (validation) | array bytes per round |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm in x["arms"]:
        a = x[arm]
        lines.append(
            f"| {names[arm]} | {a['best_round']} | **{_pct(a['mean_accuracy'])}** |"
            f" {_f(a.get('points_above_fedavg'))} | {_pct(a['pooled_accuracy'])} |"
            f" {_pct(a.get('global_mean_accuracy'))} | {_pct(a.get('val_mean_accuracy'))}"
            f" | {a['bytes_per_round']} |"
        )
    left = {arm: x[arm]["test_left_out"] for arm in x["arms"] if x[arm].get("test_left_out")}
    for arm, silos in left.items():
        named = "; ".join(f"{k}: {v}" for k, v in silos.items())
        lines += ["", f"Left out of {arm}'s test: {named}"]
    params = x["shared_parameters"]
    lines += [
        "",
        f"Target: personalized at least 2 points above FedAvg. Freezing the convolutions"
        f" sends {params['head']} of the CNN's {params['all']} parameters: the arrays of a"
        f" round (to the silos and back) weigh **{x['freeze_bytes_ratio']:.3f}** times"
        " FedAvg's.",
        "",
    ]
    return lines


def _overhead(o: dict[str, Any]) -> list[str]:
    a, b, c = o["fedsilo"], o["plain_flower"], o["sequential"]
    return [
        "## Framework overhead: fedsilo against plain Flower and no Flower",
        "",
        _command("overhead", o),
        "",
        f"The same federation ({o['clients']} clients, synthetic data, 20 features,"
        f" {o['rows_per_client']} training rows per client, MLP (128, 64), 2 local epochs,"
        f" {o['rounds']} rounds) run (a) by fedsilo via `flwr run .`, (b) by a plain Flower"
        " FedAvg app (`bench/plain_flower`, Flower's `Strategy.start`) with the same trainer,"
        " (c) sequentially in one process without Flower. (a) and (b) run on the same"
        " local SuperLink, started before either; both use Flower's default client"
        " resources (one CPU per simulated client, so two train at once here).",
        "",
        "| | (a) fedsilo | (b) plain Flower | (c) no Flower |",
        "| --- | --- | --- | --- |",
        f"| whole `flwr run` command | {a['flwr_run_seconds']:.1f} |"
        f" {b['flwr_run_seconds']:.1f} | - |",
        f"| outside the ServerApp's main (CLI, app bundle, SuperExec, process start,"
        f" imports, Ray shutdown) | {a['outside_server_seconds']:.1f} |"
        f" {b['outside_server_seconds']:.1f} | - |",
        f"| ServerApp main | {a['server_seconds']:.1f} | {b['server_seconds']:.1f} | - |",
        f"| of which set-up (statistics query; Ray workers start) | {a['setup_seconds']:.1f}"
        " | (in round 1) | - |",
        f"| of which rounds | {a['rounds_seconds']:.1f} | - | {c['seconds']:.1f} |",
        f"| of which end (export) | {a['finish_seconds']:.1f} | - | - |",
        f"| local training inside the rounds (summed) | {a['train_seconds']:.1f} | - |"
        f" {c['train_seconds']:.1f} |",
        "",
        "| ratio | value | target |",
        "| --- | --- | --- |",
        f"| (a)/(b), whole `flwr run` | **{o['flwr_run_a_over_b']:.2f}** | 1.10 |",
        f"| (a)/(b), ServerApp main | {o['server_a_over_b']:.2f} | |",
        f"| (a)/(c), rounds against sequential training | **{o['rounds_a_over_c']:.2f}** | 1.5 |",
        f"| (a)/(c), whole `flwr run` against sequential training |"
        f" {o['flwr_run_a_over_c']:.2f} | |",
        *_checks(o),
        "",
        *_tuning(o),
    ]


def _checks(o: dict[str, Any]) -> list[str]:
    """The reply checks' share of round time (timed in the same rounds); absent from
    results of a run made before the rounds timed them."""
    if "checks_share_of_rounds" not in o:
        return []
    a = o["fedsilo"]
    return [
        f"| reply checks (parsing and checking every reply: {a['checks_seconds']:.4f} s)"
        f" against the rounds' time ({a['round_seconds']:.1f} s) |"
        f" **{100 * o['checks_share_of_rounds']:.3f}%** | 2% |",
    ]


def _tuning(o: dict[str, Any]) -> list[str]:
    tuning = o.get("tuning") or {}
    if not tuning:
        return []
    labels = {
        "client_cpus_2": "two CPUs per simulated client (1 at once)",
        "sqlite_superlink": "SuperLink state in SQLite (`flwr run`'s default)",
    }
    a = o["fedsilo"]
    lines = [
        "What Flower lets us tune, each tried on (a):",
        "",
        "| setting | whole `flwr run` | rounds | relative to the chosen setting (rounds) |",
        "| --- | --- | --- | --- |",
        f"| chosen: one CPU per client, state in memory | {a['flwr_run_seconds']:.1f} |"
        f" {a['rounds_seconds']:.1f} | 1.00 |",
    ]
    for key, v in tuning.items():
        lines.append(
            f"| {labels.get(key, key)} | {v['flwr_run_seconds']:.1f} | {v['rounds_seconds']:.1f}"
            f" | {v['rounds_seconds'] / a['rounds_seconds']:.2f} |"
        )
    return [*lines, ""]


def _scale(g: dict[str, Any]) -> list[str]:
    lines = [
        "## Growth: more clients, more rows",
        "",
        _command("scale", g),
        "",
        f"Real `flwr run .` simulations, synthetic data with {g['features']} features, MLP"
        f" (128, 64), 1 local epoch. Clients: {g['sampled']} sampled per round out of N, 500"
        " training rows each, server validation held at 2,000 rows. Per-round seconds are"
        " the mean over the rounds after the first. Memory: peak of the summed resident"
        " memory of the SuperLink and every process under it (ServerApp, Ray, its workers);"
        " summing counts shared library pages once per process, so it overstates.",
        "",
        "| clients (N) | sampled | seconds per round | training in it (summed) |"
        " set-up seconds (statistics from all N) | peak memory (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n, v in g["clients"].items():
        lines.append(
            f"| {n} | {v['sampled_per_round']} | {v['round_seconds']:.2f} |"
            f" {v['train_seconds_per_round']:.2f} | {v['setup_seconds']:.1f} |"
            f" {v['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"Per-round time from the smallest to the largest federation:"
        f" **{g['round_seconds_growth']:.2f}x** (target at most 1.5); peak memory"
        f" {g['peak_rss_mib_max'] / 1024:.2f} GiB (target at most 8 GB).",
        "",
    ]
    plain = g.get("plain_flower")
    if plain:
        sizes = list(plain)
        lines += [
            "The plain Flower app (same sampling, same trainer, no fedsilo) over the same"
            " growth: seconds per round "
            + ", ".join(f"{plain[n]['round_seconds']:.2f} at N = {n}" for n in sizes)
            + f", so **{g['plain_round_seconds_growth']:.2f}x**.",
            "",
        ]
    lines += [
        "| training rows per client | seconds per round | training in it (summed) |",
        "| --- | --- | --- |",
    ]
    for r, v in g["rows"].items():
        lines.append(
            f"| {int(r):,} | {v['round_seconds']:.2f} | {v['train_seconds_per_round']:.2f} |"
        )
    lines += [
        "",
        f"{g['rows_growth']:.0f}x the rows: round time {g['round_seconds_rows_growth']:.1f}x,"
        f" training time {g['train_seconds_rows_growth']:.1f}x (4 clients, all sampled).",
        "",
    ]
    return lines


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
