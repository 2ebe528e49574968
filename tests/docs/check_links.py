#!/usr/bin/env python3
"""Every link in the repository's Markdown stays inside a plain clone.

Reads the *.md files that git tracks (or, outside a git checkout, every
*.md under the root), and prints each link whose target is neither a web
address nor a file or folder of the repository: a relative path that leaves
the tree (../shared/...) or names nothing. Exits 1 if there is any.

    tests/docs/check_links.py [ROOT]
"""
import os
import re
import subprocess
import sys

# [text](target) and [text]: target; an image's ![alt](target) too.
INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def markdown_files(root):
    try:
        listed = subprocess.run(["git", "-C", root, "ls-files", "*.md"],
                                capture_output=True, text=True, check=True)
        return [line for line in listed.stdout.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        found = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith((".", "build"))]
            found += [os.path.relpath(os.path.join(folder, f), root)
                      for f in files if f.endswith(".md")]
        return found


def broken_links(root, path):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        text = FENCE.sub("", f.read())
    here = os.path.dirname(path)
    for target in INLINE.findall(text) + REFERENCE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or \
                target.startswith("#"):
            continue  # a web address, mail, or a heading of this page
        relative = target.split("#", 1)[0]
        resolved = os.path.normpath(os.path.join(here, relative))
        if resolved.startswith("..") or os.path.isabs(relative):
            yield target, "leaves the repository"
        elif not os.path.exists(os.path.join(root, resolved)):
            yield target, "names nothing in the repository"


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), "..", ".."))
    bad = [(path, target, why) for path in markdown_files(root)
           for target, why in broken_links(root, path)]
    for path, target, why in bad:
        print(f"{path}: {target}: {why}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
