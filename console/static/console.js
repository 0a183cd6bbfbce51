// Keyboard for the review page: 1-9,0 choose an answer and submit; o: type another answer;
// d: discard; n: next (skip); m: note; Esc: leave a field. Served locally (no CDN, no inline script).
(function () {
  "use strict";
  function onKey(ev) {
    var form = document.getElementById("verdict-form");
    if (!form || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target, typing = t && (t.tagName === "INPUT" && t.type === "text" || t.tagName === "TEXTAREA");
    if (typing) {
      if (ev.key === "Escape") { t.blur(); ev.preventDefault(); }
      return;  // Enter in a field submits the form natively
    }
    var k = ev.key;
    if (/^[0-9]$/.test(k)) {
      var radio = form.querySelector('input[type=radio][data-key="' + k + '"]');
      if (radio) { radio.checked = true; ev.preventDefault(); form.requestSubmit(document.getElementById("submit")); }
    } else if (k === "Enter") {
      ev.preventDefault(); form.requestSubmit(document.getElementById("submit"));
    } else if (k === "o") {
      ev.preventDefault(); document.getElementById("other").focus();
    } else if (k === "m") {
      ev.preventDefault(); document.getElementById("note").focus();
    } else if (k === "d") {
      ev.preventDefault(); form.requestSubmit(document.getElementById("discard"));
    } else if (k === "n") {
      ev.preventDefault(); window.location.href = document.getElementById("next").href;
    }
  }
  document.addEventListener("keydown", onKey);
})();
