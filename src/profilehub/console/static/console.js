// Small conveniences for forms; every check is made again by the server.
(function () {
  "use strict";
  var confirm = document.getElementById("confirm");
  var button = document.getElementById("erase-button");
  if (confirm && button) {
    var expect = confirm.getAttribute("data-expect");
    var update = function () { button.disabled = confirm.value.trim() !== expect; };
    confirm.addEventListener("input", update);
    update();
  }
})();
