/**
 * playtotv.js — the PlayToTV browser client: an ES module with no dependencies, mirroring the Python SDK
 * (`playtotv/client.py`). Copy it together with `playtotv-push.js`, or import them from a core node
 * (`/static/playtotv.js`).
 *
 * @example
 *   import { PlayToTV } from "/static/playtotv.js";
 *
 *   const client = new PlayToTV({ gatekeepers: ["http://127.0.0.1:8000"], name: "Ann" });
 *   client.on("waiting", ({ retryIn }) => console.log(`full, retrying in ${retryIn} s`));
 *   client.on("interaction.opened", ({ interaction }) => show(interaction));
 *   client.on("score.updated", ({ points, total, rank }) => console.log(points, total, rank));
 *   client.on("lost", ({ channel }) => reloadOverRest(channel));   // history could not be replayed
 *
 *   await client.join();                                  // gatekeeper: ticket + endpoint lists; push starts
 *   client.follow(`episode:${episodeId}`);                 // WebSocket, or long polling when blocked
 *   const episode = await client.get(`/v1/episodes/${episodeId}`);
 *   await client.answer(episode.current.id, "a");          // idempotent across failovers
 *   const left = episode.current.closes_at - client.serverNow();   // countdowns use the server's clock
 *
 * Rules (docs/api.md §3 and §5):
 * - Joining honours `retry_after` with jitter while the platform is full, and sends back the `queue` token
 *   of the 503 so the client keeps its place. A returning client resumes its identity with its ticket.
 * - REST sticks to the first core node of the list; it moves on after a network error, a 5xx, or two
 *   round trips in a row over `max_rtt_ms`; past the end of the list it asks the gatekeeper again.
 * - Push uses the first push node: WebSocket, else long polling there, else the next node; after every
 *   reconnect it resubscribes with `since` so that no message is lost or repeated.
 *
 * Events for {@link PlayToTV#on}: every message data type (`interaction.opened`, `stats.updated`,
 * `score.updated`, `notification`, ...) with `(data, meta)`; `"message"` for all of them; and
 * `score.updated` computed here from `interaction.revealed` for an interaction this client answered
 * (`computed: true`, see `_scored`); and
 * `joined` (session), `waiting` ({retryIn, reason}), `transport` ({name}: connecting | websocket |
 * polling | offline), `lost` ({channel}: reload that state over REST), `error` ({code, message}).
 */

import { PointsTracker } from "./playtotv-points.js";
import { PushLink } from "./playtotv-push.js";

/** Bounds one HTTP request: a stalled core node must not stall the page. */
const REQUEST_TIMEOUT_MS = 5000;
/** How many times one call may move to another endpoint (or rejoin) before giving up. */
const MAX_FAILOVERS = 6;
/** One slow request is not a slow node; this many in a row are. */
const SLOW_STRIKES = 2;
/** Waiting between failed gatekeeper attempts (network errors) grows to this. */
const JOIN_BACKOFF_MAX_MS = 10000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An error answer of the platform: `status`, `code` and `message` as docs/api.md documents them. */
export class PlayToTVError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(`${status} ${code}: ${message}`);
    this.name = "PlayToTVError";
    this.status = status;
    this.code = code;
    this.detail = message;
    this.retryAfter = retryAfter;
  }
}

/** The HTTP status of each error code (docs/api.md §2), for errors that come on the WebSocket. */
const STATUS_OF = {
  bad_request: 400, unauthorized: 401, forbidden: 403, not_found: 404, already_answered: 409,
  interaction_closed: 409, invalid_state: 409, invalid_choice: 422, rate_limited: 429, at_capacity: 503,
  unavailable: 503,
};

/** No endpoint answered after every failover. */
export class Unavailable extends Error {
  constructor(message) {
    super(message);
    this.name = "Unavailable";
  }
}

function errorOf(status, payload) {
  const error = payload && payload.error;
  if (error && typeof error === "object") {
    return new PlayToTVError(status, error.code || "unknown", error.message || "", error.retry_after ?? null);
  }
  return new PlayToTVError(status, "unknown", `HTTP ${status}`);
}

/** fetch with a deadline; resolves to {status, payload} (payload: parsed JSON or null). */
async function fetchJson(url, init, timeoutMs = REQUEST_TIMEOUT_MS) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(url, { ...init, signal: controller.signal, cache: "no-store" });
    const text = await response.text();
    let payload = null;
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch {
        payload = null; // not ours (a proxy's error page): the status says enough
      }
    }
    return { status: response.status, payload };
  } finally {
    clearTimeout(timer);
  }
}

/** Whether an answer means "this node is in trouble, try another": docs/api.md's 5xx, except a full platform. */
function nodeFailed(status, payload) {
  if (status < 500) return false;
  return !(status === 503 && payload?.error?.code === "at_capacity");
}

export class PlayToTV {
  /**
   * @param {object} options
   * @param {string|string[]} options.gatekeepers  gatekeeper base URL(s), tried in order
   * @param {string} [options.name]          display name sent when joining
   * @param {string[]} [options.transports]  `["websocket", "polling"]` (default) or one of them
   * @param {string} [options.resume]        a previous ticket: keeps the same user id
   * @param {string[]} [options.core]        core URLs for calls made before joining (a director console)
   * @param {number} [options.maxJoinWait]   seconds to keep retrying a full platform (default: forever)
   * @param {boolean} [options.push]         open the push connection after joining (default true)
   */
  constructor(options) {
    this.gatekeepers = [].concat(options.gatekeepers).map((url) => url.replace(/\/+$/, ""));
    this.name = options.name || null;
    this.transports = options.transports || ["websocket", "polling"];
    this.resumeTicket = options.resume || null;
    this.fallbackCore = options.core || [];
    this.maxJoinWait = options.maxJoinWait ?? Infinity;
    this.pushEnabled = options.push !== false;
    /** The gatekeeper's answer: {ticket, user_id, expires_at, server_time, core, push, max_rtt_ms}. */
    this.session = null;
    /** Current push transport: connecting | websocket | polling | offline. */
    this.transport = "offline";
    this.clockOffset = 0; // server clock − local clock, seconds
    this.failovers = 0;
    this._coreIndex = 0;
    this._slow = 0;
    this._queueToken = null;
    this._gatekeeperIndex = 0;
    this._joining = null;
    this._listeners = new Map();
    this._push = null;
    this._followed = new Set();
    /** The viewer's own score per episode, computed from `interaction.revealed` (playtotv-points.js). */
    this.points = new PointsTracker();
  }

  get userId() {
    return this.session?.user_id ?? null;
  }

  /** Now, on the server's clock (Unix seconds): for countdowns to `closes_at`. */
  serverNow() {
    return Date.now() / 1000 + this.clockOffset;
  }

  // -- events -------------------------------------------------------------------------------------------

  /** Call `handler` on `type` (see the module comment); returns a function that removes it. */
  on(type, handler) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(handler);
    return () => this._listeners.get(type).delete(handler);
  }

  _emit(type, ...args) {
    for (const handler of this._listeners.get(type) || []) {
      try {
        handler(...args);
      } catch (error) {
        console.error(`playtotv: a "${type}" handler failed`, error); // one bad handler must not stop the others
      }
    }
  }

  // -- session ------------------------------------------------------------------------------------------

  /**
   * Ask the gatekeeper for a session (at most one request in flight; concurrent callers share it).
   * While the platform is full, waits as told (`retry_after`, plus jitter so that a crowd does not come
   * back in lockstep) and emits `waiting`. Resolves to the session.
   * @param {{force?: boolean}} [opts] force: join again even when a session exists (a fresh endpoint list)
   */
  join(opts = {}) {
    if (this.session && !opts.force) return Promise.resolve(this.session);
    if (!this._joining) {
      this._joining = this._join().finally(() => {
        this._joining = null;
      });
    }
    return this._joining;
  }

  async _join() {
    const deadline = Date.now() + this.maxJoinWait * 1000;
    let backoff = 500;
    for (;;) {
      const body = { transports: this.transports };
      if (this.name) body.name = this.name;
      const resume = this.session?.ticket || this.resumeTicket;
      if (resume) body.resume = resume;
      if (this._queueToken) body.queue = this._queueToken;
      const gatekeeper = this.gatekeepers[this._gatekeeperIndex % this.gatekeepers.length];
      const sentAt = Date.now();
      let answer;
      try {
        answer = await fetchJson(`${gatekeeper}/v1/session`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
      } catch {
        answer = null; // unreachable: try the next gatekeeper
      }
      if (answer && answer.status === 200) return this._adopt(answer.payload, sentAt);
      let waitMs;
      if (answer && (answer.status === 503 || answer.status === 429)) {
        const error = errorOf(answer.status, answer.payload); // full, or this address asked too often
        this._queueToken = answer.payload?.queue || this._queueToken; // keeps our place in the queue
        waitMs = (error.retryAfter ?? 1) * 1000 * (1 + Math.random() * 0.5);
        this._emit("waiting", { retryIn: Math.ceil(waitMs / 1000), reason: error.code });
      } else if (answer) {
        throw errorOf(answer.status, answer.payload); // 4xx: retrying the same request will not help
      } else {
        this._gatekeeperIndex += 1;
        waitMs = backoff * (1 + Math.random() * 0.5);
        backoff = Math.min(backoff * 2, JOIN_BACKOFF_MAX_MS);
        this._emit("waiting", { retryIn: Math.ceil(waitMs / 1000), reason: "unreachable" });
      }
      if (Date.now() + waitMs > deadline) throw new Unavailable("the platform is full or unreachable");
      await sleep(waitMs);
    }
  }

  _adopt(session, sentAt) {
    // Half the round trip is the best guess of when the server stamped server_time.
    this.syncClock(session.server_time, (sentAt + Date.now()) / 2);
    this.session = session;
    this.resumeTicket = session.ticket;
    this._queueToken = null;
    this._coreIndex = 0;
    this._slow = 0;
    this._emit("joined", session);
    if (this.pushEnabled && !this._push) {
      this._push = new PushLink(this, this.transports);
      for (const channel of this._followed) this._push.follow(channel);
      this._runPush();
    }
    return session;
  }

  async _runPush() {
    const link = this._push;
    while (!link.closed) {
      try {
        await link.run();
      } catch (error) {
        // A join that gave up (a 4xx, maxJoinWait): report and try again later rather than go silent.
        this._emit("error", { code: error.code || "push_failed", message: String(error.message || error) });
        this._setTransport("offline");
        await sleep(5000);
      }
    }
  }

  /** Stop the push connection; the client can still make REST calls. */
  close() {
    this._push?.close();
    this._push = null;
    this._setTransport("offline");
  }

  // -- push ---------------------------------------------------------------------------------------------

  /** Receive the messages of `channel` (e.g. `episode:<id>`); your `user:<id>` channel is always followed. */
  follow(channel) {
    this._followed.add(channel);
    this._push?.follow(channel);
  }

  unfollow(channel) {
    this._followed.delete(channel);
    this._push?.unfollow(channel);
  }

  _pushEvents(events) {
    for (const event of events) {
      if (event.kind === "message") {
        const meta = { channel: event.channel, epoch: event.epoch, offset: event.offset, sentAt: event.sentAt };
        if (event.data && typeof event.data.type === "string") this._emit(event.data.type, event.data, meta);
        this._emit("message", event.data, meta);
        if (event.data?.type === "interaction.revealed" && event.channel.startsWith("episode:")) {
          this._scored(event.data, meta);
        }
      } else if (event.kind === "lost") {
        this._emit("lost", { channel: event.channel });
      } else if (event.kind === "pong") {
        this.syncClock(event.serverTime, Date.now());
      } else if (event.kind === "error") {
        this._emit("error", { code: event.code, message: event.message });
      }
    }
  }

  /**
   * The platform sends no per-viewer message at reveal (docs/api.md §5.5): the client computes its points
   * from `interaction.revealed` and emits `score.updated` itself (with `computed: true`; `rank` is null,
   * ask the leaderboard), so handlers written for the server's message keep working.
   */
  _scored(data, meta) {
    const scored = this.points.revealed(meta.channel, data);
    if (!scored) return;
    const update = { type: "score.updated", interaction_id: scored.interaction_id, points: scored.points,
                     total: scored.total, rank: null, streak: scored.streak, computed: true };
    const local = { ...meta, channel: `user:${this.userId}`, computed: true };
    this._emit("score.updated", update, local); // not "message": that one stays what the server sent
  }

  _setTransport(name) {
    if (name === this.transport) return;
    this.transport = name;
    this._emit("transport", { name });
  }

  /**
   * Adopt a `server_time` the platform sent (the join does it; `GET /v1/episodes/{id}` carries one too),
   * for {@link serverNow}. `localMs`: when it was stamped, on the local clock (default: now).
   */
  syncClock(serverTime, localMs = Date.now()) {
    if (typeof serverTime === "number") this.clockOffset = serverTime - localMs / 1000;
  }

  // -- REST with stickiness and failover ------------------------------------------------------------------

  _coreList() {
    return this.session ? this.session.core : this.fallbackCore;
  }

  /** Move to the next core node; past the end of the list, ask the gatekeeper for a fresh one. */
  async _failOver() {
    this.failovers += 1;
    this._slow = 0;
    if (this._coreIndex + 1 < this._coreList().length) {
      this._coreIndex += 1;
    } else if (this.session) {
      await this.join({ force: true });
    } else {
      this._coreIndex = 0; // no session to renew (a director's fallback list): start over after a pause
      await sleep(500);
    }
  }

  /**
   * Call core. Resolves to the decoded body (null when empty); rejects with {@link PlayToTVError} for an
   * error answer, {@link Unavailable} when no node answered. The error carries `retried` when the
   * request was sent more than once (it may have landed the first time).
   * @param {string} method
   * @param {string} path   e.g. `/v1/me`
   * @param {{body?: object, query?: object, auth?: string}} [opts]  auth: a director key instead of the ticket
   */
  async request(method, path, opts = {}) {
    if (!opts.auth && !this.session) await this.join();
    const query = opts.query ? `?${new URLSearchParams(opts.query)}` : "";
    let rejoined = false;
    for (let attempt = 0; attempt <= MAX_FAILOVERS; attempt++) {
      const base = this._coreList()[this._coreIndex];
      if (!base) throw new Unavailable("no core endpoint known: join() first");
      const headers = { Authorization: `Bearer ${opts.auth || this.session.ticket}` };
      const init = { method, headers };
      if (opts.body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(opts.body);
      }
      const started = performance.now();
      let answer;
      try {
        answer = await fetchJson(base + path + query, init);
      } catch {
        await this._failOver();
        continue;
      }
      const { status, payload } = answer;
      if (nodeFailed(status, payload)) {
        await this._failOver();
        continue;
      }
      const maxRtt = this.session?.max_rtt_ms ?? Infinity;
      this._slow = performance.now() - started > maxRtt ? this._slow + 1 : 0;
      if (this._slow >= SLOW_STRIKES) await this._failOver(); // this answer counts; the next goes elsewhere
      if (status === 401 && !opts.auth && !rejoined) {
        rejoined = true; // the ticket expired: resume it (same identity) and send again
        await this.join({ force: true });
        continue;
      }
      if (status >= 400) {
        const error = errorOf(status, payload);
        error.retried = attempt > 0;
        throw error;
      }
      // A later join (a resume) sends this.name: it must not undo a rename made since.
      if (method === "PUT" && path === "/v1/me" && !opts.auth && opts.body?.name) this.name = opts.body.name;
      return payload;
    }
    throw new Unavailable(`${method} ${path}: no core node answered after ${MAX_FAILOVERS} failovers`);
  }

  get(path, opts) {
    return this.request("GET", path, opts);
  }

  post(path, body = {}, opts = {}) {
    return this.request("POST", path, { ...opts, body });
  }

  put(path, body = {}, opts = {}) {
    return this.request("PUT", path, { ...opts, body });
  }

  /**
   * Answer an interaction once, whatever fails in between: on the push WebSocket when it is open
   * (docs/api.md §5.1, far cheaper for the platform), else, or when the socket cannot settle it, over
   * REST. Both transports share one dedupe key, so a repeat after a lost response meets
   * `already_answered`, which means the first attempt was counted.
   * @param {string} interactionId
   * @param {string|number} choice  an option id, or an integer for ratings
   */
  async answer(interactionId, choice) {
    let maybeSent = false;
    while (this._push?.answersOpen) {
      maybeSent = true;
      const reply = await this._push.sendAnswer(interactionId, choice, REQUEST_TIMEOUT_MS);
      if (reply === null || reply.code === "unavailable") break; // not settled here: REST
      if (reply.code === null) {
        this.points.answered(interactionId, choice, reply.receivedAt);
        return { accepted: true, received_at: reply.receivedAt };
      }
      if (reply.code === "rate_limited") {
        await sleep((reply.retryAfter ?? 0.5) * 1000);
        continue;
      }
      throw new PlayToTVError(STATUS_OF[reply.code] ?? 400, reply.code, reply.message, reply.retryAfter);
    }
    const path = `/v1/interactions/${encodeURIComponent(interactionId)}/answers`;
    for (let attempt = 0; attempt <= MAX_FAILOVERS; attempt++) {
      try {
        const accepted = await this.post(path, { choice });
        if (typeof accepted?.received_at === "number") this.points.answered(interactionId, choice, accepted.received_at);
        return accepted;
      } catch (error) {
        if (error.code === "already_answered" && (maybeSent || attempt > 0 || error.retried)) {
          return { accepted: true, duplicate: true };
        }
        if (error.code === "rate_limited") {
          await sleep((error.retryAfter ?? 0.5) * 1000);
          continue;
        }
        if (!(error instanceof Unavailable) || attempt === MAX_FAILOVERS) throw error;
      }
    }
    throw new Unavailable("answer not delivered");
  }
}
