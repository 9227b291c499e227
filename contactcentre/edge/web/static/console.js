// The agent console: one WebSocket speaking the agent protocol (docs/protocol.md), logged in by the page's
// web session (the browser sends the cc_session cookie with the handshake). Plain DOM; every text that came
// from a customer or the server is put in with textContent, never parsed as HTML.
"use strict";

(function () {
  const body = document.body;
  const settings = JSON.parse(document.getElementById("console-settings").textContent);
  const $ = (id) => document.getElementById(id);

  let ws = null;
  let nextRef = 1;
  const pending = new Map(); // ref -> {ok, fail}
  let offset = 0; // server clock minus ours, from welcome and ping answers
  let retryMs = 500;
  let reconnect = true;
  let stateSince = null;
  let refusal = null; // the error frame that came before a 1008 close: why the login was refused

  const offers = new Map(); // offer_id -> {frame, el}
  const contacts = new Map(); // contact_id -> {channel, el, tab, state, wrapEnds, wrapFrom, ...}
  const pops = new Map(); // contact_id -> screen_pop frame
  let selected = null;

  const serverNow = () => Date.now() + offset;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function clone(id) {
    return $(id).content.firstElementChild.cloneNode(true);
  }

  function secs(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    const m = Math.floor(s / 60);
    return m ? `${m}:${String(s % 60).padStart(2, "0")}` : `${s} s`;
  }

  const clock = (ms) => window.centreTime.clock(ms); // the centre's zone, named (centre-time.js)

  const CHANNEL_WORDS = { chat: "chat", email: "e-mail", voice: "call", callback: "callback", outbound: "call" };
  const channelWord = (ch) => CHANNEL_WORDS[ch] || ch || "contact";

  // Who the customer is, in the words an agent uses: the name the store knows, else the address they came
  // from (an e-mail address, a phone number; a chat's token means nothing to a person). Null: not known yet.
  function whoOf(pop) {
    if (!pop) return null;
    if (pop.matched && pop.customer) return pop.customer.name || pop.value || null;
    return pop.kind === "email" || pop.kind === "phone" ? pop.value || null : null;
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  // ----------------------------------------------------------------------------------- the connection

  function connect() {
    setConn("connecting", "connecting…");
    ws = new WebSocket(body.dataset.wsUrl);
    ws.addEventListener("open", () => setConn("open", "connected"));
    ws.addEventListener("message", (e) => {
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch (err) {
        return; // the server only sends JSON; nothing to show for a broken frame
      }
      if (frame && typeof frame.type === "string" && handlers[frame.type]) handlers[frame.type](frame);
    });
    ws.addEventListener("close", (e) => {
      for (const p of pending.values()) p.fail({ code: "closed", detail: "the connection closed" });
      pending.clear();
      if (e.code === 1000) {
        reconnect = false;
        setConn("closed", "logged out");
      } else if (e.code === 4000) {
        reconnect = false; // another console took over: coming back would take it away again
        setConn("closed", "opened elsewhere");
        notice("This console was opened in another window. Reload to use it here.");
      } else if (e.code === 1008) {
        reconnect = false;
        setConn("closed", "not connected");
        const why = refusal ? refusal.detail : e.reason || "refused";
        // Refused or ended logins (unauthorized, revoked) need a new login; other refusals say what is wrong.
        const relogin = !refusal || refusal.code === "unauthorized" || refusal.code === "revoked";
        notice(`Not connected: ${why}.${relogin ? " Log in again." : ""}`);
      }
      if (reconnect) {
        setConn("closed", "reconnecting…");
        setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 15000);
      }
    });
  }

  function setConn(kind, text) {
    const c = $("conn");
    c.dataset.conn = kind;
    c.textContent = text;
    // The state buttons work once the server has logged this console in (its welcome): a click before
    // that would be lost, and an agent would believe they were available.
    if (kind !== "open") setStateControls(false);
  }

  function setStateControls(on) {
    $("go-available").disabled = !on;
    $("go-away").disabled = !on;
  }

  // Sends a command; the promise settles with its ack (resolve) or error frame (reject).
  function send(frame) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject({ code: "closed", detail: "not connected" });
        return;
      }
      const ref = nextRef++;
      pending.set(ref, { ok: resolve, fail: reject });
      ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  function command(frame) {
    return send(frame).catch((err) => {
      notice(`${frame.type}: ${err.detail || err.code}`);
      throw err;
    });
  }

  // ---------------------------------------------------------------------------------------- frames

  const handlers = {
    welcome(f) {
      retryMs = 500;
      refusal = null;
      offset = f.server_ms - Date.now();
      notice("");
      setStateControls(true);
      for (const id of [...offers.keys()]) removeOffer(id);
      for (const id of [...contacts.keys()]) removeContact(id);
      showState(f);
      for (const w of f.work) upsertContact(w);
    },
    ack(f) {
      settle(f, true);
    },
    error(f) {
      if (f.ref !== undefined && pending.has(f.ref)) settle(f, false);
      else {
        refusal = f;
        notice(`${f.code}: ${f.detail}`);
      }
    },
    state(f) {
      showState(f);
    },
    offer(f) {
      addOffer(f);
    },
    offer_gone(f) {
      removeOffer(f.offer_id);
      if (!contacts.has(f.contact_id)) pops.delete(f.contact_id);
      renderPop();
    },
    screen_pop(f) {
      pops.set(f.contact_id, f);
      const c = contacts.get(f.contact_id);
      if (c) nameContact(c);
      for (const o of offers.values()) if (o.frame.contact_id === f.contact_id) nameOffer(o);
      renderPop();
    },
    contact(f) {
      const c = upsertContact(f);
      c.transcript.replaceChildren();
      for (const m of f.transcript || []) addLine(c, m);
      addOlder(c, f.transcript_before);
      if (f.transcript_error) addSystem(c, f.transcript_error);
      c.subject = f.subject || null;
      nameContact(c);
      if (f.state === "wrap_up") startWrap(c, f.wrap_up_ends_ms === undefined ? null : f.wrap_up_ends_ms);
      if (selected === null) select(f.contact_id);
    },
    message(f) {
      const c = contacts.get(f.contact_id);
      if (!c) return;
      addLine(c, f);
      c.typing.hidden = true;
      if (selected !== f.contact_id) c.badge.hidden = false;
    },
    typing(f) {
      const c = contacts.get(f.contact_id);
      if (!c) return;
      c.typing.hidden = false;
      clearTimeout(c.typingTimer);
      c.typingTimer = setTimeout(() => (c.typing.hidden = true), 4000);
    },
    customer_presence(f) {
      const c = contacts.get(f.contact_id);
      if (c) c.presence.textContent = f.connected ? "" : "customer disconnected — may come back";
    },
    contact_state(f) {
      const c = contacts.get(f.contact_id);
      if (c) setContactState(c, f.state);
    },
    customer_left(f) {
      const c = contacts.get(f.contact_id);
      if (c) addSystem(c, "The customer has left.");
    },
    wrap_up(f) {
      const c = contacts.get(f.contact_id);
      if (c) startWrap(c, f.ends_ms);
    },
    contact_closed(f) {
      removeContact(f.contact_id);
    },
    transferred(f) {
      removeContact(f.contact_id);
    },
    queues(f) {
      showQueues(f.queues);
    },
  };

  function settle(f, ok) {
    const p = pending.get(f.ref);
    if (!p) return;
    pending.delete(f.ref);
    if (ok) p.ok(f);
    else p.fail(f);
  }

  // ----------------------------------------------------------------------------------------- state

  let lastState = null; // the last state frame (or welcome): the badge is redrawn when the contacts change

  function showState(f) {
    lastState = f;
    const s = $("state");
    s.dataset.state = f.state;
    s.textContent = stateWords(f);
    s.title = `router state: ${f.state}`;
    // Nothing to do when already ready; Go away stays usable to change the reason.
    if ($("conn").dataset.conn === "open") $("go-available").disabled = f.presence === "ready";
    stateSince = f.since_ms;
    tickState();
  }

  function redrawState() {
    if (lastState) showState(lastState);
  }

  // What the agent holds, in words: "1 chat", "2 chats and 1 e-mail", "1 call".
  function workWords(states) {
    const byChannel = new Map();
    for (const c of contacts.values()) {
      if (states.includes(c.state)) byChannel.set(c.channel, (byChannel.get(c.channel) || 0) + 1);
    }
    const parts = [...byChannel].map(([ch, n]) => `${n} ${channelWord(ch)}${n === 1 ? "" : "s"}`);
    return parts.join(" and ");
  }

  const words = (code) => code.replaceAll("_", " ");

  // The router's state as an agent says it (docs/web.md "Console"): the router calls an agent with an offer
  // ringing "reserved" even mid-chat, which read as if the chat were on hold. Busy with what, wrap-up,
  // away and why; an offer ringing is said after the work, and an away to come after it.
  function stateWords(f) {
    const handling = workWords(["connected", "held"]);
    const wrapping = workWords(["wrap_up"]);
    let text;
    if (f.state === "available") text = "Available";
    else if (f.state === "away") text = f.reason ? `Away — ${words(f.reason)}` : "Away";
    else if (f.state === "logged_out") text = "Logged out";
    else if (handling) text = `Busy — ${handling}`;
    else if (wrapping) text = `Wrap-up — ${wrapping}`;
    else if (f.state === "busy") text = "Busy";
    else if (f.state === "wrap_up") text = "Wrap-up";
    else text = "";
    if (f.state === "reserved") text = text ? `${text} · offer ringing` : "Offer ringing";
    if (f.state !== "away" && f.presence === "away") text += ` · then away${f.away_reason ? ` (${words(f.away_reason)})` : ""}`;
    return text;
  }

  function tickState() {
    $("state-time").textContent = stateSince ? secs(serverNow() - stateSince) : "";
  }

  $("go-available").addEventListener("click", () => command({ type: "state", state: "available" }).catch(() => {}));
  $("go-away").addEventListener("click", () =>
    command({ type: "state", state: "away", reason: $("away-reason").value }).catch(() => {})
  );

  // ------------------------------------------------------------------------------------ own queues

  // The queues this agent serves (the server's queues frame): how many wait, and the longest wait counted up
  // here from since when the oldest has waited, so the server sends nothing while the queues stand still.
  let myQueues = [];

  function showQueues(rows) {
    myQueues = rows.map((q) => {
      const li = el("li");
      li.dataset.queue = q.queue;
      li.dataset.waiting = String(q.waiting);
      li.append(el("span", q.queue, "queue-name"), " ", el("span", null, "queue-figures"));
      return { ...q, li };
    });
    $("queue-list").replaceChildren(...myQueues.map((q) => q.li));
    $("my-queues").hidden = myQueues.length === 0;
    tickQueues();
  }

  function tickQueues() {
    for (const q of myQueues) {
      const text =
        q.waiting === 0
          ? "none waiting"
          : `${q.waiting} waiting · longest ${secs(serverNow() - q.oldest_since_ms)}`;
      q.li.querySelector(".queue-figures").textContent = text;
    }
  }

  // ---------------------------------------------------------------------------------------- offers

  // The router's explanation of an offer as a sentence an agent reads at a glance.
  const STRATEGY_WORDS = {
    longest_idle: "you had waited longest for work",
    most_skilled: "your skills fit it best",
    least_occupied: "you were the least busy",
    round_robin: "it was your turn",
    fewest_handled: "you had handled the fewest contacts today",
  };

  function requirementWords(req) {
    if (req.startsWith("preferred:")) return "you by name";
    if (req === "any") return "";
    // "sales>=2+billing>=1 | support>=1": alternatives of skill sets
    return req
      .split(" | ")
      .map((alt) => alt.split("+").map((s) => s.replace(/^(.+)>=(\d+)$/, "$1 at level $2 or above")).join(" and "))
      .join(", or ");
  }

  function whyWords(why) {
    const needs = why.requirement ? requirementWords(why.requirement) : "";
    if (why.requirement && why.requirement.startsWith("preferred:")) return "Why you: it asked for you by name.";
    const reason =
      why.trigger === "agent"
        ? "you became free and it had waited longest (priority counted)"
        : STRATEGY_WORDS[why.strategy] || why.strategy.replaceAll("_", " ");
    return `Why you: ${reason}${needs ? `; it needs ${needs}` : ""}.`;
  }

  function addOffer(f) {
    removeOffer(f.offer_id);
    const card = clone("offer-tpl");
    card.dataset.offerId = f.offer_id;
    card.dataset.contactId = f.contact_id || "";
    card.querySelector(".offer-channel").textContent = channelWord(f.channel);
    card.querySelector(".offer-queue").textContent = f.queue ? `in ${f.queue}` : "";
    card.querySelector(".offer-tier").textContent = f.tier || "";
    card.querySelector(".offer-tier").dataset.tier = f.tier || "";
    const preview = f.preview || {};
    card.querySelector(".offer-subject").textContent = preview.subject || "";
    const lines = card.querySelector(".offer-lines");
    for (const line of preview.lines || []) lines.append(el("li", line));
    if (f.why && f.why.strategy) card.querySelector(".offer-why").textContent = whyWords(f.why);
    card.querySelector(".accept").addEventListener("click", () => accept(f.offer_id));
    card.querySelector(".reject").addEventListener("click", () => reject(f.offer_id));
    $("offers").append(card);
    const o = { frame: f, el: card };
    offers.set(f.offer_id, o);
    nameOffer(o);
    tickOffers();
    renderPop();
  }

  function nameOffer(o) {
    const who = whoOf(pops.get(o.frame.contact_id));
    o.el.querySelector(".offer-customer").textContent = who || "a customer";
  }

  function removeOffer(id) {
    const o = offers.get(id);
    if (!o) return;
    o.el.remove();
    offers.delete(id);
    renderPop();
  }

  function accept(id) {
    command({ type: "accept", offer_id: id })
      .then((ack) => {
        removeOffer(id);
        select(ack.contact_id); // the agent chose this contact now: show it (its contact frame came first)
      })
      .catch(() => removeOffer(id));
  }

  function reject(id) {
    command({ type: "reject", offer_id: id, reason: "rejected" })
      .then(() => removeOffer(id))
      .catch(() => removeOffer(id));
  }

  function tickOffers() {
    for (const o of offers.values()) {
      const left = o.frame.expires_ms - serverNow();
      const cd = o.el.querySelector(".countdown");
      cd.textContent = left > 0 ? secs(left) : "expiring";
      const since = o.frame.waiting_since_ms;
      o.el.querySelector(".offer-waited").textContent = since ? `waited ${secs(serverNow() - since)}` : "";
      o.el.classList.toggle("urgent", left < 10000);
    }
  }

  // -------------------------------------------------------------------------------------- contacts

  function upsertContact(f) {
    let c = contacts.get(f.contact_id);
    if (!c) c = makeContact(f);
    setContactState(c, f.state);
    return c;
  }

  function makeContact(f) {
    const pane = clone("pane-tpl");
    const tab = clone("tab-tpl");
    const c = {
      id: f.contact_id,
      channel: f.channel,
      subject: null,
      pane,
      tab,
      title: pane.querySelector(".pane-title"),
      transcript: pane.querySelector(".transcript"),
      typing: pane.querySelector(".typing"),
      presence: pane.querySelector(".pane-presence"),
      badge: tab.querySelector(".tab-badge"),
      wrapEnds: null,
      wrapFrom: null,
      wrapping: false,
    };
    pane.id = `pane-${contacts.size}-${Date.now()}`;
    pane.hidden = true; // only the selected contact's pane shows (select); two open boxes invite the wrong one
    tab.setAttribute("aria-selected", "false");
    pane.dataset.contactId = f.contact_id;
    pane.dataset.channel = f.channel;
    tab.dataset.contactId = f.contact_id;
    tab.setAttribute("aria-controls", pane.id);
    nameContact(c);
    tab.addEventListener("click", () => select(f.contact_id));

    const text = pane.querySelector(".compose-text");
    const compose = pane.querySelector(".compose");
    const canned = pane.querySelector(".canned");
    for (const r of settings.canned) {
      if (r.channel && r.channel !== f.channel) continue;
      const o = el("option", r.name);
      o.value = r.name;
      canned.append(o);
    }
    canned.hidden = canned.options.length <= 1;
    canned.addEventListener("change", () => {
      const r = settings.canned.find((x) => x.name === canned.value);
      if (r) {
        text.value = text.value ? `${text.value}\n${r.text}` : r.text;
        text.focus();
      }
      canned.value = "";
    });
    text.placeholder = f.channel === "email" ? "Reply to the e-mail (Ctrl+Enter sends)" : "Message (Enter sends)";
    if (f.channel === "email") text.rows = 8;
    text.addEventListener("keydown", (e) => {
      const sendKey = f.channel === "email" ? e.key === "Enter" && e.ctrlKey : e.key === "Enter" && !e.shiftKey;
      if (sendKey) {
        e.preventDefault();
        compose.requestSubmit();
      } else if (e.key === "Escape") {
        text.blur();
      } else if (f.channel === "chat") {
        typingSignal(c);
      }
    });
    compose.addEventListener("submit", (e) => {
      e.preventDefault();
      const value = text.value;
      if (!value.trim()) return;
      const type = f.channel === "email" ? "reply" : "message";
      command({ type, contact_id: c.id, text: value })
        .then((ack) => {
          addLine(c, { from: "agent", text: value, at_ms: serverNow(), message_id: ack.message_id });
          if (text.value === value) text.value = "";
        })
        .catch(() => {});
    });

    const voice = pane.querySelector(".voice");
    if (f.channel === "voice") {
      compose.hidden = true;
      voice.hidden = false;
      pane.querySelector(".end").textContent = "Hang up";
    }
    for (const b of voice.querySelectorAll("button[data-cmd]")) {
      b.addEventListener("click", () => voiceCommand(c, b.dataset.cmd, pane.querySelector(".target").value.trim()));
    }
    // The outcome can be set with End: a channel without wrap-up (e-mail by default) has no later moment to
    // choose it, and the disposition moves the case ([dispositions] case_status). The wrap-up form starts from it.
    const outcome = pane.querySelector(".end-disposition");
    for (const code of settings.dispositions) {
      const o = el("option", code.replaceAll("_", " "));
      o.value = code;
      outcome.append(o);
    }
    outcome.hidden = !settings.dispositions.length;
    pane.querySelector(".end").addEventListener("click", () => {
      const end = () => command({ type: f.channel === "voice" ? "hang_up" : "end", contact_id: c.id });
      const code = outcome.value;
      (code ? command({ type: "disposition", contact_id: c.id, code }).then(end) : end()).catch(() => {});
    });
    const tq = pane.querySelector(".transfer-queue");
    for (const q of settings.queues) {
      const o = el("option", q);
      o.value = q;
      tq.append(o);
    }
    pane.querySelector(".transfer").addEventListener("click", () => {
      if (tq.value) command({ type: "transfer", contact_id: c.id, to_queue: tq.value }).catch(() => {});
    });

    const noteForm = pane.querySelector(".note-form");
    const noteText = noteForm.querySelector(".note-text");
    noteForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = noteText.value;
      if (!text.trim()) return;
      command({ type: "note", contact_id: c.id, text })
        .then(() => {
          noteForm.querySelector(".notes").append(el("li", text));
          noteText.value = "";
        })
        .catch(() => {});
    });

    const wrap = pane.querySelector(".wrapup");
    let disp = wrap.querySelector(".disposition");
    if (settings.dispositions.length) {
      for (const code of settings.dispositions) {
        const o = el("option", code.replaceAll("_", " "));
        o.value = code;
        disp.append(o);
      }
    } else {
      // No controlled list configured: the centre takes any code.
      const input = el("input");
      input.className = "disposition";
      input.required = true;
      input.maxLength = 128;
      disp.replaceWith(input);
      disp = input;
    }
    wrap.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!disp.value) return;
      command({ type: "disposition", contact_id: c.id, code: disp.value })
        .then(() => command({ type: "wrap_up_done", contact_id: c.id }))
        .catch(() => {});
    });

    $("tabs").append(tab);
    $("panes").append(pane);
    contacts.set(f.contact_id, c);
    renumberTabs();
    return c;
  }

  // The tab and the heading name the customer and the channel (the contact id is on hover, for colleagues and
  // logs); the transcript's customer lines carry the name too. Called again when the screen-pop names them.
  function nameContact(c) {
    const who = whoOf(pops.get(c.id));
    c.who = who || "Customer";
    const label = `${who || "A customer"} · ${channelWord(c.channel)}`;
    const tabLabel = c.tab.querySelector(".tab-label");
    tabLabel.textContent = label;
    c.tab.title = c.id;
    c.title.textContent = c.subject ? `${label} — ${c.subject}` : label;
    c.title.title = c.id;
    for (const w of c.transcript.querySelectorAll(".from-customer .who")) w.textContent = c.who;
  }

  function typingSignal(c) {
    const now = Date.now();
    if (c.typingSent && now - c.typingSent < 3000) return; // one signal per few seconds is enough
    c.typingSent = now;
    send({ type: "typing", contact_id: c.id }).catch(() => {});
  }

  function voiceCommand(c, cmd, target) {
    const frame = { type: cmd, contact_id: c.id };
    if (cmd === "transfer" || cmd === "consult") {
      if (!target) {
        notice(`${cmd}: name an agent, a queue or a number`);
        return;
      }
      if (/^[+0-9]/.test(target)) frame.to_external = target;
      else if (settings.agents.includes(target)) frame.to_agent = target;
      else frame.to_queue = target;
    }
    command(frame).catch(() => {});
  }

  function setContactState(c, state) {
    c.state = state;
    redrawState();
    c.pane.dataset.state = state;
    c.pane.querySelector(".pane-state").textContent = state.replace("_", " ");
    const handling = state === "connected" || state === "held";
    c.pane.querySelector(".compose-text").disabled = !handling;
    c.pane.querySelector(".send").disabled = !handling;
    c.pane.querySelector(".contact-actions").hidden = !handling;
  }

  function startWrap(c, endsMs) {
    setContactState(c, "wrap_up");
    c.wrapping = true;
    c.wrapEnds = endsMs;
    c.wrapFrom = serverNow();
    const wrap = c.pane.querySelector(".wrapup");
    wrap.hidden = false;
    const chosen = c.pane.querySelector(".end-disposition").value;
    if (chosen && !wrap.querySelector(".disposition").value) wrap.querySelector(".disposition").value = chosen;
    c.typing.hidden = true;
    if (selected === c.id) wrap.querySelector(".disposition").focus();
    tickWrap();
  }

  function tickWrap() {
    for (const c of contacts.values()) {
      if (!c.wrapping) continue;
      const t = c.pane.querySelector(".wrap-timer");
      t.textContent =
        c.wrapEnds === null ? `${secs(serverNow() - c.wrapFrom)} so far` : `closes in ${secs(c.wrapEnds - serverNow())}`;
    }
  }

  function removeContact(id) {
    const c = contacts.get(id);
    if (!c) return;
    clearTimeout(c.typingTimer);
    c.pane.remove();
    c.tab.remove();
    contacts.delete(id);
    pops.delete(id);
    if (selected === id) {
      selected = null;
      const first = contacts.keys().next();
      if (!first.done) select(first.value);
    }
    renumberTabs();
    renderPop();
    redrawState();
  }

  function renumberTabs() {
    let i = 1;
    for (const c of contacts.values()) c.tab.querySelector(".tab-key").textContent = i <= 9 ? String(i++) : "";
    $("idle").hidden = contacts.size > 0;
  }

  function select(id) {
    if (!contacts.has(id)) return;
    selected = id;
    for (const c of contacts.values()) {
      const on = c.id === id;
      c.pane.hidden = !on;
      c.tab.setAttribute("aria-selected", on ? "true" : "false");
      c.tab.classList.toggle("active", on);
      if (on) c.badge.hidden = true;
    }
    renderPop();
  }

  function lineItem(c, m) {
    const li = el("li", null, `line from-${m.from === "customer" ? "customer" : "agent"}`);
    const meta = el("span", null, "meta");
    meta.append(el("span", m.from === "customer" ? c.who : m.agent_id || "you", "who"), ` · ${clock(m.at_ms)}`);
    li.append(meta);
    if (m.subject) li.append(el("strong", m.subject, "subject"));
    const text = el("span", m.text, "text");
    li.append(text);
    if (m.truncated) li.append(fullTextButton(c, m, text));
    return li;
  }

  function addLine(c, m) {
    const li = lineItem(c, m);
    c.transcript.append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  // A long message comes cut (docs/protocol.md, "Long conversations"): the whole text on request.
  function fullTextButton(c, m, text) {
    const b = el("button", `show full text (${m.length} characters)`, "full-text");
    b.type = "button";
    const which = m.id !== undefined ? { id: m.id } : { message_id: m.message_id };
    b.addEventListener("click", () => {
      b.disabled = true;
      command({ type: "message_text", contact_id: c.id, ...which })
        .then((ack) => {
          text.textContent = ack.text;
          b.remove();
        })
        .catch(() => {
          b.disabled = false;
        });
    });
    return b;
  }

  // Older messages than the transcript holds, a page at a time, put in above it.
  function addOlder(c, before) {
    if (!before) return;
    const li = el("li", null, "line system older");
    const b = el("button", "older messages", "older-messages");
    b.type = "button";
    b.addEventListener("click", () => {
      b.disabled = true;
      command({ type: "transcript", contact_id: c.id, before })
        .then((ack) => {
          li.replaceWith(...(ack.transcript || []).map((m) => lineItem(c, m)));
          addOlder(c, ack.transcript_before);
        })
        .catch(() => {
          b.disabled = false;
        });
    });
    li.append(b);
    c.transcript.prepend(li);
  }

  function addSystem(c, text) {
    c.transcript.append(el("li", text, "line system"));
  }

  // ------------------------------------------------------------------------------------ screen-pop

  function renderPop() {
    // The customer of the tab shown, so the panel never describes someone else than the chat being typed
    // in. With no tab open, a ringing offer's customer, headed as the offer (its card names them too).
    const last = [...offers.values()].pop();
    const forOffer = selected === null && last !== undefined;
    const pop = selected !== null ? pops.get(selected) : last ? pops.get(last.frame.contact_id) : undefined;
    $("pop").dataset.for = forOffer ? "offer" : "contact";
    $("pop-heading").textContent = forOffer ? `Offered ${last.frame.channel || "contact"}: not yet accepted` : "Customer";
    const empty = !pop || !pop.matched || !pop.customer;
    $("pop-body").hidden = empty;
    $("pop-empty").hidden = !empty;
    if (empty) {
      $("pop-empty").textContent = pop
        ? pop.error || "Not a known customer."
        : "The customer of the contact shown appears here.";
      return;
    }
    const cu = pop.customer;
    $("pop-name").textContent = cu.name || "(no name)";
    $("pop-tier").textContent = cu.tier || "";
    $("pop-tier").dataset.tier = cu.tier || "";
    $("pop-id").textContent = cu.id;
    const value = cu.lifetime_value !== undefined && cu.lifetime_value !== null ? cu.lifetime_value.toFixed(2) : "—";
    $("pop-value").textContent = cu.value_segment ? `${value} (${cu.value_segment})` : value;
    $("pop-language").textContent = cu.language || "—";
    const ways = [];
    if (cu.consent_email) ways.push("e-mail");
    if (cu.consent_sms) ways.push("SMS");
    if (cu.consent_calls) ways.push("calls");
    $("pop-consents").textContent = ways.length ? ways.join(", ") : "no consents";
    $("pop-dnc").hidden = !cu.do_not_call;
    const sig = pop.signals || {};
    $("pop-risk").textContent = sig.risk ? `risk ${sig.risk} (${sig.contacts || 0} contact${sig.contacts === 1 ? "" : "s"} in ${sig.window_days} days)` : "—";
    $("pop-reasons").replaceChildren(...(sig.reasons || []).map((r) => el("li", r)));
    $("pop-cases").replaceChildren(
      ...(pop.open_cases || []).map((k) => {
        const due = k.first_response_due_ms ? ` · due ${window.centreTime.dated(k.first_response_due_ms)}` : "";
        const li = el("li", `${k.token || k.id} ${k.subject || ""} · ${k.status}${due}`);
        if (k.overdue) li.classList.add("overdue");
        return li;
      })
    );
    $("pop-recent").replaceChildren(
      ...(pop.recent || []).map((r) => {
        const when = r.started_ms ? window.centreTime.dated(r.started_ms) : "";
        return el("li", [r.channel, when, r.disposition || r.outcome].filter(Boolean).join(" · "));
      })
    );
  }

  // -------------------------------------------------------------------------------------- keyboard

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t instanceof HTMLElement && t.closest("input, textarea, select")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const oldest = offers.keys().next();
    if ((e.key === "a" || e.key === "A") && !oldest.done) {
      e.preventDefault();
      accept(oldest.value);
    } else if ((e.key === "r" || e.key === "R") && !oldest.done) {
      e.preventDefault();
      reject(oldest.value);
    } else if (/^[1-9]$/.test(e.key)) {
      const c = [...contacts.values()][Number(e.key) - 1];
      if (c) {
        e.preventDefault();
        select(c.id);
      }
    } else if (e.key === "?") {
      toggleHelp();
    }
  });

  function toggleHelp() {
    const h = $("help");
    h.hidden = !h.hidden;
    $("help-toggle").setAttribute("aria-expanded", h.hidden ? "false" : "true");
  }
  $("help-toggle").addEventListener("click", toggleHelp);

  setInterval(() => {
    tickState();
    tickOffers();
    tickWrap();
    tickQueues();
  }, 250);

  if (body.dataset.wsUrl) connect();
  else setConn("closed", "no agent id");
})();
