// Sightline's only script (no inline script anywhere: the Content-Security-Policy forbids it).
// Figures arrive as JSON in <script type="application/json"> blocks made by Django's
// json_script (which escapes <, > and &), and are drawn with plotly.js from our static files.
"use strict";

(function () {
  const root = document.documentElement;

  function applyTheme(theme) {
    root.dataset.theme = theme;
    const button = document.getElementById("theme-toggle");
    if (button) {
      button.textContent = theme === "dark" ? "Light theme" : "Dark theme";
      button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
    }
  }
  let stored = null;
  try { stored = window.localStorage.getItem("sightline-theme"); } catch (e) { stored = null; }
  applyTheme(stored || (window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));

  // A link target from a chart point: only paths on this site.
  function safePath(value) {
    return typeof value === "string" && value.charAt(0) === "/" && value.charAt(1) !== "/" && value.indexOf("\\") < 0;
  }

  function themed(layout) {
    const style = getComputedStyle(document.body);
    const fg = style.getPropertyValue("--fg").trim();
    const grid = style.getPropertyValue("--border").trim();
    const out = Object.assign({}, layout);
    out.paper_bgcolor = "rgba(0,0,0,0)";
    out.plot_bgcolor = "rgba(0,0,0,0)";
    out.font = Object.assign({}, layout.font || {}, { color: fg });
    ["xaxis", "yaxis", "yaxis2"].forEach(function (axis) {
      if (out[axis]) { out[axis] = Object.assign({ gridcolor: grid, zerolinecolor: grid }, out[axis]); }
    });
    return out;
  }

  function drawFigures() {
    if (!window.Plotly) { return; }
    document.querySelectorAll("[data-figure]").forEach(function (element) {
      const source = document.getElementById(element.dataset.figure);
      if (!source) { return; }
      const figure = JSON.parse(source.textContent);
      window.Plotly.react(element, figure.data || [], themed(figure.layout || {}),
        { displaylogo: false, responsive: true });
      element.classList.add("rendered");
      if (!element.dataset.clickBound) {
        element.dataset.clickBound = "1";
        element.on("plotly_click", function (event) {
          const point = event && event.points && event.points[0];
          const target = point && (Array.isArray(point.customdata) ? point.customdata[0] : point.customdata);
          if (safePath(target)) { window.location.assign(target); }
        });
      }
    });
  }

  function sortable(table) {
    const headers = table.querySelectorAll("th[data-sort]");
    headers.forEach(function (th, column) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () {
        const index = Array.prototype.indexOf.call(th.parentNode.children, th);
        const descending = th.getAttribute("aria-sort") !== "descending";
        table.querySelectorAll("th[aria-sort]").forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        const body = table.tBodies[0];
        const rows = Array.prototype.slice.call(body.rows);
        const numeric = th.dataset.sort === "number";
        rows.sort(function (a, b) {
          const x = a.cells[index].dataset.value !== undefined ? a.cells[index].dataset.value : a.cells[index].textContent;
          const y = b.cells[index].dataset.value !== undefined ? b.cells[index].dataset.value : b.cells[index].textContent;
          const order = numeric ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : x.localeCompare(y);
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const toggle = document.getElementById("theme-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        const theme = root.dataset.theme === "dark" ? "light" : "dark";
        try { window.localStorage.setItem("sightline-theme", theme); } catch (e) { /* private mode */ }
        applyTheme(theme);
        drawFigures();
      });
    }
    const form = document.getElementById("window-form");
    const select = document.getElementById("range-select");
    if (form && select) {
      const custom = form.querySelectorAll("label.custom");
      const show = function () { custom.forEach(function (l) { l.hidden = select.value !== "custom"; }); };
      select.addEventListener("change", show);
      show();
      form.addEventListener("submit", function () {
        if (select.value !== "custom") { form.querySelectorAll("label.custom input").forEach(function (i) { i.disabled = true; }); }
      });
    }
    document.querySelectorAll("table.sortable").forEach(sortable);
    drawFigures();
    document.dispatchEvent(new CustomEvent("sightline:ready"));
  });
})();
