/**
 * console.js — the director console (/console). Director actions go to core with the director key; live
 * figures arrive over push like a viewer's, because a director key is not a viewer ticket: the console
 * joins through the gatekeeper like any client and follows `episode:<id>`.
 */

import { interactionEditor, timelineRow } from "./console-forms.js";
import { logFeed, renderBoard, watchCapacity } from "./console-panels.js";
import { PlayToTV } from "./playtotv.js";
import {
  $, bars, choicesOf, countdown, describe, fill, h, kindOf, loadConfig, loadKinds, toast, transportLabel,
} from "./ui.js";

/** The key stays in this tab only: closing it signs out (a shared studio machine). */
const KEY_STORAGE = "playtotv.directorKey";
/** There is no "list shows" endpoint in the contract: the console remembers what it created. */
const SHOWS_KEY = "playtotv.console.shows";
const EPISODES_KEY = "playtotv.console.episodes";
const draftsKey = (episodeId) => `playtotv.console.drafts.${episodeId}`;
/** GET …/stats (players, answers) is polled this often (GET /v1/status: see console-panels.js). */
const STATS_INTERVAL_MS = 3000;
/** A second click within this long ends the episode (no blocking confirm() dialog in a live studio). */
const END_CONFIRM_MS = 4000;
/** After a stats.updated, the player count is fetched this much later (at most one fetch per period). */
const STATS_AFTER_ANSWERS_MS = 700;

const state = {
  config: null,
  key: null,
  client: null,
  episode: null,
  interactions: new Map(), // id → {interaction, counts, results}
  order: [], // ids, newest first
  stops: new Map(), // id → stop its countdown
  composer: null,
  timeline: [],
  statsTimer: null,
};

const remembered = (key) => JSON.parse(localStorage.getItem(key) || "[]");
function remember(key, item) {
  const items = remembered(key).filter((x) => x.id !== item.id);
  localStorage.setItem(key, JSON.stringify([item, ...items].slice(0, 20)));
}

/** A director call: core with the director key, with the client's stickiness and failover. */
function director(method, path, body) {
  return state.client.request(method, path, { auth: state.key, body });
}

async function main() {
  [state.config] = await Promise.all([loadConfig(), loadKinds()]);
  state.client = new PlayToTV({ gatekeepers: state.config.gatekeepers, core: [state.config.core] });
  $("#sign-in-form").addEventListener("submit", onSignIn);
  $("#sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    location.reload();
  });
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (saved) await signIn(saved).catch(() => sessionStorage.removeItem(KEY_STORAGE));
}

// -- signing in -----------------------------------------------------------------------------------------

async function onSignIn(event) {
  event.preventDefault();
  const error = $("#sign-in-error");
  error.hidden = true;
  try {
    await signIn($("#key").value.trim());
  } catch (e) {
    error.textContent = describe(e);
    error.hidden = false;
  }
}

async function signIn(key) {
  // The contract has no "check my key" call. The stats of an episode that cannot exist answer 404 to a
  // director, 401 to a wrong key and 403 to a viewer ticket — with no side effect.
  try {
    await state.client.request("GET", "/v1/episodes/e_none/stats", { auth: key });
  } catch (e) {
    if (e.code === "unauthorized") throw new Error("That key was not accepted.");
    if (e.code === "forbidden") throw new Error("That is a viewer ticket, not a director key.");
    if (e.code !== "not_found") throw e;
  }
  state.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("#sign-in").hidden = true;
  $("#desk").hidden = false;
  $("#sign-out").hidden = false;
  setUpDesk();
  joinForPush();
  const wanted = new URLSearchParams(location.search).get("episode");
  if (wanted) await openEpisode(wanted);
}

/** Live messages need a viewer ticket: join like a viewer (in the background; REST works meanwhile). */
function joinForPush() {
  const pill = $("#status");
  state.client.on("transport", ({ name }) => {
    pill.textContent = `push: ${transportLabel(name)}`;
    pill.dataset.transport = name;
  });
  state.client.on("waiting", ({ retryIn }) => {
    pill.textContent = `push: platform full, retrying in ${retryIn} s`;
  });
  wirePush(state.client);
  pill.textContent = "push: joining…";
  state.client.join().catch((e) => toast(`Live updates unavailable: ${describe(e)}`, "error"));
}

function setUpDesk() {
  renderShowChoices();
  renderRecent();
  $("#show-form").addEventListener("submit", createShow);
  $("#episode-form").addEventListener("submit", createEpisode);
  $("#episode-mode").addEventListener("change", () => {
    $("#timeline").hidden = $("#episode-mode").value !== "prerecorded";
    if (!$("#timeline").hidden && !state.timeline.length) addTimelineRow();
  });
  $("#timeline-add").addEventListener("click", addTimelineRow);
  $("#open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    openEpisode($("#open-episode").value.trim());
  });
  state.composer = interactionEditor();
  $("#composer-fields").append(state.composer.element);
  $("#composer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    composeInteraction(true);
  });
  $("#create-draft").addEventListener("click", () => composeInteraction(false));
  $("#start-episode").addEventListener("click", startEpisode);
  $("#end-episode").addEventListener("click", endEpisode);
  $("#event-form").addEventListener("submit", sendEvent);
  watchCapacity(state.config.gatekeepers);
  setInterval(refreshStats, STATS_INTERVAL_MS);
}

// -- shows and episodes ------------------------------------------------------------------------------------

function renderShowChoices(selected) {
  const shows = remembered(SHOWS_KEY);
  fill($("#episode-show"), h("option", { value: "" }, shows.length ? "Pick a show" : "Create a show first"),
    shows.map((s) => h("option", { value: s.id, selected: s.id === selected }, s.title)));
}

function renderRecent() {
  const episodes = remembered(EPISODES_KEY);
  fill($("#recent"), episodes.map((e) => h("li", {},
    h("button", { type: "button", class: "ghost small", onclick: () => openEpisode(e.id) }, e.title),
    " ", h("code", {}, e.id))));
}

async function createShow(event) {
  event.preventDefault();
  try {
    const show = await director("POST", "/v1/shows", { title: $("#show-title").value.trim() });
    remember(SHOWS_KEY, show);
    renderShowChoices(show.id);
    $("#show-title").value = "";
    toast(`Show “${show.title}” created`);
  } catch (e) {
    toast(`Show not created: ${describe(e)}`, "error");
  }
}

function addTimelineRow() {
  const row = timelineRow((element) => {
    state.timeline = state.timeline.filter((r) => r.element !== element);
    element.remove();
  });
  state.timeline.push(row);
  $("#timeline-rows").append(row.element);
}

async function createEpisode(event) {
  event.preventDefault();
  const mode = $("#episode-mode").value;
  const body = { title: $("#episode-title").value.trim(), mode };
  const startsAt = $("#episode-starts").value;
  if (startsAt) body.starts_at = new Date(startsAt).getTime() / 1000;
  try {
    if (mode === "prerecorded") body.timeline = state.timeline.map((row) => row.read());
    const showId = $("#episode-show").value;
    if (!showId) throw new Error("Pick a show (or create one) first.");
    const episode = await director("POST", `/v1/shows/${encodeURIComponent(showId)}/episodes`, body);
    $("#episode-title").value = "";
    toast(`Episode “${episode.title}” created`);
    await openEpisode(episode.id);
  } catch (e) {
    toast(`Episode not created: ${describe(e)}`, "error");
  }
}

async function openEpisode(episodeId) {
  if (!episodeId) return;
  let episode;
  try {
    episode = await director("GET", `/v1/episodes/${encodeURIComponent(episodeId)}`);
  } catch (e) {
    toast(`Cannot open episode: ${describe(e)}`, "error");
    return;
  }
  if (state.episode && state.episode.id !== episode.id) state.client.unfollow(state.episode.channel);
  state.client.follow(episode.channel);
  if (!state.client.session) state.client.syncClock(episode.server_time); // countdowns before push is up
  state.episode = episode;
  remember(EPISODES_KEY, { id: episode.id, title: episode.title });
  renderRecent();
  history.replaceState(null, "", `?episode=${encodeURIComponent(episode.id)}`);
  for (const id of ["#episode", "#composer", "#interactions", "#leaderboard", "#events"]) $(id).hidden = false;
  renderEpisode();
  await loadInteractions(episode);
  refreshBoard();
}

function renderEpisode() {
  const episode = state.episode;
  $("#ep-title").textContent = episode.title;
  $("#ep-mode").textContent = episode.mode;
  $("#ep-id").textContent = episode.id;
  $("#ep-status").textContent = episode.status;
  $("#ep-status").className = `badge status-${episode.status}`;
  $("#start-episode").disabled = episode.status !== "scheduled";
  $("#end-episode").disabled = episode.status !== "live";
  const link = $("#viewer-link");
  link.href = `/play?episode=${encodeURIComponent(episode.id)}`;
  link.textContent = `Viewer page: /play?episode=${episode.id} ↗`;
}

async function startEpisode() {
  try {
    state.episode = { ...state.episode, ...await director("POST", `/v1/episodes/${state.episode.id}/start`, {}) };
    renderEpisode();
  } catch (e) {
    toast(`Not started: ${describe(e)}`, "error");
  }
}

let endArmedAt = 0;

async function endEpisode() {
  const button = $("#end-episode");
  if (Date.now() - endArmedAt > END_CONFIRM_MS) {
    endArmedAt = Date.now();
    button.textContent = "Click again to end";
    setTimeout(() => {
      button.textContent = "End episode";
    }, END_CONFIRM_MS);
    return;
  }
  endArmedAt = 0;
  button.textContent = "End episode";
  try {
    state.episode = { ...state.episode, ...await director("POST", `/v1/episodes/${state.episode.id}/end`, {}) };
    renderEpisode();
  } catch (e) {
    toast(`Not ended: ${describe(e)}`, "error");
  }
}

// -- interactions ------------------------------------------------------------------------------------------

/** Everything known about the episode's interactions: its timeline, the current one, those with answers
 * (stats), and the drafts this console created (drafts are listed nowhere else). */
async function loadInteractions(episode) {
  for (const stop of state.stops.values()) stop();
  state.stops.clear();
  state.interactions.clear();
  state.order = [];
  let stats = null;
  try {
    stats = await director("GET", `/v1/episodes/${episode.id}/stats`);
  } catch {
    stats = null;
  }
  const ids = new Set([
    ...remembered(draftsKey(episode.id)).map((d) => d.id),
    ...(stats?.interactions || []).map((i) => i.interaction_id),
    ...(episode.timeline || []).map((t) => t.interaction_id),
    ...(episode.current ? [episode.current.id] : []),
  ]);
  const counts = new Map((stats?.interactions || []).map((i) => [i.interaction_id, i.counts]));
  const loaded = await Promise.all([...ids].map((id) =>
    director("GET", `/v1/interactions/${encodeURIComponent(id)}`).catch(() => null)));
  for (const interaction of loaded.filter(Boolean).reverse()) {
    upsert(interaction, { counts: counts.get(interaction.id) || {} });
  }
  if (stats) showStats(stats);
  renderInteractions();
}

function upsert(interaction, extra = {}) {
  const entry = state.interactions.get(interaction.id) || { counts: {}, results: null };
  state.interactions.set(interaction.id, { ...entry, ...extra, interaction: { ...entry.interaction, ...interaction } });
  if (!state.order.includes(interaction.id)) state.order.unshift(interaction.id);
}

async function composeInteraction(andOpen) {
  let body;
  try {
    body = state.composer.read();
  } catch (e) {
    toast(e.message, "error");
    return;
  }
  const episodeId = state.episode.id;
  try {
    let interaction = await director("POST", `/v1/episodes/${episodeId}/interactions`, body);
    remember(draftsKey(episodeId), { id: interaction.id });
    upsert(interaction);
    if (andOpen) interaction = await director("POST", `/v1/interactions/${interaction.id}/open`, {});
    upsert(interaction);
    renderInteractions();
    state.composer.reset();
  } catch (e) {
    toast(`Interaction not created: ${describe(e)}`, "error");
  }
}

async function act(id, action) {
  const body = {};
  if (action === "reveal") {
    const select = $(`.interaction[data-id="${CSS.escape(id)}"] select.reveal-choice`);
    if (select) {
      if (!select.value) {
        toast("Pick the outcome first.", "error");
        return;
      }
      body.correct = select.value;
    }
  }
  try {
    const interaction = await director("POST", `/v1/interactions/${encodeURIComponent(id)}/${action}`, body);
    upsert(interaction);
    if (action === "reveal") await loadResults(id);
    renderInteraction(id);
  } catch (e) {
    toast(`${action} failed: ${describe(e)}`, "error");
  }
}

async function loadResults(id) {
  try {
    const results = await director("GET", `/v1/interactions/${encodeURIComponent(id)}/results`);
    upsert({ id }, { results, counts: results.counts });
  } catch {
    // the reveal message brings them too
  }
}

function renderInteractions() {
  const list = $("#interaction-list");
  if (!state.order.length) {
    fill(list, h("p", { class: "muted" }, "None yet: compose one above."));
    return;
  }
  // Keep existing cards (and their countdowns); add missing ones in order.
  for (const id of state.order) {
    if (!list.querySelector(`.interaction[data-id="${CSS.escape(id)}"]`)) {
      list.querySelector(".muted")?.remove();
      list.append(h("article", { class: "interaction", dataset: { id } }));
    }
    renderInteraction(id);
  }
  const cards = state.order.map((id) => list.querySelector(`.interaction[data-id="${CSS.escape(id)}"]`));
  list.replaceChildren(...cards);
}

function renderInteraction(id) {
  const card = $(`.interaction[data-id="${CSS.escape(id)}"]`);
  const entry = state.interactions.get(id);
  if (!card || !entry) return;
  const { interaction, counts, results } = entry;
  state.stops.get(id)?.();
  state.stops.delete(id);
  card.dataset.status = interaction.status;
  const total = Object.values(counts || {}).reduce((a, b) => a + b, 0);
  const timer = h("span", { class: "countdown-label" });
  const status = interaction.status;
  const correct = results?.correct ?? interaction.correct ?? null;
  // Kinds whose answer is only known at reveal (predictions) ask for it here.
  const revealChoice = kindOf(interaction.kind).correct === "reveal" && status === "closed"
    ? h("select", { class: "reveal-choice", "aria-label": "Outcome" }, h("option", { value: "" }, "outcome…"),
      choicesOf(interaction).map((c) => h("option", { value: c.id }, c.label)))
    : null;
  fill(card,
    h("div", { class: "interaction-head" },
      h("span", { class: `badge ${interaction.kind}` }, interaction.kind),
      h("span", { class: `badge status-${status}` }, status),
      status === "open" ? timer : null,
      typeof results?.average === "number" ? h("span", { class: "muted" }, `average ${results.average.toFixed(1)}`) : null,
      h("span", { class: "muted total", dataset: { total: String(total) } }, `${total} answer${total === 1 ? "" : "s"}`)),
    h("h3", { class: "prompt" }, interaction.prompt),
    bars(choicesOf(interaction), counts || {}, { correct }),
    h("div", { class: "row wrap actions" },
      h("button", { type: "button", class: "primary", dataset: { action: "open" }, disabled: status !== "draft",
        onclick: () => act(id, "open") }, "Open"),
      h("button", { type: "button", dataset: { action: "close" }, disabled: status !== "open",
        onclick: () => act(id, "close") }, "Close"),
      revealChoice,
      h("button", { type: "button", dataset: { action: "reveal" }, disabled: status !== "closed",
        onclick: () => act(id, "reveal") }, "Reveal")));
  if (status === "open" && interaction.closes_at) {
    state.stops.set(id, countdown({
      closesAt: interaction.closes_at, opensAt: interaction.opens_at, now: () => state.client.serverNow(),
      label: timer,
    }));
  }
}

// -- live figures ------------------------------------------------------------------------------------------

function wirePush(client) {
  const mine = (data) => state.episode && (!data.episode_id || data.episode_id === state.episode.id);
  client.on("message", (data, meta) => {
    if (state.episode && meta.channel === state.episode.channel) logFeed(data);
  });
  client.on("interaction.opened", ({ interaction }) => {
    if (!mine(interaction)) return;
    upsert(interaction);
    renderInteractions();
  });
  client.on("interaction.closed", ({ interaction_id: id }) => {
    if (!state.interactions.has(id)) return;
    upsert({ id, status: "closed" });
    renderInteraction(id);
  });
  client.on("interaction.revealed", ({ interaction_id: id, correct, results }) => {
    if (!state.interactions.has(id)) return;
    upsert({ id, status: "revealed", correct }, { results, counts: results.counts });
    renderInteraction(id);
  });
  client.on("stats.updated", ({ interaction_id: id, counts }) => {
    if (!state.interactions.has(id)) return;
    upsert({ id }, { counts });
    renderInteraction(id);
    $("#answers").textContent = String(answersSoFar());
    // Answers are coming in: the number of players (only in GET …/stats) is moving too.
    state.statsTimer ??= setTimeout(() => {
      state.statsTimer = null;
      refreshStats();
    }, STATS_AFTER_ANSWERS_MS);
  });
  client.on("leaderboard.updated", (data) => {
    if (mine(data) && data.entries?.length) renderBoard(data.entries);
  });
  client.on("episode.started", (data) => episodeChanged(data, "live"));
  client.on("episode.ended", (data) => episodeChanged(data, "ended"));
  client.on("lost", ({ channel }) => {
    if (state.episode && channel === state.episode.channel) openEpisode(state.episode.id); // reload over REST
  });
}

function episodeChanged(data, status) {
  if (!state.episode || data.episode_id !== state.episode.id) return;
  state.episode = { ...state.episode, status };
  renderEpisode();
}

async function refreshStats() {
  if (!state.episode) return;
  try {
    const stats = await director("GET", `/v1/episodes/${state.episode.id}/stats`);
    showStats(stats);
    for (const item of stats.interactions) {
      const entry = state.interactions.get(item.interaction_id);
      // Push is best effort for stats; this catches up anything it dropped (and missed status changes).
      if (entry && (entry.interaction.status !== item.status ||
          JSON.stringify(entry.counts) !== JSON.stringify(item.counts))) {
        upsert({ id: item.interaction_id, status: item.status }, { counts: item.counts });
        renderInteraction(item.interaction_id);
      }
    }
  } catch {
    // next time
  }
}

function answersSoFar() {
  let total = 0;
  for (const { counts } of state.interactions.values()) for (const n of Object.values(counts || {})) total += n;
  return total;
}

function showStats(stats) {
  $("#viewers").textContent = String(stats.viewers);
  $("#answers").textContent = String(stats.answers);
}

async function refreshBoard() {
  try {
    const board = await director("GET", `/v1/episodes/${state.episode.id}/leaderboard`, undefined);
    renderBoard(board.entries);
  } catch {
    // shown on the next leaderboard.updated
  }
}

async function sendEvent(event) {
  event.preventDefault();
  const message = $("#event-message").value.trim();
  try {
    await director("POST", `/v1/episodes/${state.episode.id}/events`,
      { type: $("#event-type").value.trim(), data: message ? { message } : {} });
    $("#event-message").value = "";
    toast("Event sent");
  } catch (e) {
    toast(`Event not sent: ${describe(e)}`, "error");
  }
}

main().catch((error) => {
  toast(`Something went wrong: ${describe(error)}`, "error");
  console.error(error);
});
