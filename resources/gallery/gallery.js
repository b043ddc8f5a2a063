
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.dataset.imagesLoaded = String(decoded.length);
  document.body.dataset.imagesTotal = String(images.length);
});
// The reviewer's loop: decisions per (query, reference) pair, kept in localStorage under the
// page's path, exported in the ground-truth format (copydetect/review.py says what it means).
(function () {
  var KEY = "copydetect-review:v1:" + location.pathname;
  var decisions = {};  // JSON [query, reference] -> "copy" | "not_copy"
  var storage = null;
  try {
    storage = window.localStorage;
    decisions = JSON.parse(storage.getItem(KEY) || "{}") || {};
  } catch (error) {
    storage = null;  // storage off (private mode, policy): decisions live until the page closes
  }
  function save() {
    if (storage) { try { storage.setItem(KEY, JSON.stringify(decisions)); } catch (e) {} }
  }
  function pairKey(row) { return JSON.stringify([row.dataset.query, row.dataset.reference]); }
  function each(selector, f) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), f);
  }
  function labelRows() {
    var queries = {};
    Object.keys(decisions).forEach(function (key) {
      var pair = JSON.parse(key);
      var copies = queries[pair[0]] = queries[pair[0]] || [];
      if (decisions[key] === "copy") { copies.push(pair[1]); }
    });
    var rows = [];
    Object.keys(queries).sort().forEach(function (query) {
      var copies = queries[query].sort();
      if (!copies.length) { rows.push([query, ""]); }  // judged: no copy among its pairs
      copies.forEach(function (reference) { rows.push([query, reference]); });
    });
    return rows;
  }
  function csvField(text) {
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }
  function labelsCsv() {
    return ["query_id,reference_id"].concat(labelRows().map(function (row) {
      return row.map(csvField).join(",");
    })).join("\n") + "\n";
  }
  function paint() {
    var counts = {copy: 0, not_copy: 0};
    Object.keys(decisions).forEach(function (key) { counts[decisions[key]] += 1; });
    each("tr.match", function (row) {
      var mark = decisions[pairKey(row)] || "";
      row.dataset.review = mark;
      Array.prototype.forEach.call(row.querySelectorAll("button.mark"), function (button) {
        button.setAttribute("aria-pressed", String(button.dataset.mark === mark));
      });
    });
    var queries = labelRows().map(function (row) { return row[0]; });
    var status = document.getElementById("review-status");
    status.dataset.copy = String(counts.copy);
    status.dataset.notCopy = String(counts.not_copy);
    status.textContent = counts.copy + " marked copy, " + counts.not_copy + " not a copy; " +
      new Set(queries).size + " queries in the export" +
      (storage ? "" : " (not saved: this browser gives the page no local storage)");
    document.getElementById("review-export").disabled = queries.length === 0;
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.mark");
    if (!button) { return; }
    var key = pairKey(button.closest("tr.match"));
    if (decisions[key] === button.dataset.mark) { delete decisions[key]; }  // a second click undoes
    else { decisions[key] = button.dataset.mark; }
    save();
    paint();
  });
  window.addEventListener("DOMContentLoaded", function () {
    document.getElementById("review-export").addEventListener("click", function () {
      var link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([labelsCsv()], {type: "text/csv"}));
      link.download = "review_labels.csv";
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
    });
    paint();
  });
})();
