/* Rule pack pages (the forms work without this script; it only helps):
 *  - a form with data-confirm="activate pack v2" keeps its button disabled until the box holds exactly that text
 *    (the server checks the same text again);
 *  - the what-if form says "Running…" in its live region and disables its button while the server replays.
 */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  ready(function () {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      var box = form.querySelector("input[name=confirm]");
      var button = form.querySelector("button[type=submit]");
      if (!box || !button) return;
      var phrase = form.getAttribute("data-confirm");
      function sync() { button.disabled = box.value.trim() !== phrase; }
      box.addEventListener("input", sync);
      sync();
    });

    var whatif = document.getElementById("whatif-form");
    if (whatif) {
      whatif.addEventListener("submit", function () {
        var status = document.getElementById("whatif-running");
        var button = whatif.querySelector("button[type=submit]");
        if (status) status.textContent = "Running the back-test… (bounded; this can take a few seconds)";
        if (button) setTimeout(function () { button.disabled = true; }, 0);  // after the submission started
      });
    }
  });
})();
