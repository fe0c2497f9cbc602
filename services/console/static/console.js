// aiport console: small progressive enhancements only; every page works without
// JavaScript. Loaded as a file (the CSP forbids inline scripts).
"use strict";

// A "copy" button on code blocks, for commands and (later) a new API key.
document.addEventListener("DOMContentLoaded", function () {
  if (!navigator.clipboard) {
    return;
  }
  var label = document.documentElement.lang === "id" ? "Salin" : "Copy";
  var done = document.documentElement.lang === "id" ? "Tersalin" : "Copied";
  document.querySelectorAll("pre").forEach(function (block) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = label;
    button.addEventListener("click", function () {
      var code = block.querySelector("code") || block;
      navigator.clipboard.writeText(code.textContent).then(function () {
        button.textContent = done;
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
    block.appendChild(button);
  });
});

// The new API key's copy button (/dashboard/api-keys): copies the text of the
// element its data-copy-target names. Without a clipboard the key stays
// selectable on the page.
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("copy-key");
  if (!button) {
    return;
  }
  var target = document.getElementById(button.getAttribute("data-copy-target") || "");
  if (!target || !navigator.clipboard) {
    button.hidden = true;
    return;
  }
  var label = button.textContent;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(target.textContent.trim()).then(function () {
      button.textContent = button.getAttribute("data-copied") || label;
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });
});

// The receipt's print button (/dashboard/topup/{id}/receipt): hidden until
// there is a script to print with; the browser's own Print works without it.
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("print-receipt");
  if (!button || typeof window.print !== "function") {
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    window.print();
  });
});
