// Live dashboard: one WebSocket (data-ws-url, the server's /live) pushes a snapshot at connect and after
// events; the page redraws from each. Every value goes in through textContent or setAttribute, never as
// HTML; the charts are SVG built with createElementNS.
"use strict";

(function () {
  const RETRY_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const body = document.body;
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

  // Why agents were left out of a decision (the router's filter names), as a supervisor reads it.
  const FILTER_WORDS = {
    below_level: (n) => `${n} below the skill level asked`,
    offered_before: (n) => `${n} already offered this contact`,
    held_back_for_exclusive: (n) => `${n} kept free for exclusive work`,
  };

  function filterWords(filters) {
    const parts = [];
    for (const [k, n] of Object.entries(filters || {})) {
      if (n) parts.push(FILTER_WORDS[k] ? FILTER_WORDS[k](n) : `${n} ${words(k)}`);
    }
    return parts.join(", ");
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
    const t = live.total;
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
      ["Agents", counts(live.agent_states)],
    ];
    replaceChildren("totals", cards.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
  }

  function hint(h) {
    if (h.needed === null || h.needed === undefined) return el("span", { title: "no recent arrivals or AHT yet" }, "– / " + h.staffed);
    const short = h.needed > h.staffed;
    return el(
      "span",
      { class: short ? "hint-short" : null, title: Math.round(h.per_hour) + "/h, " + pct(h.target) + " in " + secs(h.threshold_s) },
      h.needed + " needed / " + h.staffed + " staffed",
    );
  }

  // [figure, text]: the figure's name keys its colour (the server's q.colours, edge/web/thresholds.py).
  function queueCells(m) {
    return [
      ["waiting", m.waiting || 0],
      ["longest_wait_s", secs(m.longest_wait_s)],
      ["offered", m.offered || 0],
      ["answered", m.answered || 0],
      ["abandoned", m.abandoned || 0],
      ["sl_answered", pct(m.sl_answered)],
      ["sl_offered", pct(m.sl_offered)],
      ["sl_offered_excl_short", pct(m.sl_offered_excl_short)],
      ["asa_s", secs(m.asa_s)],
      ["aht_s", secs(m.aht_s)],
      ["abandon_rate", pct(m.abandon_rate)],
      ["occupancy", pct(m.occupancy)],
    ];
  }

  function colourClass(q, figure) {
    const c = (q.colours || {})[figure];
    return c ? "rag-" + c : null;
  }

  function renderQueues(live) {
    const rows = live.queues.map((q) => {
      const cells = queueCells(q.m || {});
      return el(
        "tr", { "data-queue": q.name },
        el("th", { scope: "row" }, q.name, el("small", {}, q.channels.join(", "))),
        ...cells.map(([figure, text]) => el("td", { "data-figure": figure, class: colourClass(q, figure) }, text)),
        el("td", { class: "hint" }, hint(q.hint)),
      );
    });
    const tbody = document.querySelector("#queues tbody");
    if (tbody) tbody.replaceChildren(...rows);
  }

  // The wall-board (/wallboard): per queue a tile of big figures, coloured like the table, nothing to press.
  const WALL_FIGURES = [
    ["waiting", "Waiting", (m) => m.waiting || 0],
    ["longest_wait_s", "Longest wait", (m) => secs(m.longest_wait_s)],
    ["sl_offered", "Service level", (m) => pct(m.sl_offered)],
    ["asa_s", "ASA", (m) => secs(m.asa_s)],
    ["abandon_rate", "Abandoned", (m) => pct(m.abandon_rate)],
  ];

  function renderWall(live) {
    const wall = document.getElementById("wall");
    if (!wall) return;
    const tiles = live.queues.map((q) => {
      const m = q.m || {};
      const figures = WALL_FIGURES.map(([figure, label, value]) => el(
        "div", { "data-figure": figure, class: colourClass(q, figure) },
        el("dt", {}, label), el("dd", {}, value(m)),
      ));
      const agents = q.hint ? q.hint.staffed + (q.hint.staffed === 1 ? " agent" : " agents") : "";
      return el(
        "section", { class: "tile", "data-queue": q.name },
        el("h2", {}, q.name, el("small", {}, agents)),
        el("dl", {}, ...figures),
      );
    });
    wall.replaceChildren(...tiles);
  }

  function renderRows(live) {
    const rows = live.rows.map((r) => el(
      "tr", { "data-row": r.queue + "/" + r.channel + "/" + r.tier },
      el("th", { scope: "row" }, r.queue), el("td", {}, r.channel), el("td", {}, r.tier),
      el("td", { class: "waiting" }, r.waiting), el("td", {}, secs(r.longest_wait_s)),
      el("td", {}, pct(r.sl_answered)), el("td", {}, pct(r.sl_offered)),
      el("td", {}, pct(r.sl_offered_excl_short)), el("td", {}, pct(r.sl_asterisk2)),
      el("td", {}, secs(r.asa_s)), el("td", {}, secs(r.aht_s)), el("td", {}, pct(r.abandon_rate)),
      el("td", {}, secs(r.ewt_error_s)),
    ));
    const tbody = document.querySelector("#rows tbody");
    if (tbody) tbody.replaceChildren(...rows);
  }

  function renderAlerts(live) {
    const items = [];
    for (const g of live.gold_waiting) {
      items.push(el(
        "li", { class: "alert kind-gold_waiting" },
        el("b", {}, "Gold waiting"), g.queue + " · " + g.channel,
        g.waiting + " waiting, longest " + secs(g.longest_wait_s),
      ));
    }
    for (const a of live.alerts) {
      const ack = a.acked_by
        ? el("span", {}, "acknowledged by " + a.acked_by)
        : el("button", { type: "button", "data-ack": String(a.id) }, "Acknowledge");
      items.push(el(
        "li", { class: "alert kind-" + a.kind + (a.acked_by ? " acked" : "") },
        el("time", {}, hms(a.at_ms)),
        el("b", {}, a.kind === "sla_breached" ? "SLA breached" : "SLA warning"),
        a.contact_id + " · " + a.queue + " · " + a.channel + (a.tier ? " · " + a.tier : ""),
        ack,
      ));
    }
    replaceChildren("alerts", items.length ? items : [el("li", { class: "empty" }, "No alerts.")]);
  }

  let agentIds = [];

  function renderAgents(live) {
    const items = live.agents.map((a) => {
      const load = Object.entries(a.capacity).map(([ch, cap]) => ch + " " + (a.load[ch] || 0) + "/" + cap);
      const skills = Object.entries(a.skills || {}).map(([k, v]) => k + "=" + v).join(", ");
      return el(
        "li", { class: "agent state-" + a.state, "data-agent": a.id },
        el("span", { class: "name" }, a.name || a.id),
        el("span", { class: "state" }, words(a.state) + (a.reason ? " (" + words(a.reason) + ")" : "")),
        el("span", { class: "since" }, a.in_state_s === null ? "–" : "for " + secs(a.in_state_s)),
        el("span", { class: "load" }, load.join(" · ")),
        el("span", { class: "load" }, skills),
      );
    });
    replaceChildren("agents", items);
    const ids = live.agents.map((a) => a.id);
    if (ids.join("\n") !== agentIds.join("\n")) {
      agentIds = ids;
      const select = document.getElementById("edit-agent");
      if (select) select.replaceChildren(...ids.map((id) => el("option", { value: id }, id)));
    }
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
      if (why.filters && Object.keys(why.filters).length) parts.push(" · passed over: " + filterWords(why.filters));
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
            // the note says the sort key in words; the raw key (epoch ms among it) only on hover
            el("li", { title: "sort key " + JSON.stringify(c.score) }, el("b", {}, c.id), " " + (c.note || ""))),
        ),
      );
    });
    replaceChildren("decisions", items);
  }

  // ------------------------------------------------------------------------------------------ charts

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  // One point per 5 minutes since midnight: x is the time of day (0-24 h), so the day fills up left to right.
  function chart(id, series, value, kind, max) {
    const W = 576, H = 120, P = 18;
    const day = 24 * 12;
    const x = (i) => P + (i / day) * (W - 2 * P);
    const y = (v) => H - P - (v / max) * (H - 2 * P);
    const nodes = [
      svg("line", { class: "axis", x1: P, y1: H - P, x2: W - P, y2: H - P }),
      svg("text", { class: "label", x: 2, y: P }, kind === "line" ? "100 %" : String(max)),
      svg("text", { class: "label", x: P, y: H - 4 }, "00:00"),
      svg("text", { class: "label", x: W / 2 - 12, y: H - 4 }, "12:00"),
    ];
    if (kind === "line") {
      let d = "";
      series.forEach((p, i) => {
        const v = value(p);
        if (v === null || v === undefined) return;
        d += (d ? " L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
        // A dot per point too: early in the day (or after quiet hours) a point may have no neighbour to join.
        nodes.push(svg("circle", { class: "dot", cx: x(i), cy: y(v), r: 2.5 }, svg("title", {}, hms(p.at_ms) + ": " + pct(v))));
      });
      if (d) nodes.push(svg("path", { class: "line", d: d }));
    } else {
      const w = Math.max(1, (W - 2 * P) / day - 0.5);
      series.forEach((p, i) => {
        const v = value(p);
        if (v) nodes.push(svg("rect", { class: "bar", x: x(i), y: y(v), width: w, height: H - P - y(v) }, svg("title", {}, hms(p.at_ms) + ": " + v)));
      });
    }
    const target = document.getElementById(id);
    if (target) target.replaceChildren(svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": id }, ...nodes));
  }

  function renderCharts(live) {
    chart("chart-sl", live.series, (p) => p.sl, "line", 1);
    const peak = Math.max(1, ...live.series.map((p) => p.depth));
    chart("chart-depth", live.series, (p) => p.depth, "bars", peak);
  }

  function render(live) {
    const now = document.getElementById("now");
    if (now) now.textContent = hms(live.at_ms);
    renderAlerts(live);
    renderTotals(live);
    renderQueues(live);
    renderWall(live);
    renderRows(live);
    renderCharts(live);
    renderAgents(live);
    renderDecisions(live);
  }

  // -------------------------------------------------------------------------------------------- socket

  function setStatus(text, ok) {
    const s = document.getElementById("status");
    if (!s) return;
    s.textContent = text;
    s.classList.toggle("down", !ok);
  }

  let socket = null;

  function connect() {
    const url = body.dataset.wsUrl;
    if (!url) return;  // no WebSocket configured: the server-rendered figures stay
    socket = new WebSocket(url);
    socket.addEventListener("open", () => setStatus("live", true));
    socket.addEventListener("message", (e) => {
      let frame;
      try { frame = JSON.parse(e.data); } catch (err) { return; }
      if (frame.type === "snapshot") {
        render(frame);
        setStatus("live", true);
      } else if (frame.type === "error") {
        // Not logged in, or the login ended (logged out elsewhere, user disabled): log in again, back to this page.
        if (frame.code === "unauthorized" || frame.code === "revoked") {
          window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
        }
        setStatus(frame.message, false);
      }
    });
    socket.addEventListener("close", () => {
      setStatus("disconnected — retrying", false);
      socket = null;
      setTimeout(connect, RETRY_MS);
    });
  }

  const alertList = document.getElementById("alerts");  // none on the wall-board
  if (alertList) alertList.addEventListener("click", (e) => {
    const id = e.target instanceof Element ? e.target.getAttribute("data-ack") : null;
    if (id && socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ack", id: Number(id) }));
  });

  // ------------------------------------------------------------------------------ agent state / skills

  const form = document.getElementById("agent-edit");
  const result = document.getElementById("edit-result");

  async function post(path, payload) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": body.dataset.csrf || "" },
      body: JSON.stringify(payload),
    });
    if (response.ok) {
      result.textContent = "done";
      return;
    }
    let message = "HTTP " + response.status;
    try { message = (await response.json()).message || message; } catch (err) { /* not JSON */ }
    result.textContent = message;
  }

  function agentPath(what) {
    return "/api/agents/" + encodeURIComponent(document.getElementById("edit-agent").value) + "/" + what;
  }

  if (form && body.dataset.csrf) {
    form.hidden = false;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const state = document.getElementById("edit-state").value;
      post(agentPath("state"), state === "away" ? { state: state, reason: "coaching" } : { state: state });
    });
    document.getElementById("edit-skills-go").addEventListener("click", () => {
      const skills = {};
      for (const part of document.getElementById("edit-skills").value.split(",")) {
        const [k, v] = part.split("=").map((s) => s.trim());
        if (k) skills[k] = Number(v);
      }
      post(agentPath("skills"), { skills: skills });
    });
  }

  connect();
})();
