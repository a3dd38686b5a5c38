"""Honest pooling, grid axes for every task, plot names and the sweep report page, on tiny fake
sweep folders (records as runs write them; no training)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT

from analysis.__main__ import main as analysis_main
from analysis.collate import load_runs
from analysis.pooling import PoolError, pools
from analysis.tables import exponent_table, grid, to_markdown

P = 11


def config(**over) -> dict:
    """A run's config.yaml as a run writes it (the default modular run), with dotted overrides."""
    cfg = {"task": {"name": "poly", "op": "x2+xy+y2"},
           "model": {"name": "nanda", "d_model": 32, "d_mlp": 64},
           "optimizer": {"name": "adamw", "lr": 0.003, "betas": [0.9, 0.98], "weight_decay": 1.0},
           "logger": {"name": "none"}, "measures": {"every": 1},
           "op": "x+y", "p": P, "frac": 0.4, "seed": 0,
           "train": {"steps": 100, "eval_every": 10, "device": "cpu", "threads": None},
           "grok": {"threshold": 0.99}, "sweep_id": "s"}
    for key, value in over.items():
        node, *path = key.split("__")
        target = cfg
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value
    return cfg


def make_run(root: Path, name: str, cfg: dict, verdict="grokked", grok_step=60, acc=1.0,
             task_summary=None, weights=True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    task = task_summary or {"task": cfg["task"]["name"], "task_desc": f"{cfg['op']} mod {cfg['p']}",
                            "op": cfg["op"], "op_pretty": cfg["op"], "p": cfg["p"], "frac": cfg["frac"]}
    grokked = verdict == "grokked"
    (d / "summary.json").write_text(json.dumps({
        "status": "complete", "verdict": verdict, "memorisation_step": 20 if grokked else None,
        "grok_step": grok_step if grokked else None, "best_test_acc": acc, "final_test_acc": acc,
        "steps": cfg["train"]["steps"], "wall_time_s": 1.0, "seed": cfg["seed"],
        "model": cfg["model"]["name"], "optimizer": cfg["optimizer"]["name"], "n_train": 48,
        "sweep_id": "s", **task}))
    rows = []
    for step in range(0, 101, 10):
        test = acc if grokked and step >= grok_step else 0.1
        row = {"step": step, "train_loss": 1 / (1 + step), "train_acc": min(1.0, step / 20),
               "test_loss": 2.0, "test_acc": test, "gini_embed": step / 200,
               "weight_sq_total": 100 - step / 2}
        if task_summary:  # a multi-token task: per-position losses
            row.update({f"test_loss/digit{k}": 2.0 / (1 + k + step / 10) for k in range(3)})
        rows.append(json.dumps(row))
    (d / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    if weights:
        g = torch.Generator().manual_seed(cfg["seed"])
        model = {"W_E": torch.randn(P + 1, 32, generator=g), "W_out": torch.randn(64, 32, generator=g),
                 "W_U": torch.randn(32, P, generator=g)}
        torch.save({"format": 2, "model": model, "done": True}, d / "checkpoint.pt")
    return d


def make_sweep(root, fracs=(0.3, 0.5)):
    for op in ("x+y", "x^2+y^2"):
        for frac in fracs:
            for seed in (0, 1):
                ok = op == "x+y" or frac == 0.5
                make_run(root, f"op={op.replace('^', '')},frac={frac},seed={seed}",
                         config(op=op, frac=frac, seed=seed),
                         verdict="grokked" if ok else "did not generalise",
                         acc=1.0 if ok else 0.3 + 0.1 * seed)
    return root


@pytest.fixture
def sweep(tmp_path):
    """2 ops x 2 fracs x 2 seeds of one config: every cell pools 2 seeds."""
    return make_sweep(tmp_path / "sweep")


@pytest.fixture
def small(tmp_path):
    """2 ops at frac 0.3 x 2 seeds: x+y grokked, x^2+y^2 did not (what plots and pages draw)."""
    return make_sweep(tmp_path / "small", fracs=(0.3,))


# -- B: honest pooling ----------------------------------------------------------------------

def test_runs_that_differ_in_more_than_the_seed_are_never_pooled_into_one_cell(sweep):
    # One x+y run at frac 0.3 with another lr, one with another d_model, one with more steps: each
    # would be a third "seed" of the x+y, 0.3 cell if pooling went by the axes alone.
    make_run(sweep, "lr", config(seed=2, frac=0.3, optimizer__lr=0.01), verdict="did not generalise", acc=.2)
    make_run(sweep, "dm", config(seed=3, frac=0.3, model__d_model=64), verdict="did not generalise", acc=.2)
    make_run(sweep, "st", config(seed=4, frac=0.3, train__steps=500), verdict="did not generalise", acc=.2)
    runs, problems = load_runs(sweep)
    assert problems == [] and len(runs) == 11
    parts = pools(runs)
    labels = [label for label, _ in parts]
    assert len(parts) == 4
    assert any("optimizer.lr=0.01" in label for label in labels)
    assert any("model.d_model=64" in label for label in labels)
    assert any("train.steps=500" in label for label in labels)
    main = max(parts, key=lambda x: len(x[1]))[1]
    assert len(main) == 8 and set(main.seed) == {0, 1}
    assert grid(main).loc["0.3", ("elementary", "x+y")] == "✓ 2/2"   # not "✓ 2/5"
    for label, part in parts:
        for (frac, op), cell in part.groupby(["frac", "op"]):
            configs = {json.dumps({k: v for k, v in c.items() if k != "seed"}, sort_keys=True, default=str)
                       for c in cell.config}
            assert len(configs) == 1, (label, frac, op)   # a cell holds one config, seeds apart


def test_keys_that_cannot_change_a_result_do_not_split_a_pool(sweep):
    make_run(sweep, "elsewhere", config(seed=5, frac=0.3, train__device="cuda", train__threads=4,
                                        logger={"name": "wandb"}, sweep_id="other"))
    runs, _ = load_runs(sweep)
    [(label, part)] = pools(runs)
    assert label == "" and len(part) == 9


def test_cli_grid_writes_one_table_per_config_and_says_why(sweep, tmp_path, capsys):
    make_run(sweep, "lr", config(seed=2, frac=0.3, optimizer__lr=0.01), verdict="did not generalise", acc=.2)
    analysis_main(["grid", str(sweep), "--out", str(tmp_path / "a")])
    out = capsys.readouterr().out
    assert "never pooled into one cell" in out and "optimizer.lr=0.01" in out
    assert len(list((tmp_path / "a").glob("grid_*.csv"))) == 2
    assert "✓ 2/2" in out and "✓ 2/3" not in out


def test_exponent_table_keeps_each_frac_and_config_in_its_own_row(sweep):
    make_run(sweep, "lr", config(seed=2, frac=0.5, op="x^2+y^2", optimizer__lr=0.01),
             verdict="did not generalise", acc=.2)
    runs, _ = load_runs(sweep)
    t = exponent_table(runs)
    sq = t[(t.a == 2) & (t.b == 2)]
    assert sorted(sq.frac) == [0.3, 0.5, 0.5]                   # one row per frac, and per config
    assert set(sq.config) >= {"optimizer.lr=0.01"}
    assert list(sq[sq.frac == 0.3].grokked) == ["0/2"]
    assert sorted(sq[sq.frac == 0.5].grokked) == ["0/1", "2/2"]


# -- C: every task, any key on the axes -----------------------------------------------------

def other_task(root, name, seed, n_train=64, lr=0.003, verdict="did not generalise"):
    cfg = config(seed=seed, optimizer__lr=lr, op=None)
    cfg["task"] = {"name": name, "n_train": n_train, "n_digits": 3}
    return make_run(root, f"{name}_{seed}_{lr}", cfg, verdict=verdict, acc=0.4,
                    task_summary={"task": name, "task_desc": f"{name} task"}, weights=False)


def test_other_tasks_are_counted_and_can_be_rows_or_columns(tmp_path, capsys):
    root = tmp_path / "tasks"
    for seed in (0, 1):
        other_task(root, "digits_add", seed)
        other_task(root, "sort", seed, verdict="grokked")
        other_task(root, "sort", seed, lr=0.01, verdict="grokked")
    make_run(root, "mod", config(seed=0))
    runs, problems = load_runs(root)
    assert problems == [] and len(runs) == 7                      # no "incomplete summary (no op)"
    assert runs[runs.task == "sort"].op.isna().all() and runs[runs.task == "sort"].frac.isna().all()
    analysis_main(["grid", str(root), "--rows", "task", "--cols", "optimizer.lr",
                   "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    table = grid(runs[runs.task != "poly"], rows="task", cols="optimizer.lr")
    assert table.loc["sort", "0.01"] == "✓ 2/2" and table.loc["digits_add", "0.003"] == "40±0%"
    assert "digits_add" in out and "sort" in out and "| task \\ optimizer.lr |" in out.replace("  ", " ")
    md = to_markdown(grid(runs[runs.task != "poly"], rows="optimizer.lr", cols="task"))
    assert "digits_add" in md.splitlines()[0]
    with pytest.raises(PoolError, match="no_such_key"):
        grid(runs, rows="no_such_key", cols="task")


def test_plots_of_another_task_are_named_by_its_run_and_draw_per_position_losses(tmp_path, capsys,
                                                                                 monkeypatch):
    import matplotlib.figure

    root = tmp_path / "t"
    other_task(root, "digits_add", 0)
    labels = []
    real = matplotlib.figure.Figure.savefig

    def spy(fig, *a, **k):
        labels.extend(line.get_label() for ax in fig.axes for line in ax.get_lines())
        return real(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    analysis_main(["plots", str(root), "--out", str(tmp_path / "p")])
    [png] = (tmp_path / "p").iterdir()
    assert re.fullmatch(r"run_digits_add_digits_add_0_0\.003_s0-[0-9a-f]{6}\.png", png.name)
    assert {"loss/digit0", "loss/digit1", "loss/digit2"} <= set(labels)


def test_op_axis_names_other_tasks_by_their_task(tmp_path):
    root = tmp_path / "t"
    other_task(root, "gcd", 0)
    runs, _ = load_runs(root)
    table = grid(runs)
    assert list(table.columns) == [("other tasks", "gcd")] and list(table.index) == ["(unset)"]


def test_cli_grid_rejects_an_unknown_axis_in_one_line(sweep):
    r = subprocess.run([sys.executable, "-m", "analysis", "grid", str(sweep), "--rows", "nope"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: no run has config key")


# -- A: plots and the report --------------------------------------------------------------------

@pytest.mark.slow
def test_plot_files_are_named_by_op_frac_seed_and_never_collide_across_sweeps(small, tmp_path, capsys):
    other = tmp_path / "copy" / small.name
    shutil.copytree(small, other)
    out = tmp_path / "plots"
    analysis_main(["plots", str(small), "--out", str(out)])
    first = sorted(p.name for p in out.iterdir())
    analysis_main(["plots", str(other), "--out", str(out)])
    both = sorted(p.name for p in out.iterdir())
    assert len(first) == 4 and len(both) == 8                     # the second call overwrote nothing
    assert any(re.fullmatch(r"run_x2\+y2_p11_f0\.3_s1-[0-9a-f]{6}\.png", n) for n in first)


def test_grid_files_of_two_sweeps_do_not_overwrite_each_other(small, tmp_path, capsys):
    other = tmp_path / "copy" / small.name
    shutil.copytree(small, other)
    out = tmp_path / "g"
    analysis_main(["grid", str(small), "--out", str(out)])
    analysis_main(["grid", str(other), "--out", str(out)])
    assert len(list(out.glob("grid_*.png"))) == 2


def test_plots_use_a_linear_step_axis_unless_asked(small, tmp_path, monkeypatch):
    import matplotlib.figure

    from grok.figures import plot_run

    run, seen = next(small.iterdir()), {}
    real = matplotlib.figure.Figure.savefig

    def spy(fig, *a, **k):
        seen["scales"] = [ax.get_xscale() for ax in fig.axes]
        return real(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot_run(run, tmp_path / "lin.png", dpi=30)
    assert set(seen["scales"]) == {"linear"}
    plot_run(run, tmp_path / "log.png", dpi=30, log_steps=True)
    assert set(seen["scales"]) == {"log"}


def report(sweep, tmp_path, *extra):
    analysis_main(["report", str(sweep), "--out", str(tmp_path / "r"), *extra])
    [page] = (tmp_path / "r").glob("report_*.html")
    return page, page.read_text()


def test_report_is_one_self_contained_page_with_linked_cells(small, tmp_path, capsys):
    import matplotlib

    page, text = report(small, tmp_path)
    assert str(page) in capsys.readouterr().out
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)     # nothing fetched
    assert "<script" not in text
    cells = re.findall(r'id="(cell-[0-9-]+)"', text)
    links = set(re.findall(r'href="#(cell-[0-9-]+)"', text))     # SVG: xlink:href
    assert len(cells) == 2 and set(cells) == links                   # every cell a link to its section
    assert text.count('<img alt="figure" src="data:image/png;base64,') == 4  # per cell: curves, measures
    assert "target=" not in text                                    # every link opens in this tab
    assert text.index('<section id="setup">') < text.index("<svg")     # the setup heads the page
    # One quantity per colour scale: the bar names it, and x^2+y^2 (none generalised; best test
    # acc 0.3 and 0.4) is drawn in the colour of 0, not of its accuracy, x+y (both did) of 1.
    from analysis.plots import SHARE

    bars = re.findall(r'<g id="colorbar-label">\s*<text[^>]*>([^<]*)</text>', text)
    assert text.count("<svg") == 1 and bars == [SHARE] == ["share of seeds that generalised"]
    fills = dict(re.findall(r'<a xlink:href="#cell-0-0-(\d)">\s*<path [^>]*fill: (#[0-9a-f]{6})', text))
    cmap = matplotlib.colormaps["RdYlGn"]
    assert fills == {"0": matplotlib.colors.to_hex(cmap(1.0)), "1": matplotlib.colors.to_hex(cmap(0.0))}
    for seed in (0, 1):
        assert re.search(rf'<tr id="run-0-\d-\d-{seed}">', text)
    # each run named by the keys the runs differ in (frac is shared), linked to its folder
    folders = re.findall(r'<td><a href="([^"]+)/" title="[^"]+">([^<]+)</a></td>', text)
    assert len(folders) == 4
    for href, name in folders:
        target = (page.parent / href).resolve()
        assert target.is_dir() and (target / "summary.json").exists()
        cfg = yaml.safe_load((target / "config.yaml").read_text())
        assert name == f"op={cfg['op']} seed={cfg['seed']}"


def setup_rows(text: str, table: str) -> dict:
    """{key: value cell} of the header's table `differ`, or of the tables inside `shared`."""
    start = text.index(f'id="{table}"')
    end = text.index("</table>" if table == "differ" else "</details>", start)
    return dict(re.findall(r'data-key="([^"]+)">.*?class="v">(.*?)</', text[start:end]))


def test_report_header_names_what_the_runs_share_and_the_keys_they_differ_in(small):
    from analysis.report import header, run_labels

    make_run(small, "elsewhere", config(op="x+y", seed=2, frac=0.3, train__device="cuda", task__op="x+y"))
    runs, _ = load_runs(small)
    text = header(runs)
    differ, shared = setup_rows(text, "differ"), setup_rows(text, "shared")
    assert set(differ) == {"op", "seed", "train.device", "task.op"}
    assert differ["op"] == "x+y (3), x^2+y^2 (2)" and differ["seed"] == "0 (2), 1 (2), 2 (1)"
    assert differ["train.device"] == "cpu (4), cuda (1)"
    assert "train.device (cannot change a result)" in re.sub("<[^>]+>", "", text)
    assert shared["optimizer.lr"] == "0.003" and shared["train.steps"] == "100"
    assert shared["p"] == "11" and shared["frac"] == "0.3" and shared["model.d_model"] == "32"
    assert shared["optimizer.betas"] == "[0.9, 0.98]"
    assert not set(shared) & set(differ)
    essentials = re.search(r'<p class="essentials">(.*?)</p>', text).group(1)
    for part in ("p <b>11</b>", "model <b>nanda</b>", "optimizer <b>adamw</b>", "lr <b>0.003</b>",
                 "budget (steps) <b>100</b>"):
        assert part in essentials
    # a run's label: the keys that tell runs apart (the axes first, the seed last), not where it
    # ran nor what an axis says already (task.op: the op)
    labels = dict(zip(runs.run.map(lambda r: Path(r).name), run_labels(runs, first=("op", "frac"))))
    assert labels["elsewhere"] == "op=x+y seed=2"
    assert labels["op=x2+y2,frac=0.3,seed=1"] == "op=x^2+y^2 seed=1"


def test_report_draws_loss_on_a_log_axis_beside_accuracy_spectra_as_bars_and_readable_text(
        small, monkeypatch):
    import matplotlib.figure
    import matplotlib.text

    from analysis.report import cell_figure, measures_figure, spectrum
    from grok.figures import read_metrics

    figures = []
    real = matplotlib.figure.Figure.savefig

    def spy(fig, *a, **k):
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()]
        figures.append({"px": fig.get_figwidth() * k["dpi"],
                        "font_px": min(t.get_fontsize() * k["dpi"] / 72 for t in texts),
                        "axes": {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}})
        return real(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    runs, _ = load_runs(small)
    cell = runs[runs.op == "x+y"].sort_values("seed")
    metrics = {r: read_metrics(Path(r) / "metrics.jsonl") for r in cell.run}
    cell_figure(cell, metrics, {r: spectrum(r, P) for r in cell.run}, log_steps=False)
    assert measures_figure(cell, metrics, log_steps=False)
    assert len(figures) == 2
    for f in figures:                          # drawn at page width: shown 1:1, text >= 10 px
        assert f["px"] <= 1250 and f["font_px"] >= 10, f
    axes = figures[0]["axes"]
    loss, acc = axes["loss (thick: test, thin: train)"], axes["accuracy (thick: test, thin: train)"]
    assert loss.get_yscale() == "log" and acc.get_yscale() == "linear"
    assert loss.get_subplotspec().rowspan == acc.get_subplotspec().rowspan   # side by side
    lines = [line for line in loss.get_lines() if len(line.get_xdata()) > 2]  # not the step marks
    assert len(lines) == 4                                                    # 2 seeds x test, train
    ys = sorted(tuple(line.get_ydata()) for line in lines)
    assert ys[-1] == (2.0,) * 11                                 # test_loss as recorded
    assert ys[0][:2] == (1.0, 1 / 11)                             # train_loss 1 / (1 + step)
    for name in ("W_E", "W_L"):
        spec = axes[f"Fourier spectrum of {name} at the end"]
        assert spec.get_lines() == [] and len(spec.patches) == 2 * (1 + (P - 1) // 2)  # bars
    assert {"gini_embed", "weight_sq_total"} <= set(figures[1]["axes"])    # a panel per measure


def test_report_spectrum_is_the_fourier_norms_of_the_final_weights(small):
    from analysis.report import spectrum
    from grok.measures import fourier_basis

    run = next(small.iterdir())
    s = spectrum(run, P)
    w = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    coeffs = fourier_basis(P) @ w["W_E"][:P].double()
    k1 = (coeffs[1].norm() ** 2 + coeffs[2].norm() ** 2).sqrt().item()
    assert len(s["W_E"]) == len(s["W_L"]) == 1 + (P - 1) // 2
    assert s["W_E"][1] == pytest.approx(k1, rel=1e-12)
    assert s["W_E"][0] == pytest.approx(coeffs[0].norm().item(), rel=1e-12)
    (run / "checkpoint.pt").unlink()
    assert spectrum(run, P) is None


def test_report_of_other_tasks_draws_per_position_losses(tmp_path):
    root = tmp_path / "t"
    for seed in (0, 1):
        other_task(root, "digits_add", seed)
    page, text = report(root, tmp_path, "--rows", "task", "--cols", "optimizer.lr")
    assert "no Fourier spectrum" in text and text.count('class="cell"') == 1
    assert "per-position test loss (digit0, digit1, digit2)" in text
    essentials = re.search(r'<p class="essentials">(.*?)</p>', text).group(1)
    assert "task <b>digits_add</b>" in essentials and "p <b>" not in essentials   # p: not read


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_report_loads_in_headless_chromium_without_console_errors(small, tmp_path):
    page, _ = report(small, tmp_path)
    shot = tmp_path / "shot.png"
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--window-size=1200,1400", f"--user-data-dir={tmp_path / 'profile'}"]
    r = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    assert r.returncode == 0 and console == [], console
    dom = r.stdout
    assert dom.count('class="cell"') == 2 and "<svg" in dom and "x^2+y^2" in dom
    r = subprocess.run([*args, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                       timeout=120)
    assert [line for line in r.stderr.splitlines() if ":CONSOLE" in line] == []
    import matplotlib
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1400)
    # The heatmap is on the first screen: its two cells in their colours, x+y (all seeds
    # generalised: share 1) and x^2+y^2 (none did: share 0).
    px = img.getdata()
    for share in (1.0, 0.0):
        want = [round(255 * c) for c in matplotlib.colormaps["RdYlGn"](share)[:3]]
        n = sum(1 for p in px if all(abs(a - b) <= 6 for a, b in zip(p, want)))
        assert n > 5000, (share, want, n)   # a cell is ~150 x 150 px


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_chromium_check_sees_a_console_error(tmp_path):
    """The console check above can fail: a page that throws shows up in chromium's log."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>nope();</script></body></html>")
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                        "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", bad.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert any(":CONSOLE" in line and "nope" in line for line in r.stderr.splitlines())


def test_rows_without_a_config_still_pool_by_their_summary_p_model_and_optimizer():
    import pandas as pd

    runs = pd.DataFrame([{"task": "poly", "op": "x+y", "op_pretty": "x+y", "p": p, "frac": .3, "seed": s,
                          "model": "nanda", "optimizer": opt, "verdict": "grokked", "best_test_acc": 1.0}
                         for p in (23, 29) for s in (0, 1) for opt in ("adamw", "sgd")])
    parts = dict(pools(runs))
    assert sorted(parts) == ["optimizer=adamw, p=23", "optimizer=adamw, p=29",
                             "optimizer=sgd, p=23", "optimizer=sgd, p=29"]
    assert all(len(part) == 2 for part in parts.values())


def test_mixtures_are_columns_of_one_table_on_the_op_axis(tmp_path):
    """A mixture has p and frac but no op: its op-axis value is its set of ops, and runs of
    different mixtures (config `ops`) share a table, one column each."""
    root = tmp_path / "mix"
    for ops in (["x+y", "x*y"], ["x+y", "x-y"]):
        for seed in (0, 1):
            cfg = config(seed=seed, op=None, frac=0.5)
            cfg["task"], cfg["ops"] = {"name": "mixture", "op": None}, ops
            make_run(root, f"{'_'.join(ops)}_{seed}", cfg, weights=False, task_summary={
                "task": "mixture", "task_desc": "mixture", "ops": ops, "p": P, "frac": 0.5,
                "mixture": "{" + ", ".join(ops) + "}"})
    runs, problems = load_runs(root)
    assert problems == []
    [(label, part)] = pools(runs)
    table = grid(part)
    assert list(table.columns) == [("other tasks", "{x+y, x*y}"), ("other tasks", "{x+y, x-y}")]
    assert list(table.loc["0.5"]) == ["✓ 2/2", "✓ 2/2"]
    runs["config"] = [{**c, "p": 13} if seed == 1 else c for c, seed in zip(runs.config, runs.seed)]
    assert sorted(label for label, _ in pools(runs)) == ["p=11", "p=13"]   # a mixture reads p
