// The PIE gallery's group filter: show only the cards whose data-a{k} attributes equal every
// data-a{k} of the chosen option (the attribute values that define the group).
(function () {
  "use strict";
  var select = document.getElementById("gallery-filter");
  if (!select) { return; }
  var cards = document.querySelectorAll(".gallery .pie");
  var count = document.getElementById("gallery-count");
  var empty = document.getElementById("gallery-empty");
  function required(option) {
    return Array.prototype.filter.call(option.attributes, function (a) { return /^data-a\d+$/.test(a.name); });
  }
  function apply() {
    var wanted = required(select.options[select.selectedIndex]);
    var shown = 0;
    cards.forEach(function (card) {
      var match = wanted.every(function (a) { return card.getAttribute(a.name) === a.value; });
      card.hidden = !match;
      if (match) { shown += 1; }
    });
    count.textContent = shown + " of " + cards.length + " shown";
    empty.hidden = shown > 0;
  }
  select.addEventListener("change", apply);
  apply();
})();
