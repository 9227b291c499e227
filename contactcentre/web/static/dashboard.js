// Live dashboard: polls GET /api/live once a second and redraws. Every value goes in through
// textContent or setAttribute, never as HTML.
"use strict";

(function () {
  const REFRESH_MS = 1000;
  const tz = document.body.dataset.timezone || "UTC";
  let timeFormat;
  try {
    timeFormat = new Intl.DateTimeFormat("en-GB", {
      timeZone: tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    });
  } catch (e) {
    timeFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // ------------------------------------------------------------------------------------------ formatting

  function pct(v) {
    return v === null || v === undefined ? "–" : Math.round(v * 100) + " %";
  }

  function secs(v) {
    if (v === null || v === undefined) return "–";
    const s = Math.round(v);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " m " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " m";
  }

  function hms(ms) {
    return timeFormat.format(new Date(ms));
  }

  function counts(obj) {
    const parts = [];
    for (const [k, v] of Object.entries(obj || {})) {
      if (v) parts.push(k.replaceAll("_", " ") + " " + v);
    }
    return parts.length ? parts.join(", ") : "–";
  }

  function words(s) {
    return String(s).replaceAll("_", " ");
  }

  // ---------------------------------------------------------------------------------------------- DOM

  // el("td", {class: "x"}, "text", otherNode, ...) — strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replaceChildren(id, nodes) {
    const target = document.getElementById(id);
    if (target) target.replaceChildren(...nodes);
  }

  // ------------------------------------------------------------------------------------------- views

  function renderTotals(live) {
    const t = live.snapshot.total;
    const cards = [
      ["Waiting", t.waiting],
      ["Longest wait", secs(t.longest_wait_s)],
      ["Offered", t.offered],
      ["Answered", t.answered],
      ["Abandoned", t.abandoned],
      ["SL (offered)", pct(t.sl_offered)],
      ["ASA", secs(t.asa_s)],
      ["AHT", secs(t.aht_s)],
      ["Occupancy", pct(t.occupancy)],
      ["Agents", counts(live.snapshot.agents)],
    ];
    replaceChildren("totals", cards.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
  }

  function renderQueues(live) {
    const figures = live.snapshot.queues;
    const rows = live.queues.map((q) => {
      const m = figures[q.name] || {};
      const cells = [
        m.waiting || 0,
        secs(m.longest_wait_s),
        m.offered || 0,
        m.answered || 0,
        m.abandoned || 0,
        pct(m.sl_answered),
        pct(m.sl_offered),
        pct(m.sl_offered_excl_short),
        secs(m.asa_s),
        secs(m.aht_s),
        pct(m.abandon_rate),
        pct(m.occupancy),
      ];
      return el(
        "tr", {},
        el("th", { scope: "row" }, q.name, el("small", {}, q.channels.join(", "))),
        ...cells.map((c) => el("td", {}, c)),
      );
    });
    const tbody = document.querySelector("#queues tbody");
    if (tbody) tbody.replaceChildren(...rows);
  }

  function renderAgents(live) {
    const items = live.agents.map((a) => {
      const load = Object.entries(a.capacity).map(([ch, cap]) => ch + " " + (a.load[ch] || 0) + "/" + cap);
      return el(
        "li", { class: "agent state-" + a.state },
        el("span", { class: "name" }, a.name || a.id),
        el("span", { class: "state" }, words(a.state) + (a.reason ? " (" + words(a.reason) + ")" : "")),
        el("span", { class: "since" }, "for " + secs((live.at_ms - a.since_ms) / 1000)),
        el("span", { class: "load" }, load.join(" · ")),
      );
    });
    replaceChildren("agents", items);
  }

  function renderDecisions(live) {
    if (!live.decisions.length) {
      replaceChildren("decisions", [el("li", { class: "empty" }, "No offers yet.")]);
      return;
    }
    const items = live.decisions.map((d) => {
      const why = d.why;
      const parts = [
        why.trigger === "agent" ? "agent pulled work" : "contact looked for an agent",
        " · strategy ", el("b", {}, why.strategy),
        " · requirement ", el("code", {}, why.requirement || "none"),
        " · overflow step " + (why.step || 0),
        " · " + (why.considered || 0) + " considered",
      ];
      if (why.filters && Object.keys(why.filters).length) parts.push(" · filtered out: " + counts(why.filters));
      if (why.tie_break) parts.push(" · tie-break: " + why.tie_break);
      return el(
        "li", { class: "decision outcome-" + d.outcome },
        el(
          "p", { class: "head" },
          el("time", {}, hms(d.at_ms)), " ",
          el("b", {}, d.contact_id), " → ", el("b", {}, d.agent_id), " ",
          el("span", { class: "where" }, d.queue + " · " + d.channel), " ",
          el("span", { class: "outcome" }, d.outcome),
        ),
        el("p", { class: "why" }, ...parts),
        el(
          "ol", { class: "candidates" },
          ...why.candidates.map((c) =>
            el("li", {}, el("b", {}, c.id), " " + c.note + " ", el("code", {}, JSON.stringify(c.score)))),
        ),
      );
    });
    replaceChildren("decisions", items);
  }

  function render(live) {
    const now = document.getElementById("now");
    if (now) now.textContent = hms(live.at_ms);
    renderTotals(live);
    renderQueues(live);
    renderAgents(live);
    renderDecisions(live);
  }

  // -------------------------------------------------------------------------------------------- poll

  function setStatus(text, ok) {
    const s = document.getElementById("status");
    if (!s) return;
    s.textContent = text;
    s.classList.toggle("down", !ok);
  }

  async function refresh() {
    try {
      const response = await fetch("/api/live", { cache: "no-store" });
      if (response.status === 401) {  // the session ended (idle, logged out elsewhere): log in again
        window.location.assign("/login?next=/");
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      setStatus("live", true);
    } catch (e) {
      setStatus("disconnected — retrying", false);
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  refresh();
})();
