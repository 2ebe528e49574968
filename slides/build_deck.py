#!/usr/bin/env python3
"""Builds the slide deck: slides/deck.md -> one self-contained HTML file.

    python3 slides/build_deck.py [--out build/slides/deck.html] [--pdf FILE]

(`cmake --build build --target slides` runs it.) The output needs nothing
else: CSS and JavaScript are inlined and every image is a data: URI, so the
file works offline, from file://, copied anywhere. Keys: arrows, space,
PageUp/PageDown, Home/End; deck.html#N opens slide N; N toggles notes.

deck.md is simple Markdown: slides separated by a line `---`; headings,
paragraphs, bullet and numbered lists, tables, code fences, images,
**bold**, *italic*, `code`, [links](url); `:::columns` / `:::next` /
`:::end` lay blocks side by side; `<!-- slide: CLASS -->` gives a slide a
class (`if-bench` / `if-no-bench`: kept only when a benchmark report
exists / does not); a line `{.CLASS}` gives the next block a class, and
`{.CLASS} text` a paragraph; a paragraph starting `Notes:` is the
speaker's notes. And these
directives, each alone on a line, pull in what the repository holds now, so
that slides never drift from the code or the measurements:

  {{excerpt PATH FUNCTION [from=REGEX] [to=REGEX] [comment]}}
      the C function (or Python def) named FUNCTION in PATH, optionally only
      the lines from the first matching `from` to the first matching `to`
  {{excerpt PATH marker=NAME}}
      the lines between `/* slide: NAME */` (or `# slide: NAME`) and
      `/* end slide */` (`# end slide`) in PATH
  {{latency talk}} {{latency models}} {{latency staircase}} {{latency source}}
      the table of chat-latency, from build/latency/ when it was run there
      (`cmake --build build --target latency`), else bench/latency/reference/
  {{bench c10k}} {{bench chart NAME...}} {{bench source}}
      the C10K table and charts of the committed reference run,
      bench/results/reference/ (--results newest: the newest report in
      bench/results/*/; --results DIR: that one); a placeholder where there
      is none. A deck built from any other run than the reference says on
      its title slide which run, and whether it was a quick one

A source file that does not exist yet gives a placeholder; a function or
marker that is gone from an existing file is an error: the deck must be
fixed, not silently wrong.
"""

import argparse
import base64
import csv
import glob
import html
import json
import math
import os
import re
import shlex
import sys

SLIDES_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(SLIDES_DIR)

BENCH_COMMAND = "cmake --build build --target bench-full"
LATENCY_COMMAND = "cmake --build build --target latency"


class DeckError(Exception):
    pass


def warn(text):
    print(f"build_deck: warning: {text}", file=sys.stderr)


def esc(text):
    return html.escape(text, quote=True)


# ---------------------------------------------------------------------------
# Excerpts from the sources


def find_c_function(lines, name):
    """(first, last) line indexes of the definition of C function `name`:
    from its return type (at column 0) to the closing brace at column 0."""
    call = re.compile(r"\b" + re.escape(name) + r"\s*\(")
    for i, line in enumerate(lines):
        if not line or line[0] in " \t#/*}" or not call.search(line):
            continue
        if line.rstrip().endswith(";"):
            continue  # a declaration
        # The body starts at the first "{" ending a line, before any ";".
        j = i
        while j < len(lines) and not lines[j].rstrip().endswith("{"):
            if lines[j].rstrip().endswith(";"):
                break
            j += 1
        if j >= len(lines) or not lines[j].rstrip().endswith("{"):
            continue
        first = i
        previous = lines[i - 1].rstrip() if i > 0 else ""
        if line.startswith(name) and previous and not previous.endswith(
                (";", "}", "*/", "{")) and previous[0] not in " \t#":
            first = i - 1  # the return type on a line of its own
        for k in range(j + 1, len(lines)):
            if lines[k].startswith("}"):
                return first, k
    return None


def find_python_def(lines, name):
    pattern = re.compile(r"^(\s*)(async\s+)?def\s+" + re.escape(name) +
                         r"\s*\(")
    for i, line in enumerate(lines):
        m = pattern.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        last = i
        for k in range(i + 1, len(lines)):
            text = lines[k]
            if text.strip() == "":
                continue
            if len(text) - len(text.lstrip()) <= indent:
                break
            last = k
        return i, last
    return None


def leading_comment(lines, first):
    """Extends `first` up over the comment block right above it."""
    i = first
    if i > 0 and lines[i - 1].rstrip().endswith("*/"):
        while i > 0:
            i -= 1
            if lines[i].lstrip().startswith("/*"):
                return i
    while i > 0 and lines[i - 1].lstrip().startswith(("#", "//")):
        i -= 1
    return i


def find_marker(lines, name):
    start = re.compile(r"(/\*|#|//)\s*slide:\s*" + re.escape(name) +
                       r"\s*(\*/)?\s*$")
    end = re.compile(r"(/\*|#|//)\s*end slide\s*(\*/)?\s*$")
    for i, line in enumerate(lines):
        if start.search(line):
            for k in range(i + 1, len(lines)):
                if end.search(lines[k]):
                    return i + 1, k - 1
            raise DeckError(f"marker '{name}' has no '/* end slide */'")
    return None


def dedent(lines):
    widths = [len(l) - len(l.lstrip()) for l in lines if l.strip()]
    cut = min(widths) if widths else 0
    return [l[cut:] for l in lines]


def excerpt(args, repo):
    """Returns (language, code lines, caption) for an excerpt directive."""
    if not args:
        raise DeckError("excerpt: which file?")
    path, rest = args[0], args[1:]
    options = {}
    names = []
    for word in rest:
        if "=" in word:
            key, value = word.split("=", 1)
            options[key] = value
        else:
            names.append(word)
    full = os.path.join(repo, path)
    language = "python" if path.endswith(".py") else "c"
    if not os.path.exists(full):
        warn(f"{path} does not exist yet: placeholder excerpt")
        return language, [f"{path}: not in the tree yet"], f"{path} (missing)"
    with open(full, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if "marker" in options:
        found = find_marker(lines, options["marker"])
        what = f"slide marker {options['marker']}"
    else:
        function = next((n for n in names if n != "comment"), None)
        if not function:
            raise DeckError(f"excerpt {path}: name a function or marker=")
        found = (find_python_def if language == "python"
                 else find_c_function)(lines, function)
        what = f"{function}()"
    if not found:
        raise DeckError(f"{path}: {what} not found: the code changed, fix "
                        f"slides/deck.md")
    first, last = found
    if "comment" in names and "marker" not in options:
        first = leading_comment(lines, first)
    for key in ("from", "to"):
        if key not in options:
            continue
        pattern = re.compile(options[key])
        for i in range(first, last + 1):
            if pattern.search(lines[i]):
                if key == "from":
                    first = i
                else:
                    last = i
                break
        else:
            raise DeckError(f"{path}: {what}: no line matches {key}="
                            f"{options[key]}: the code changed, fix "
                            f"slides/deck.md")
    body = dedent(lines[first:last + 1])
    caption = f"{path}, {what}, lines {first + 1}-{last + 1}"
    return language, body, caption


# ---------------------------------------------------------------------------
# Code highlighting (enough for C and Python on a slide)

C_KEYWORDS = set("""auto break case char const continue default do double else
enum extern float for goto if inline int long register restrict return short
signed sizeof static struct switch typedef union unsigned void volatile while
bool true false NULL size_t ssize_t pid_t uint64_t uintptr_t""".split())
PY_KEYWORDS = set("""and as assert async await break class continue def del
elif else except finally for from global if import in is lambda None nonlocal
not or pass raise return True False try while with yield self""".split())

TOKENS = {
    "c": re.compile(r"(?P<comment>/\*.*?\*/|//[^\n]*)|"
                    r"(?P<string>\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')|"
                    r"(?P<pre>^\s*#\s*\w+)|(?P<word>\b[A-Za-z_]\w*\b)|"
                    r"(?P<number>\b\d[\w.]*)", re.S | re.M),
    "python": re.compile(r"(?P<comment>#[^\n]*)|"
                         r"(?P<string>[rbf]*\"\"\".*?\"\"\"|[rbf]*'''.*?'''|"
                         r"[rbf]*\"(?:\\.|[^\"\\\n])*\"|"
                         r"[rbf]*'(?:\\.|[^'\\\n])*')|"
                         r"(?P<word>\b[A-Za-z_]\w*\b)|(?P<number>\b\d[\w.]*)",
                         re.S),
}


def highlight(code, language):
    pattern = TOKENS.get(language)
    if not pattern:
        return esc(code)
    keywords = C_KEYWORDS if language == "c" else PY_KEYWORDS
    out = []
    pos = 0
    for m in pattern.finditer(code):
        out.append(esc(code[pos:m.start()]))
        kind = m.lastgroup
        text = m.group(0)
        if kind == "word":
            if text in keywords:
                out.append(f'<span class="tk">{esc(text)}</span>')
            elif code[m.end():m.end() + 1] == "(":
                out.append(f'<span class="tf">{esc(text)}</span>')
            else:
                out.append(esc(text))
        else:
            cls = {"comment": "tc", "string": "ts", "pre": "tp",
                   "number": "tn"}[kind]
            out.append(f'<span class="{cls}">{esc(text)}</span>')
        pos = m.end()
    out.append(esc(code[pos:]))
    return "".join(out)


def code_block(language, lines, caption=None, classes=""):
    """A code figure; its font may shrink to fit (deck.js), not below the
    readable minimum."""
    code = highlight("\n".join(lines), language)
    cap = (f'<figcaption>{esc(caption)}</figcaption>' if caption else "")
    return (f'<figure class="code {esc(classes)}">{cap}<pre class="fit">'
            f'<code class="language-{esc(language)}">{code}</code></pre>'
            "</figure>")


# ---------------------------------------------------------------------------
# Markdown


def inline(text):
    """Inline Markdown: `code`, **bold**, *italic*, [link](url), <br>."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{esc(part[1:-1])}</code>")
            continue
        s = esc(part)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>",
                   s)
        s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)",
                   lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', s)
        s = s.replace("&lt;br&gt;", "<br>")
        out.append(s)
    return "".join(out)


def split_row(line):
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    cells, cell, in_code = [], "", False
    for ch in line:
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
    cells.append(cell.strip())
    return cells


def table_html(header, aligns, rows, classes=""):
    def cell(tag, text, align):
        style = f' class="{align}"' if align else ""
        return f"<{tag}{style}>{inline(text)}</{tag}>"
    head = "".join(cell("th", h, aligns[i] if i < len(aligns) else "")
                   for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", c, aligns[i] if i < len(aligns) else "")
                         for i, c in enumerate(r)) + "</tr>" for r in rows)
    return (f'<div class="table {classes}"><table><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")


def parse_table(lines):
    header = split_row(lines[0])
    aligns = []
    for spec in split_row(lines[1]):
        left, right = spec.startswith(":"), spec.endswith(":")
        aligns.append("right" if right and not left else
                      "center" if left and right else "")
    rows = [split_row(l) for l in lines[2:]]
    return header, aligns, rows


class Renderer:
    def __init__(self, context):
        self.context = context

    def blocks(self, lines):
        """Markdown lines -> HTML."""
        out = []
        i = 0
        pending = ""  # classes from a "{.class}" line, for the next block
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if not stripped:
                i += 1
                continue
            m = re.match(r"^\{\.([\w .-]+)\}$", stripped)
            if m:
                pending = m.group(1).replace(".", " ")
                i += 1
                continue
            classes, pending = pending, ""
            if stripped.startswith("```"):
                language = stripped[3:].strip() or "text"
                j = i + 1
                while j < len(lines) and not lines[j].strip().startswith("```"):
                    j += 1
                out.append(code_block(language, lines[i + 1:j],
                                      classes=classes))
                i = j + 1
                continue
            if stripped.startswith("{{") and stripped.endswith("}}"):
                out.append(self.context.directive(
                    shlex.split(stripped[2:-2])))
                i += 1
                continue
            if stripped.startswith(":::columns"):
                i, html_text = self.columns(lines, i)
                out.append(html_text)
                continue
            m = re.match(r"^(#{1,3})\s+(.*)$", stripped)
            if m:
                level = len(m.group(1))
                out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
                i += 1
                continue
            if stripped.startswith("|") and i + 1 < len(lines) and \
                    re.match(r"^\|?\s*:?-{3,}", lines[i + 1].strip()):
                j = i
                while j < len(lines) and lines[j].strip().startswith("|"):
                    j += 1
                out.append(table_html(*parse_table(
                    [l.strip() for l in lines[i:j]]), classes))
                i = j
                continue
            m = re.match(r"^!\[([^\]]*)\]\(([^)\s]+)\)$", stripped)
            if m:
                out.append(self.context.image(m.group(2), m.group(1)))
                i += 1
                continue
            if re.match(r"^([-*]|\d+\.)\s", stripped):
                i, html_text = self.list_block(lines, i)
                if classes:
                    html_text = html_text.replace(
                        ">", f' class="{esc(classes)}">', 1)
                out.append(html_text)
                continue
            if stripped.startswith(">"):
                j = i
                quoted = []
                while j < len(lines) and lines[j].strip().startswith(">"):
                    quoted.append(lines[j].strip()[1:].strip())
                    j += 1
                out.append(f"<blockquote>{self.blocks(quoted)}</blockquote>")
                i = j
                continue
            if stripped.startswith("<"):
                out.append(line)
                i += 1
                continue
            j = i
            para = []
            while j < len(lines) and lines[j].strip() and not re.match(
                    r"^(#{1,3}\s|```|\||([-*]|\d+\.)\s|:::|\{\{|!\[|>)",
                    lines[j].strip()):
                para.append(lines[j].strip())
                j += 1
            if not para:  # a line no rule took: keep it as text
                para, j = [stripped], i + 1
            text = " ".join(para)
            if text.startswith("Notes:"):
                out.append(f'<aside class="notes">{inline(text[6:].strip())}'
                           f"</aside>")
            else:
                m = re.match(r"^\{\.([\w .-]+)\}\s*(.*)$", text)
                if m:
                    classes = (classes + " " + m.group(1).replace(".", " ")
                               ).strip()
                    text = m.group(2)
                cls = f' class="{esc(classes)}"' if classes else ""
                out.append(f"<p{cls}>{inline(text)}</p>")
            i = j
        return "\n".join(out)

    def list_block(self, lines, i):
        ordered = bool(re.match(r"^\d+\.", lines[i].strip()))
        base = len(lines[i]) - len(lines[i].lstrip())
        items = []
        while i < len(lines):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            stripped = line.strip()
            if not stripped:
                # a blank line ends the list unless an item follows
                if i + 1 < len(lines) and re.match(
                        r"^\s*([-*]|\d+\.)\s", lines[i + 1]):
                    i += 1
                    continue
                break
            m = re.match(r"^([-*]|\d+\.)\s+(.*)$", stripped)
            if m and indent == base:
                items.append([m.group(2), []])
            elif indent > base and items:
                items[-1][1].append(line[base + 2:] if len(line) > base + 2
                                    else stripped)
            elif items and not m:
                items[-1][0] += " " + stripped  # a continued item
            else:
                break
            i += 1
        tag = "ol" if ordered else "ul"
        body = "".join(
            f"<li>{inline(text)}{self.blocks(sub) if sub else ''}</li>"
            for text, sub in items)
        return i, f"<{tag}>{body}</{tag}>"

    def columns(self, lines, i):
        spec = lines[i].strip()[len(":::columns"):].split()
        widths = [w for w in spec if w.isdigit()]
        parts, current = [], []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped == ":::next":
                parts.append(current)
                current = []
            elif stripped == ":::end":
                break
            else:
                current.append(lines[i])
            i += 1
        parts.append(current)
        cols = []
        for n, part in enumerate(parts):
            style = (f' style="flex: {widths[n]} 1 0"' if n < len(widths)
                     else "")
            cols.append(f'<div class="col"{style}>{self.blocks(part)}</div>')
        return i + 1, f'<div class="columns">{"".join(cols)}</div>'


# ---------------------------------------------------------------------------
# What the directives pull in


def data_uri(path):
    kind = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg",
            ".jpeg": "image/jpeg", ".gif": "image/gif"}.get(
                os.path.splitext(path)[1].lower(), "application/octet-stream")
    with open(path, "rb") as f:
        return f"data:{kind};base64," + base64.b64encode(f.read()).decode()


def placeholder(title, command, why):
    return (f'<div class="placeholder"><p><strong>{esc(title)}</strong></p>'
            f"<p>{esc(why)}</p><p>Run: <code>{esc(command)}</code>, then "
            f"<code>cmake --build build --target slides</code></p></div>")


def read_latency(folder):
    with open(os.path.join(folder, "latency.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    sweep = []
    path = os.path.join(folder, "latency_sweep.csv")
    if os.path.exists(path):
        with open(path, newline="") as f:
            sweep = list(csv.DictReader(f))
    facts = {}
    path = os.path.join(folder, "latency.md")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"^- (Date|CPU|Caches|Kernel|Storage|Load "
                             r"average at start): (.*)$", line.strip())
                if m:
                    facts[m.group(1)] = m.group(2)
    return rows, sweep, facts


def parse_size(text):
    m = re.match(r"([\d.]+)\s*(KiB|MiB|GiB)", text)
    if not m:
        return None
    return float(m.group(1)) * {"KiB": 1024, "MiB": 1024 ** 2,
                                "GiB": 1024 ** 3}[m.group(2)]


def staircase_svg(sweep, cycle_ns, caches):
    """Latency against working-set size, log-log, as inline SVG."""
    points = [(float(r["bytes"]), float(r["median_ns"])) for r in sweep]
    width, height = 1100, 430
    left, right, top, bottom = 90, 30, 20, 60
    xs = [math.log2(b) for b, _ in points]
    x0, x1 = min(xs) - 0.3, max(xs) + 0.3
    y0 = math.log10(min(v for _, v in points)) - 0.15
    y1 = math.log10(max(v for _, v in points)) + 0.15

    def px(b):
        return left + (math.log2(b) - x0) / (x1 - x0) * (width - left - right)

    def py(v):
        return top + (y1 - math.log10(v)) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" '
           'xmlns="http://www.w3.org/2000/svg" font-family="DejaVu Sans, '
           'Liberation Sans, Arial, sans-serif" font-size="15">']
    for exp in range(math.floor(y0), math.ceil(y1) + 1):
        for mult in (1, 2, 5):
            v = mult * 10 ** exp
            if not (y0 <= math.log10(v) <= y1):
                continue
            y = py(v)
            label = (f"{v:g} ns" if v < 1000 else f"{v / 1000:g} µs")
            out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" '
                       f'y2="{y:.1f}" stroke="#e3e3e3"/>'
                       f'<text x="{left - 8}" y="{y + 5:.1f}" '
                       f'text-anchor="end" fill="#555">{label}</text>')
    for b, _ in points:
        if abs(math.log2(b) - round(math.log2(b))) > 0.01:
            continue
        if round(math.log2(b)) % 2:
            continue
        label = (f"{b / 1024:g} KiB" if b < 1024 ** 2 else
                 f"{b / 1024 ** 2:g} MiB" if b < 1024 ** 3 else
                 f"{b / 1024 ** 3:g} GiB")
        out.append(f'<text x="{px(b):.1f}" y="{height - bottom + 24}" '
                   f'text-anchor="middle" fill="#555">{label}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 8}" '
               'text-anchor="middle" fill="#333">working set (log scale): a '
               'random cycle of dependent loads through this many bytes'
               '</text>')
    for name, size in caches:
        if size and x0 < math.log2(size) < x1:
            x = px(size)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                       f'y2="{height - bottom}" stroke="#c44" '
                       'stroke-dasharray="6 5"/>'
                       f'<text x="{x + 6:.1f}" y="{top + 16}" fill="#c44">'
                       f'{esc(name)}</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(b):.1f},{py(v):.1f}"
                    for i, (b, v) in enumerate(points))
    out.append(f'<path d="{path}" fill="none" stroke="#1f77b4" '
               'stroke-width="3"/>')
    for b, v in points:
        out.append(f'<circle cx="{px(b):.1f}" cy="{py(v):.1f}" r="5" '
                   'fill="#1f77b4"><title>'
                   f'{b / 1024:g} KiB: {v:.1f} ns = {v / cycle_ns:.0f} cycles'
                   '</title></circle>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" '
               f'y2="{height - bottom}" stroke="#333"/>'
               f'<line x1="{left}" x2="{width - right}" y1="{height - bottom}"'
               f' y2="{height - bottom}" stroke="#333"/></svg>')
    return "".join(out)


def newest_bench_run(results_dir):
    runs = []
    for report in glob.glob(os.path.join(results_dir, "*", "report.md")):
        folder = os.path.dirname(report)
        if os.path.basename(folder).startswith("tmp-"):
            continue
        runs.append((os.path.getmtime(report), folder))
    return max(runs)[1] if runs else None


def markdown_section_table(text, heading_pattern):
    """The first Markdown table under the first heading that matches."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#") and re.search(heading_pattern, line):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("#"):
                if lines[j].startswith("|"):
                    k = j
                    while k < len(lines) and lines[k].startswith("|"):
                        k += 1
                    return line.lstrip("# ").strip(), parse_table(lines[j:k])
                j += 1
    return None, None


class Context:
    """Resolves directives against the repository and the measurements."""

    def __init__(self, repo, deck_dir, latency_dir, results_dir):
        self.repo = repo
        self.deck_dir = deck_dir
        self.latency_dir = latency_dir
        self.results_dir = results_dir
        self.sources = []  # what the deck was built from, for the record

    def directive(self, words):
        name, args = words[0], words[1:]
        if name == "excerpt":
            language, lines, caption = excerpt(args, self.repo)
            return code_block(language, lines, caption)
        if name == "latency":
            return self.latency(args[0] if args else "talk")
        if name == "bench":
            return self.bench(args)
        raise DeckError(f"unknown directive {{{{{' '.join(words)}}}}}")

    def image(self, path, alt):
        for base in (self.deck_dir, self.repo):
            full = os.path.join(base, path)
            if os.path.exists(full):
                return (f'<figure class="image"><img src="{data_uri(full)}" '
                        f'alt="{esc(alt)}"></figure>')
        raise DeckError(f"image {path} not found")

    # -- latency ---------------------------------------------------------

    def latency(self, what):
        folder = self.latency_dir
        if not folder:
            return placeholder("The latency table", LATENCY_COMMAND,
                               "chat-latency has not been run.")
        rows, sweep, facts = read_latency(folder)
        cycle = next((float(r["median_ns"]) for r in rows
                      if r["id"] == "cycle" and r["median_ns"]), None)
        if what == "source":
            where = os.path.relpath(folder, self.repo)
            return (f'<p class="source">Measured by <code>chat-latency</code> '
                    f"({esc(where)}): {esc(facts.get('Date', '?'))}; "
                    f"{esc(facts.get('CPU', '?'))}; load average at start "
                    f"{esc(' '.join(facts.get('Load average at start', '?').split()[:3]))}."
                    " Medians; a shared machine adds noise.</p>")
        if what == "staircase":
            if not sweep or not cycle:
                return placeholder("The cache staircase", LATENCY_COMMAND,
                                   "No latency_sweep.csv in " + folder)
            caches = []
            m = re.match(r"L1d (.+?), L2 (.+?), L3 (.+?) \(", facts.get(
                "Caches", ""))
            if m:
                caches = [("L1d", parse_size(m.group(1))),
                          ("L2", parse_size(m.group(2))),
                          ("L3 (reported)", parse_size(m.group(3)))]
            return f'<div class="svg">{staircase_svg(sweep, cycle, caches)}' \
                   "</div>"
        group = "talk" if what == "talk" else "model"
        if group == "talk":
            header = [("Event", ""), ("Measured here", "right"),
                      ("Scaled: 1 cycle = 1 s", "right"),
                      ("The talk", "right talk"),
                      ("The talk, scaled", "right talk")]
        else:
            header = [("What the model pays", ""), ("Measured here", "right"),
                      ("Scaled: 1 cycle = 1 s", "right"), ("How", "")]
        body = []
        for r in rows:
            if r["group"] != group:
                continue
            measured = fmt_ns(float(r["median_ns"])) if r["median_ns"] else \
                "not measured"
            event = esc(r["event"])
            if r.get("talk_event"):
                event += (f'<br><span class="aside">the talk: '
                          f'{esc(r["talk_event"])}</span>')
            cells = [event, esc(measured), esc(r["scaled"] or "-")]
            if group == "talk":
                cells += [esc(micro(r["talk_latency"]) or "-"),
                          esc(r["talk_scaled"] or "-")]
            else:
                cells.append(esc(SHORT_METHODS.get(r["id"], "")))
            body.append("<tr>" + "".join(
                f'<td class="{header[i][1]}">{c}</td>'
                for i, c in enumerate(cells)) + "</tr>")
        head = "".join(f'<th class="{cls}">{esc(text)}</th>'
                       for text, cls in header)
        return (f'<div class="table latency {group}"><table><thead><tr>'
                f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
                "</div>")

    def latency_value(self, row_id, scaled):
        """One figure of the latency table, for a sentence."""
        if not self.latency_dir:
            return "(not measured)"
        rows, _, _ = read_latency(self.latency_dir)
        for r in rows:
            if r["id"] == row_id:
                if not r["median_ns"]:
                    return "(not measured)"
                return r["scaled"] if scaled else fmt_ns(float(r["median_ns"]))
        raise DeckError(f"latency table has no row {row_id}")

    # -- benchmark -------------------------------------------------------

    def bench_run(self):
        results = os.path.join(self.repo, "bench", "results")
        if self.results_dir in (None, "", "reference"):
            chosen = os.path.join(results, "reference")
        elif self.results_dir == "newest":
            return newest_bench_run(results)
        else:
            chosen = self.results_dir
        if os.path.exists(os.path.join(chosen, "report.md")):
            return chosen
        return None

    def run_note(self):
        """For the title slide: which benchmark run the deck shows, when it
        is not the committed reference run (None when it is)."""
        run = self.bench_run()
        if not run:
            return None
        reference = os.path.join(self.repo, "bench", "results", "reference")
        if os.path.realpath(run) == os.path.realpath(reference):
            return None
        config = {}
        try:
            with open(os.path.join(run, "runs.json"), encoding="utf-8") as f:
                config = json.load(f).get("config", {})
        except (OSError, ValueError):
            pass
        mode = config.get("mode", "unknown")
        clients = config.get("clients") or []
        repeats = config.get("repeats")
        where = os.path.relpath(run, self.repo)
        if mode == "full":
            what = "a full run"
        else:
            what = (f"a <strong>{esc(mode)}</strong> run"
                    + (f", N up to {max(clients):,}" if clients else "")
                    + (f", {repeats} repeat(s)" if repeats else "")
                    + ": rough figures, not the reference run")
        return (f"Benchmark figures from <code>{esc(where)}</code>, {what}. "
                "The reference run: <code>bench/results/reference</code>.")

    def bench(self, args):
        what = args[0] if args else "c10k"
        run = self.bench_run()
        if not run and what == "source":
            return ""
        if not run:
            return placeholder(
                "No benchmark report yet", BENCH_COMMAND,
                "The charts and the C10K table come from the newest "
                "bench/results/*/report.md.")
        if run not in self.sources:
            self.sources.append(run)
        where = os.path.relpath(run, self.repo)
        if what == "source":
            with open(os.path.join(run, "report.md"), encoding="utf-8") as f:
                title = f.readline().lstrip("# ").strip()
            return (f'<p class="source">From <code>{esc(where)}/report.md'
                    f"</code>: {esc(title)}</p>")
        if what == "c10k":
            with open(os.path.join(run, "report.md"), encoding="utf-8") as f:
                text = f.read()
            heading, table = markdown_section_table(text, r"C10K")
            if not table:
                return placeholder("No C10K table in " + where, BENCH_COMMAND,
                                   "The report has no C10K section.")
            header, aligns, rows = table
            keep = [i for i, h in enumerate(header) if re.search(
                r"^(Model|Passed|User mem|Kernel mem|Tasks|CPU|"
                r"Deliveries|p99|Connect)", h)] or list(range(len(header)))
            table_text = table_html(
                [header[i] for i in keep],
                [("right" if n > 0 else "") for n, _ in enumerate(keep)],
                [[r[i] if i < len(r) else "" for i in keep] for r in rows],
                "c10k")
            return f"<h3>{inline(heading)}</h3>{table_text}"
        if what == "chart":
            figures = []
            for name in args[1:]:
                png = os.path.join(run, "charts", name + ".png")
                if os.path.exists(png):
                    figures.append(f'<figure class="chart"><img src="'
                                   f'{data_uri(png)}" alt="{esc(name)}">'
                                   "</figure>")
                else:
                    figures.append(placeholder(
                        f"No chart {name} in {where}", BENCH_COMMAND,
                        "This run has no such chart (gnuplot missing, or no "
                        "data)."))
            return f'<div class="charts">{"".join(figures)}</div>'
        raise DeckError(f"unknown bench directive: {what}")


def fmt_ns(ns):
    if ns < 10:
        return f"{ns:.2f} ns"
    if ns < 1000:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def micro(text):
    """The talk's "25 us" as "25 µs"."""
    return re.sub(r"(\d) ?us\b", "\\1 µs", text or "")


SHORT_METHODS = {
    "process_switch": "two processes, pipe ping-pong, one CPU",
    "thread_switch": "two threads, same ping-pong",
    "coroutine_switch": "two coroutines: resume, yield back",
    "fork": "fork, child _exit, parent waitpid",
    "pthread": "create a thread that returns, join it",
    "epoll": "write, epoll_wait, read: one thread",
    "libevent": "the same, as one libevent callback",
    "loop_turn": "loop.c, epoll_wait(0) finds nothing",
}


# ---------------------------------------------------------------------------
# The deck


def split_slides(text):
    slides, current, fence = [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
        if line.strip() == "---" and not fence:
            slides.append(current)
            current = []
        else:
            current.append(line)
    slides.append(current)
    return [s for s in slides if any(l.strip() for l in s)]


def render_slides(text, context):
    text = re.sub(r"\{\{latency:(\w+)(?::(scaled))?\}\}",
                  lambda m: context.latency_value(m.group(1), m.group(2)),
                  text)
    renderer = Renderer(context)
    have_bench = context.bench_run() is not None
    sections = []
    number = 0
    for lines in split_slides(text):
        classes = ["slide"]
        body = []
        for line in lines:
            m = re.match(r"^\s*<!--\s*slide:\s*([\w -]+)-->\s*$", line)
            if m:
                classes += m.group(1).split()
            else:
                body.append(line)
        # Slides that only make sense with (or without) a benchmark report.
        if ("if-bench" in classes and not have_bench) or (
                "if-no-bench" in classes and have_bench):
            continue
        number += 1
        content = renderer.blocks(body)
        sections.append(f'<section class="{" ".join(classes)}" '
                        f'id="slide-{number}" data-n="{number}">'
                        f'<div class="content">{content}</div>'
                        f'<footer><span class="n">{number}</span></footer>'
                        "</section>")
    return sections


def find_latency_dir(explicit, build_dir):
    if explicit:
        return explicit if os.path.exists(
            os.path.join(explicit, "latency.csv")) else None
    for folder in ([os.path.join(build_dir, "latency")] if build_dir else []) \
            + [os.path.join(REPO_DIR, "bench", "latency", "reference")]:
        if os.path.exists(os.path.join(folder, "latency.csv")):
            return folder
    return None


def build(deck_path, out_path, repo, latency_dir, results_dir, title):
    with open(deck_path, encoding="utf-8") as f:
        text = f.read()
    context = Context(repo, os.path.dirname(os.path.abspath(deck_path)),
                      latency_dir, results_dir)
    sections = render_slides(text, context)
    note = context.run_note()
    if note and sections:
        at = sections[0].find("</div><footer>")
        sections[0] = (sections[0][:at] + f'<p class="source run-note">{note}'
                       "</p>" + sections[0][at:])
    with open(os.path.join(SLIDES_DIR, "deck.css"), encoding="utf-8") as f:
        css = f.read()
    with open(os.path.join(SLIDES_DIR, "deck.js"), encoding="utf-8") as f:
        js = f.read()
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>
{css}
</style>
</head>
<body>
<div id="deck">
{chr(10).join(sections)}
</div>
<div id="progress"></div>
<script>
{js}
</script>
</body>
</html>
"""
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(page)
    return len(sections), context


def write_pdf(html_path, pdf_path):
    sys.path.insert(0, SLIDES_DIR)
    import chromium
    if not chromium.find_chromium():
        warn("chromium not found: no PDF")
        return False
    with chromium.Browser() as browser:
        page = browser.new_page(1280, 720)
        page.navigate("file://" + os.path.abspath(html_path) + "?print")
        page.evaluate("document.fonts.ready.then(() => true)")
        data = page.pdf()
    with open(pdf_path, "wb") as f:
        f.write(data)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deck", default=os.path.join(SLIDES_DIR, "deck.md"))
    parser.add_argument("--out", default=os.path.join(REPO_DIR, "build",
                                                      "slides", "deck.html"))
    parser.add_argument("--repo", default=REPO_DIR)
    parser.add_argument("--build-dir", default=os.path.join(REPO_DIR,
                                                            "build"),
                        help="where to look for latency/ (from the latency "
                             "target) before the committed reference")
    parser.add_argument("--latency", help="folder with latency.csv")
    parser.add_argument("--results", default="reference",
                        help="benchmark results: 'reference' (the default: "
                        "the committed bench/results/reference), 'newest' "
                        "(the newest bench/results/*/ with a report.md), or "
                        "a folder; any but the reference is named on the "
                        "title slide")
    parser.add_argument("--pdf", help="also print the deck to this PDF "
                        "(needs chromium)")
    parser.add_argument("--title", default="C10K chat: async programming, "
                        "re-told in C")
    args = parser.parse_args()
    latency_dir = find_latency_dir(args.latency, args.build_dir)
    try:
        count, context = build(args.deck, args.out, args.repo, latency_dir,
                               args.results, args.title)
    except DeckError as e:
        print(f"build_deck: {e}", file=sys.stderr)
        return 1
    print(f"build_deck: {count} slides -> {args.out}")
    print(f"build_deck: latency table from "
          f"{latency_dir or '(none: placeholder)'}")
    print(f"build_deck: benchmark from "
          f"{', '.join(context.sources) or '(none yet: placeholder)'}")
    if args.pdf:
        try:
            if write_pdf(args.out, args.pdf):
                print(f"build_deck: PDF -> {args.pdf}")
        except Exception as e:  # the HTML is the deck; the PDF a bonus
            warn(f"no PDF: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
