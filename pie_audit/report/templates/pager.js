// A table with data-page-size and more rows than that gets a filter and pages: a text box that
// matches the class name or label, a choice of verdict, and previous/next. Sorting (sort.js) keeps
// working: the pages follow the rows' current order. Printing shows every row.
(function () {
  "use strict";
  function words(row, column) { return (row.cells[column] ? row.cells[column].textContent : "").trim(); }
  document.querySelectorAll("table[data-page-size]").forEach(function (table) {
    var size = parseInt(table.getAttribute("data-page-size"), 10);
    var body = table.tBodies[0];
    if (!body || body.rows.length <= size) { return; }
    var headers = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.textContent.trim(); });
    var nameColumn = headers.indexOf("class"), labelColumn = headers.indexOf("label"), sigColumn = headers.indexOf("significant");
    var bar = document.createElement("div");
    bar.className = "pager noprint";
    bar.innerHTML = '<label>Find <input type="search" placeholder="class name or label"></label> ' +
      '<label>Show <select><option value="all">every listed class</option><option value="harmed">harmed</option>' +
      '<option value="helped">helped</option><option value="significant">significant by either test</option></select></label> ' +
      '<button type="button" data-step="-1">&larr; previous</button> <span class="pager-count" aria-live="polite"></span> ' +
      '<button type="button" data-step="1">next &rarr;</button>';
    table.parentNode.parentNode.insertBefore(bar, table.parentNode);
    var input = bar.querySelector("input"), select = bar.querySelector("select"), count = bar.querySelector(".pager-count");
    var page = 0;
    function matches(row) {
      var wanted = select.value;
      if (wanted === "harmed" || wanted === "helped") { if (!row.classList.contains(wanted)) { return false; } }
      if (wanted === "significant") { var s = words(row, sigColumn); if (s === "no" || s === "not tested") { return false; } }
      var text = input.value.trim().toLowerCase();
      if (!text) { return true; }
      return words(row, nameColumn).toLowerCase().indexOf(text) >= 0 || words(row, labelColumn) === text;
    }
    function apply() {
      var hits = Array.prototype.filter.call(body.rows, matches);
      var pages = Math.max(1, Math.ceil(hits.length / size));
      page = Math.min(Math.max(page, 0), pages - 1);
      var first = page * size, last = Math.min(first + size, hits.length);
      Array.prototype.forEach.call(body.rows, function (row) { row.hidden = true; });
      hits.slice(first, last).forEach(function (row) { row.hidden = false; });
      count.textContent = hits.length ? (first + 1) + "\u2013" + last + " of " + hits.length + " (page " + (page + 1) + " of " + pages + ")" : "no class matches";
      bar.querySelector('[data-step="-1"]').disabled = page === 0;
      bar.querySelector('[data-step="1"]').disabled = page >= pages - 1;
    }
    input.addEventListener("input", function () { page = 0; apply(); });
    select.addEventListener("change", function () { page = 0; apply(); });
    bar.querySelectorAll("button").forEach(function (b) {
      b.addEventListener("click", function () { page += parseInt(b.getAttribute("data-step"), 10); apply(); });
    });
    // After sort.js has reordered the rows (its handler runs first): back to the first page.
    table.tHead.addEventListener("click", function () { page = 0; apply(); });
    window.addEventListener("beforeprint", function () { Array.prototype.forEach.call(body.rows, function (row) { row.hidden = false; }); });
    window.addEventListener("afterprint", apply);
    apply();
  });
})();
