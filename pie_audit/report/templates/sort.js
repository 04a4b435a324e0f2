// Click a column header of a table.sortable to sort it; click again to reverse.
// Cells with a data-v attribute sort by that number; empty data-v (undefined values) sort last.
(function () {
  "use strict";
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  function key(cell) {
    if (cell.hasAttribute("data-v")) {
      var v = cell.getAttribute("data-v");
      return v === "" ? null : parseFloat(v);
    }
    return cell.textContent.trim();
  }
  function compare(a, b) {
    if (a === null || b === null) { return a === b ? 0 : (a === null ? 1 : -1); }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return collator.compare(String(a), String(b));
  }
  function sortBy(table, th) {
    var headers = th.parentNode.children;
    var column = Array.prototype.indexOf.call(headers, th);
    var descending = th.getAttribute("aria-sort") === "ascending";
    Array.prototype.forEach.call(headers, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (row, i) {
      return { row: row, key: key(row.cells[column]), i: i };
    });
    rows.sort(function (x, y) {
      if (x.key === null || y.key === null) { return compare(x.key, y.key) || x.i - y.i; }
      return (descending ? -compare(x.key, y.key) : compare(x.key, y.key)) || x.i - y.i;
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (r) { fragment.appendChild(r.row); });
    body.appendChild(fragment);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortBy(table, th); }); }
    });
  });
  // Printing shows everything: open the collapsed sections first.
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  });
})();
