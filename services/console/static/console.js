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
