/**
 * console-panels.js — the console's read-only panels: capacity (GET /v1/status on the gatekeeper), the
 * leaderboard and the live feed of the episode channel. Each renders what it is given; console.js
 * decides when.
 */

import { $, fill, h } from "./ui.js";

/** Capacity moves with every join and leave: every 2 s is live enough and costs the gatekeeper nothing. */
const CAPACITY_INTERVAL_MS = 2000;
const FEED_LENGTH = 12;

/** One line per episode-channel message, newest first. */
export function logFeed(data) {
  const detail = {
    "interaction.opened": () => data.interaction?.prompt + (data.late_by ? ` (late by ${data.late_by} s)` : ""),
    "stats.updated": () => `${data.total} answers`,
    "director.event": () => `${data.event_type}${data.data?.message ? `: ${data.data.message}` : ""}`,
    "interaction.revealed": () => `correct: ${data.correct ?? "—"}`,
  }[data.type];
  const feed = $("#feed");
  // stats.updated comes several times a second: update the last line instead of flooding the feed.
  const last = feed.firstElementChild;
  const line = h("li", { dataset: { type: data.type } }, h("code", {}, data.type), " ", detail ? detail() : "");
  if (data.type === "stats.updated" && last?.dataset.type === "stats.updated") last.replaceWith(line);
  else feed.prepend(line);
  while (feed.children.length > FEED_LENGTH) feed.lastElementChild.remove();
}

/** The top of the leaderboard (GET …/leaderboard or leaderboard.updated). */
export function renderBoard(entries) {
  fill($("#board-list"), entries.length
    ? entries.map((e) => h("li", {}, h("span", { class: "board-rank" }, `#${e.rank}`),
      h("span", { class: "board-name" }, e.name || e.user_id), h("span", { class: "board-score" }, String(e.score))))
    : h("li", { class: "muted" }, "No scores yet"));
}

/**
 * Poll GET /v1/status every CAPACITY_INTERVAL_MS and show it; a gatekeeper that does not answer is
 * replaced by the next of the list.
 */
export function watchCapacity(gatekeepers) {
  let index = 0;
  const poll = async () => {
    const url = gatekeepers[index % gatekeepers.length];
    try {
      const response = await fetch(`${url}/v1/status`, { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      renderCapacity(await response.json());
    } catch {
      index += 1; // that gatekeeper is down: ask the next one next time
      fill($("#capacity-figures"), h("p", { class: "error" }, "Gatekeeper unreachable"));
    }
  };
  poll();
  return setInterval(poll, CAPACITY_INTERVAL_MS);
}

function renderCapacity(status) {
  const used = status.capacity ? Math.min(100, (status.admitted / status.capacity) * 100) : 100;
  const meter = h("span", { class: "meter-fill" });
  meter.style.width = `${used}%`;
  const nodes = Object.entries(status.nodes).map(([role, n]) => `${n} ${role}`).join(" · ");
  $("#admitted").textContent = String(status.admitted);
  fill($("#capacity-figures"),
    h("div", { class: `meter ${status.at_capacity ? "full" : ""}` }, meter),
    h("p", {}, h("strong", { id: "cap-admitted" }, String(status.admitted)), ` of ${status.capacity} admitted`,
      status.at_capacity ? h("span", { class: "badge status-ended" }, "full") : null),
    h("dl", { class: "facts" },
      h("dt", {}, "licensed"), h("dd", {}, String(status.licensed_capacity)),
      h("dt", {}, "QoS limit"), h("dd", {}, String(status.qos_capacity)),
      h("dt", {}, "nodes"), h("dd", {}, nodes)));
}
