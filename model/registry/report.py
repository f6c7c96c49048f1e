"""A training report as one self-contained HTML page: hand-made inline SVG, no scripts, no assets.

write_report(ref, title=..., history=..., confusion=..., metrics=..., meta=...) renders
  - a header: title, recipe, created_at, model version, and the validation accuracy in large type;
  - line charts of train/val loss and train/val accuracy per epoch (ticks, legend, best epoch);
  - the validation confusion matrix as a 10x10 heat-map table with per-class recall and precision;
  - the per-epoch numbers as a table.
Missing values (None, NaN, inf) are shown as "–" and leave gaps in the lines; one epoch
draws as single points.
"""
import dataclasses
import math
from html import escape

import numpy as np

from model import storage

TRAIN_COLOR, VAL_COLOR = "#4a7fd4", "#e0632b"
DASH = "–"


def finite_or_none(v):
    """A finite float, or None for None/NaN/inf/non-numbers."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt(v, spec=".4f"):
    f = finite_or_none(v)
    return DASH if f is None else format(f, spec)


def _pct(v, digits=2):
    f = finite_or_none(v)
    return DASH if f is None else f"{100 * f:.{digits}f}%"


def _show(v):
    """A metric value as text: numbers to 6 significant digits, missing ones as a dash."""
    if v is None or isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        return _fmt(v, ".6g")
    return str(v)


def _decimals(step):
    """Decimal places needed to print multiples of step exactly."""
    d = 0
    while d < 8 and abs(step * 10 ** d - round(step * 10 ** d)) > 1e-6:
        d += 1
    return d


def _nice_axis(lo, hi, n=5):
    """Axis (lo, hi, ticks, decimals) with round tick steps covering [lo, hi]."""
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.05 or 0.01
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw - 1e-12)
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    ticks = [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
    return lo, hi, ticks, _decimals(step)


def _line_chart(title, series, y_label, percent=False, mark_x=None, width=540, height=300):
    """An SVG line chart.

    series: [(label, color, xs, ys)] with xs epoch numbers and ys floats (None/NaN = gap).
    percent: multiply ys by 100 and label the axis in %. mark_x: x of a dashed marker line.
    """
    scale = 100.0 if percent else 1.0
    pts = [[(x, None if finite_or_none(y) is None else finite_or_none(y) * scale) for x, y in zip(xs, ys)]
           for _, _, xs, ys in series]
    xs_all = [x for s in pts for x, _ in s]
    ys_all = [y for s in pts for _, y in s if y is not None]
    if ys_all:  # a flat or single-epoch curve still gets a readable, not microscopic, y range
        lo, hi = min(ys_all), max(ys_all)
        span = max(hi - lo, 1.0 if percent else 0.05 * max(abs(lo), abs(hi)) or 0.01)
        mid = (lo + hi) / 2
        y_lo, y_hi, y_ticks, dec = _nice_axis(min(lo, mid - span / 2), max(hi, mid + span / 2))
        if min(ys_all) >= 0 > y_lo:
            y_lo, y_ticks = 0.0, [t for t in y_ticks if t >= -1e-9]
    label_chars = max((len(f"{t:.{dec}f}") for t in y_ticks), default=3) if ys_all else 3
    left, right, top, bottom = 36 + 7 * label_chars, 18, 44, 46
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg" font-family="inherit" font-size="12">',
           f'<text x="{left}" y="20" font-size="15" font-weight="600" fill="#222">{escape(title)}</text>']
    # legend, right-aligned in the top margin
    lx = width - right
    for label, color, _, _ in reversed(series):
        w = 7 * len(label) + 30
        lx -= w
        out.append(f'<line x1="{lx}" y1="16" x2="{lx + 18}" y2="16" stroke="{color}" stroke-width="3"/>'
                   f'<circle cx="{lx + 9}" cy="16" r="3" fill="{color}"/>'
                   f'<text x="{lx + 23}" y="20" fill="#333">{escape(label)}</text>')
    if not ys_all or not xs_all:
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>'
                   f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" fill="#888">'
                   'no data</text></svg>')
        return "".join(out)
    x_lo, x_hi = min(xs_all), max(xs_all)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5

    def sx(x):
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y):
        return top + ph - (y - y_lo) / (y_hi - y_lo) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fcfcfd" stroke="#ccc"/>')
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e6e6e6"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{t:.{dec}f}</text>')
    n_x = int(round(max(xs_all))) - int(round(min(xs_all))) + 1
    x_step = max(1, math.ceil(n_x / 12))
    for t in range(int(round(min(xs_all))), int(round(max(xs_all))) + 1, x_step):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="#999"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle" fill="#555">{t}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" fill="#444">epoch</text>'
               f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#444">'
               f'{escape(y_label)}</text>')
    if mark_x is not None:
        x = sx(mark_x)
        side = (x - 4, "end") if x > left + pw / 2 else (x + 4, "start")
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#888" '
                   f'stroke-dasharray="4 4"/><text x="{side[0]:.1f}" y="{top - 5}" text-anchor="{side[1]}" '
                   f'fill="#777" font-size="11">best val (epoch {mark_x})</text>')
    for (label, color, _, _), s in zip(series, pts):
        runs, run = [], []
        for x, y in s:  # split the line at missing values
            if y is None:
                runs, run = runs + [run] if run else runs, []
            else:
                run.append((x, y))
        runs += [run] if run else []
        for r in runs:
            if len(r) > 1:
                d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in r)
                out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2.5" '
                           f'stroke-linejoin="round"/>')
        for x, y in s:
            if y is not None:
                shown = f"{y:.2f}%" if percent else f"{y:.4f}"
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#fff" stroke="{color}" '
                           f'stroke-width="2"><title>{escape(label)}, epoch {x}: {shown}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _confusion_table(confusion):
    """HTML heat-map table of a (10, 10) count matrix, rows true and columns predicted."""
    cm = np.asarray(confusion, dtype=np.int64)
    n = cm.shape[0]
    rows, cols = cm.sum(axis=1), cm.sum(axis=0)
    diag = np.diag(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    off_max, diag_max = max(int(off.max()), 1), max(int(diag.max()), 1)
    head = "".join(f"<th>{j}</th>" for j in range(n))
    body = []
    for i in range(n):
        cells = []
        for j in range(n):
            c = int(cm[i, j])
            if i == j:  # correct: green, by share of the largest diagonal count
                a = 0.25 + 0.75 * c / diag_max if c else 0.0
                style = f"background:rgba(34,139,84,{a:.2f});color:{'#fff' if a > 0.55 else '#123'};" \
                        "font-weight:600;outline:2px solid #1b7a46;outline-offset:-2px"
            elif c:  # mistakes: red, square-root scaled so that small counts stay visible
                a = 0.12 + 0.88 * math.sqrt(c / off_max)
                style = f"background:rgba(200,45,45,{a:.2f});color:{'#fff' if a > 0.55 else '#311'}"
            else:
                style = "color:#ccc"
            tip = f"true {i}, predicted {j}: {c}"
            cells.append(f'<td style="{style}" title="{tip}">{c}</td>')
        recall = diag[i] / rows[i] if rows[i] else float("nan")
        body.append(f"<tr><th>{i}</th>{''.join(cells)}<td class='side'>{rows[i]}</td>"
                    f"<td class='side'>{_pct(recall, 1)}</td></tr>")
    precision = "".join(f"<td class='side'>{_pct(diag[j] / cols[j] if cols[j] else None, 1)}</td>"
                        for j in range(n))
    total = int(cm.sum())
    acc = diag.sum() / total if total else None
    body.append(f"<tr class='foot'><th>precision</th>{precision}<td class='side'>{total}</td>"
                f"<td class='side'><b>{_pct(acc, 1)}</b></td></tr>")
    pairs = sorted(((int(off[i, j]), i, j) for i in range(n) for j in range(n) if off[i, j]), reverse=True)[:5]
    worst = ", ".join(f"<b>{i}</b> read as <b>{j}</b> ({c}×)" for c, i, j in pairs) or "none"
    return (f"<table class='cm'><thead><tr><th class='corner'>true ↓ / predicted →</th>{head}"
            f"<th>rows</th><th>recall</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p class='note'>Most frequent mistakes: {worst}. Green diagonal = correct; "
            f"red = mistakes, darker = more.</p>")


def _history_table(history):
    head = "".join(f"<th>{h}</th>" for h in ("epoch", "lr", "train loss", "train acc",
                                             "val loss", "val acc", "seconds"))
    rows = "".join(
        f"<tr><td>{escape(str(h.get('epoch', DASH)))}</td><td>{_fmt(h.get('lr'), '.4g')}</td>"
        f"<td>{_fmt(h.get('train_loss'))}</td><td>{_pct(h.get('train_accuracy'))}</td>"
        f"<td>{_fmt(h.get('val_loss'))}</td><td>{_pct(h.get('val_accuracy'))}</td>"
        f"<td>{_fmt(h.get('seconds'), '.1f')}</td></tr>" for h in history)
    return f"<table class='hist'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;background:#f4f5f7;color:#222}
main{max-width:1140px;margin:0 auto;padding:24px}
header{display:flex;justify-content:space-between;align-items:center;gap:24px;background:#fff;
 border-radius:10px;padding:20px 28px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h1{margin:0 0 6px;font-size:26px} h2{font-size:17px;margin:0 0 12px}
.facts{color:#555;font-size:14px;line-height:1.6} .facts b{color:#222;font-weight:600}
.big{text-align:right} .big .value{font-size:52px;font-weight:700;color:#1b7a46;line-height:1}
.big .value.none{color:#aaa;font-size:40px}
.big .label{color:#666;font-size:13px;margin-top:4px} .big .sub{color:#555;font-size:13px;margin-top:6px;white-space:nowrap}
.badge{display:inline-block;border-radius:12px;padding:2px 10px;font-size:13px;margin-top:8px}
.badge.yes{background:#dff3e6;color:#1b6b3e} .badge.no{background:#fdecd4;color:#8a4b00}
.card{background:#fff;border-radius:10px;padding:18px 22px;margin-top:18px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:18px}
.charts .card{margin-top:18px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.cm th,.cm td{width:46px;height:34px;text-align:center;font-size:13px}
.cm thead th{color:#555;font-weight:600;border-bottom:1px solid #ccc}
.cm tbody th{color:#555;padding-right:8px;border-right:1px solid #ccc}
.cm th.corner{width:auto;font-size:11px;font-weight:400;color:#888;white-space:nowrap;padding-right:8px}
.cm td{border:1px solid #fff}
.cm td.side{color:#444;background:#f6f7f9;width:58px}
.cm tr.foot th{font-weight:400;font-size:12px;color:#666} .cm tr.foot td{border-top:1px solid #ccc}
.note{color:#555;font-size:13px}
.hist{width:100%;font-size:13px} .hist th,.hist td{padding:4px 10px;text-align:right;border-bottom:1px solid #eee}
.hist th{color:#555;font-weight:600}
.kv{font-size:13px} .kv td{padding:2px 14px 2px 0} .kv td:first-child{color:#666}
footer{color:#999;font-size:12px;margin:18px 0 6px}
"""


def render_report(*, title, history, confusion, metrics, meta):
    """The report page as a string; same arguments as write_report."""
    history = [dataclasses.asdict(h) if dataclasses.is_dataclass(h) else dict(h) for h in history or []]
    metrics, meta = dict(metrics or {}), dict(meta or {})
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]

    def col(key):
        return [h.get(key) for h in history]

    val_acc = metrics.get("val_accuracy", history[-1].get("val_accuracy") if history else None)
    val_loss = metrics.get("val_loss", history[-1].get("val_loss") if history else None)
    finite = [(a, e) for e, a in zip(epochs, (finite_or_none(v) for v in col("val_accuracy"))) if a is not None]
    best_epoch = max(finite)[1] if finite and len(history) > 1 else None
    seconds = sum(finite_or_none(s) or 0.0 for s in col("seconds"))

    facts = [("recipe", meta.get("recipe")), ("created", meta.get("created_at")),
             ("weights", meta.get("model_version")), ("data", meta.get("data_source")),
             ("fingerprint", meta.get("data_fingerprint")), ("job", meta.get("job_id"))]
    facts_html = " &nbsp;·&nbsp; ".join(f"{k} <b>{escape(str(v))}</b>"
                                         for k, v in facts if v not in (None, ""))
    promo = meta.get("promotion") or {}
    badge = ""
    if "promoted" in promo:
        cls = "yes" if promo["promoted"] else "no"
        text = ("promoted to production" if promo["promoted"] else "not promoted") + \
            (f": {promo['reason']}" if promo.get("reason") else "")
        badge = f"<div class='badge {cls}'>{escape(text)}</div>"
    sub = f"val loss {_fmt(val_loss)} · {len(history)} epoch{'s' if len(history) != 1 else ''}"
    if seconds:
        sub += f" · {seconds // 60:.0f} min {seconds % 60:.0f} s" if seconds >= 60 else f" · {seconds:.1f} s"
    big = (f"<div class='value'>{_pct(val_acc)}</div>" if finite_or_none(val_acc) is not None
           else "<div class='value none'>n/a</div>")

    charts = ""
    if history:
        loss = _line_chart("Loss", [("train", TRAIN_COLOR, epochs, col("train_loss")),
                                    ("validation", VAL_COLOR, epochs, col("val_loss"))],
                           "cross-entropy", mark_x=best_epoch)
        acc = _line_chart("Accuracy", [("train", TRAIN_COLOR, epochs, col("train_accuracy")),
                                       ("validation", VAL_COLOR, epochs, col("val_accuracy"))],
                          "accuracy (%)", percent=True, mark_x=best_epoch)
        charts = f"<div class='charts'><div class='card'>{loss}</div><div class='card'>{acc}</div></div>"
    cm_html = (f"<div class='card'><h2>Validation confusion matrix</h2>{_confusion_table(confusion)}</div>"
               if confusion is not None else "")
    other = {k: v for k, v in metrics.items() if k not in ("val_accuracy",)}
    kv = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(_show(v))}</td></tr>" for k, v in other.items())
    metrics_html = f"<div class='card'><h2>Metrics</h2><table class='kv'>{kv}</table></div>" if kv else ""
    hist_html = f"<div class='card'><h2>Per epoch</h2>{_history_table(history)}</div>" if history else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body><main>
<header><div><h1>{escape(title)}</h1><div class="facts">{facts_html}</div>{badge}</div>
<div class="big">{big}<div class="label">validation accuracy</div>
<div class="sub">{sub}</div></div></header>
{charts}{cm_html}{metrics_html}{hist_html}
<footer>Generated by digits-queue. Self-contained page: no scripts, no external files.</footer>
</main></body></html>
"""


def write_report(ref, *, title, history, confusion, metrics, meta):
    """Write the training report to a path or URL atomically.

    title: page heading, e.g. "digits v3". history: per-epoch dicts (or EpochMetrics) with
    epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr, seconds. confusion:
    (10, 10) counts, rows true and columns predicted, or None. metrics: {"val_accuracy",
    "val_loss", ...}. meta: optional header facts: recipe, created_at, model_version,
    data_source, data_fingerprint, job_id, promotion {"promoted", "reason"}.
    """
    storage.write_text(ref, render_report(title=title, history=history, confusion=confusion,
                                          metrics=metrics, meta=meta))
