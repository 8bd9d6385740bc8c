/**
 * ui.js — small DOM helpers shared by the console and the viewer page (no framework: the pages are
 * short, and client makers should be able to read them top to bottom).
 */

/** `h("button", {class: "primary", onclick: fn}, "Go")`: an element with properties and children. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key in element && key !== "list") element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Replace the children of `element` (text is always set as text, never parsed as HTML). */
export function fill(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

/** "0:07", "1:30": seconds left, rounded up so that "0:00" means it is over. */
export function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/**
 * A countdown to `closesAt` (server clock, via `now()`): writes the time left into `label` and shrinks
 * `bar` (optional). Returns a stop function. Ticks 4× a second so that a rounding second never lingers.
 */
export function countdown({ closesAt, opensAt, now, label, bar, onDone }) {
  const total = Math.max(0.001, closesAt - (opensAt ?? now()));
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    const left = closesAt - now();
    label.textContent = clock(left);
    if (bar) bar.style.width = `${Math.max(0, Math.min(100, (left / total) * 100))}%`;
    if (left <= 0) {
      stop();
      onDone?.();
    }
  };
  const timer = setInterval(tick, 250);
  const stop = () => {
    stopped = true;
    clearInterval(timer);
  };
  tick();
  return stop;
}

/**
 * Horizontal result bars, one per choice: `choices` is [{id, label}], `counts` {id: n}.
 * `correct` highlights the right one, `mine` marks the viewer's own choice.
 */
export function bars(choices, counts = {}, { correct = null, mine = null } = {}) {
  const total = choices.reduce((sum, c) => sum + (counts[c.id] || 0), 0);
  return h("ul", { class: "bars" }, choices.map((choice) => {
    const count = counts[choice.id] || 0;
    const percent = total ? Math.round((count / total) * 100) : 0;
    const fillBar = h("span", { class: "bar-fill" });
    fillBar.style.width = `${percent}%`;
    const classes = ["bar"];
    if (correct !== null && String(correct) === String(choice.id)) classes.push("correct");
    if (mine !== null && String(mine) === String(choice.id)) classes.push("mine");
    return h("li", { class: classes.join(" "), dataset: { option: choice.id, count: String(count) } },
      fillBar,
      h("span", { class: "bar-label" }, choice.label),
      h("span", { class: "bar-figure" }, `${percent}% · ${count}`));
  }));
}

/** The choices of an interaction: its options, or the values of its scale (kinds whose choices are "scale"). */
export function choicesOf(interaction) {
  if (kindOf(interaction.kind).choices === "scale" && interaction.scale) {
    const [low, high] = interaction.scale;
    return Array.from({ length: high - low + 1 }, (_, i) => ({ id: String(low + i), label: String(low + i) }));
  }
  return interaction.options || [];
}

const MAX_TOASTS = 3;

/** A short message at the bottom of the screen (a notification, an error), gone after a few seconds. */
export function toast(message, kind = "info") {
  let tray = $("#toasts");
  if (!tray) {
    tray = h("div", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(tray);
  }
  const item = h("div", { class: `toast ${kind}` }, message);
  tray.append(item);
  // A burst (a reveal brings points, an achievement and friends' news at once) must not bury the page.
  while (tray.children.length > MAX_TOASTS) tray.firstElementChild.remove();
  setTimeout(() => item.remove(), 5000);
}

/** Human words for a push transport, for the status pill. */
export function transportLabel(name) {
  return { websocket: "live", polling: "live (polling)", connecting: "connecting…", offline: "offline" }[name] ||
    name;
}

/** The message of an error for a person: the platform's own message when it gave one. */
export function describe(error) {
  return error?.detail || error?.message || String(error);
}

/** GET a JSON document from the core that served the page, retried (with backoff) until it answers. */
async function fetchFromCore(path, cache = "no-store") {
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await fetch(path, { cache });
      if (response.ok) return await response.json();
    } catch {
      // the core node is restarting: try again below
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * 2 ** attempt)));
  }
}

/** GET /config.json (the gatekeeper URLs of this deployment), retried until a gatekeeper registered. */
export function loadConfig() {
  return fetchFromCore("/config.json");
}

/**
 * The interaction kinds, as the server declares them (GET /v1/kinds: protocol/kinds.py): the pages never
 * name a kind, they read what each one does (`choices`, `correct`, `scored`, `average`).
 */
const kinds = { list: [], byName: new Map(), max_options: 10 };

/** Load the kinds once, before anything is drawn; returns the kinds in the server's order. */
export async function loadKinds() {
  const table = await fetchFromCore("/v1/kinds", "default");
  kinds.list = table.kinds;
  kinds.byName = new Map(table.kinds.map((spec) => [spec.name, spec]));
  kinds.max_options = table.max_options;
  return kinds.list;
}

/** Every kind, in the server's order (after loadKinds). */
export const kindList = () => kinds.list;

/** Options an interaction may have at most (after loadKinds). */
export const maxOptions = () => kinds.max_options;

/** What a kind does; a kind this page has not heard of is shown as plain options, never correct, unscored. */
export function kindOf(name) {
  return kinds.byName.get(name) || { name, choices: "options", correct: "never", scored: false, average: false };
}
