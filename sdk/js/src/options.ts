/** Options, environment hooks and event payloads of `PlazaClient`. */

import type { BackoffOptions } from "./backoff.js";
import type { ConnectionState } from "./state.js";
import type { ConnectionInfo } from "./types.js";

/** The subset of the WebSocket API the client uses (browsers' and the `ws` package's fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** A WebSocket constructor, e.g. `globalThis.WebSocket` or `import { WebSocket } from "ws"`. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Something that dispatches DOM-style events (`window`, `document`). */
export interface EventSourceLike {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

/**
 * Where the client listens for `online` and `visibilitychange`. Defaults to the global
 * `window` and `document` when they exist (browsers); pass `null` to disable.
 */
export interface PlazaEnvironment {
  window?: EventSourceLike | null;
  document?: (EventSourceLike & { readonly visibilityState: string }) | null;
}

/** Options of `new PlazaClient(...)`. */
export interface PlazaClientOptions {
  /** The edge's WebSocket endpoint, e.g. `wss://rt.example.com/v1/ws`. */
  url: string;
  /**
   * Returns a token for the current user. Called on the first connect, on reconnects when the
   * cached token is close to expiry or was rejected as expired, and on `refresh` pushes.
   */
  getToken: () => string | Promise<string>;
  /** WebSocket implementation (default: the global `WebSocket`; Node 20 needs `ws`). */
  WebSocket?: WebSocketConstructor;
  /** Client name sent in `connect` (logged by the edge). */
  name?: string;
  /** Client version sent in `connect`. */
  version?: string;
  /** Deadline of reads (`presence`, `presenceStats`, `history`) and of `connect`/`subscribe` replies, in ms (default 10 000). */
  requestTimeoutMs?: number;
  /** Deadline of a `publish`, including waiting for a reconnect and resubscribe, in ms (default 60 000; keep it under the 2-minute idempotency window). */
  publishTimeoutMs?: number;
  /** Reconnect backoff (default 500 ms doubling up to 30 s, full jitter). */
  backoff?: BackoffOptions;
  /** Refresh or replace a token when less than this is left before its expiry, in ms (default 60 000). */
  tokenRefreshMarginMs?: number;
  /** How long a room stays subscribed after its last handle is released, in ms (default 50). */
  unsubscribeDelayMs?: number;
  /** How long `retain()`'s release waits before closing, in ms (default 50). */
  releaseDelayMs?: number;
  /** Send a `ping` command every `ping_interval` and reconnect when none is answered (default true). */
  liveness?: boolean;
  /** Event sources for `online` / `visibilitychange` (default: the browser globals). */
  environment?: PlazaEnvironment;
  /** Clock in ms, injectable for tests (default `Date.now`). */
  now?: () => number;
}

/** Payload of the client's `state` event. */
export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
}

/** Payload of the client's `disconnected` event. */
export interface DisconnectInfo {
  /** The close code: from the edge's `disconnect` push, the WebSocket close, or 1006 for a connection the client dropped itself (no reply to `ping`/`connect`/`subscribe`, `getToken` failure). */
  code: number;
  reason: string;
  /** Whether the client reconnects. */
  reconnect: boolean;
  /** The backoff delay before the next attempt, when reconnecting. */
  retryInMs?: number;
}

/** Events of a client. */
export type ClientEvents = {
  state: StateChange;
  connected: ConnectionInfo;
  disconnected: DisconnectInfo;
  /** Token refreshed in-band (`refresh` command succeeded). */
  tokenRefreshed: { expiresIn: number | null };
  /** Something went wrong that the client handles itself but the app may want to log. */
  error: Error;
};
