/**
 * `PlazaClient`: one WebSocket to a Plaza edge, multiplexing every room of the app.
 *
 * ```text
 *  app ── subscribe(room) ──▶ Subscription handles ──▶ Rooms (rooms.ts: one entry per room,
 *   │                                                     │      ref-counted, recover positions)
 *   └─ publish/presence/history ──▶ CallQueue (calls.ts) ─┴──▶ socket (this file) ──▶ edge
 *                                   (waits for a connection, resends after a reconnect)
 * ```
 *
 * The client owns reconnecting (exponential backoff with full jitter, immediately on `online`
 * or when a hidden tab becomes visible), resubscribing with `recover` from the last processed
 * position, token refresh (`refresh` pushes, 4002 closes, visibility checks) and idempotent
 * publish retries. The protocol is docs/protocol.md; section numbers below refer to it.
 */

import { Backoff } from "./backoff.js";
import { CallQueue } from "./calls.js";
import { Emitter } from "./emitter.js";
import { Rooms } from "./rooms.js";
import type { DeleteOptions, RoomStateMap, SetOptions } from "./room-state.js";
import { watchEnvironment } from "./environment.js";
import {
  ErrorCode,
  PlazaClosedError,
  PlazaError,
  PlazaTimeoutError,
  closeNeedsFreshToken,
  isTerminalCloseCode,
} from "./errors.js";
import { assertTransition, type ConnectionState } from "./state.js";
import type { PresenceUserEntry, Subscription, SubscribeOptions } from "./subscription.js";
import type {
  ConnectionInfo,
  HistoryOptions,
  HistoryResult,
  Member,
  PresenceStats,
  PublishOptions,
  PublishResult,
} from "./types.js";
import {
  ConnectionLost,
  LOCAL_DROP,
  MAX_ID,
  OPEN,
  randomIdem,
  type ConnectOk,
  type Pending,
} from "./internal.js";
import type {
  ClientEvents,
  DisconnectInfo,
  PlazaClientOptions,
  PlazaEnvironment,
  WebSocketConstructor,
  WebSocketLike,
} from "./options.js";

export type {
  ClientEvents,
  DisconnectInfo,
  EventSourceLike,
  PlazaClientOptions,
  PlazaEnvironment,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from "./options.js";

/** A Plaza client: one connection, many rooms. Construction does not connect; call `connect()`. */
export class PlazaClient extends Emitter<ClientEvents> {
  private readonly url: string;
  private readonly getTokenFn: () => string | Promise<string>;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly name: string | undefined;
  private readonly version: string | undefined;
  private readonly requestTimeoutMs: number;
  private readonly publishTimeoutMs: number;
  private readonly tokenMarginMs: number;
  private readonly unsubscribeDelayMs: number;
  private readonly releaseDelayMs: number;
  private readonly liveness: boolean;
  private readonly environment: PlazaEnvironment | undefined;
  private readonly now: () => number;
  private readonly backoff: Backoff;

  private currentState: ConnectionState = "disconnected";
  private ws: WebSocketLike | null = null;
  /** Bumped for every socket; callbacks of older sockets compare and do nothing. */
  private gen = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private info: ConnectionInfo | null = null;
  private disconnectPush: DisconnectInfo | undefined;
  private connectError: PlazaError | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pingInFlight = false;

  private token: string | undefined;
  private tokenFetchedAt = 0;
  /** ms timestamp of the token's `exp`; `null` = never expires; `undefined` = not yet known. */
  private tokenExpiresAt: number | null | undefined;
  private forceFreshToken = true;
  private refreshing = false;

  private readonly rooms: Rooms;
  private readonly calls: CallQueue;
  private retains = 0;
  private releaseTimer: ReturnType<typeof setTimeout> | undefined;
  private envCleanup: (() => void) | undefined;

  constructor(options: PlazaClientOptions) {
    super();
    if (typeof options?.url !== "string" || options.url === "") {
      throw new TypeError("PlazaClient: options.url must be the edge's WebSocket URL");
    }
    if (typeof options.getToken !== "function") {
      throw new TypeError("PlazaClient: options.getToken must be a function returning a token");
    }
    this.url = options.url;
    this.getTokenFn = options.getToken;
    this.WS = options.WebSocket;
    this.name = options.name;
    this.version = options.version;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.publishTimeoutMs = options.publishTimeoutMs ?? 60_000;
    this.tokenMarginMs = options.tokenRefreshMarginMs ?? 60_000;
    this.unsubscribeDelayMs = options.unsubscribeDelayMs ?? 50;
    this.releaseDelayMs = options.releaseDelayMs ?? 50;
    this.liveness = options.liveness ?? true;
    this.environment = options.environment;
    this.now = options.now ?? Date.now;
    this.backoff = new Backoff(options.backoff);
    this.calls = new CallQueue({
      connected: () => this.info !== null,
      // A publish waits while this client's subscription to its room is being (re)made.
      blocked: (room) => this.rooms.blocked(room),
      send: (op, fields) => this.request(op, fields, 0),
    });
    this.rooms = new Rooms({
      connected: () => this.info !== null,
      generation: () => this.gen,
      request: (op, fields, timeoutMs) => this.request(op, fields, timeoutMs),
      live: () => {
        // §18.5: reset the backoff after a successful subscribe.
        this.backoff.reset();
        this.calls.pump();
      },
      pump: () => this.calls.pump(),
      stuck: (gen, reason) => this.lost(gen, { code: LOCAL_DROP, reason, reconnect: true }),
      error: (err) => this.emit("error", err),
      // Subscriptions talk to the client through this narrow interface.
      subscriptionHost: {
        release: (sub) => this.rooms.release(sub),
        publish: (room, data, o) => this.publish(room, data, o),
        publishEphemeral: (room, data) => this.publishEphemeral(room, data),
        presence: (room, o) => this.presence(room, o),
        presenceStats: (room, o) => this.presenceStats(room, o),
        updatePresence: (room, info, o) => this.updatePresence(room, info, o),
        history: (room, o) => this.history(room, o),
        roomState: (room) => this.rooms.state(room),
        roomPosition: (room) => this.rooms.position(room),
        roomStateMap: (room) => this.rooms.stateMap(room),
      },
      requestTimeoutMs: this.requestTimeoutMs,
      unsubscribeDelayMs: this.unsubscribeDelayMs,
    });
  }

  // ───────────────────────────── public API ─────────────────────────────

  /** The connection state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** What the edge said at `connect`, while connected. */
  get connection(): ConnectionInfo | null {
    return this.info ? { ...this.info } : null;
  }

  /** Opens the connection (idempotent). Subscriptions made before are subscribed once connected. */
  connect(): void {
    if (this.currentState !== "disconnected" && this.currentState !== "closed") return;
    if (!this.webSocketCtor()) {
      throw new TypeError(
        "PlazaClient: no WebSocket implementation; pass options.WebSocket (e.g. `import { WebSocket } from \"ws\"` on Node 20)",
      );
    }
    this.installEnvironment();
    this.setState("connecting");
    void this.openSocket();
  }

  /**
   * Closes the connection and stops reconnecting. Pending requests fail with
   * `PlazaClosedError`; subscriptions stay registered and resume on the next `connect()`.
   */
  close(): void {
    if (this.currentState === "closed") return;
    this.teardownSocket(new PlazaClosedError("client closed"));
    this.clearReconnect();
    this.removeEnvironment();
    this.setState("closed");
    this.calls.failAll(new PlazaClosedError("client closed"));
  }

  /**
   * Keeps the connection open while retained: connects now, and closes shortly after the last
   * release (so React StrictMode's unmount + mount does not reconnect). Returns the release.
   */
  retain(): () => void {
    this.retains += 1;
    if (this.releaseTimer !== undefined) clearTimeout(this.releaseTimer);
    this.releaseTimer = undefined;
    this.connect();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.retains -= 1;
      if (this.retains > 0) return;
      this.releaseTimer = setTimeout(() => {
        this.releaseTimer = undefined;
        if (this.retains === 0) this.close();
      }, this.releaseDelayMs);
    };
  }

  /**
   * Subscribes to a room and returns a handle. Handles of the same room share one protocol
   * subscription (ref-counted); it ends when the last handle calls `unsubscribe()`. After a
   * reconnect the room is resubscribed with `recover`; watch the handle's `subscribed` events
   * for `recovered: false`.
   */
  subscribe(room: string, options: SubscribeOptions = {}): Subscription {
    if (typeof room !== "string" || room === "") throw new TypeError("subscribe: room must be a non-empty string");
    return this.rooms.subscribe(room, options);
  }

  /** Number of live handles on a room (0 if none). */
  refCount(room: string): number {
    return this.rooms.refCount(room);
  }

  /**
   * Publishes `data` to `room`. The connection must be subscribed to the room (§5.4): if this
   * client holds a subscription, the publish waits until it is live. Every publish carries an
   * `idem` key (a random UUID unless given) and is resent with the same key after a reconnect,
   * so it is delivered once. Resolves with the publication's position.
   */
  publish(room: string, data: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    const idem = options.idem ?? randomIdem();
    return this.queued<PublishResult>("publish", { room, data: data === undefined ? null : data, idem }, {
      timeoutMs: options.timeoutMs ?? this.publishTimeoutMs,
      room,
    });
  }

  /**
   * Publishes an ephemeral message to `room` (protocol §11a): delivered at most once to the
   * room's current subscribers as an `ephemeral` event, never stored, no offset. Sent only if
   * the connection is up and this client's subscription to the room is live — never queued
   * or resent after a reconnect (a stale typing indicator is worse than none). Resolves `true`
   * once the edge accepted it, `false` if it was not sent; rejects with the edge's error
   * (e.g. 112 when its ephemeral rate is exceeded, 115 where the namespace forbids it).
   */
  async publishEphemeral(room: string, data: unknown, options: { timeoutMs?: number } = {}): Promise<boolean> {
    if (this.currentState !== "connected" || this.rooms.state(room) !== "subscribed") return false;
    const fields = { room, data: data === undefined ? null : data, ephemeral: true };
    try {
      await this.request("publish", fields, options.timeoutMs ?? this.requestTimeoutMs);
      return true;
    } catch (err) {
      if (err instanceof ConnectionLost) return false;
      throw err;
    }
  }

  /**
   * Sets `key` of a live-state room this client is subscribed to (protocol §5.10). Resolves
   * with the key's new version; rejects with a `PlazaError` (code 119 `stateConflict` when a
   * `version` compare-and-set lost: re-read `roomState(room)` and retry).
   */
  async set(room: string, key: string, value: unknown, options: SetOptions = {}): Promise<number> {
    const fields: Record<string, unknown> = { room, key, value: value === undefined ? null : value };
    if (options.version !== undefined) fields.version = options.version;
    if (options.ttl !== undefined) fields.ttl = options.ttl;
    if (options.tied) fields.tied = true;
    const ok = await this.request<{ offset: number }>("set", fields, options.timeoutMs ?? this.requestTimeoutMs);
    return ok.offset;
  }

  /** Deletes `key` of a live-state room (protocol §5.11). */
  async delete(room: string, key: string, options: DeleteOptions = {}): Promise<number> {
    const fields: Record<string, unknown> = { room, key };
    if (options.version !== undefined) fields.version = options.version;
    const ok = await this.request<{ offset: number }>("delete", fields, options.timeoutMs ?? this.requestTimeoutMs);
    return ok.offset;
  }

  /** A subscribed live-state room's map as this client holds it (`undefined` before the first reply). */
  roomState(room: string): RoomStateMap | undefined {
    return this.rooms.stateMap(room);
  }

  /**
   * All of the room's members, one per connection, ordered by client id (§5.5): reads every
   * page (the edge returns at most `client.max_presence_page` members per call).
   */
  async presence(room: string, options: { timeoutMs?: number } = {}): Promise<Member[]> {
    const members: Member[] = [];
    let after: string | undefined;
    do {
      const page = await this.presencePage(room, { ...options, after });
      members.push(...page.members);
      after = page.next;
    } while (after !== undefined);
    return members;
  }

  /** One page of the room's members after client id `after`, at most `limit` long (§5.5). */
  async presencePage(
    room: string,
    options: { after?: string; limit?: number; timeoutMs?: number } = {},
  ): Promise<{ members: Member[]; next?: string }> {
    const fields: Record<string, unknown> = { room };
    if (options.after !== undefined) fields.after = options.after;
    if (options.limit !== undefined) fields.limit = options.limit;
    const ok = await this.queued<{ members: Member[]; next?: string | null }>("presence", fields, {
      timeoutMs: options.timeoutMs ?? this.requestTimeoutMs,
    });
    return ok.next == null ? { members: ok.members } : { members: ok.members, next: ok.next };
  }

  /**
   * All of the room's users, one entry per user with its connection count, ordered by user id
   * (§5.5 `mode: "users"`, §12.1): reads every page.
   */
  async presenceUsers(room: string, options: { timeoutMs?: number } = {}): Promise<PresenceUserEntry[]> {
    const users: PresenceUserEntry[] = [];
    let after: string | undefined;
    do {
      const fields: Record<string, unknown> = { room, mode: "users" };
      if (after !== undefined) fields.after = after;
      const ok = await this.queued<{ users: PresenceUserEntry[]; next?: string | null }>("presence", fields, {
        timeoutMs: options.timeoutMs ?? this.requestTimeoutMs,
      });
      users.push(...ok.users);
      after = ok.next ?? undefined;
    } while (after !== undefined);
    return users;
  }

  /** Counts of the room's member connections and distinct users (§5.6). */
  presenceStats(room: string, options: { timeoutMs?: number } = {}): Promise<PresenceStats> {
    return this.queued<PresenceStats>("presence_stats", { room }, {
      timeoutMs: options.timeoutMs ?? this.requestTimeoutMs,
    });
  }

  /**
   * Replaces this connection's presence `info` in `room` (§5.6a; needs `publish` on the room):
   * presence subscribers get an `update` event. Remembered and set again after every
   * resubscribe, so it survives reconnects; sent once the room is live if it is not yet.
   */
  async updatePresence(room: string, info: unknown, options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.rooms.setPresenceInfo(room, info)) return;
    await this.queued<Record<string, never>>("presence_update", { room, info: info ?? null }, {
      timeoutMs: options.timeoutMs ?? this.requestTimeoutMs,
    });
  }

  /** Publications of the room, oldest first (§5.7). */
  async history(room: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    const fields: Record<string, unknown> = { room };
    if (options.since) fields.since = { epoch: options.since.epoch, offset: options.since.offset };
    if (options.limit !== undefined) fields.limit = options.limit;
    const ok = await this.queued<{
      epoch: string;
      offset: number;
      complete: boolean;
      publications: { offset: number; data: unknown; from: { user: string; client: string } | null }[];
    }>("history", fields, { timeoutMs: options.timeoutMs ?? this.requestTimeoutMs });
    return {
      epoch: ok.epoch,
      offset: ok.offset,
      complete: ok.complete,
      publications: ok.publications.map((p) => ({ room, offset: p.offset, data: p.data, from: p.from ?? null })),
    };
  }

  /** Queues a command (see `CallQueue`); refused at once on a closed client. */
  private queued<T>(op: string, fields: Record<string, unknown>, opts: { timeoutMs: number; room?: string }): Promise<T> {
    if (this.currentState === "closed") return Promise.reject(new PlazaClosedError("client is closed"));
    return this.calls.add<T>(op, fields, opts);
  }

  // ───────────────────────────── connection ─────────────────────────────

  private webSocketCtor(): WebSocketConstructor | undefined {
    return this.WS ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  }

  private setState(next: ConnectionState): void {
    const previous = this.currentState;
    if (previous === next) return;
    assertTransition(previous, next);
    this.currentState = next;
    this.emit("state", { state: next, previous });
  }

  private async openSocket(): Promise<void> {
    const gen = ++this.gen;
    this.disconnectPush = undefined;
    this.connectError = undefined;
    let token: string;
    try {
      token = await this.connectToken();
    } catch (err) {
      if (gen !== this.gen) return;
      this.emit("error", err instanceof Error ? err : new Error(String(err)));
      this.lost(gen, { code: LOCAL_DROP, reason: "getToken() failed", reconnect: true });
      return;
    }
    if (gen !== this.gen) return;
    const WS = this.webSocketCtor()!;
    let ws: WebSocketLike;
    try {
      ws = new WS(this.url, "plaza.v1");
    } catch (err) {
      // A malformed URL cannot get better by retrying.
      this.emit("error", err instanceof Error ? err : new Error(String(err)));
      this.gen += 1;
      this.removeEnvironment();
      this.setState("closed");
      this.calls.failAll(new PlazaClosedError(`cannot open ${this.url}`));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen === this.gen) this.sendConnect(gen, token);
    };
    ws.onmessage = (event) => {
      if (gen === this.gen) this.onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (gen !== this.gen) return;
      const info = this.disconnectPush ?? {
        code: event.code,
        reason: event.reason,
        reconnect: !isTerminalCloseCode(event.code),
      };
      this.lost(gen, info);
    };
    ws.onerror = () => {
      // A close event always follows; it decides what happens.
    };
  }

  /** The token for a new connection: the cached one while it has time left, else a fresh one. */
  private async connectToken(): Promise<string> {
    const now = this.now();
    if (!this.forceFreshToken && this.token !== undefined) {
      const fresh =
        this.tokenExpiresAt === null ||
        (this.tokenExpiresAt !== undefined && this.tokenExpiresAt - now > this.tokenMarginMs) ||
        (this.tokenExpiresAt === undefined && now - this.tokenFetchedAt < this.tokenMarginMs);
      if (fresh) return this.token;
    }
    return this.fetchToken();
  }

  private async fetchToken(): Promise<string> {
    const token = await this.getTokenFn();
    if (typeof token !== "string" || token === "") throw new TypeError("getToken() must return a non-empty string");
    this.token = token;
    this.tokenFetchedAt = this.now();
    this.tokenExpiresAt = undefined;
    this.forceFreshToken = false;
    return token;
  }

  private sendConnect(gen: number, token: string): void {
    const fields: Record<string, unknown> = { token };
    if (this.name !== undefined) fields.name = this.name;
    if (this.version !== undefined) fields.version = this.version;
    this.request<ConnectOk>("connect", fields, this.requestTimeoutMs).then(
      (ok) => this.onConnected(gen, ok),
      (err: Error) => {
        if (gen !== this.gen) return;
        if (err instanceof PlazaError) {
          // The edge closes next (4500, 4002, 4004, 4008); the close decides. 110/111 mean
          // this token is no good: never reuse it.
          this.connectError = err;
          if (err.code === ErrorCode.invalidToken || err.code === ErrorCode.tokenExpired) this.forceFreshToken = true;
          this.emit("error", err);
        } else if (err instanceof PlazaTimeoutError) {
          this.lost(gen, { code: LOCAL_DROP, reason: "no reply to connect", reconnect: true });
        }
      },
    );
  }

  private onConnected(gen: number, ok: ConnectOk): void {
    if (gen !== this.gen) return;
    const now = this.now();
    this.info = {
      client: ok.client,
      user: ok.user,
      expiresIn: ok.expires_in ?? null,
      pingInterval: ok.ping_interval,
    };
    this.tokenExpiresAt = ok.expires_in == null ? null : now + ok.expires_in * 1000;
    this.setState("connected");
    this.emit("connected", { ...this.info });
    this.startPing(gen);
    const resubscribing = this.rooms.resubscribeAll();
    // §18.5: reset the backoff after a successful subscribe (or now, with nothing to subscribe).
    if (!resubscribing) this.backoff.reset();
    this.calls.pump();
  }

  /**
   * The socket of `gen` is gone (or is being dropped by the client). Decides between
   * reconnecting and closing for good, and parks everything that was in flight.
   */
  private lost(gen: number, info: DisconnectInfo): void {
    if (gen !== this.gen) return;
    this.teardownSocket(new ConnectionLost());
    if (this.currentState === "closed") return;
    const terminal = !info.reconnect || isTerminalCloseCode(info.code);
    if (closeNeedsFreshToken(info.code) || this.connectError?.code === ErrorCode.tokenExpired) {
      this.forceFreshToken = true;
    }
    if (terminal) {
      this.emit("disconnected", { code: info.code, reason: info.reason, reconnect: false });
      const err = new PlazaClosedError(`connection closed for good: ${info.code} ${info.reason}`, info.code);
      this.emit("error", err);
      this.removeEnvironment();
      this.setState("closed");
      this.calls.failAll(err);
      return;
    }
    const delay = this.backoff.next();
    if (this.currentState !== "reconnecting") this.setState("disconnected");
    this.emit("disconnected", { code: info.code, reason: info.reason, reconnect: true, retryInMs: delay });
    this.setState("reconnecting");
    this.clearReconnect();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.openSocket();
    }, delay);
  }

  /** Closes the current socket (if any), fails its in-flight commands and parks rooms. */
  private teardownSocket(reason: Error): void {
    this.gen += 1;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = null;
      ws.onmessage = null;
      ws.onclose = null;
      ws.onerror = () => {};
      try {
        ws.close(1000);
      } catch {
        // Already closed or never opened.
      }
    }
    if (this.pingTimer !== undefined) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.pingInFlight = false;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      if (p.timer !== undefined) clearTimeout(p.timer);
      p.reject(reason);
    }
    this.info = null;
    this.rooms.parkAll();
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }

  /** Skips the backoff wait (network back, tab visible again). */
  private reconnectNow(): void {
    if (this.currentState !== "reconnecting" || this.reconnectTimer === undefined) return;
    this.clearReconnect();
    void this.openSocket();
  }

  private startPing(gen: number): void {
    if (!this.liveness || !this.info) return;
    const everyMs = Math.max(1, this.info.pingInterval) * 1000;
    this.pingTimer = setInterval(() => this.checkAlive(gen), everyMs);
  }

  /** Sends `ping`; no reply within one ping interval means a dead connection: reconnect. */
  private checkAlive(gen: number): void {
    if (gen !== this.gen || !this.info || this.pingInFlight) return;
    this.pingInFlight = true;
    const timeoutMs = Math.max(1, this.info.pingInterval) * 1000;
    this.request("ping", {}, timeoutMs).then(
      () => {
        if (gen === this.gen) this.pingInFlight = false;
      },
      (err: Error) => {
        if (gen !== this.gen) return;
        this.pingInFlight = false;
        if (err instanceof PlazaTimeoutError) this.lost(gen, { code: LOCAL_DROP, reason: "no reply to ping", reconnect: true });
      },
    );
  }

  // ───────────────────────────── environment ─────────────────────────────

  private installEnvironment(): void {
    if (this.envCleanup) return;
    this.envCleanup = watchEnvironment(this.environment, () => this.wake());
  }

  private removeEnvironment(): void {
    this.envCleanup?.();
    this.envCleanup = undefined;
  }

  /**
   * The network came back or the tab became visible. Timers of background tabs are throttled
   * (Chrome: once a minute), so neither the backoff timer nor anything time-based can be
   * trusted to have run: reconnect now, refresh a token that is close to expiry, and check
   * that a "connected" socket is still alive.
   */
  private wake(): void {
    if (this.currentState === "reconnecting") {
      this.reconnectNow();
      return;
    }
    if (this.currentState !== "connected") return;
    const exp = this.tokenExpiresAt;
    if (typeof exp === "number" && exp - this.now() < this.tokenMarginMs) void this.refreshToken();
    if (this.liveness) this.checkAlive(this.gen);
  }

  // ───────────────────────────── frames ─────────────────────────────

  private allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = id >= MAX_ID ? 1 : id + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  /** Sends one command on the current socket; rejects with `ConnectionLost` if there is none. */
  private request<T>(op: string, fields: Record<string, unknown>, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const ws = this.ws;
      if (!ws || ws.readyState !== OPEN) {
        reject(new ConnectionLost());
        return;
      }
      const id = this.allocId();
      const p: Pending = { op, resolve: resolve as (v: unknown) => void, reject, timer: undefined };
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          if (this.pending.get(id) === p) this.pending.delete(id);
          reject(new PlazaTimeoutError(op, timeoutMs));
        }, timeoutMs);
      }
      this.pending.set(id, p);
      ws.send(JSON.stringify({ ...fields, id, op }));
    });
  }

  private onFrame(raw: unknown): void {
    let msg: Record<string, unknown>;
    try {
      const text = typeof raw === "string" ? raw : String(raw);
      msg = JSON.parse(text);
    } catch {
      return; // The edge only sends JSON; ignore anything else rather than crash.
    }
    if (msg === null || typeof msg !== "object") return;
    if (typeof msg.push === "string") {
      this.onPush(msg);
      return;
    }
    const id = msg.id;
    if (typeof id !== "number") return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (p.timer !== undefined) clearTimeout(p.timer);
    const error = msg.error as { code?: number; message?: string; temporary?: boolean } | undefined;
    if (error && typeof error === "object") {
      const code = typeof error.code === "number" ? error.code : ErrorCode.internal;
      p.reject(new PlazaError(code, error.message ?? `error ${code}`, error.temporary ?? undefined, p.op));
    } else {
      p.resolve(msg.ok ?? {});
    }
  }

  private onPush(msg: Record<string, unknown>): void {
    const room = typeof msg.room === "string" ? msg.room : undefined;
    switch (msg.push) {
      case "pub":
      case "ephemeral":
      case "join":
      case "leave":
      case "update":
      case "presence_resync":
      case "user_join":
      case "user_update":
      case "user_leave":
      case "unsubscribed":
        if (room !== undefined) this.rooms.onPush(msg.push, room, msg);
        return;
      case "refresh":
        void this.refreshToken();
        return;
      case "disconnect": {
        const code = typeof msg.code === "number" ? msg.code : LOCAL_DROP;
        this.disconnectPush = {
          code,
          reason: String(msg.reason ?? ""),
          reconnect: typeof msg.reconnect === "boolean" ? msg.reconnect : !isTerminalCloseCode(code),
        };
        return;
      }
      default:
        return; // Unknown push kinds are ignored (§2.3).
    }
  }

  // ───────────────────────────── token refresh ─────────────────────────────

  /** Answers a `refresh` push (or a near expiry seen on wake) with a new token in-band. */
  private async refreshToken(): Promise<void> {
    if (this.refreshing || !this.info) return;
    this.refreshing = true;
    const gen = this.gen;
    try {
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          const token = await this.fetchToken();
          if (gen !== this.gen) return;
          const ok = await this.request<{ expires_in: number | null }>("refresh", { token }, this.requestTimeoutMs);
          this.tokenExpiresAt = ok.expires_in == null ? null : this.now() + ok.expires_in * 1000;
          this.emit("tokenRefreshed", { expiresIn: ok.expires_in ?? null });
          return;
        } catch (err) {
          if (gen !== this.gen || err instanceof ConnectionLost) return;
          this.emit("error", err instanceof Error ? err : new Error(String(err)));
          if (err instanceof PlazaError && err.code === ErrorCode.wrongUser) break;
          await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
          if (gen !== this.gen) return;
        }
      }
      // Give up in-band: the edge closes with 4002 at expiry and the reconnect fetches a new token.
      this.forceFreshToken = true;
    } finally {
      this.refreshing = false;
    }
  }
}
