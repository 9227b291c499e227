// Times as the centre keeps them: in the centre's time zone (the server renders it into the page's
// data-timezone, from the configuration's `timezone`), with the zone named — "14:05 CET", "2026-12-07 14:05 CET".
// Every page that shows a time loads this before its own script, so the agent, the customer and the
// supervisor read the same clock whatever their browser's zone.
"use strict";

window.centreTime = (function () {
  const zone = document.body.dataset.timezone || "UTC";
  const options = { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "short" };
  let format;
  try {
    format = new Intl.DateTimeFormat("en-GB", { ...options, year: "numeric", month: "2-digit", day: "2-digit", timeZone: zone });
  } catch (e) { // a zone this browser does not know: UTC, still named
    format = new Intl.DateTimeFormat("en-GB", { ...options, year: "numeric", month: "2-digit", day: "2-digit", timeZone: "UTC" });
  }

  function parts(ms) {
    const p = {};
    for (const { type, value } of format.formatToParts(new Date(ms))) p[type] = value;
    return p;
  }

  return {
    zone: zone,
    // "14:05 CET"
    clock(ms) {
      const p = parts(ms);
      return `${p.hour}:${p.minute} ${p.timeZoneName}`;
    },
    // "2026-12-07 14:05 CET"
    dated(ms) {
      const p = parts(ms);
      return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute} ${p.timeZoneName}`;
    },
  };
})();
