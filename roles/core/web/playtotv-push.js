/**
 * playtotv-push.js — the push half of the PlayToTV browser client (imported by playtotv.js).
 *
 * Two parts:
 *
 * - {@link ChannelPositions}: sans-io, a port of the Python SDK's `playtotv/pushclient.py`. It keeps the
 *   last (epoch, offset) seen per channel and turns server frames / poll answers into events: each
 *   message exactly once and in order, a `resubscribe` frame when a gap shows, `lost` when the server
 *   cannot fill a gap (reload over REST). No sockets, so both transports share it.
 * - {@link PushLink}: the transports. WebSocket first; if it fails before its first frame (blocked by
 *   a proxy or a firewall) long polling on the same node; if the node fails altogether the next node of
 *   the gatekeeper's list; once the list is exhausted, back to the gatekeeper for a fresh one.
 */

/** Until a WebSocket delivers its first frame it is not trusted: a proxy may accept the upgrade and then
 * forward nothing. The server sends `subscribed` for the user channel right after the upgrade. */
const WS_FIRST_FRAME_TIMEOUT_MS = 5000;
/** We ping this often; a connection silent for PING_INTERVAL + PONG_TIMEOUT is dead (the server's own
 * keepalive is 90 s, far too long for a viewer waiting for the next question). Pongs also resync the clock. */
const PING_INTERVAL_MS = 20000;
const PONG_TIMEOUT_MS = 10000;
/** docs/api.md's example long-poll wait: below the usual proxy idle timeouts (30 s and up). */
const POLL_TIMEOUT_S = 25;
/** A poll answer may take this much longer than its timeout before we call the node dead. */
const POLL_GRACE_MS = 10000;
/** While polling because the WebSocket failed, try the WebSocket again this often (networks change). */
const WS_RETRY_AFTER_MS = 60000;
/** Reconnect delays grow from MIN to MAX (with jitter) while nodes keep failing, so a dead cluster is not
 * hammered by every viewer in lockstep. */
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const jitter = (ms) => ms * (1 + Math.random() * 0.5);

/**
 * Per-channel positions and the recovery rules of docs/api.md §5 (see the module comment).
 *
 * Events returned by {@link receive} / {@link receivePoll}:
 * `{kind: "message", channel, epoch, offset, sentAt, data}`, `{kind: "subscribed", channel, epoch, offset}`,
 * `{kind: "resubscribe", channel, frame}` (WebSocket: send `frame`), `{kind: "lost", channel}`,
 * `{kind: "pong", serverTime}`, `{kind: "error", code, message}`, `{kind: "reconnect", after}`.
 */
export class ChannelPositions {
  /** @param {string|null} userId the user whose `user:<id>` channel the server follows without asking */
  constructor(userId = null) {
    this.userId = userId;
    /** @type {Map<string, {epoch: string|null, offset: number, awaiting: number}>} */
    this.channels = new Map();
    this.duplicates = 0;
  }

  get userChannel() {
    return this.userId ? `user:${this.userId}` : null;
  }

  /** Follow `channel` without sending anything (polling, or a WebSocket not open yet). */
  add(channel) {
    if (!this.channels.has(channel)) this.channels.set(channel, { epoch: null, offset: 0, awaiting: 0 });
    return this.channels.get(channel);
  }

  /** The `subscribe` frame for `channel`, with `since` when we have a position there. */
  subscribe(channel) {
    const position = this.add(channel);
    // Until the reply, live messages of this channel are ignored: the reply's `missed` replays them in order.
    position.awaiting += 1;
    const frame = { type: "subscribe", channel };
    if (position.epoch !== null) frame.since = { epoch: position.epoch, offset: position.offset };
    return JSON.stringify(frame);
  }

  unsubscribe(channel) {
    this.channels.delete(channel);
    return JSON.stringify({ type: "unsubscribe", channel });
  }

  /** Frames to send on a (re)connected WebSocket: a `subscribe` with `since` for every channel followed. */
  connectionMade() {
    for (const position of this.channels.values()) position.awaiting = 0;
    const own = this.userChannel;
    if (own) this.add(own).awaiting += 1; // the `subscribed` the server sends unasked
    const frames = [];
    for (const [name, position] of [...this.channels]) {
      if (name !== own || position.epoch !== null) frames.push(this.subscribe(name));
    }
    return frames;
  }

  /** Events for one WebSocket text frame. Unknown frame types are skipped (servers add them over time). */
  receive(text) {
    const frame = JSON.parse(text);
    switch (frame.type) {
      case "message":
        return this.#onMessage(frame);
      case "subscribed":
        return this.#onPosition(frame, frame.missed || [], true);
      case "pong":
        return [{ kind: "pong", serverTime: frame.server_time }];
      case "error":
        if (typeof frame.id === "string") {
          // the reply to an `answer` frame (docs/api.md §5.1)
          return [{ kind: "answer", id: frame.id, code: frame.code, message: frame.message || "",
                    retryAfter: frame.retry_after ?? null }];
        }
        return [{ kind: "error", code: frame.code, message: frame.message || "" }];
      case "answer.accepted":
        return [{ kind: "answer", id: frame.id, code: null, receivedAt: frame.received_at }];
      case "reconnect":
        return [{ kind: "reconnect", after: frame.after }];
      default:
        return [];
    }
  }

  /** Query parameters of one `GET /v1/poll` over every channel followed (add `ticket` and `timeout`). */
  pollParams() {
    const params = [];
    for (const [name, position] of this.channels) {
      params.push(["channel", name]);
      params.push(["epoch", position.epoch ?? ""]);
      params.push(["offset", position.epoch !== null ? String(position.offset) : ""]);
    }
    return params;
  }

  /** Events for one long-poll answer (an object, or an array of them for several channels). */
  receivePoll(text) {
    const body = JSON.parse(text);
    const events = [];
    for (const answer of Array.isArray(body) ? body : [body]) {
      const position = this.channels.get(answer.channel);
      if (position) position.awaiting = 0; // every poll answer is complete: nothing pending
      for (const event of this.#onPosition(answer, answer.messages || [], false)) {
        // A gap needs no frame with polling: the next poll carries the position anyway.
        if (event.kind === "resubscribe") this.channels.get(answer.channel).awaiting = 0;
        else events.push(event);
      }
    }
    return events;
  }

  #onMessage(m) {
    const position = this.channels.get(m.channel);
    if (!position || position.awaiting) return []; // not followed, or the pending reply replays it
    if (position.epoch === null || (m.epoch === position.epoch && m.offset === position.offset + 1)) {
      position.epoch = m.epoch;
      position.offset = m.offset;
      return [messageEvent(m)];
    }
    if (m.epoch === position.epoch && m.offset <= position.offset) {
      this.duplicates += 1;
      return [];
    }
    return [this.#gap(m.channel)];
  }

  #gap(channel) {
    return { kind: "resubscribe", channel, frame: this.subscribe(channel) };
  }

  #onPosition(answer, missed, reply) {
    const { channel, epoch, offset, recovered } = answer;
    let position = this.channels.get(channel);
    if (!position) {
      if (channel !== this.userChannel) return []; // a late reply for a channel we left
      position = this.add(channel);
    }
    if (reply) position.awaiting = Math.max(0, position.awaiting - 1);
    if (!recovered) {
      position.epoch = epoch;
      position.offset = offset;
      return [{ kind: "lost", channel, epoch, offset }];
    }
    if (position.epoch === null || position.epoch !== epoch) {
      // No position of ours in this epoch: the server's is where we start.
      position.epoch = epoch;
      position.offset = offset;
      return [{ kind: "subscribed", channel, epoch, offset }];
    }
    const events = [];
    for (const m of missed) {
      if (m.epoch !== epoch) continue;
      if (m.offset === position.offset + 1) {
        position.offset = m.offset;
        events.push(messageEvent(m));
      } else if (m.offset <= position.offset) {
        this.duplicates += 1;
      }
    }
    if (offset > position.offset) {
      if (position.awaiting) return events; // a later reply (to our `since`) fills the rest
      events.push(this.#gap(channel));
      return events;
    }
    if (reply) events.push({ kind: "subscribed", channel, epoch, offset: position.offset });
    return events;
  }
}

function messageEvent(m) {
  return { kind: "message", channel: m.channel, epoch: m.epoch, offset: m.offset, sentAt: m.sent_at, data: m.data };
}

/**
 * Keeps one push connection alive for a {@link PlayToTV} client and feeds its events back to it.
 * Internal to the library: applications use `client.follow()` / `client.on()`.
 */
export class PushLink {
  /**
   * @param {object} client  the PlayToTV client: `session`, `join()`, `_pushEvents(events)`,
   *                         `_setTransport(name)`
   * @param {string[]} transports  allowed transports, in order of preference
   */
  constructor(client, transports) {
    this.client = client;
    this.transports = transports;
    this.positions = new ChannelPositions(client.session?.user_id);
    this.closed = false;
    this.ws = null; // the current WebSocket (connecting or open)
    this.pollAbort = null; // aborts the poll in flight (to poll again with a new channel list)
    this.wsBlockedAt = null; // when the WebSocket last failed while polling worked
    this.index = 0; // stickiness: the push node we use, in the gatekeeper's order
    this.lastSession = null;
    this.pendingAnswers = new Map(); // answer request id → resolve(reply or null)
    this.answerIds = 0;
  }

  /** Whether answers can go on the WebSocket now. */
  get answersOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Send an `answer` frame; resolves to its reply (`{kind: "answer", id, code, ...}`, `code` null when
   * accepted), or null when it could not be settled here (no WebSocket, it closed, no reply in time):
   * it may or may not have landed.
   */
  sendAnswer(interactionId, choice, timeoutMs) {
    if (!this.answersOpen) return Promise.resolve(null);
    const id = `a${++this.answerIds}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle(null), timeoutMs);
      const settle = (reply) => {
        clearTimeout(timer);
        this.pendingAnswers.delete(id);
        resolve(reply);
      };
      this.pendingAnswers.set(id, settle);
      this.ws.send(JSON.stringify({ type: "answer", id, interaction_id: interactionId, choice }));
    });
  }

  follow(channel) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(this.positions.subscribe(channel));
    else this.positions.add(channel);
    this.pollAbort?.abort("channels changed");
  }

  unfollow(channel) {
    const frame = this.positions.unsubscribe(channel);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
    this.pollAbort?.abort("channels changed");
  }

  close() {
    this.closed = true;
    this.ws?.close(1000);
    this.pollAbort?.abort("closed");
  }

  /** Runs until {@link close}: connect, and on every failure reconnect (same node, next node, gatekeeper). */
  async run() {
    let backoff = BACKOFF_MIN_MS;
    while (!this.closed) {
      const session = this.client.session;
      if (session !== this.lastSession) this.#adopt(session);
      const endpoint = session.push[this.index];
      if (!endpoint) {
        // Every node of the list failed: the gatekeeper knows which are alive now.
        this.client._setTransport("offline");
        await sleep(jitter(backoff));
        await this.client.join({ force: true });
        continue;
      }
      const outcome = await this.#connect(endpoint, session);
      if (this.closed) return;
      if (outcome.reconnectAfter !== undefined) {
        await sleep(outcome.reconnectAfter * 1000); // told to: the server already randomised it
        continue;
      }
      if (outcome.worked) {
        backoff = BACKOFF_MIN_MS; // it worked, then broke: the same node once more (stickiness)
      } else {
        this.index += 1;
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
      if (outcome.rejoin) {
        await this.client.join({ force: true }); // ticket expired: resume with it, same identity
        continue;
      }
      if (!outcome.upgrade) {
        // A connection that worked and broke is a blip (reconnecting); a node that never answered is not.
        this.client._setTransport(outcome.worked ? "connecting" : "offline");
        await sleep(jitter(backoff));
      }
    }
  }

  /** A new session (a rejoin): its own endpoint list, and perhaps a new identity (resume refused). */
  #adopt(session) {
    this.lastSession = session;
    this.index = 0;
    const oldChannel = this.positions.userChannel;
    if (this.positions.userId !== session.user_id) {
      if (oldChannel) this.positions.channels.delete(oldChannel); // no longer ours: the server would refuse it
      this.positions.userId = session.user_id;
    }
  }

  async #connect(endpoint, session) {
    const wsAllowed = this.transports.includes("websocket") && endpoint.websocket;
    const pollAllowed = this.transports.includes("polling") && endpoint.polling;
    const wsRecentlyBlocked = this.wsBlockedAt !== null && Date.now() - this.wsBlockedAt < WS_RETRY_AFTER_MS;
    if (wsAllowed && !(wsRecentlyBlocked && pollAllowed)) {
      this.client._setTransport("connecting");
      const outcome = await this.#runWebSocket(endpoint.websocket, session);
      if (outcome.worked || outcome.reconnectAfter !== undefined || !pollAllowed || this.closed) return outcome;
      // Never got a frame: try polling on the same node. If polling works there, the WebSocket is what is
      // blocked (skip it for a while); if polling fails too, the node is down and nothing is blocked.
      this.wsBlockedAt = Date.now();
      const polled = await this.#runPolling(endpoint.polling, session);
      if (!polled.worked) this.wsBlockedAt = null;
      return polled;
    }
    if (!pollAllowed) return { worked: false };
    return this.#runPolling(endpoint.polling, session);
  }

  #runWebSocket(url, session) {
    return new Promise((resolve) => {
      const outcome = { worked: false };
      let ws;
      try {
        ws = new WebSocket(`${url}?ticket=${encodeURIComponent(session.ticket)}`);
      } catch {
        resolve(outcome); // a malformed URL: treat as a failed node
        return;
      }
      this.ws = ws; // follow() sends on it once open; until then connectionMade() covers every channel
      let lastHeard = Date.now();
      const firstFrameTimer = setTimeout(() => ws.close(), WS_FIRST_FRAME_TIMEOUT_MS);
      const pinger = setInterval(() => {
        if (Date.now() - lastHeard > PING_INTERVAL_MS + PONG_TIMEOUT_MS) ws.close(4000, "silent");
        else if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ping" }));
      }, PING_INTERVAL_MS);
      ws.onopen = () => {
        for (const frame of this.positions.connectionMade()) ws.send(frame);
      };
      ws.onmessage = (message) => {
        lastHeard = Date.now();
        if (!outcome.worked) {
          outcome.worked = true;
          clearTimeout(firstFrameTimer);
          this.wsBlockedAt = null;
          this.client._setTransport("websocket");
        }
        let events;
        try {
          events = this.positions.receive(message.data);
        } catch {
          return; // an undecodable frame: the server is at fault; skip it, gaps heal by offset
        }
        for (const event of events) {
          if (event.kind === "answer") this.pendingAnswers.get(event.id)?.(event);
          else if (event.kind === "resubscribe") ws.send(event.frame);
          else if (event.kind === "reconnect") {
            outcome.reconnectAfter = event.after;
            ws.close(1000);
          }
        }
        this.client._pushEvents(events.filter((event) => event.kind !== "answer"));
      };
      ws.onclose = () => {
        clearTimeout(firstFrameTimer);
        clearInterval(pinger);
        if (this.ws === ws) this.ws = null;
        for (const settle of [...this.pendingAnswers.values()]) settle(null); // their senders go to REST
        resolve(outcome);
      };
      // onerror is always followed by onclose, which resolves.
    });
  }

  async #runPolling(url, session) {
    const outcome = { worked: false };
    const own = this.positions.userChannel;
    if (own) this.positions.add(own); // polling has no automatic user channel: ask for it
    while (!this.closed && this.client.session === session) {
      if (this.wsBlockedAt !== null && Date.now() - this.wsBlockedAt >= WS_RETRY_AFTER_MS &&
          this.transports.includes("websocket")) {
        return { ...outcome, upgrade: true };
      }
      const params = new URLSearchParams([["ticket", session.ticket], ...this.positions.pollParams(),
        ["timeout", String(POLL_TIMEOUT_S)]]);
      const controller = new AbortController();
      this.pollAbort = controller;
      const timer = setTimeout(() => controller.abort("timeout"), POLL_TIMEOUT_S * 1000 + POLL_GRACE_MS);
      let response;
      let text;
      try {
        response = await fetch(`${url}?${params}`, { signal: controller.signal, cache: "no-store" });
        text = await response.text();
      } catch {
        if (controller.signal.reason === "channels changed") continue; // not a failure: poll again now
        return outcome;
      } finally {
        clearTimeout(timer);
        if (this.pollAbort === controller) this.pollAbort = null;
      }
      if (response.status === 401) return { ...outcome, rejoin: true };
      if (!response.ok) {
        // 503: this node lost its broker; 4xx: a request we got wrong. Either way, elsewhere or later.
        return outcome;
      }
      if (!outcome.worked) {
        outcome.worked = true;
        this.client._setTransport("polling");
      }
      try {
        this.client._pushEvents(this.positions.receivePoll(text));
      } catch {
        return outcome; // undecodable: the server is at fault
      }
    }
    return outcome;
  }
}
