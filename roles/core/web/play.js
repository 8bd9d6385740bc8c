/**
 * play.js — the viewer page (/play?episode=<id>). Joins through the gatekeeper, follows the episode,
 * shows the current interaction with a countdown on the server's clock, answers with one tap, then the
 * results, points, rank and notifications. Also an example of a complete client built on playtotv.js.
 *
 * `?transport=polling` (or `websocket`) limits the push transports, to try the fallback by hand.
 */

import { PlayToTV } from "./playtotv.js";
import {
  $, bars, choicesOf, countdown, describe, fill, h, kindOf, loadConfig, loadKinds, toast, transportLabel,
} from "./ui.js";

/** localStorage keys: the ticket lets a returning viewer resume the same identity (and score). */
const TICKET_KEY = "playtotv.ticket";
const NAME_KEY = "playtotv.name";
/** Leaderboard refreshes are coalesced: after a reveal every score update would otherwise ask at once. */
const BOARD_REFRESH_DELAY_MS = 400;

const params = new URLSearchParams(location.search);
const state = {
  client: null,
  episodeId: params.get("episode"),
  interaction: null, // the one on stage
  results: null, // its results, once revealed
  choices: new Map(), // interaction id → what I answered
  points: new Map(), // interaction id → points I got
  pushedSince: 0, // counts interaction messages, so a slower REST load cannot undo them
  stopCountdown: null,
  boardTimer: null,
};

async function main() {
  const [config] = await Promise.all([loadConfig(), loadKinds()]);
  const transports = ["websocket", "polling"].includes(params.get("transport")) ? [params.get("transport")] : undefined;
  const client = state.client = new PlayToTV({
    gatekeepers: config.gatekeepers, transports,
    name: localStorage.getItem(NAME_KEY) || undefined, resume: localStorage.getItem(TICKET_KEY) || undefined,
  });
  wireStatus(client);
  wirePush(client);
  await client.join();
  localStorage.setItem(TICKET_KEY, client.session.ticket);
  $("#waiting").hidden = true;
  showMe();
  if (state.episodeId) await enterEpisode(state.episodeId);
  else showPicker();
}

// -- connection status ----------------------------------------------------------------------------------

function wireStatus(client) {
  const pill = $("#status");
  client.on("transport", ({ name }) => {
    pill.textContent = transportLabel(name);
    pill.dataset.transport = name;
  });
  let waitTimer = null;
  client.on("waiting", ({ retryIn, reason }) => {
    // A friendly queue message that counts down, instead of an error.
    $("#waiting").hidden = false;
    $("#waiting h2").textContent = reason === "at_capacity" ? "The show is full right now" : "Connecting…";
    let left = retryIn;
    clearInterval(waitTimer);
    const tick = () => {
      $("#waiting-text").textContent = left > 0 ? `Full, retrying in ${left} s.` : "Retrying…";
      left -= 1;
    };
    tick();
    waitTimer = setInterval(tick, 1000);
    pill.textContent = "waiting";
  });
  client.on("joined", (session) => {
    clearInterval(waitTimer);
    $("#waiting").hidden = true;
    localStorage.setItem(TICKET_KEY, session.ticket);
    $("#my-id").textContent = session.user_id;
  });
}

// -- episode --------------------------------------------------------------------------------------------

function showPicker() {
  $("#pick").hidden = false;
  $("#pick-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#pick-episode").value.trim();
    if (id) location.search = `?episode=${encodeURIComponent(id)}`; // a shareable address
  });
}

async function enterEpisode(episodeId) {
  for (const id of ["#stage", "#score", "#board", "#inbox"]) $(id).hidden = false;
  state.client.follow(`episode:${episodeId}`); // first, so nothing published during the load is missed
  await Promise.all([loadEpisode(), refreshBoard(), loadInbox()]);
}

async function loadEpisode() {
  const before = state.pushedSince;
  let episode;
  try {
    episode = await state.client.get(`/v1/episodes/${encodeURIComponent(state.episodeId)}`);
  } catch (error) {
    fill($("#question"), h("p", { class: "error" }, `Cannot open this episode: ${describe(error)}`));
    return;
  }
  $("#episode-title").textContent = episode.title;
  showEpisodeState(episode.status);
  if (state.pushedSince !== before) return; // push already told us something newer
  if (episode.current) {
    state.interaction = episode.current;
    state.results = null;
    if (episode.current.status === "revealed") await loadResults(episode.current.id);
    renderQuestion();
  }
}

function showEpisodeState(status) {
  const words = { scheduled: "starting soon", live: "live", ended: "ended — thanks for playing!" };
  $("#episode-state").textContent = words[status] || status;
  $("#stage").dataset.status = status;
}

async function loadResults(interactionId) {
  try {
    state.results = await state.client.get(`/v1/interactions/${encodeURIComponent(interactionId)}/results`);
  } catch {
    state.results = null; // the reveal message carries them too
  }
}

// -- the question on stage ------------------------------------------------------------------------------

function renderQuestion() {
  const interaction = state.interaction;
  const box = $("#question");
  state.stopCountdown?.();
  state.stopCountdown = null;
  if (!interaction) {
    fill(box, h("p", { class: "idle" }, "Waiting for the next question…"));
    return;
  }
  box.dataset.interactionId = interaction.id;
  box.dataset.status = interaction.status;
  const mine = state.choices.get(interaction.id) ?? null;
  const head = h("div", { class: "question-head" },
    h("span", { class: `badge ${interaction.kind}` }, interaction.kind),
    interaction.points ? h("span", { class: "muted" }, `${interaction.points} pts`) : null);
  const prompt = h("h2", { class: "prompt" }, interaction.prompt);
  if (interaction.status === "open") {
    const label = h("span", { class: "countdown-label" });
    const bar = h("span", { class: "countdown-fill" });
    const answers = answerButtons(interaction, mine);
    fill(box, head, prompt,
      h("div", { class: "countdown" }, h("span", { class: "countdown-track" }, bar), label),
      answers,
      h("p", { id: "feedback", class: "feedback" }, mine !== null ? "Answer locked in. Good luck!" : ""));
    state.stopCountdown = countdown({
      closesAt: interaction.closes_at, opensAt: interaction.opens_at, now: () => state.client.serverNow(),
      label, bar, onDone: () => lockAnswers("Time's up!"),
    });
    if (!box.dataset.shownAt || box.dataset.shownFor !== interaction.id) {
      box.dataset.shownAt = String(Date.now()); // when it appeared: the browser test measures the delay
      box.dataset.shownFor = interaction.id;
    }
    return;
  }
  if (interaction.status === "closed") {
    fill(box, head, prompt, h("p", { class: "feedback" },
      mine !== null ? "Time's up! Your answer is in — results coming up." : "Time's up! Results coming up."));
    return;
  }
  // revealed
  const results = state.results;
  const correct = results?.correct ?? interaction.correct ?? null;
  fill(box, head, prompt,
    bars(choicesOf(interaction), results?.counts || {}, { correct, mine }),
    verdict(interaction, mine, correct));
}

function answerButtons(interaction, mine) {
  const choices = choicesOf(interaction);
  const scale = kindOf(interaction.kind).choices === "scale";
  return h("div", { class: `answers ${scale ? "scale" : ""}` }, choices.map((choice) =>
    h("button", {
      class: `answer${String(mine) === String(choice.id) ? " chosen" : ""}`, type: "button",
      dataset: { choice: choice.id }, disabled: mine !== null,
      onclick: () => submitAnswer(interaction, choice.id),
    }, choice.label)));
}

function lockAnswers(message) {
  for (const button of document.querySelectorAll("#question .answer")) button.disabled = true;
  const feedback = $("#feedback");
  if (feedback && !state.choices.has(state.interaction?.id)) feedback.textContent = message;
}

async function submitAnswer(interaction, choiceId) {
  // A scale's choice is sent as the integer it is, an option's as its id.
  const choice = kindOf(interaction.kind).choices === "scale" ? Number(choiceId) : choiceId;
  state.choices.set(interaction.id, choiceId);
  for (const button of document.querySelectorAll("#question .answer")) {
    button.disabled = true;
    button.classList.toggle("chosen", button.dataset.choice === String(choiceId));
  }
  const feedback = $("#feedback");
  feedback.textContent = "Sending…";
  try {
    await state.client.answer(interaction.id, choice);
    feedback.textContent = "Answer locked in. Good luck!";
  } catch (error) {
    const words = {
      already_answered: "You already answered this one.",
      interaction_closed: "Too late — this question has closed.",
    };
    if (error.code !== "already_answered") state.choices.delete(interaction.id);
    feedback.textContent = words[error.code] || `Not sent: ${describe(error)}`;
    feedback.classList.add("error");
  }
}

function verdict(interaction, mine, correct) {
  const points = state.points.get(interaction.id);
  const pointsLine = points !== undefined
    ? h("p", { class: `points-won${points > 0 ? "" : " none"}`, id: "verdict-points" },
      points > 0 ? `+${points} points` : "No points this time")
    : null;
  if (correct === null || correct === undefined) {
    const average = typeof state.results?.average === "number"
      ? h("p", { class: "verdict-line" }, `Average: ${state.results.average.toFixed(1)}`) : null;
    return h("div", { class: "verdict" }, average,
      h("p", {}, mine !== null ? "Thanks for taking part!" : "Results are in."), pointsLine);
  }
  const label = choicesOf(interaction).find((c) => String(c.id) === String(correct))?.label ?? correct;
  if (mine === null) return h("div", { class: "verdict" }, h("p", {}, `The answer was ${label}.`));
  const right = String(mine) === String(correct);
  return h("div", { class: `verdict ${right ? "right" : "wrong"}` },
    h("p", { class: "verdict-line" }, right ? "Correct!" : `Not this time — it was ${label}.`), pointsLine);
}

// -- push messages --------------------------------------------------------------------------------------

function wirePush(client) {
  const episodeChannel = () => `episode:${state.episodeId}`;
  client.on("interaction.opened", ({ interaction }) => {
    state.pushedSince += 1;
    state.interaction = interaction;
    state.results = null;
    renderQuestion();
  });
  client.on("interaction.closed", ({ interaction_id: id }) => {
    state.pushedSince += 1;
    if (state.interaction?.id !== id || state.interaction.status !== "open") return;
    state.interaction = { ...state.interaction, status: "closed" };
    renderQuestion();
  });
  client.on("interaction.revealed", ({ interaction_id: id, correct, results }) => {
    state.pushedSince += 1;
    if (state.interaction?.id !== id) return;
    state.interaction = { ...state.interaction, status: "revealed", correct };
    state.results = results;
    renderQuestion();
  });
  client.on("score.updated", ({ interaction_id: id, points, total, rank }) => {
    state.points.set(id, points);
    $("#points-total").textContent = String(total);
    $("#points-last").textContent = points > 0 ? `+${points}` : "0";
    if (rank !== null && rank !== undefined) $("#rank").textContent = `#${rank}`;
    else scheduleBoardRefresh(); // rank not known to the publisher: ask
    if (state.interaction?.id === id && state.interaction.status === "revealed") renderQuestion();
  });
  client.on("leaderboard.updated", ({ entries }) => {
    if (entries?.length) renderBoard(entries);
    scheduleBoardRefresh(); // our own rank may have moved even if we are not in the top
  });
  client.on("notification", (notification) => {
    addNotification(notification, true);
  });
  client.on("director.event", ({ event_type: type, data }) => {
    toast(data?.message ? String(data.message) : type.replace(/[._]/g, " "), "event");
  });
  client.on("episode.started", () => showEpisodeState("live"));
  client.on("episode.ended", () => showEpisodeState("ended"));
  client.on("lost", ({ channel }) => {
    // The platform could not replay what we missed: reload that state over REST.
    if (channel === episodeChannel()) loadEpisode();
    else loadInbox();
  });
}

// -- score, leaderboard, notifications --------------------------------------------------------------------

function scheduleBoardRefresh() {
  clearTimeout(state.boardTimer);
  state.boardTimer = setTimeout(refreshBoard, BOARD_REFRESH_DELAY_MS);
}

async function refreshBoard() {
  if (!state.episodeId) return;
  try {
    const board = await state.client.get(`/v1/episodes/${encodeURIComponent(state.episodeId)}/leaderboard`,
      { query: { limit: 10 } });
    renderBoard(board.entries);
    if (board.me) {
      $("#points-total").textContent = String(board.me.score);
      if (board.me.rank !== null) $("#rank").textContent = `#${board.me.rank}`;
    }
  } catch {
    // the board is a nicety: the next update tries again
  }
}

function renderBoard(entries) {
  const me = state.client.userId;
  fill($("#board-list"), entries.length
    ? entries.map((e) => h("li", { class: e.user_id === me ? "me" : "" },
      h("span", { class: "board-rank" }, `#${e.rank}`),
      h("span", { class: "board-name" }, e.name || e.user_id, e.user_id === me ? " (you)" : ""),
      h("span", { class: "board-score" }, String(e.score))))
    : h("li", { class: "muted" }, "No scores yet"));
}

async function loadInbox() {
  try {
    const { notifications } = await state.client.get("/v1/me/notifications");
    for (const n of notifications) addNotification(n, false);
  } catch {
    // shown as they arrive over push anyway
  }
}

const seenNotifications = new Set();

function notificationText(n) {
  if (n.message) return n.message;
  if (n.kind === "achievement") return `Achievement unlocked: ${n.achievement?.title || n.achievement?.id}`;
  const who = n.name || n.user_id || "A friend";
  return { friend_answered: `${who} answered`, friend_joined: `${who} is playing`,
    friend_beat_you: `${who} just overtook you` }[n.kind] || n.kind.replace(/_/g, " ");
}

function addNotification(n, fresh) {
  if (seenNotifications.has(n.id)) return; // REST and push may both bring it
  seenNotifications.add(n.id);
  const list = $("#inbox-list");
  list.querySelector(".muted")?.remove();
  const label = n.kind === "achievement" ? "achievement" : "friends";
  list.prepend(h("li", { dataset: { kind: n.kind } },
    h("span", { class: `badge ${label}` }, label), " ", notificationText(n)));
  while (list.children.length > 20) list.lastElementChild.remove();
  if (fresh) toast(notificationText(n), n.kind === "achievement" ? "achievement" : "info");
}

// -- you and your friends --------------------------------------------------------------------------------

function showMe() {
  $("#me").hidden = false;
  $("#my-id").textContent = state.client.userId;
  $("#name").value = localStorage.getItem(NAME_KEY) || "";
  $("#name-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("#name").value.trim();
    if (!name) return;
    try {
      await state.client.put("/v1/me", { name });
      localStorage.setItem(NAME_KEY, name);
      toast(`Hello, ${name}!`);
    } catch (error) {
      toast(`Name not saved: ${describe(error)}`, "error");
    }
  });
  $("#friend-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = $("#friend-id").value.trim();
    if (!id) return;
    try {
      await state.client.post("/v1/me/friends", { user_id: id });
      $("#friend-id").value = "";
      await loadFriends();
    } catch (error) {
      toast(error.code === "not_found" ? "No player with that id." : `Not added: ${describe(error)}`, "error");
    }
  });
  loadFriends();
}

async function loadFriends() {
  try {
    const { friends } = await state.client.get("/v1/me/friends");
    fill($("#friends-list"), friends.map((f) => h("li", {}, f.name || f.user_id, " ",
      h("code", {}, f.user_id))));
  } catch {
    // not essential
  }
}

main().catch((error) => {
  toast(`Something went wrong: ${describe(error)}`, "error");
  console.error(error);
});
