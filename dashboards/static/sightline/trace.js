// The trace waterfall: collapse and expand subtrees, and the span details panel.
// Rows are server-made HTML; the details of every span come from one JSON block
// (json_script). Telemetry only ever goes into the page through textContent.
"use strict";

(function () {
  function rows(waterfall) {
    return waterfall.querySelectorAll(".span");
  }

  function depthOf(row) {
    return parseInt(row.dataset.depth, 10) || 0;
  }

  // Collapse or expand the subtree under row: the rows after it that are deeper. Expanding
  // keeps the subtrees collapsed on their own hidden.
  function setExpanded(row, expanded) {
    const toggle = row.querySelector(".toggle");
    if (!toggle) { return; }
    toggle.setAttribute("aria-expanded", expanded ? "true" : "false");
    toggle.setAttribute("aria-label", (expanded ? "collapse" : "expand") + toggle.getAttribute("aria-label").replace(/^\S+/, ""));
    const depth = depthOf(row);
    let hideBelow = expanded ? Infinity : depth;
    for (let next = row.nextElementSibling; next && depthOf(next) > depth; next = next.nextElementSibling) {
      const d = depthOf(next);
      if (!expanded) { next.hidden = true; continue; }
      if (d > hideBelow) { next.hidden = true; continue; }
      hideBelow = Infinity;
      next.hidden = false;
      const inner = next.querySelector(".toggle");
      if (inner && inner.getAttribute("aria-expanded") === "false") { hideBelow = d; }
    }
  }

  function setAll(waterfall, expanded) {
    rows(waterfall).forEach(function (row) {
      const toggle = row.querySelector(".toggle");
      if (toggle) {
        toggle.setAttribute("aria-expanded", expanded ? "true" : "false");
        toggle.setAttribute("aria-label", (expanded ? "collapse" : "expand") + toggle.getAttribute("aria-label").replace(/^\S+/, ""));
      }
      row.hidden = !expanded && depthOf(row) > 0;
    });
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = text; }
    if (className) { node.className = className; }
    return node;
  }

  function show(value) {
    if (value === null || value === undefined) { return ""; }
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // A table of key / value pairs ([key, value] or an object), or a note that there are none.
  function pairs(entries, empty) {
    const list = Array.isArray(entries) ? entries : Object.keys(entries || {}).sort().map(function (key) {
      return [key, entries[key]];
    });
    if (!list.length) { return element("p", empty, "muted"); }
    const table = element("table");
    const body = element("tbody");
    list.forEach(function (pair) {
      const tr = element("tr");
      tr.appendChild(element("th", pair[0]));
      tr.appendChild(element("td", show(pair[1])));
      body.appendChild(tr);
    });
    table.appendChild(body);
    return table;
  }

  function ms(value) {
    return (typeof value === "number" ? value.toFixed(3) : "") + " ms";
  }

  function isHex(value) {
    return typeof value === "string" && /^[0-9a-f]{1,32}$/.test(value);
  }

  function section(body, title, content) {
    body.appendChild(element("h3", title));
    body.appendChild(content);
  }

  function render(span, resource, body, title, jump) {
    title.textContent = span.service + " · " + span.name;
    body.textContent = "";
    const status = span.status.code + (span.status.message ? ": " + span.status.message : "");
    section(body, "Span", pairs([
      ["span id", span.span_id], ["parent span id", span.parent_span_id || "(none: a root)"],
      ["kind", span.kind], ["status", status], ["error", span.error ? "yes" : "no"],
      ["start", span.start_time], ["offset", ms(span.offset_ms)], ["duration", ms(span.duration_ms)],
      ["self time", ms(span.self_time_ms)],
      ["critical path", span.on_critical_path ? ms(span.critical_path_ms) : "not on it"],
      ["clock skew shift", span.skew_ms ? ms(span.skew_ms) : "none"], ["depth", span.depth],
      ["orphan", span.orphan ? "yes: its parent is not in the trace" : "no"],
      ["trace state", span.trace_state], ["flags", span.flags],
      ["dropped", "attributes " + span.dropped.attributes + ", events " + span.dropped.events + ", links " + span.dropped.links]
    ], ""));
    if (span.parent_span_id && document.getElementById("span-" + span.parent_span_id)) {
      const parent = element("button", "Go to the parent span");
      parent.type = "button";
      parent.addEventListener("click", function () { jump(span.parent_span_id); });
      body.appendChild(parent);
    }
    section(body, "Attributes", pairs(span.attributes, "No attributes."));
    const events = element("div");
    if (!span.events.length) { events.appendChild(element("p", "No events.", "muted")); }
    span.events.forEach(function (event) {
      const box = element("div", null, "event");
      box.appendChild(element("strong", event.name));
      box.appendChild(element("div", event.time, "muted"));
      box.appendChild(pairs(event.attributes, "No attributes."));
      events.appendChild(box);
    });
    section(body, "Events", events);
    const links = element("div");
    if (!span.links.length) { links.appendChild(element("p", "No links.", "muted")); }
    span.links.forEach(function (link) {
      const box = element("div", null, "event");
      if (isHex(link.trace_id)) {
        const a = element("a", "trace " + link.trace_id);
        a.setAttribute("href", "/traces/" + link.trace_id + "/" + window.location.search);
        box.appendChild(a);
      } else {
        box.appendChild(element("span", "trace " + show(link.trace_id)));
      }
      box.appendChild(element("div", "span " + show(link.span_id), "muted"));
      box.appendChild(pairs(link.attributes, "No attributes."));
      links.appendChild(box);
    });
    section(body, "Links", links);
    section(body, "Resource", pairs(resource, "No resource attributes."));
    section(body, "Instrumentation scope", pairs([["name", span.scope.name], ["version", span.scope.version]], ""));
  }

  document.addEventListener("DOMContentLoaded", function () {
    const waterfall = document.getElementById("waterfall");
    const source = document.getElementById("trace-details");
    if (!waterfall || !source) { return; }
    const details = JSON.parse(source.textContent);
    const panel = document.getElementById("span-panel");
    const body = document.getElementById("span-panel-body");
    const title = document.getElementById("span-panel-title");
    let selected = null;

    function open(row, focusPanel) {
      const span = details.spans[parseInt(row.dataset.i, 10)];
      if (!span) { return; }
      if (selected) { selected.classList.remove("selected"); selected.removeAttribute("aria-selected"); }
      selected = row;
      row.classList.add("selected");
      row.setAttribute("aria-selected", "true");
      render(span, details.resources[span.resource] || {}, body, title, jump);
      panel.hidden = false;
      if (focusPanel) { title.setAttribute("tabindex", "-1"); title.focus(); }
      if (window.history && window.history.replaceState) {
        window.history.replaceState(null, "", "#span-" + span.span_id);
      }
    }

    // Show a span's row (expanding the collapsed rows above it) and open its details.
    function jump(spanId) {
      const row = document.getElementById("span-" + spanId);
      if (!row) { return; }
      let depth = depthOf(row);
      for (let prev = row.previousElementSibling; prev && depth > 0; prev = prev.previousElementSibling) {
        if (prev.classList.contains("span") && depthOf(prev) < depth) {
          depth = depthOf(prev);
          const toggle = prev.querySelector(".toggle");
          if (toggle && toggle.getAttribute("aria-expanded") === "false") { setExpanded(prev, true); }
        }
      }
      open(row, false);
      row.scrollIntoView({ block: "nearest" });
      const button = row.querySelector(".open");
      if (button) { button.focus(); }
    }

    waterfall.addEventListener("click", function (event) {
      const row = event.target.closest(".span");
      if (!row) { return; }
      const toggle = event.target.closest(".toggle");
      if (toggle) {
        setExpanded(row, toggle.getAttribute("aria-expanded") !== "true");
        return;
      }
      open(row, false);
    });
    document.getElementById("collapse-all").addEventListener("click", function () { setAll(waterfall, false); });
    document.getElementById("expand-all").addEventListener("click", function () { setAll(waterfall, true); });
    document.getElementById("span-panel-close").addEventListener("click", function () {
      panel.hidden = true;
      if (selected) {
        const button = selected.querySelector(".open");
        selected.classList.remove("selected");
        selected.removeAttribute("aria-selected");
        selected = null;
        if (button) { button.focus(); }
      }
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !panel.hidden) { document.getElementById("span-panel-close").click(); }
    });
    const wanted = window.location.hash.match(/^#span-([0-9a-f]{16})$/);
    if (wanted) { jump(wanted[1]); }
  });
})();
