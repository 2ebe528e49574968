#!/usr/bin/env python3
"""Unit tests of the deck's excerpt extractor and Markdown renderer
(no browser needed): python3 slides/test_excerpt.py"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_deck  # noqa: E402

C_SOURCE = """\
#include <stdio.h>

static int helper(int x);

/* Adds one.
 * Twice documented. */
static int helper(int x) {
  if (x > 0) {
    return x + 1;
  }
  return 0;
}

int
main(int argc,
     char **argv) {
  (void)argv;
  /* slide: middle */
  int y = helper(argc);
  /* end slide */
  return y;
}
"""

PY_SOURCE = """\
class Protocol:
    def data_received(self, chunk):
        for byte in chunk:
            self.add(byte)

        self.flush()

    def add(self, byte):
        pass
"""


class Excerpts(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        with open(os.path.join(self.dir.name, "a.c"), "w") as f:
            f.write(C_SOURCE)
        with open(os.path.join(self.dir.name, "p.py"), "w") as f:
            f.write(PY_SOURCE)

    def tearDown(self):
        self.dir.cleanup()

    def excerpt(self, *args):
        return build_deck.excerpt(list(args), self.dir.name)

    def test_c_function_skips_the_declaration(self):
        language, lines, caption = self.excerpt("a.c", "helper")
        self.assertEqual(language, "c")
        self.assertEqual(lines[0], "static int helper(int x) {")
        self.assertEqual(lines[-1], "}")
        self.assertEqual(len(lines), 6)
        self.assertIn("lines 7-12", caption)

    def test_c_function_with_its_comment(self):
        _, lines, _ = self.excerpt("a.c", "helper", "comment")
        self.assertEqual(lines[0], "/* Adds one.")

    def test_c_function_over_several_lines(self):
        _, lines, _ = self.excerpt("a.c", "main")
        self.assertEqual(lines[:2], ["int", "main(int argc,"])
        self.assertEqual(lines[-1], "}")

    def test_from_and_to_narrow_and_dedent(self):
        _, lines, _ = self.excerpt("a.c", "helper", r"from=if \(x", "to=}")
        self.assertEqual(lines, ["if (x > 0) {", "  return x + 1;", "}"])

    def test_marker(self):
        _, lines, caption = self.excerpt("a.c", "marker=middle")
        self.assertEqual(lines, ["int y = helper(argc);"])
        self.assertIn("marker middle", caption)

    def test_python_def(self):
        language, lines, _ = self.excerpt("p.py", "data_received")
        self.assertEqual(language, "python")
        self.assertEqual(lines[0], "def data_received(self, chunk):")
        self.assertEqual(lines[-1], "    self.flush()")

    def test_drift_is_an_error(self):
        for args in (("a.c", "gone"), ("a.c", "marker=gone"),
                     ("a.c", "helper", "from=nothing_like_this")):
            with self.assertRaises(build_deck.DeckError):
                self.excerpt(*args)

    def test_missing_file_is_a_placeholder(self):
        _, lines, caption = self.excerpt("not/yet.c", "main")
        self.assertIn("not in the tree yet", lines[0])
        self.assertIn("missing", caption)


class Markdown(unittest.TestCase):
    def render(self, text):
        context = build_deck.Context(build_deck.REPO_DIR, ".", None, None)
        return build_deck.Renderer(context).blocks(text.splitlines())

    def test_blocks(self):
        out = self.render("# Title\n\n- one\n- **two**\n\n| a | b |\n"
                          "| --- | ---: |\n| 1 | `x<y` |\n\n"
                          "```c\nint x;\n```\n\n{.small} text")
        self.assertIn("<h1>Title</h1>", out)
        self.assertIn("<li><strong>two</strong></li>", out)
        self.assertIn('<td class="right"><code>x&lt;y</code></td>', out)
        self.assertIn('<span class="tk">int</span>', out)
        self.assertIn('<p class="small">text</p>', out)

    def test_columns(self):
        out = self.render(":::columns 60 40\nleft\n:::next\nright\n:::end")
        self.assertIn('style="flex: 60 1 0"', out)
        self.assertIn("<p>right</p>", out)

    def test_slides_split_outside_code(self):
        slides = build_deck.split_slides("a\n---\n```\n---\n```\n---\nb")
        self.assertEqual(len(slides), 3)


if __name__ == "__main__":
    unittest.main()
