/**
 * @plaza/client — the TypeScript client for Plaza (docs/protocol.md, docs/sdk.md).
 *
 * ```ts
 * import { PlazaClient } from "@plaza/client";
 * const client = new PlazaClient({ url: "wss://rt.example.com/v1/ws", getToken: fetchToken });
 * client.connect();
 * const room = client.subscribe("chat:lobby", { presence: true });
 * room.on("publication", (p) => show(p.data));
 * room.on("subscribed", (e) => { if (!e.recovered) reload(); });
 * await room.publish({ text: "hi" });
 * ```
 */

export { PlazaClient } from "./client.js";
export type {
  ClientEvents,
  DisconnectInfo,
  EventSourceLike,
  PlazaClientOptions,
  PlazaEnvironment,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Subscription } from "./subscription.js";
export type {
  PresenceResync,
  PresenceUserEntry,
  SubscribeOptions,
  SubscribedEvent,
  SubscriptionEvents,
  SubscriptionState,
  SubscriptionStateEvent,
} from "./subscription.js";
export { Backoff } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { canTransition, assertTransition } from "./state.js";
export type { ConnectionState } from "./state.js";
export {
  CloseCode,
  ErrorCode,
  PlazaClosedError,
  PlazaError,
  PlazaTimeoutError,
  closeNeedsFreshToken,
  isTemporaryCode,
  isTerminalCloseCode,
} from "./errors.js";
export type {
  ConnectionInfo,
  EphemeralMessage,
  HistoryOptions,
  HistoryResult,
  Member,
  Position,
  PresenceStats,
  Publication,
  PublishOptions,
  PublishResult,
  Sender,
} from "./types.js";
export { diffUsers, groupMembersByUser, type PresenceUser } from "./presence-users.js";
export type { DeleteOptions, RoomStateMap, SetOptions, StateValue } from "./room-state.js";
