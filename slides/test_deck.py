#!/usr/bin/env python3
"""The deck's browser test: headless Chromium opens the built deck, checks
every slide, and takes a screenshot of each.

    python3 slides/test_deck.py build/slides/deck.html [--screenshots DIR]
        [--build -- BUILD_DECK_ARGUMENTS...]

A slide fails when its content overflows it (taller or wider than the
1280 x 720 slide, or clipped inside a code block, a table or a column), when
an image fails to load, or when code had to shrink below the readable
minimum. The deck computes this itself (window.deckCheck() in deck.js, the
same layout a viewer gets); this script loads it at exactly 1280 x 720 and
reports. Exit status: 0 all good, 1 a slide failed, 77 Chromium is not
installed (CTest counts it as skipped).

With --build, it first builds the deck with slides/build_deck.py and the
arguments after `--`, the way the `slides` target does.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

SLIDES_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, SLIDES_DIR)
import chromium  # noqa: E402

SKIP = 77
WIDTH, HEIGHT = 1280, 720


CURRENT = ("[...document.querySelectorAll('section.slide')]"
           ".findIndex(s => s.classList.contains('current')) + 1")


def check_navigation(page):
    """deck.html#3 (just loaded) shows slide 3; the keys move; returns 1
    on failure."""
    count = page.evaluate("deckCount()")
    steps = [(None, min(3, count)), ("ArrowRight", min(4, count)),
             ("ArrowLeft", min(3, count)), ("End", count), ("Home", 1),
             (" ", min(2, count))]
    for key, want in steps:
        if key:
            page.evaluate("document.dispatchEvent(new KeyboardEvent("
                          f"'keydown', {{key: {key!r}}}))")
        got = page.evaluate(CURRENT)
        if got != want:
            print(f"FAIL navigation: after {key or 'opening #3'} the deck "
                  f"shows slide {got}, not {want}")
            return 1
    print(f"ok   navigation: #3 opens slide 3; arrows, space, Home, End "
          f"move ({count} slides)")
    page.evaluate("deckGo(1)")
    return 0


BAD_DECK = """# Too tall
""" + "\n\n".join(f"Paragraph {i} of a slide that cannot hold them all."
                   for i in range(30)) + """

---

# Too wide

```c
""" + "int x = 1; " * 40 + """
```

---

# A broken image

<img src="data:image/png;base64,bm90IGEgcG5n" alt="not a png">
"""


def check_the_checker(page, workdir):
    """The check must catch what it claims to: a bad deck must fail with
    an overflow, a clipped code block and a broken image. Returns 1 when
    it does not."""
    import build_deck
    md = os.path.join(workdir, "bad.md")
    out = os.path.join(workdir, "bad.html")
    with open(md, "w") as f:
        f.write(BAD_DECK)
    build_deck.build(md, out, build_deck.REPO_DIR, None, None, "bad deck")
    page.navigate("file://" + out)
    verdicts = page.evaluate("deckCheck()")
    found = [bool(v["problems"]) for v in verdicts]
    if len(found) != 3 or not all(found):
        print(f"FAIL the check itself: on a deck built to fail it found "
              f"{verdicts}")
        return 1
    print("ok   the check itself: it catches a tall slide, clipped code "
          "and a broken image")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("deck", help="the built deck.html")
    parser.add_argument("--screenshots", help="write NN.png per slide here "
                        "(old NN.png files there are removed first)")
    parser.add_argument("--build", action="store_true",
                        help="build the deck first: build_deck.py --out DECK "
                             "plus the arguments after --")
    parser.add_argument("--timeout", type=float, default=240,
                        help="seconds for the whole check")
    argv = sys.argv[1:]
    build_args = []
    if "--" in argv:  # what follows goes to build_deck.py
        cut = argv.index("--")
        argv, build_args = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)

    if args.build:
        command = [sys.executable, os.path.join(SLIDES_DIR, "build_deck.py"),
                   "--out", args.deck, *build_args]
        result = subprocess.run(command, timeout=120)
        if result.returncode != 0:
            print("test_deck: the deck did not build", file=sys.stderr)
            return 1
    if not os.path.exists(args.deck):
        print(f"test_deck: {args.deck} does not exist: build it with "
              "cmake --build build --target slides", file=sys.stderr)
        return 1
    if not chromium.find_chromium():
        print("test_deck: SKIPPED: chromium is not installed "
              "(apt-get install chromium)")
        return SKIP

    started = time.monotonic()
    url = "file://" + os.path.abspath(args.deck)
    failures = 0
    with chromium.Browser(timeout=min(90, args.timeout)) as browser:
        page = browser.new_page(WIDTH, HEIGHT)
        page.navigate(url + "#3", timeout=args.timeout / 2)
        page.evaluate("document.fonts.ready.then(() => true)")
        size = page.evaluate("[innerWidth, innerHeight]")
        if size != [WIDTH, HEIGHT]:
            print(f"test_deck: the window is {size}, not {WIDTH}x{HEIGHT}")
            return 1
        failures += check_navigation(page)
        verdicts = page.evaluate("deckCheck()")
        if not verdicts:
            print("test_deck: the deck has no slides")
            return 1
        if args.screenshots:
            os.makedirs(args.screenshots, exist_ok=True)
            for name in os.listdir(args.screenshots):
                if name.endswith(".png") and name[:-4].isdigit():
                    os.remove(os.path.join(args.screenshots, name))
        for verdict in verdicts:
            n = verdict["slide"]
            if time.monotonic() - started > args.timeout:
                print("test_deck: out of time")
                return 1
            shot = ""
            if args.screenshots:
                page.evaluate(f"deckGo({n})")
                # two frames: the slide is laid out and painted
                page.evaluate("new Promise(r => requestAnimationFrame("
                              "() => requestAnimationFrame(() => r(1))))")
                path = os.path.join(args.screenshots, f"{n:02d}.png")
                with open(path, "wb") as f:
                    f.write(page.screenshot())
                shot = f"  [{os.path.relpath(path)}]"
            status = "ok  " if not verdict["problems"] else "FAIL"
            print(f"{status} slide {n:2d}: {verdict['title'][:60]}"
                  f"{' (' + str(verdict['images']) + ' images)' if verdict['images'] else ''}"
                  f"{shot}")
            for problem in verdict["problems"]:
                print(f"       - {problem}")
            failures += bool(verdict["problems"])
        # Last, in the same page (a background tab paints no frames).
        with tempfile.TemporaryDirectory() as workdir:
            failures += check_the_checker(page, workdir)
    print(f"test_deck: {len(verdicts)} slides, {failures} failed checks "
          f"({time.monotonic() - started:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except chromium.BrowserError as e:
        print(f"test_deck: {e}", file=sys.stderr)
        sys.exit(1)
