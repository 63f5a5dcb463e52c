/**
 * Subscriptions: what one caller of `client.subscribe(room)` holds.
 *
 * Several handles may share one room: the client keeps one protocol subscription per room
 * (a `RoomEntry`, owned by the client) and counts the handles on it. The last handle to
 * unsubscribe ends the protocol subscription (after a short linger, so a React StrictMode
 * unmount/mount or a route change does not unsubscribe and resubscribe).
 */

import { Emitter } from "./emitter.js";
import type { RoomStateMap } from "./room-state.js";
import type { PlazaError } from "./errors.js";
import type {
  EphemeralMessage,
  HistoryOptions,
  HistoryResult,
  Member,
  Position,
  PresenceStats,
  Publication,
  PublishOptions,
  PublishResult,
} from "./types.js";

/** The state of a room subscription. */
export type SubscriptionState =
  /** Waiting for a connection or for the subscribe reply (also while reconnecting). */
  | "subscribing"
  /** Live: publications flow. */
  | "subscribed"
  /** Ended: by `unsubscribe()`, by the server (`unsubscribed` push), or by a refused subscribe. */
  | "unsubscribed";

/** Payload of a subscription's `state` event. */
export interface SubscriptionStateEvent {
  state: SubscriptionState;
  /** Why a subscription ended or could not be made, e.g. code 106 after a token refresh. */
  error?: PlazaError;
}

/**
 * Payload of a subscription's `subscribed` event, sent each time the subscription becomes live:
 * the first time, after every reconnect, and to a handle that joins an already-live room.
 *
 * **When `recovered` is `false`, (re)load the room's state** (its `history`, or your own API):
 * publications may have been missed. `recovering: true` with `recovered: false` means a
 * recovery was attempted and failed (history window exceeded, or the room's log was lost —
 * then `epochChanged` is `true`).
 */
export interface SubscribedEvent {
  room: string;
  epoch: string;
  offset: number;
  /** `true` if every publication since the last position was delivered (gap-free). */
  recovered: boolean;
  /** Whether this subscribe tried to recover from an earlier position. */
  recovering: boolean;
  /** Whether the room's epoch differs from the one this client saw before. */
  epochChanged: boolean;
  /** How many missed publications were delivered by the recovery. */
  recoveredCount: number;
}

/** Events of a subscription handle. */
export type SubscriptionEvents = {
  publication: Publication;
  /** An ephemeral publication (typing, cursors): at most once, no offset. */
  ephemeral: EphemeralMessage;
  join: Member;
  leave: Member;
  /** A member changed its presence `info` (protocol §5.6a): replace it by `client`. */
  update: Member;
  /**
   * Join/leave pushes may have been missed (the edge re-attached to the broker tier after a
   * failover): `members` is the room's list now and replaces yours; if `next` is set more
   * members follow (read them with `presence`). Later join/leave events apply on top.
   */
  presenceResync: PresenceResync;
  /** `presence: "users"`: a user's first connection joined (protocol §12.1). */
  userJoin: PresenceUserEntry;
  /** `presence: "users"`: a user's connection count or info changed; replace it by `user`. */
  userUpdate: PresenceUserEntry;
  /** `presence: "users"`: a user's last connection left (debounced by the server). */
  userLeave: PresenceUserEntry;
  state: SubscriptionStateEvent;
  subscribed: SubscribedEvent;
  /** Live-state rooms: the whole map, after the subscribe reply and after every change. */
  roomState: RoomStateMap;
};

/** A `presence_resync` push: the room's members now (the first page when `next` is set). */
export interface PresenceResync {
  /** Members, one per connection, in client id order. */
  members: Member[];
  /** When more members follow: the `after` of the next `presence` page. */
  next?: string;
}

/** One user in a room's user-level presence (protocol §12.1). */
export interface PresenceUserEntry<Info = unknown> {
  user: string;
  /** How many of the user's connections are members (0 in `userLeave`). */
  connections: number;
  /** The `info` of the user's member connection with the smallest client id. */
  info: Info | null;
}

/** Options of `client.subscribe`. */
export interface SubscribeOptions {
  /**
   * `true`: receive `join`/`leave`/`update` events, one member per connection; `"users"`:
   * receive `userJoin`/`userUpdate`/`userLeave`, one entry per user, leaves debounced by the
   * server (both need the `presence` capability).
   */
  presence?: boolean | "users";
}

/** What a handle needs from the client (kept narrow so handles stay simple). */
export interface SubscriptionHost {
  release(sub: Subscription): void;
  publish(room: string, data: unknown, options?: PublishOptions): Promise<PublishResult>;
  publishEphemeral(room: string, data: unknown): Promise<boolean>;
  presence(room: string, options?: { timeoutMs?: number }): Promise<Member[]>;
  presenceStats(room: string, options?: { timeoutMs?: number }): Promise<PresenceStats>;
  updatePresence(room: string, info: unknown, options?: { timeoutMs?: number }): Promise<void>;
  history(room: string, options?: HistoryOptions): Promise<HistoryResult>;
  roomState(room: string): SubscriptionState;
  roomPosition(room: string): Position | undefined;
  roomStateMap(room: string): RoomStateMap | undefined;
}

/** One caller's handle on a room. Call `unsubscribe()` when done. */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** The room. */
  readonly room: string;
  /** Whether this handle asked for join/leave events. */
  readonly presence: boolean;
  /** Whether this handle asked for user-level events (`presence: "users"`). */
  readonly presenceUsers: boolean;
  private released = false;
  private ended: SubscriptionStateEvent | undefined;

  /** @internal Created by `PlazaClient.subscribe`. */
  constructor(
    private readonly host: SubscriptionHost,
    room: string,
    options: SubscribeOptions,
  ) {
    super();
    this.room = room;
    this.presence = options.presence === true;
    this.presenceUsers = options.presence === "users";
  }

  /** The current state. */
  get state(): SubscriptionState {
    if (this.released || this.ended) return "unsubscribed";
    return this.host.roomState(this.room);
  }

  /** The last processed position (what a reconnect recovers from), once subscribed. */
  get position(): Position | undefined {
    return this.host.roomPosition(this.room);
  }

  /** Live-state rooms: the map (`undefined` until the first subscribe reply, or in other rooms). */
  get map(): RoomStateMap | undefined {
    return this.host.roomStateMap(this.room);
  }

  /** Whether `unsubscribe()` was called. */
  get isReleased(): boolean {
    return this.released;
  }

  /** Publishes to this room (see `PlazaClient.publish`). */
  publish(data: unknown, options?: PublishOptions): Promise<PublishResult> {
    return this.host.publish(this.room, data, options);
  }

  /** Publishes an ephemeral message to this room (see `PlazaClient.publishEphemeral`). */
  publishEphemeral(data: unknown): Promise<boolean> {
    return this.host.publishEphemeral(this.room, data);
  }

  /** The room's members (see `PlazaClient.presence`). */
  presenceMembers(options?: { timeoutMs?: number }): Promise<Member[]> {
    return this.host.presence(this.room, options);
  }

  /** Sets this connection's presence info in the room (see `PlazaClient.updatePresence`). */
  updatePresence(info: unknown, options?: { timeoutMs?: number }): Promise<void> {
    return this.host.updatePresence(this.room, info, options);
  }

  /** The room's presence counts (see `PlazaClient.presenceStats`). */
  presenceStats(options?: { timeoutMs?: number }): Promise<PresenceStats> {
    return this.host.presenceStats(this.room, options);
  }

  /** The room's history (see `PlazaClient.history`). */
  history(options?: HistoryOptions): Promise<HistoryResult> {
    return this.host.history(this.room, options);
  }

  /** Releases this handle; the room is unsubscribed when no handle is left. Idempotent. */
  unsubscribe(): void {
    if (this.released) return;
    this.released = true;
    this.host.release(this);
    this.emit("state", { state: "unsubscribed" });
  }

  /** @internal Delivers an event from the client. */
  deliver<K extends keyof SubscriptionEvents>(event: K, value: SubscriptionEvents[K]): void {
    if (this.released) return;
    if (event === "state") {
      const e = value as SubscriptionStateEvent;
      this.ended = e.state === "unsubscribed" ? e : undefined;
    }
    this.emit(event, value);
  }
}
