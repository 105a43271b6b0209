"""The rendered summary: escaping of hostile names, the first screen's answer, and the page opened in
headless Chromium (no console errors, every run's detail inserted only when opened, every image
decodes, every section present, the published tables' columns in view at 1280 px; screenshots kept as
test artifacts)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO
from test_compare import metric

from fmnist import aggregate, gallery, plots, report

HOSTILE = "<script>alert(1)</script>"
HOSTILE_REASON = '<img src=x onerror="alert(2)">'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"
pytestmark = pytest.mark.slow  # draws ~40 real figures (and imports torch for the gallery)

SECTIONS = ["overview", "leaderboard", "published", "findings", "records", "effects", "tradeoffs", "runs", "dataset", "environment"]
# The page's one script (it inserts a run's detail when the run is opened): no text of the study in it.
SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)  # the one without a type: it runs


def _write_run(run_dir: Path, m: dict, with_files: bool) -> Path:
    d = run_dir / m["run_id"] if with_files else run_dir / "hostile"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))
    if with_files:
        epochs = range(1, 5)
        pd.DataFrame({"epoch": list(epochs), "train_loss": [1.0, 0.6, 0.5, 0.45], "train_accuracy": [0.6, 0.8, 0.84, 0.86],
                      "val_loss": [0.8, 0.6, 0.55, 0.56], "val_accuracy": [0.7, 0.8, 0.83, 0.82],
                      "lr": [1e-3] * 4, "seconds": [2.0] * 4}).to_csv(d / "history.csv", index=False)
        classes = ["T-shirt/top", "Trouser", "Shirt"]
        pd.DataFrame([[80, 2, 18], [1, 97, 2], [25, 1, 74]], columns=classes,
                     index=pd.Index(classes, name="true \\ predicted")).to_csv(d / "confusion.csv")
        plots.learning_curves(d / "history.csv", d / "curves.png", title=m["run_id"], best_epoch=3)
        plots.confusion(d / "confusion.csv", d / "confusion.png", title=m["run_id"])
    return d / "metrics.json"


@pytest.fixture(scope="module")
def study(tmp_path_factory, prepared_small) -> dict:
    """A synthetic study on disk: runs (one with a hostile name, one that did not learn), tables, every figure."""
    root = tmp_path_factory.mktemp("study")
    run_dir, tables, figures = root / "runs", root / "tables", root / "figures"
    figures.mkdir()
    ms = []
    for seed, (a, b, c) in enumerate([(0.90, 0.91, 0.10), (0.905, 0.92, 0.11), (0.895, 0.915, 0.10)]):
        ms.append(metric(f"cnn.none.default.s{seed}", a))
        ms.append(metric(f"cnn.mixup.default.s{seed}", b))
        ms.append(metric(f"vgg12.none.default.s{seed}", c, status="not_learned",
                         status_reason="test accuracy 0.100 is at chance level"))
    for bs, acc in ((16, 0.88), (64, 0.90), (256, 0.87)):
        for seed in (0, 1):
            m = metric(f"cnn.none.bs{bs}.s{seed}", acc + seed / 200)
            m["config"]["train"]["batch_size"] = bs
            ms.append(m)
    hostile = metric("cnn.none.default.s9", 0.5, status="diverged", status_reason=HOSTILE_REASON)
    hostile["run_id"] = HOSTILE
    hostile["config"]["setting"] = HOSTILE
    paths = [_write_run(run_dir, m, with_files=True) for m in ms] + [_write_run(run_dir, hostile, with_files=False)]
    studies = {"default": [m["run_id"] for m in ms[:9]] + [HOSTILE], "batch": [m["run_id"] for m in ms[9:]]}
    published = [
        {"source": "B", "study": "report_b", "experiment": "cnn.none.default", "label": "standard CNN",
         "metric": "val_accuracy", "value": 90.2, "epochs": None, "note": "early stopping"},
        {"source": "B", "study": "report_b", "experiment": "cnn.mixup.default", "label": "standard CNN + MixUp",
         "metric": "test_accuracy", "value": 92.87, "epochs": 40, "note": HOSTILE},
        {"source": "E", "study": "report_e", "experiment": "vgg12.none.default", "label": "VGG12 (no residuals)",
         "metric": "test_accuracy", "value": 10.0, "epochs": 100, "note": "fails to learn"},
        {"source": "E", "study": "report_e", "experiment": "vit.none.e_base", "label": "base ViT",
         "metric": "test_accuracy", "value": 86.34, "epochs": 100, "note": ""},
    ]
    sweeps = [{"name": "batch", "study": "batch", "x": "batch_size", "title": "", "log_x": None}]
    claims = [
        {"source": "B", "a": "cnn.mixup.default", "b": "cnn.none.default", "metric": "test_accuracy",
         "published": 1.5, "expect": "higher", "claim": "MixUp improves the CNN", "note": ""},
        {"source": "B", "a": "cnn.none.default", "b": "vgg12.none.default", "metric": "test_accuracy",
         "published": None, "expect": "higher", "claim": HOSTILE, "note": ""},
        {"source": "E", "a": "vit.none.e_base", "b": "vgg12.none.default", "metric": "test_accuracy",
         "published": 76.34, "expect": "higher", "claim": "the ViT learns", "note": ""},
    ]
    aggregate.write_all(paths, studies, root / "runs.csv", root / "experiments.csv", tables,
                        published=published, sweeps=sweeps, claims=claims)
    plots.effects(tables / "effects.csv", figures / "effects.png")
    plots.pareto(root / "experiments.csv", figures / "pareto.png")
    plots.sweep(tables / "sweep_batch.csv", figures / "sweep_batch.png", title="batch size")
    plots.class_distribution(prepared_small, figures / "class_distribution.png")
    plots.class_samples(prepared_small, figures / "samples.png")
    gallery.gallery(prepared_small, figures / "augmentations.png")
    out = root / "summary.html"
    report.write_report(out, REPO / "src" / "fmnist" / "templates" / "summary.html.j2", runs_csv=root / "runs.csv",
                        experiments_csv=root / "experiments.csv", tables_dir=tables, studies=studies,
                        descriptions={"default": f"a study described as {HOSTILE}"}, sweeps=sweeps,
                        figures_dir=figures, run_dir=run_dir, config_hash="abc123", repo=REPO)
    return {"root": root, "html": out, "studies": studies}


def test_hostile_names_are_escaped_text(study):
    html = study["html"].read_text()
    assert HOSTILE not in html and "alert(2)\">" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    # the one script that runs is the template's own, with no text of the study in it; the others are
    # inert text (type text/html): each run's detail, inserted when the run is opened
    (script,) = SCRIPT.findall(html)
    template = (REPO / "src" / "fmnist" / "templates" / "summary.html.j2").read_text()
    assert script in template
    details = re.findall(r'<script type="text/html" class="detail">(.*?)</script>', html, re.S)
    assert html.count("<script") == 1 + len(details) == html.count("</script>")
    assert len(details) == len(study["studies"]["default"]) + len(study["studies"]["batch"]) + 1  # runs, a folded table
    assert any("&lt;img src=x onerror=" in d for d in details)  # the hostile reason, escaped inside its block


def test_sections_and_content(study):
    html = study["html"].read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    assert "vgg12.none.default" in html and "not learned" in html  # a failed model is a result, not a gap
    assert "not run" in html  # the ViT entry's experiment is not in this study
    assert "Shirt taken for T-shirt/top" in html  # most confused pair named
    assert "data:image/png;base64," in html and "src=\"http" not in html
    # a published single run is judged by the prediction interval; every verdict is explained
    assert "95% prediction interval" in html and 'id="verdict-help"' in html
    assert "lies inside our 95% prediction interval" in html
    assert "This table holds <b>1 comparison</b>" in html  # one augmentation effect in the family
    # the reports' findings: one row per claim, its verdict explained, a claim not run folded away
    findings = html.split('<section id="findings">')[1].split("</section>")[0]
    assert "MixUp improves the CNN" in findings and "cnn.mixup.default − cnn.none.default" in findings
    # the MixUp claim and the CNN beating VGG12 (in words only), each in its row's verdict cell
    assert findings.count('<td class="verdict"><span class="badge v-confirmed">confirmed') == 2
    assert "1 claim of this report not run" in findings and "the ViT learns" in findings
    assert 'id="finding-help"' in findings and "seeds would halve it" in findings


def test_first_screen_says_what_was_judged_and_where_the_record_is(study):
    """The top box: the study's kind and the verdict counts; the committed record in its own section,
    linked relative to the page, apart from this study's runs."""
    html = study["html"].read_text()
    top = html[html.index('id="verdicts"'):html.index("</div>", html.index('id="verdicts"'))]
    # 4 epochs run of a 10-epoch budget against reports that trained 40-100 epochs: short budget
    assert "A short-budget study" in top and "at most 10 epochs" in top
    assert "3 of 4" in top and "consistent" in top  # judged (report B's two, report E's VGG12), one not run
    records = html[html.index('<section id="records">'):html.index("</section>", html.index('<section id="records">'))]
    assert "docs/record/cpu" in records and "cpu (x86_64" in records
    summary = Path(study["html"]).parent / re.search(r'href="([^"]*docs/record/cpu/summary\.html)"', records).group(1)
    assert summary.resolve() == (REPO / "docs" / "record" / "cpu" / "summary.html").resolve()
    assert re.search(r'href="[^"]*docs/record/cpu/README\.md"', top)
    # the record's runs are not this study's: none of its run ids is among the page's runs
    record_runs = pd.read_csv(REPO / "docs" / "record" / "cpu" / "runs.csv")["run_id"]
    assert not any(f'id="run-{rid}"' in html for rid in record_runs)
    # "not run" rows fold into one line per report
    assert html.count('class="notrun"') == 1 and "1 published figure not run" in html


@pytest.mark.parametrize("rows, runs, kind, words", [
    ([], [2], "short-budget study", "none of the published"),
    ([{"runs": 3, "verdict": "consistent", "published_epochs": 40, "our_epochs_max": 40}], [40],
     "reproduction", "1 of the 1"),
    ([{"runs": 3, "verdict": "consistent", "published_epochs": None, "published_best_epoch": 8,
       "our_epochs_max": 40}], [40], "reproduction", "at least the report's epochs"),
    ([{"runs": 3, "verdict": "consistent", "published_epochs": 40, "our_epochs_max": 2},
      {"runs": 0, "verdict": "not run", "published_epochs": 100}], [2], "short-budget study", "1 of the 1"),
    ([{"runs": 3, "verdict": "consistent", "published_epochs": None, "published_best_epoch": 17,
       "our_epochs_max": 4}], [4], "short-budget study", "trained longer"),
])
def test_study_kind_rule(rows, runs, kind, words):
    got = report.study_kind(rows, pd.DataFrame({"epochs_max": runs}))
    assert got["kind"] == kind and words in got["why"], got


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


# Injected into a test copy of the page: record console errors, failed resources and alert() calls,
# then, after load, whether every image decoded.
PROBE_HEAD = """<script>window.__errs=[];window.__alerts=[];window.alert=function(m){__alerts.push(String(m))};
const __ce=console.error;console.error=function(...a){__errs.push(a.join(' '));__ce.apply(console,a)};
window.addEventListener('error',e=>{__errs.push('error: '+(e.message||(e.target&&(e.target.src||e.target.href))||'?'))},true);
</script>"""
# Before any run is opened, the page holds no run's curves or confusion table (they wait as text);
# then every run and folded table is opened, and what the templates inserted is counted.
PROBE_TAIL = """<script>window.addEventListener('load',()=>{const b=document.body.dataset;
b.closedsvg=document.querySelectorAll('svg.curves').length;b.closedcm=document.querySelectorAll('table.confusion').length;
document.querySelectorAll('details').forEach(d=>{d.open=true});
setTimeout(()=>{const imgs=[...document.images];
b.images=imgs.length;b.broken=imgs.filter(i=>!(i.complete&&i.naturalWidth>0)).map(i=>i.alt).join('|');
b.svg=document.querySelectorAll('svg.curves polyline').length;b.cm=document.querySelectorAll('table.confusion').length;
b.templates=document.querySelectorAll('details > script.detail').length;
b.errors=JSON.stringify(__errs);b.alerts=__alerts.length;b.rows=document.querySelectorAll('#leaderboard-table tr').length-1;
b.sections=[...document.querySelectorAll('section')].map(s=>s.id).join(' ');b.done='1'},200)})</script>"""


@pytest.fixture()
def chromium() -> str:
    """The browser the page test needs: missing, the test fails (as the SLURM test does), never skips."""
    if CHROMIUM is None:
        pytest.fail("the report's browser test needs Chromium: `make test-deps`, or `apt-get install chromium` (as root)")
    return CHROMIUM


def probe_attrs(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """The data-* attributes a probe script set on <body>, from Chromium's --dump-dom; the probe must
    have finished (data-done="1")."""
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, f"chromium printed no DOM:\n{proc.stderr[-3000:]}"
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(0)))
    assert attrs.get("done") == "1", proc.stderr[-3000:]
    return attrs


def test_page_in_headless_chromium(chromium, study, tmp_path):
    html = study["html"].read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_TAIL + "</body>", 1))
    proc = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), tmp=tmp_path)
    attrs = probe_attrs(proc)
    assert json.loads(attrs["errors"].replace("&quot;", '"')) == []
    assert attrs["broken"] == "", f"images that did not decode: {attrs['broken']}"
    assert attrs["closedsvg"] == "0" and attrs["closedcm"] == "0"  # nothing of a run before it is opened
    assert attrs["templates"] == "0"  # opening inserted every one
    assert int(attrs["svg"]) == 2 * 2 * 15  # train and validation, loss and accuracy, per run with files
    assert int(attrs["cm"]) == 15  # a confusion table per run with files
    assert int(attrs["images"]) == 6  # the study and dataset figures (effects, Pareto, sweep, three of the data)
    assert attrs["alerts"] == "0"  # the hostile run name did not execute
    assert attrs["sections"].split() == SECTIONS
    leaderboard = pd.read_csv(study["root"] / "tables" / "leaderboard.csv")
    assert int(attrs["rows"]) == len(leaderboard)
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    # The screenshot of the real page (not the probe copy) is kept for a human to look at.
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "summary.png"
    shot.unlink(missing_ok=True)
    _chromium("--window-size=1280,4200", f"--screenshot={shot}", study["html"].as_uri(), tmp=tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000


# Injected into a test copy: where the published tables' verdict, ours, interval, difference and CI
# cells lie (the folded tables opened too), and how tall their rows are.
LAYOUT_PROBE = """<script>window.addEventListener('load',()=>{const b=document.body.dataset;
document.querySelectorAll('details.notrun').forEach(d=>{d.open=true});
setTimeout(()=>{const tables=[...document.querySelectorAll('table.published')].filter(t=>t.offsetParent!==null);
b.viewport=window.innerWidth;b.tables=tables.length;
const past=sel=>{const cells=tables.flatMap(t=>[...t.querySelectorAll(sel)]);
  return [cells.length,Math.max(...cells.map(c=>c.getBoundingClientRect().right-Math.min(window.innerWidth,(c.closest('.scroll')||document.body).getBoundingClientRect().right)))]};
for(const col of ['verdict','ours','pi','diff','ci']){const [n,r]=past('th.'+col+', td.'+col);b['n'+col]=n;b['past'+col]=r}
b.scrollers=tables.filter(t=>{const s=t.closest('.scroll');return s&&s.scrollWidth>s.clientWidth}).length;
b.rowheight=Math.max(...tables.flatMap(t=>[...t.rows].slice(1)).map(r=>r.getBoundingClientRect().height));
b.line=parseFloat(getComputedStyle(document.querySelector('table.published td')).lineHeight)||16;
const doc=document.documentElement;b.pagewidth=doc.scrollWidth;b.clientwidth=doc.clientWidth;
b.wide=[...document.querySelectorAll('body *')].filter(e=>e.getBoundingClientRect().right>doc.clientWidth+0.5&&!e.closest('.scroll')).map(e=>e.tagName+'#'+e.id).slice(0,5).join(' ');
b.done='1'},200)})</script>"""


RECORD = REPO / "docs" / "record" / "cpu" / "b_valloss"


@pytest.fixture(scope="module")
def record_page(tmp_path_factory) -> Path:
    """The committed CPU record's runs (report B's and D's published figures, their real labels and
    notes) rendered with this checkout's templates: the page whose layout was reported."""
    from fmnist import config as fconfig
    from fmnist import experiments, record

    out = tmp_path_factory.mktemp("record")
    record.rebuild(RECORD, out)
    _, studies = experiments.expand(fconfig.load(RECORD / "config.yaml"))
    html = out / "summary.html"
    report.write_report(html, REPO / "src" / "fmnist" / "templates" / "summary.html.j2", runs_csv=out / "runs.csv",
                        experiments_csv=out / "experiments.csv", tables_dir=out / "tables", studies=studies,
                        descriptions={}, sweeps=[], figures_dir=out / "figures", run_dir=RECORD / "runs",
                        config_hash="record", repo=REPO)
    return html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (CI installs it)")
def test_published_verdicts_are_in_view_at_1280_px(record_page, tmp_path):
    """At 1280 px the verdict, our mean, our prediction interval, the difference and the CI of our mean
    lie inside the viewport in every published table, folded ones opened (no horizontal scroll to
    reach them, not even within a table's scroll box), and the long notes do not make rows tall (they
    fold away)."""
    probe = tmp_path / "layout.html"
    probe.write_text(record_page.read_text().replace("</body>", LAYOUT_PROBE + "</body>", 1))
    proc = _chromium("--window-size=1280,2000", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), tmp=tmp_path)
    attrs = probe_attrs(proc)
    assert int(attrs["viewport"]) <= 1280 and int(attrs["tables"]) >= 2  # reports B and D, and the folded ones
    for col in ("verdict", "ours", "pi", "diff", "ci"):
        assert int(attrs[f"n{col}"]) >= 2 * int(attrs["tables"]), (col, attrs)  # a header and a row each at least
        # how far the furthest such cell reaches past what is visible (its scroll box, the viewport)
        assert float(attrs[f"past{col}"]) <= 0, (col, attrs)
    # and the page itself never scrolls sideways: what is wider than the viewport lies in a scroll box
    assert int(attrs["pagewidth"]) <= int(attrs["clientwidth"]) and attrs["wide"] == "", attrs
    assert attrs["scrollers"] == "0", attrs
    # label (up to two lines), experiment id and a folded note: never the note's many lines
    assert float(attrs["rowheight"]) <= 5 * float(attrs["line"]), attrs
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "record-1280.png"
    shot.unlink(missing_ok=True)
    _chromium("--window-size=1280,3000", f"--screenshot={shot}", record_page.as_uri(), tmp=tmp_path)
    assert shot.exists()


def test_confusion_table_shades_each_cell_by_its_share_of_the_true_class(tmp_path):
    classes = ["T-shirt/top", "Trouser", "Shirt"]
    csv = tmp_path / "confusion.csv"
    pd.DataFrame([[80, 2, 18], [1, 97, 2], [0, 0, 0]], columns=classes,
                 index=pd.Index(classes, name="true \\ predicted")).to_csv(csv)
    cm = report.confusion_table(csv)
    assert cm["classes"] == classes and [r["name"] for r in cm["rows"]] == classes
    assert cm["rows"][0]["cells"] == [(80, 8), (2, 0), (18, 1)]
    assert cm["rows"][1]["cells"] == [(1, 0), (97, 9), (2, 0)]
    assert cm["rows"][2]["cells"] == [(0, 0), (0, 0), (0, 0)]  # a class with no test image
