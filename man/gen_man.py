#!/usr/bin/env python3
"""Writes a program's man page from its text source and its own --help.

The man page's SYNOPSIS and OPTIONS are not written twice: they are made at
build time from what the freshly built program prints for --help (one text,
in the program's source), and the rest of the page (what it does, signals,
exit status, files) comes from a troff source in man/. So --help and the man
page cannot drift apart; tests/package checks that README.md's option list
matches --help too.

    gen_man.py --source man/chat-server.1.in --program build/bin/chat-evented \
               --version 1.0.0 --out build/man/chat-evented.1

In the source, @NAME@, @VERSION@, @SYNOPSIS@ and @OPTIONS@ are replaced; a
line `.\\" how MODEL: TEXT` defines @HOW@ for chat-MODEL (the server page is
shared by every model), `.\\" how *: TEXT` for a model it does not name.
"""
import argparse
import re
import subprocess
import sys


def escape(text):
    """Plain text as troff: backslashes, hyphens, a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text[:1] in (".", "'"):
        text = "\\&" + text
    return text


def term(text):
    """An option's left column: options bold, VALUES italic."""
    out = []
    for word in re.split(r"(\s+|,|\[|\]|=)", text):
        if not word:
            continue
        if word.startswith("-"):
            out.append("\\fB" + escape(word) + "\\fR")
        elif re.fullmatch(r"[A-Z][A-Z_0-9]*", word):
            out.append("\\fI" + escape(word) + "\\fR")
        else:
            out.append(escape(word))
    return "".join(out)


def parse_help(help_text, name):
    """(synopsis, [(term, description) or (None, paragraph)]) of --help."""
    lines = help_text.rstrip("\n").split("\n")
    usage = re.match(r"(?i)usage:\s*(\S+)\s*(.*)", lines[0])
    if not usage:
        raise SystemExit(f"{name} --help: the first line is not 'Usage: ...'")
    synopsis = usage.group(2)
    entries = []
    text = []

    def flush_text():
        if text:
            entries.append((None, " ".join(text)))
            text.clear()

    option = re.compile(r"^( {1,8})((?:-|[A-Z]+,)\S*(?: \S+)*?)(?: {2,}(\S.*))?$")
    for line in lines[1:]:
        if not line.strip():
            flush_text()
            continue
        indent = len(line) - len(line.lstrip(" "))
        m = option.match(line)
        if m:
            # The text before the first option repeats what the page says.
            if not any(left for left, _ in entries):
                text.clear()
                entries.clear()
            flush_text()
            entries.append([m.group(2), m.group(3) or ""])
        elif indent > 8 and entries and entries[-1][0] is not None and not text:
            entries[-1][1] = (entries[-1][1] + " " + line.strip()).strip()
        else:
            text.append(line.strip())
    flush_text()
    return synopsis, entries


def render_options(entries):
    out = []
    for left, right in entries:
        right = re.sub(r"\s+", " ", right).strip()  # --help's column padding
        if left is None:
            out += [".PP", escape(right)]
        else:
            out += [".TP", term(left), escape(right)]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="the page's troff source")
    parser.add_argument("--program", required=True, help="the built program")
    parser.add_argument("--name", help="its name (default: the file's name)")
    parser.add_argument("--version", required=True, help="the project's version")
    parser.add_argument("--out", required=True, help="the man page to write")
    args = parser.parse_args()
    name = args.name or args.program.rstrip("/").rsplit("/", 1)[-1]

    result = subprocess.run([args.program, "--help"], capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0 or not result.stdout:
        sys.exit(f"{name} --help failed ({result.returncode}): {result.stderr}")
    synopsis, entries = parse_help(result.stdout, name)
    if not any(left for left, _ in entries):
        sys.exit(f"{name} --help: no option found in:\n{result.stdout}")

    with open(args.source, encoding="utf-8") as f:
        source = f.read()
    model = name[len("chat-"):] if name.startswith("chat-") else name
    how = {}
    for m in re.finditer(r'^\.\\" how ([\w*]+): (.*)$', source, re.M):
        how[m.group(1)] = m.group(2)
    page = (source.replace("@NAME@", escape(name))
            .replace("@UPPER@", escape(name.upper()))
            .replace("@VERSION@", escape(args.version))
            .replace("@HOW@", how.get(model, how.get("*", "")))
            .replace("@SYNOPSIS@", term(synopsis))
            .replace("@OPTIONS@", render_options(entries)))
    leftover = re.findall(r"@[A-Z]+@", page)
    if leftover:
        sys.exit(f"{args.source}: unknown placeholders {leftover}")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)


if __name__ == "__main__":
    main()
