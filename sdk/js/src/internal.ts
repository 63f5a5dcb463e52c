/** Internal bookkeeping types of `PlazaClient`: in-flight commands, queued calls, room entries, replies. */

import type { PlazaError } from "./errors.js";
import type { Subscription } from "./subscription.js";
import type { Position } from "./types.js";

/** The socket went away while a command was in flight (internal: such commands are resent). */
export class ConnectionLost extends Error {
  constructor() {
    super("connection lost");
    this.name = "ConnectionLost";
  }
}

export interface Pending {
  op: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}


/** The one protocol subscription of a room, shared by every handle on it. */
export interface RoomEntry {
  room: string;
  handles: Set<Subscription>;
  /** `subscribing`: waiting for a connection or a reply; `active`: live; `ended`: refused or removed by the server. */
  status: "subscribing" | "active" | "ended";
  /** A subscribe command is in flight. */
  inflight: boolean;
  /** A subscribe is scheduled for the end of the current task (batches handles made together). */
  scheduled: boolean;
  /** Whether the live protocol subscription has `presence: true`. */
  presence: boolean;
  /** Whether the live protocol subscription has user-level presence (`"users"`/`"both"`). */
  presenceUsers: boolean;
  /** The last processed position (§10.3). */
  position: Position | undefined;
  endError: PlazaError | undefined;
  lingerTimer: ReturnType<typeof setTimeout> | undefined;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  retries: number;
  /** This connection's presence info set with `updatePresence`, sent again after every (re)subscribe. */
  info: { value: unknown } | undefined;
  /** Live-state rooms: the map, once a `subscribe` reply carried one. */
  map?: Map<string, import("./room-state.js").StateValue>;
}

export interface ConnectOk {
  client: string;
  user: string;
  expires_in: number | null;
  ping_interval: number;
}

export interface SubscribeOk {
  epoch: string;
  offset: number;
  recovered: boolean;
  publications: { offset: number; data: unknown; from: { user: string; client: string } | null }[];
  /** Live-state rooms: the whole map, when the client must replace its own. */
  state?: { key: string; value: unknown; version: number }[];
}

export const OPEN = 1;
export const MAX_ID = 4294967295;
/** Close code reported for connections the client dropped itself (as for a network drop). */
export const LOCAL_DROP = 1006;

export function randomIdem(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  if (c && typeof c.getRandomValues === "function") {
    // randomUUID needs a secure context; getRandomValues does not.
    const b = c.getRandomValues(new Uint8Array(16));
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}
