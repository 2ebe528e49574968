/* The deck: navigation, scaling, code that shrinks to fit, and the check
 * the browser test runs (window.deckCheck). */
(function () {
  "use strict";
  var deck = document.getElementById("deck");
  var slides = Array.prototype.slice.call(
      document.querySelectorAll("section.slide"));
  var progress = document.getElementById("progress");
  var params = new URLSearchParams(location.search);
  var printing = params.has("print");
  var MIN_CODE_PX = 13;
  var current = 1;

  function fromHash() {
    var n = parseInt(location.hash.replace(/^#/, ""), 10);
    return isNaN(n) ? 1 : n;
  }

  function show(n, updateHash) {
    n = Math.max(1, Math.min(slides.length, n));
    slides.forEach(function (slide, i) {
      slide.classList.toggle("current", i === n - 1);
    });
    current = n;
    if (progress) {
      progress.style.width = (100 * n / slides.length) + "%";
    }
    if (updateHash && location.hash !== "#" + n) {
      history.replaceState(null, "", "#" + n);
    }
  }

  function scale() {
    if (printing) {
      return;
    }
    var s = Math.min(window.innerWidth / 1280, window.innerHeight / 720);
    deck.style.transform = "translate(-50%, -50%) scale(" + s + ")";
  }

  function clipped(el) {
    return el.scrollHeight > el.clientHeight + 1 ||
        el.scrollWidth > el.clientWidth + 1;
  }

  /* Code excerpts come from the sources at build time: a longer function
   * makes its block smaller, down to MIN_CODE_PX, never unreadable. */
  function fit(slide) {
    var content = slide.querySelector(".content");
    var blocks = Array.prototype.slice.call(slide.querySelectorAll("pre.fit"));
    if (!blocks.length) {
      return;
    }
    for (var step = 0; step < 20; step++) {
      var tooBig = clipped(content) || blocks.some(clipped);
      if (!tooBig) {
        return;
      }
      var shrunk = false;
      blocks.forEach(function (pre) {
        var px = parseFloat(getComputedStyle(pre).fontSize);
        if (px - 1 >= MIN_CODE_PX) {
          pre.style.fontSize = (px - 1) + "px";
          shrunk = true;
        }
      });
      if (!shrunk) {
        return;
      }
    }
  }

  function fitAll() {
    slides.forEach(function (slide, i) {
      show(i + 1, false);
      fit(slide);
    });
  }

  /* What the browser test asks: for each slide, whatever overflows it or
   * its boxes, and every image that did not load. */
  function check(n) {
    var slide = slides[n - 1];
    show(n, false);
    var problems = [];
    var content = slide.querySelector(".content");
    var box = slide.getBoundingClientRect();
    var k = box.width / 1280; /* the deck's scale */
    if (content.scrollHeight > content.clientHeight + 1) {
      problems.push("content is " +
          Math.round(content.scrollHeight - content.clientHeight) +
          " px taller than the slide");
    }
    if (content.scrollWidth > content.clientWidth + 1) {
      problems.push("content is " +
          Math.round(content.scrollWidth - content.clientWidth) +
          " px wider than the slide");
    }
    slide.querySelectorAll("pre, .table, .col, .charts, figure, .svg")
        .forEach(function (el) {
          if (el.scrollWidth > el.clientWidth + 1) {
            problems.push(el.tagName.toLowerCase() + "." + el.className +
                " clips " + (el.scrollWidth - el.clientWidth) +
                " px of its content on the right");
          }
          if (el.tagName === "PRE" && el.scrollHeight > el.clientHeight + 1) {
            problems.push("pre clips " + (el.scrollHeight - el.clientHeight) +
                " px of code at the bottom");
          }
        });
    slide.querySelectorAll(".content *").forEach(function (el) {
      if (el.closest("aside.notes")) {
        return;
      }
      var r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) {
        return;
      }
      if (r.right > box.right + k || r.bottom > box.bottom + k ||
          r.left < box.left - k || r.top < box.top - k) {
        problems.push(el.tagName.toLowerCase() + " reaches outside the slide" +
            " (" + (el.textContent || "").trim().slice(0, 40) + ")");
      }
    });
    var images = slide.querySelectorAll("img");
    images.forEach(function (img) {
      if (!img.complete || img.naturalWidth === 0) {
        problems.push("image did not load: " + (img.alt || "(no alt)"));
      }
    });
    slide.querySelectorAll("pre").forEach(function (pre) {
      if (parseFloat(getComputedStyle(pre).fontSize) < MIN_CODE_PX) {
        problems.push("code smaller than " + MIN_CODE_PX + " px");
      }
    });
    var title = slide.querySelector("h1, h2");
    /* one problem per kind is enough to read */
    var seen = {};
    problems = problems.filter(function (p) {
      return seen[p] ? false : (seen[p] = true);
    });
    return {
      slide: n,
      title: title ? title.innerText.replace(/\s+/g, " ").trim() : "",
      images: images.length,
      problems: problems.slice(0, 10)
    };
  }

  window.deckCount = function () {
    return slides.length;
  };
  window.deckGo = function (n) {
    show(n, true);
    return current;
  };
  window.deckCheck = function () {
    var keep = current;
    var verdict = slides.map(function (_, i) {
      return check(i + 1);
    });
    show(keep, false);
    return verdict;
  };

  function onKey(event) {
    if (event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    var next = ["ArrowRight", "ArrowDown", "PageDown", " ", "Enter"];
    var previous = ["ArrowLeft", "ArrowUp", "PageUp", "Backspace"];
    if (next.indexOf(event.key) >= 0) {
      show(current + 1, true);
    } else if (previous.indexOf(event.key) >= 0) {
      show(current - 1, true);
    } else if (event.key === "Home") {
      show(1, true);
    } else if (event.key === "End") {
      show(slides.length, true);
    } else if (event.key === "n" || event.key === "N") {
      document.body.classList.toggle("show-notes");
    } else if (event.key === "f" || event.key === "F") {
      if (document.fullscreenElement) {
        document.exitFullscreen();
      } else if (document.documentElement.requestFullscreen) {
        document.documentElement.requestFullscreen();
      }
    } else {
      return;
    }
    event.preventDefault();
  }

  if (printing) {
    document.body.classList.add("print");
  }
  scale();
  fitAll();
  if (printing) {
    slides.forEach(function (slide) {
      slide.classList.add("current");
    });
  } else {
    show(fromHash(), false);
  }
  window.addEventListener("resize", scale);
  window.addEventListener("hashchange", function () {
    show(fromHash(), false);
  });
  document.addEventListener("keydown", onKey);
})();
