// The customer's chat widget: speaks docs/chat-protocol.md over one WebSocket. Every piece of text goes in
// through textContent, never as HTML. The resume token lives in sessionStorage, so a reloaded page or a
// dropped connection continues the same chat; lines are shown once each, by message id.
"use strict";

(function () {
  const root = document.getElementById("chat");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const els = {
    status: $("status"), prechat: $("prechat"), prechatError: $("prechat-error"), conversation: $("conversation"),
    wait: $("wait"), log: $("log"), typing: $("typing"), compose: $("compose"), text: $("text"),
    end: $("end"), again: $("again"),
  };
  const STORE = "contactcentre.chat";
  const TYPING_EVERY_MS = 3000;
  const TYPING_SHOWN_MS = 6000;
  const MAX_BACKOFF_MS = 30000;
  const maxText = Number(root.dataset.maxText || 4000);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + location.hostname + ":" + root.dataset.wsPort + (root.dataset.wsPath || "/chat");

  let ws = null;
  let hello = null; // the hello to send when the socket opens (a new chat)
  let state = "idle"; // idle | connecting | waiting | with_agent | offline | closed
  let saved = load(); // {token, lastId}
  let seen = new Set(); // message ids shown
  let pending = new Map(); // client_id -> {li, text}
  let nextClient = 1;
  // The chat keeps the client ids it acknowledged (a resent line is known by its id), and a reloaded page
  // resumes the same chat: ids numbered afresh from "c-1" would name lines sent before the reload, and the
  // server would acknowledge the new line as the old one without storing it. A random prefix per page load
  // keeps them new; crypto.getRandomValues works on plain http too.
  const clientPrefix = "c-" + Array.from(crypto.getRandomValues(new Uint32Array(2)), (n) => n.toString(36)).join("") + "-";
  let backoff = 1000;
  let retryTimer = null;
  let typingSent = 0;
  let typingTimer = null;
  let freshPage = true; // first resume of this page: ask for the whole transcript

  // ------------------------------------------------------------------------------------------- storage

  function load() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE) || "null");
    } catch (e) {
      return null;
    }
  }

  function save() {
    try {
      if (saved) sessionStorage.setItem(STORE, JSON.stringify(saved));
      else sessionStorage.removeItem(STORE);
    } catch (e) {
      // storage disabled: the chat works, it just cannot survive a reload
    }
  }

  // ---------------------------------------------------------------------------------------------- view

  function setStatus(text, kind) {
    els.status.textContent = text;
    els.status.className = "status" + (kind ? " " + kind : "");
  }

  function showConversation() {
    els.prechat.hidden = true;
    els.conversation.hidden = false;
  }

  function showPrechat() {
    els.conversation.hidden = true;
    els.prechat.hidden = false;
    setStatus("");
  }

  function minutes(s) {
    if (s === null || s === undefined) return null;
    if (s < 60) return "under a minute";
    const m = Math.round(s / 60);
    return "about " + m + (m === 1 ? " minute" : " minutes");
  }

  function showWait(position, ewt) {
    const parts = [];
    if (position) parts.push("You are number " + position + " in the queue.");
    const w = minutes(ewt);
    if (w) parts.push("Expected wait: " + w + ".");
    els.wait.textContent = parts.join(" ");
    els.wait.hidden = parts.length === 0;
  }

  function time(ms) {
    return window.centreTime.clock(ms || Date.now()); // the centre's zone, named (centre-time.js)
  }

  function addLine(from, who, text, atMs) {
    const li = document.createElement("li");
    li.className = "line " + from;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = who + " · " + time(atMs);
    const body = document.createElement("p");
    body.className = "body";
    body.textContent = text;
    li.append(meta, body);
    els.log.append(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function notice(text) {
    const li = document.createElement("li");
    li.className = "notice";
    li.textContent = text;
    els.log.append(li);
    li.scrollIntoView({ block: "end" });
  }

  function remember(messageId) {
    if (!messageId) return;
    seen.add(messageId);
    if (saved) {
      saved.lastId = messageId;
      save();
    }
  }

  function hideTyping() {
    els.typing.hidden = true;
    if (typingTimer) clearTimeout(typingTimer);
    typingTimer = null;
  }

  function ended(reason) {
    state = "closed";
    saved = null;
    save();
    hideTyping();
    els.wait.hidden = true;
    els.compose.hidden = true;
    els.end.hidden = true;
    els.again.hidden = false;
    const why = {
      ended: "The agent ended the chat.",
      customer: "You ended the chat.",
      abandoned: "The chat ended.",
      timeout: "The chat ended because you were away too long.",
      overflowed: "Sorry, nobody could take your chat in time.",
      transferred: "The chat was passed on outside the chat.",
    };
    notice(why[reason] || "The chat has ended.");
    setStatus("Chat ended");
    for (const p of pending.values()) p.li.classList.add("failed");
    pending.clear();
  }

  // ------------------------------------------------------------------------------------------- socket

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function connect() {
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = null;
    setStatus("Connecting…");
    try {
      ws = new WebSocket(url);
    } catch (e) {
      setStatus("Cannot reach the chat service.", "down");
      return;
    }
    ws.addEventListener("open", () => {
      backoff = 1000;
      if (saved && saved.token) {
        const frame = { type: "resume", token: saved.token };
        if (!freshPage && saved.lastId) frame.last_message_id = saved.lastId;
        send(frame);
      } else if (hello) {
        send(hello);
      }
    });
    ws.addEventListener("message", (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (frame && typeof frame.type === "string") onFrame(frame);
    });
    ws.addEventListener("close", (ev) => {
      ws = null;
      if (state === "closed" || state === "idle") return;
      if (ev.code === 4000) {
        setStatus("This chat continues in another window.", "down");
        state = "idle";
        return;
      }
      // 1001: the server restarts; 1006: the network; 1008: we sent too much. Come back with the token.
      const delay = ev.code === 1008 ? MAX_BACKOFF_MS : backoff;
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      setStatus("Connection lost; reconnecting…", "down");
      retryTimer = setTimeout(connect, delay);
    });
  }

  function resendPending() {
    for (const [clientId, p] of pending) send({ type: "message", text: p.text, client_id: clientId });
  }

  function onFrame(f) {
    switch (f.type) {
      case "queued":
        saved = { token: f.token, lastId: null };
        save();
        hello = null;
        freshPage = false;
        state = "waiting";
        setStatus("Waiting for an agent" + (f.case ? " · case " + f.case : ""));
        showWait(f.position, f.ewt_s);
        resendPending();
        break;
      case "offline":
        saved = { token: f.token, lastId: null };
        save();
        hello = null;
        freshPage = false;
        state = "offline";
        els.wait.hidden = true;
        setStatus("Nobody is online right now" + (f.case ? " · case " + f.case : ""));
        notice(
          "Nobody can chat right now. Leave your message here and we will answer it" +
            " (by e-mail, if you gave your address)."
        );
        resendPending();
        break;
      case "resumed":
        freshPage = false;
        state = f.state;
        if (f.state === "waiting") {
          setStatus("Waiting for an agent" + (f.case ? " · case " + f.case : ""));
          showWait(f.position, f.ewt_s);
        } else if (f.state === "with_agent") {
          els.wait.hidden = true;
          setStatus("Chatting with " + (f.agent || "an agent"));
        } else if (f.state === "offline") {
          setStatus("Nobody is online right now" + (f.case ? " · case " + f.case : ""));
        }
        showConversation();
        resendPending();
        break;
      case "position":
        if (state === "waiting") showWait(f.position, f.ewt_s);
        break;
      case "agent_joined":
        state = "with_agent";
        els.wait.hidden = true;
        setStatus("Chatting with " + (f.agent || "an agent"));
        notice((f.agent || "An agent") + " joined the chat.");
        break;
      case "transferred":
        state = "waiting";
        hideTyping();
        setStatus("Transferring you to a colleague…");
        notice("You are being transferred.");
        break;
      case "message":
        if (seen.has(f.message_id)) break;
        if (f.from === "agent") hideTyping();
        addLine(f.from === "agent" ? "agent" : "customer", f.from === "agent" ? f.agent || "Agent" : "You",
          f.text, f.at_ms);
        remember(f.message_id);
        break;
      case "ack": {
        const p = pending.get(f.client_id);
        if (p) {
          pending.delete(f.client_id);
          p.li.classList.remove("sending");
          // stamped with the centre's clock once stored (the browser's may be off, or the centre's set elsewhere)
          if (f.at_ms) p.li.querySelector(".meta").textContent = "You · " + time(f.at_ms);
          if (seen.has(f.message_id)) p.li.remove(); // a resume showed it already
        }
        remember(f.message_id);
        break;
      }
      case "typing":
        els.typing.hidden = false;
        if (typingTimer) clearTimeout(typingTimer);
        typingTimer = setTimeout(hideTyping, TYPING_SHOWN_MS);
        break;
      case "closed":
        ended(f.reason);
        break;
      case "error":
        onError(f);
        break;
      default:
        break; // newer servers may say more; ignore what we do not know
    }
  }

  function onError(f) {
    if (f.code === "unknown_session") {
      saved = null;
      save();
      state = "idle";
      if (ws) ws.close(1000);
      els.log.replaceChildren();
      seen = new Set();
      showPrechat();
      els.prechatError.textContent = "That chat has ended. Start a new one?";
      els.prechatError.hidden = false;
      return;
    }
    if (f.client_id && pending.has(f.client_id) && f.code !== "unavailable") {
      pending.get(f.client_id).li.classList.add("failed");
      pending.delete(f.client_id);
    }
    const texts = {
      rate_limited: "You are sending messages too fast; that one was not sent.",
      unavailable: "The chat service is busy; we will try again.",
      closed: "This chat has ended.",
    };
    notice(texts[f.code] || "Something went wrong" + (f.detail ? ": " + f.detail : "."));
  }

  // -------------------------------------------------------------------------------------------- input

  els.prechat.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const form = els.prechat;
    const name = form.elements.name.value.trim();
    const topic = form.elements.topic.value.trim();
    const email = form.elements.email.value.trim();
    if (!name || (email && !form.elements.email.checkValidity())) {
      els.prechatError.textContent = "Please give your name and a valid e-mail address (or none).";
      els.prechatError.hidden = false;
      return;
    }
    els.prechatError.hidden = true;
    // The topic is optional, as in docs/chat-protocol.md: the first message says what it is about anyway.
    hello = { type: "hello", name: name };
    if (topic) hello.topic = topic;
    if (email) hello.email = email;
    const queue = form.elements.queue ? form.elements.queue.value : root.dataset.queue;
    if (queue && form.elements.queue) hello.queue = queue;
    state = "connecting";
    freshPage = false;
    showConversation();
    els.compose.hidden = false;
    els.end.hidden = false;
    els.again.hidden = true;
    connect();
  });

  els.compose.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = els.text.value.trim();
    if (!text || state === "closed") return;
    if (text.length > maxText) {
      notice("A message can have at most " + maxText + " characters.");
      return;
    }
    const clientId = clientPrefix + nextClient++;
    const li = addLine("customer", "You", text);
    li.classList.add("sending");
    pending.set(clientId, { li: li, text: text });
    els.text.value = "";
    // not open yet (connecting, reconnecting): it goes out after queued/resumed
    if (state !== "connecting") send({ type: "message", text: text, client_id: clientId });
  });

  els.text.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      els.compose.requestSubmit();
    }
  });

  els.text.addEventListener("input", () => {
    const now = Date.now();
    if (state === "with_agent" && now - typingSent > TYPING_EVERY_MS) {
      typingSent = now;
      send({ type: "typing" });
    }
  });

  els.end.addEventListener("click", () => {
    if (!send({ type: "close" })) ended("customer");
  });

  els.again.addEventListener("click", () => {
    state = "idle";
    els.log.replaceChildren();
    seen = new Set();
    showPrechat();
  });

  // -------------------------------------------------------------------------------------------- start

  if (saved && saved.token) {
    state = "connecting";
    showConversation();
    connect();
  } else {
    showPrechat();
  }
})();
