"""report.html: the whole report in one self-contained file (figures embedded as base64 PNG,
inline style, no script, no network), opens offline in any browser."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from spiralmix.report.tables import Table

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.verdict { background: #f4f7fb; border-left: 4px solid #2166ac; padding: 0.8em 1em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.significant { font-weight: bold; }
td.better { color: #1a7f37; background: #eef8ee; }
td.worse { color: #b3261e; background: #fcefee; }
td.best { text-decoration: underline; }
dl.about { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; }
dl.about dt { font-weight: bold; } dl.about dd { margin: 0; }
.verdict ul { margin: 0.2em 0; padding-left: 1.3em; } .verdict li { margin: 0.15em 0; }
.verdict ul ul { list-style: circle; }
.legend { color: #555; font-size: 0.9em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
code { background: #f3f3f3; padding: 0 0.2em; }
.note { color: #8a4b00; }
"""


def inline_markdown(text: str) -> str:
    """Escape text, then render the little Markdown the tables use: **bold** and `code`."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def blocks_html(text: str) -> str:
    """Paragraphs and '- ' lists (with '  - ' sub-items) of the little Markdown the verdict
    uses."""
    out, items = [], []  # items: [text, [sub-items]]
    for line in [*text.split("\n"), ""]:
        if line.startswith("  - ") and items:
            items[-1][1].append(f"<li>{inline_markdown(line[4:])}</li>")
            continue
        if line.startswith("- "):
            items.append([inline_markdown(line[2:]), []])
            continue
        if items:
            lis = [f"<li>{t}<ul>{''.join(sub)}</ul></li>" if sub else f"<li>{t}</li>"
                   for t, sub in items]  # fmt: skip
            out.append(f"<ul>{''.join(lis)}</ul>")
            items = []
        if line.strip():
            out.append(f"<p>{inline_markdown(line)}</p>")
    return "".join(out)


def table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = []
    for row in table.rows:
        cells = []
        for cell in row:
            classes = " ".join(c for c in (cell.mark, cell.tone) if c)
            attr = f' class="{classes}"' if classes else ""
            cells.append(f"<td{attr}>{inline_markdown(cell.main)}{inline_markdown(cell.rest)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    explanation = f"<p>{inline_markdown(table.explanation)}</p>" if table.explanation else ""
    return (
        f"<h2>{html.escape(table.title)}</h2>{explanation}"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def page(
    title: str,
    verdict: str,
    notes: Sequence[str],
    tables: Sequence[Table],
    figures: Mapping[str, bytes],
    problems: Table | None,
    run_dirs: Sequence[Path],
    sweep_dir: Path,
    about: Sequence[tuple[str, str]] = (),
    appendix: Sequence[Table] = (),
) -> str:
    """The HTML text: what the sweep is (about: label, text), verdict, notes, tables,
    figures (file name → PNG bytes), the appendix tables (per seed), problems and the run
    folders to open in TensorBoard."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title.replace('`', ''))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{inline_markdown(title)}</h1>",
    ]
    if about:
        rows = "".join(f"<dt>{html.escape(label)}</dt><dd>{inline_markdown(text)}</dd>"
                       for label, text in about)  # fmt: skip
        parts.append(f'<dl class="about">{rows}</dl>')
    parts += [
        f'<h2>Verdict</h2><div class="verdict">{blocks_html(verdict)}</div>',
        '<p class="legend">In the tables: <span style="color:#1a7f37">green</span> = better '
        'than the baseline, <span style="color:#b3261e">red</span> = worse, <b>bold</b> = '
        "significant (paired tables: Holm p &lt; 0.05; across data sets: a Bayesian verdict "
        "or an interval of the probability of improvement that excludes ½); "
        "<u>underlined</u> = the best mean of a column in the summary tables.</p>",
    ]
    if notes:
        items = "".join(f'<li class="note">{inline_markdown(n)}</li>' for n in notes)
        parts.append(f"<ul>{items}</ul>")
    parts += [table_html(t) for t in tables]
    if figures:
        parts.append("<h2>Figures</h2>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="{html.escape(name)}"><img alt="{html.escape(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(name)}</figcaption>'
            "</figure>"
        )
    parts += [table_html(t) for t in appendix]
    if problems is not None and problems.rows:
        parts.append(table_html(problems))
    else:
        parts.append(
            "<h2>Failed or unfinished runs</h2><p>None: every job finished with status "
            "completed.</p>"
        )
    parts.append(
        "<h2>Run folders</h2><p>Every run's TensorBoard logs, all at once: "
        f"<code>tensorboard --logdir {html.escape(str(sweep_dir.resolve()))}</code>, or one "
        "run: <code>tensorboard --logdir &lt;folder&gt;</code>.</p><ul>"
    )
    parts += [f"<li><code>{html.escape(str(d))}</code></li>" for d in run_dirs]
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"
