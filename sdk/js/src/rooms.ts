/**
 * The client's rooms: one protocol subscription per room (a `RoomEntry`), shared by every
 * `Subscription` handle on it (ref-counted), with its recovery position.
 *
 * ```text
 * subscribe(room) ─▶ entry (subscribing) ─subscribe reply─▶ active ─pub pushes─▶ handles
 *                        ▲                                     │ connection lost
 *                        └──── resubscribe with recover ◀──────┘
 * last handle released ─▶ linger ─▶ unsubscribe     refused / `unsubscribed` push ─▶ ended
 * ```
 *
 * Positions follow protocol §10.3: set from subscribe replies and `pub` pushes, never from
 * `publish` replies. A publication at or below the position is a duplicate and is dropped.
 */

import { ErrorCode, PlazaError, PlazaTimeoutError } from "./errors.js";
import { ConnectionLost, type RoomEntry, type SubscribeOk } from "./internal.js";
import {
  type PresenceUserEntry,
  Subscription,
  type SubscribeOptions,
  type SubscribedEvent,
  type SubscriptionHost,
  type SubscriptionState,
} from "./subscription.js";
import type { EphemeralMessage, Member, Position, Publication } from "./types.js";
import { applyChange, mapOf, type RoomStateMap } from "./room-state.js";

/** What the rooms need from the client's connection. */
export interface RoomsHost {
  /** Whether the connection is established (`connect` answered). */
  connected(): boolean;
  /** The current socket generation (replies of older sockets are ignored). */
  generation(): number;
  /** Sends a command on the current socket; rejects with `ConnectionLost` if it drops. */
  request<T>(op: string, fields: Record<string, unknown>, timeoutMs: number): Promise<T>;
  /** A subscription became live: reset the backoff, send calls that waited for it. */
  live(): void;
  /** Send calls that may go now. */
  pump(): void;
  /** A subscribe got no reply: drop this connection and reconnect. */
  stuck(generation: number, reason: string): void;
  /** Reports an error the client handled (client `error` event). */
  error(error: Error): void;
  /** Handles talk to the client through this. */
  subscriptionHost: SubscriptionHost;
  requestTimeoutMs: number;
  unsubscribeDelayMs: number;
}

/** Every room of one client. */
export class Rooms {
  private readonly entries = new Map<string, RoomEntry>();

  constructor(private readonly host: RoomsHost) {}

  /** A new handle on `room` (see `PlazaClient.subscribe`). */
  subscribe(room: string, options: SubscribeOptions): Subscription {
    let e = this.entries.get(room);
    if (!e) {
      e = {
        room,
        handles: new Set(),
        status: "subscribing",
        inflight: false,
        scheduled: false,
        presence: false,
        presenceUsers: false,
        position: undefined,
        endError: undefined,
        lingerTimer: undefined,
        retryTimer: undefined,
        retries: 0,
        info: undefined,
      };
      this.entries.set(room, e);
    }
    const entry = e;
    if (entry.lingerTimer !== undefined) clearTimeout(entry.lingerTimer);
    entry.lingerTimer = undefined;
    const sub = new Subscription(this.host.subscriptionHost, room, options);
    entry.handles.add(sub);
    if (entry.status === "ended") {
      // A new handle on a refused or revoked room tries again (e.g. after a new token).
      entry.status = "subscribing";
      entry.endError = undefined;
      this.schedule(entry);
    } else if (entry.status === "active") {
      if ((sub.presence && !entry.presence) || (sub.presenceUsers && !entry.presenceUsers)) {
        this.resubscribeWithPresence(entry);
      } else {
        const position = entry.position!;
        queueMicrotask(() => {
          if (sub.isReleased || entry.status !== "active") return;
          sub.deliver("state", { state: "subscribed" });
          sub.deliver("subscribed", {
            room,
            epoch: position.epoch,
            offset: position.offset,
            recovered: false,
            recovering: false,
            epochChanged: false,
            recoveredCount: 0,
          });
        });
      }
    } else {
      this.schedule(entry);
    }
    return sub;
  }

  /**
   * Remembers `info` as this connection's presence info in `room` (sent again after every
   * resubscribe). True when it should be sent now: the room is live, or not subscribed at all
   * (the server then answers 108); false while the subscribe is on its way (sent once it is live).
   */
  setPresenceInfo(room: string, info: unknown): boolean {
    const entry = this.entries.get(room);
    if (!entry || entry.status === "ended") return true;
    entry.info = { value: info };
    return entry.status === "active";
  }

  /** Number of live handles on a room. */
  refCount(room: string): number {
    return this.entries.get(room)?.handles.size ?? 0;
  }

  /** The state handles of `room` see. */
  state(room: string): SubscriptionState {
    const entry = this.entries.get(room);
    if (!entry) return "unsubscribed";
    if (entry.status === "active") return "subscribed";
    if (entry.status === "ended") return "unsubscribed";
    return "subscribing";
  }

  /** The last processed position of `room`. */
  position(room: string): Position | undefined {
    const p = this.entries.get(room)?.position;
    return p ? { ...p } : undefined;
  }

  /** The map of a live-state room, once its subscribe reply carried one. */
  stateMap(room: string): RoomStateMap | undefined {
    const map = this.entries.get(room)?.map;
    return map ? new Map(map) : undefined;
  }

  /** Whether calls for `room` must wait: this client holds a subscription being (re)made. */
  blocked(room: string): boolean {
    const entry = this.entries.get(room);
    return entry !== undefined && entry.handles.size > 0 && entry.status === "subscribing";
  }

  /** After `connect` succeeded: resubscribe every room. Returns whether any subscribe went out. */
  resubscribeAll(): boolean {
    let any = false;
    for (const entry of [...this.entries.values()]) {
      if (entry.handles.size === 0) {
        // Lingering after its last release: the old connection's subscription is gone anyway.
        this.drop(entry);
        continue;
      }
      if (entry.status === "ended") continue;
      any = true;
      this.subscribeRoom(entry);
    }
    return any;
  }

  /** The connection is gone: live rooms go back to subscribing (resubscribed on reconnect). */
  parkAll(): void {
    for (const entry of this.entries.values()) {
      entry.inflight = false;
      entry.presence = false;
      entry.presenceUsers = false;
      if (entry.retryTimer !== undefined) clearTimeout(entry.retryTimer);
      entry.retryTimer = undefined;
      if (entry.status === "active") {
        entry.status = "subscribing";
        for (const h of entry.handles) h.deliver("state", { state: "subscribing" });
      }
    }
  }

  /** Room pushes: `pub`, `ephemeral`, `join`, `leave`, `unsubscribed` (protocol §6). */
  onPush(kind: string, room: string, msg: Record<string, unknown>): void {
    const entry = this.entries.get(room);
    if (!entry) return;
    if (kind === "unsubscribed") {
      const code = typeof msg.code === "number" ? msg.code : ErrorCode.permissionDenied;
      const err = new PlazaError(code, String(msg.reason ?? "unsubscribed by the server"), false, "subscribe");
      entry.status = "ended";
      entry.presence = false;
      entry.presenceUsers = false;
      entry.endError = err;
      for (const h of entry.handles) h.deliver("state", { state: "unsubscribed", error: err });
      return;
    }
    if (entry.status !== "active") return;
    if (kind === "pub") {
      if (typeof msg.offset !== "number") return;
      this.deliver(entry, {
        room,
        offset: msg.offset,
        data: msg.data,
        from: (msg.from as Publication["from"]) ?? null,
      });
    } else if (kind === "ephemeral") {
      const message = { room, data: msg.data, from: (msg.from as EphemeralMessage["from"]) ?? null };
      for (const h of entry.handles) h.deliver("ephemeral", message);
    } else if (kind === "join" || kind === "leave" || kind === "update") {
      const member = msg.member as Member;
      for (const h of entry.handles) if (h.presence) h.deliver(kind, member);
    } else if (kind === "presence_resync") {
      const resync = {
        members: Array.isArray(msg.members) ? (msg.members as Member[]) : [],
        next: typeof msg.next === "string" ? msg.next : undefined,
      };
      for (const h of entry.handles) if (h.presence) h.deliver("presenceResync", resync);
    } else if (kind === "user_join" || kind === "user_update" || kind === "user_leave") {
      const user = msg.user as PresenceUserEntry;
      const event = kind === "user_join" ? "userJoin" : kind === "user_update" ? "userUpdate" : "userLeave";
      for (const h of entry.handles) if (h.presenceUsers) h.deliver(event, user);
    }
  }

  /** A handle was released; the room is unsubscribed after a short linger if no handle is left. */
  release(sub: Subscription): void {
    const entry = this.entries.get(sub.room);
    if (!entry || !entry.handles.delete(sub) || entry.handles.size > 0) return;
    if (entry.lingerTimer !== undefined) clearTimeout(entry.lingerTimer);
    entry.lingerTimer = setTimeout(() => {
      entry.lingerTimer = undefined;
      this.drop(entry);
    }, this.host.unsubscribeDelayMs);
  }

  // ───────────────────────────── internals ─────────────────────────────

  /**
   * Subscribes at the end of the current task rather than at once, so handles created
   * together (the effects of one React commit: e.g. `useRoom` and `usePresence` on the same
   * room) share one `subscribe` with the union of their options.
   */
  private schedule(entry: RoomEntry): void {
    if (entry.scheduled) return;
    entry.scheduled = true;
    queueMicrotask(() => {
      entry.scheduled = false;
      if (this.entries.get(entry.room) === entry && entry.handles.size > 0 && entry.status === "subscribing") {
        this.subscribeRoom(entry);
      }
    });
  }

  private wantsPresence(entry: RoomEntry): boolean {
    for (const h of entry.handles) if (h.presence) return true;
    return false;
  }

  private wantsPresenceUsers(entry: RoomEntry): boolean {
    for (const h of entry.handles) if (h.presenceUsers) return true;
    return false;
  }

  /** Delivers one publication once: offsets only grow within an epoch (§9), so older ones are duplicates. */
  private deliver(entry: RoomEntry, publication: Publication): boolean {
    if (entry.position && publication.offset <= entry.position.offset) return false;
    entry.position = { epoch: entry.position?.epoch ?? "", offset: publication.offset };
    for (const h of entry.handles) h.deliver("publication", publication);
    if (entry.map && applyChange(entry.map, publication.offset, publication.data)) this.emitMap(entry);
    return true;
  }

  private emitMap(entry: RoomEntry): void {
    if (!entry.map) return;
    const map: RoomStateMap = new Map(entry.map);
    for (const h of entry.handles) h.deliver("roomState", map);
  }

  /** Sends `subscribe` (with `recover` from the last position) when connected. */
  private subscribeRoom(entry: RoomEntry): void {
    if (!this.host.connected() || entry.inflight) return;
    const gen = this.host.generation();
    entry.inflight = true;
    entry.status = "subscribing";
    const presence = this.wantsPresence(entry);
    const users = this.wantsPresenceUsers(entry);
    const recover = entry.position ? { ...entry.position } : undefined;
    const fields: Record<string, unknown> = { room: entry.room };
    if (presence || users) fields.presence = presence && users ? "both" : users ? "users" : true;
    if (recover) fields.recover = recover;
    this.host.request<SubscribeOk>("subscribe", fields, this.host.requestTimeoutMs).then(
      (ok) => this.onSubscribed(entry, gen, ok, presence, users, recover),
      (err: Error) => this.onSubscribeFailed(entry, gen, err),
    );
  }

  private onSubscribed(
    entry: RoomEntry,
    gen: number,
    ok: SubscribeOk,
    presence: boolean,
    users: boolean,
    recover: Position | undefined,
  ): void {
    if (gen !== this.host.generation()) return;
    entry.inflight = false;
    if (this.entries.get(entry.room) !== entry) return; // Released meanwhile; drop() sent `unsubscribe`.
    entry.presence = presence;
    entry.presenceUsers = users;
    entry.retries = 0;
    const previousEpoch = entry.position?.epoch;
    let recoveredCount = 0;
    if (ok.state) entry.map = mapOf(ok.state);
    if (ok.recovered) {
      for (const p of ok.publications ?? []) {
        if (this.deliver(entry, { room: entry.room, offset: p.offset, data: p.data, from: p.from ?? null })) {
          recoveredCount += 1;
        }
      }
    }
    entry.position = { epoch: ok.epoch, offset: ok.offset };
    entry.status = "active";
    const event: SubscribedEvent = {
      room: entry.room,
      epoch: ok.epoch,
      offset: ok.offset,
      recovered: ok.recovered === true,
      recovering: recover !== undefined,
      epochChanged: previousEpoch !== undefined && previousEpoch !== ok.epoch,
      recoveredCount,
    };
    for (const h of entry.handles) {
      h.deliver("state", { state: "subscribed" });
      h.deliver("subscribed", event);
    }
    if (entry.info !== undefined) {
      // A new subscription starts from the token's info: set ours again (protocol §5.6a).
      const fields = { room: entry.room, info: entry.info.value ?? null };
      this.host.request("presence_update", fields, this.host.requestTimeoutMs).catch((e: Error) => {
        if (!(e instanceof ConnectionLost)) this.host.error(e);
      });
    }
    if (ok.state) this.emitMap(entry);
    if ((this.wantsPresence(entry) && !presence) || (this.wantsPresenceUsers(entry) && !users)) {
      this.resubscribeWithPresence(entry);
    }
    this.host.live();
  }

  private onSubscribeFailed(entry: RoomEntry, gen: number, err: Error): void {
    if (gen !== this.host.generation()) return;
    entry.inflight = false;
    if (this.entries.get(entry.room) !== entry) return;
    if (err instanceof ConnectionLost) return; // Resubscribed after the reconnect.
    if (err instanceof PlazaTimeoutError) {
      // A subscribe that gets no answer means a stuck connection; a retry could race the
      // original (107), so start over on a new one.
      this.host.stuck(gen, "no reply to subscribe");
      return;
    }
    const error = err instanceof PlazaError ? err : new PlazaError(ErrorCode.internal, err.message, true, "subscribe");
    if (error.temporary) {
      entry.retries += 1;
      const delay = Math.min(10_000, 250 * 2 ** entry.retries);
      entry.retryTimer = setTimeout(() => {
        entry.retryTimer = undefined;
        if (this.entries.get(entry.room) === entry && entry.handles.size > 0) this.subscribeRoom(entry);
      }, delay);
      return;
    }
    entry.status = "ended";
    entry.endError = error;
    this.host.error(error);
    for (const h of entry.handles) h.deliver("state", { state: "unsubscribed", error });
    this.host.pump(); // Publishes waiting for this room now get the edge's answer (108).
  }

  /** A handle that wants join/leave joined a room subscribed without: subscribe again with presence. */
  private resubscribeWithPresence(entry: RoomEntry): void {
    if (!this.host.connected() || entry.inflight) return;
    entry.status = "subscribing";
    for (const h of entry.handles) h.deliver("state", { state: "subscribing" });
    // Commands are handled in order (§9): unsubscribe completes before the new subscribe,
    // whose `recover` covers anything published in between.
    this.host.request("unsubscribe", { room: entry.room }, this.host.requestTimeoutMs).catch(() => {});
    this.subscribeRoom(entry);
  }

  private drop(entry: RoomEntry): void {
    if (entry.handles.size > 0 || this.entries.get(entry.room) !== entry) return;
    this.entries.delete(entry.room);
    if (entry.lingerTimer !== undefined) clearTimeout(entry.lingerTimer);
    if (entry.retryTimer !== undefined) clearTimeout(entry.retryTimer);
    if (this.host.connected() && (entry.status === "active" || entry.inflight)) {
      this.host.request("unsubscribe", { room: entry.room }, this.host.requestTimeoutMs).catch(() => {});
    }
  }
}
