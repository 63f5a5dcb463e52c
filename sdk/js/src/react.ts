"use client";
/**
 * React bindings for @plaza/client: `PlazaProvider`, `useRoom`, `usePresence`,
 * `usePresenceUsers`, `useTyping`, `useRoomState`, `useConnectionState`, `usePlaza`.
 *
 * Safe under StrictMode (the double mount reuses the connection and the subscriptions thanks
 * to the client's release delays) and during server rendering: nothing connects or subscribes
 * outside effects, and effects never run on the server.
 */

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import { PlazaClient, type PlazaClientOptions } from "./client.js";
import type { ConnectionState } from "./state.js";
import type { DeleteOptions, RoomStateMap, SetOptions } from "./room-state.js";
import type {
  PresenceResync,
  PresenceUserEntry,
  SubscribedEvent,
  Subscription,
  SubscriptionState,
} from "./subscription.js";
import type { HistoryOptions, HistoryResult, Member, Publication, PublishOptions, PublishResult } from "./types.js";

const PlazaContext = createContext<PlazaClient | null>(null);

/** Props of `PlazaProvider`: either a ready `client`, or the options to create one. */
export type PlazaProviderProps =
  | { client: PlazaClient; children?: ReactNode }
  | (Omit<PlazaClientOptions, "getToken"> & {
      client?: undefined;
      getToken: PlazaClientOptions["getToken"];
      children?: ReactNode;
    });

/**
 * Provides one Plaza connection to its subtree. The connection opens after mount (never
 * during server rendering) and closes after unmount.
 */
export function PlazaProvider(props: PlazaProviderProps): ReactNode {
  // The latest getToken, so a new function identity per render does not recreate the client.
  const getTokenRef = useRef<PlazaClientOptions["getToken"] | undefined>(undefined);
  getTokenRef.current = props.client ? undefined : props.getToken;
  const [client] = useState<PlazaClient>(() => {
    if (props.client) return props.client;
    const { children: _children, client: _client, getToken: _getToken, ...options } = props;
    return new PlazaClient({
      ...options,
      getToken: () => {
        const fn = getTokenRef.current;
        if (!fn) throw new Error("PlazaProvider: getToken is missing");
        return fn();
      },
    });
  });
  useEffect(() => client.retain(), [client]);
  return createElement(PlazaContext.Provider, { value: client }, props.children);
}

/** The provider's client. Throws outside a `PlazaProvider`. */
export function usePlaza(): PlazaClient {
  const client = useContext(PlazaContext);
  if (!client) throw new Error("usePlaza: wrap your components in <PlazaProvider>");
  return client;
}

/** The connection state; `"disconnected"` during server rendering. */
export function useConnectionState(): ConnectionState {
  const client = usePlaza();
  const subscribe = useCallback((onChange: () => void) => client.on("state", onChange), [client]);
  return useSyncExternalStore(
    subscribe,
    () => client.state,
    () => "disconnected",
  );
}

/** Options of `useRoom`. */
export interface UseRoomOptions {
  /** Also receive join/leave (see `usePresence` for a ready member list). */
  presence?: boolean;
  /**
   * Called each time the subscription becomes live. When `event.recovered` is `false`,
   * messages may have been missed: reload (e.g. `history()`). Also called on first subscribe.
   */
  onSubscribed?: (event: SubscribedEvent) => void;
}

/** What `useRoom` returns. */
export interface UseRoomResult {
  /** The subscription's state (`"subscribing"` during server rendering). */
  state: SubscriptionState;
  /** Publishes to the room (idempotent, retried across reconnects). */
  publish: (data: unknown, options?: PublishOptions) => Promise<PublishResult>;
  /** Reads the room's history. */
  history: (options?: HistoryOptions) => Promise<HistoryResult>;
}

/**
 * Subscribes to `room` while mounted and calls `onMessage` for each publication (including
 * those recovered after a reconnect). Components on the same room share one subscription.
 * Pass `null` as room to subscribe to nothing.
 */
export function useRoom(
  room: string | null,
  onMessage?: (publication: Publication) => void,
  options: UseRoomOptions = {},
): UseRoomResult {
  const client = usePlaza();
  const onMessageRef = useRef(onMessage);
  const onSubscribedRef = useRef(options.onSubscribed);
  useEffect(() => {
    onMessageRef.current = onMessage;
    onSubscribedRef.current = options.onSubscribed;
  });
  const [state, setState] = useState<SubscriptionState>("subscribing");
  const presence = options.presence === true;
  useEffect(() => {
    if (room === null) return;
    const sub: Subscription = client.subscribe(room, { presence });
    setState(sub.state);
    const offs = [
      sub.on("publication", (p) => onMessageRef.current?.(p)),
      sub.on("state", (e) => setState(e.state)),
      sub.on("subscribed", (e) => onSubscribedRef.current?.(e)),
    ];
    return () => {
      for (const off of offs) off();
      sub.unsubscribe();
    };
  }, [client, room, presence]);
  const publish = useCallback(
    (data: unknown, o?: PublishOptions) => {
      if (room === null) return Promise.reject(new Error("useRoom: no room"));
      return client.publish(room, data, o);
    },
    [client, room],
  );
  const history = useCallback(
    (o?: HistoryOptions) => {
      if (room === null) return Promise.reject(new Error("useRoom: no room"));
      return client.history(room, o);
    },
    [client, room],
  );
  return { state, publish, history };
}

/** Options of `useTyping`. */
export interface UseTypingOptions {
  /** How long one "typing" signal shows a user as typing (default 3000 ms). */
  timeoutMs?: number;
}

/** What `useTyping` returns. */
export interface UseTypingResult {
  /** Users typing now, other than this connection, in order of their first signal. */
  typing: string[];
  /** Call on every keystroke: sends a "typing" signal at most once per `timeoutMs / 3`. */
  notifyTyping: () => void;
  /** Call when the message is sent or the input cleared: others stop showing this user at once. */
  stopTyping: () => void;
}

/**
 * A typing indicator for `room`, carried by ephemeral publications (`{"typing": true|false}`,
 * protocol §11a): no history, no consensus, nothing left behind. A user is shown until they
 * stop, or until `timeoutMs` after their last signal (a closed tab sends nothing). Uses the
 * room's shared subscription, so it is StrictMode-safe like `useRoom`.
 */
export function useTyping(room: string | null, options: UseTypingOptions = {}): UseTypingResult {
  const client = usePlaza();
  const timeoutMs = options.timeoutMs ?? 3000;
  const [typing, setTyping] = useState<string[]>([]);
  const lastSent = useRef(0);
  useEffect(() => {
    if (room === null) return;
    const sub = client.subscribe(room);
    const until = new Map<string, number>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const publishState = () => {
      const now = Date.now();
      for (const [user, at] of until) if (at <= now) until.delete(user);
      setTyping((previous) => {
        const next = [...until.keys()];
        return previous.length === next.length && previous.every((u, i) => u === next[i]) ? previous : next;
      });
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (until.size > 0) timer = setTimeout(publishState, Math.min(...until.values()) - now + 5);
    };
    const off = sub.on("ephemeral", (m) => {
      const data = m.data as { typing?: unknown } | null;
      if (!m.from || !data || typeof data !== "object" || typeof data.typing !== "boolean") return;
      if (m.from.client === client.connection?.client) return;
      if (data.typing) {
        until.delete(m.from.user); // keep first-signal order only while typing continues
        until.set(m.from.user, Date.now() + timeoutMs);
      } else {
        until.delete(m.from.user);
      }
      publishState();
    });
    return () => {
      off();
      if (timer !== undefined) clearTimeout(timer);
      sub.unsubscribe();
      setTyping([]);
    };
  }, [client, room, timeoutMs]);
  const notifyTyping = useCallback(() => {
    if (room === null) return;
    const now = Date.now();
    if (now - lastSent.current < timeoutMs / 3) return;
    lastSent.current = now;
    client.publishEphemeral(room, { typing: true }).catch(() => {});
  }, [client, room, timeoutMs]);
  const stopTyping = useCallback(() => {
    if (room === null || lastSent.current === 0) return;
    lastSent.current = 0;
    client.publishEphemeral(room, { typing: false }).catch(() => {});
  }, [client, room]);
  return { typing, notifyTyping, stopTyping };
}

/** What `useRoomState` returns. */
export interface UseRoomStateResult<T = unknown> {
  /** The room's map (empty until the first subscribe reply; `ready` says when it is real). */
  state: RoomStateMap<T>;
  /** Whether `state` reflects the server's map. */
  ready: boolean;
  /** Sets a key (see `PlazaClient.set`); resolves with its new version. */
  set: (key: string, value: T, options?: SetOptions) => Promise<number>;
  /** Deletes a key (see `PlazaClient.delete`). */
  remove: (key: string, options?: DeleteOptions) => Promise<number>;
}

const EMPTY_MAP: RoomStateMap<never> = new Map();

/**
 * A live-state room's map (protocol §11b) while mounted: the subscribe snapshot, then every
 * change, re-read after each reconnect (recovered changes or a fresh snapshot), so it always
 * ends equal to the server's. Uses the room's shared subscription, so it is StrictMode-safe
 * like `useRoom`. Pass `null` to subscribe to nothing.
 */
export function useRoomState<T = unknown>(room: string | null): UseRoomStateResult<T> {
  const client = usePlaza();
  const [state, setState] = useState<RoomStateMap<T> | undefined>(undefined);
  useEffect(() => {
    if (room === null) return;
    const sub = client.subscribe(room);
    setState(sub.map as RoomStateMap<T> | undefined);
    const off = sub.on("roomState", (map) => setState(map as RoomStateMap<T>));
    return () => {
      off();
      sub.unsubscribe();
      setState(undefined);
    };
  }, [client, room]);
  const set = useCallback(
    (key: string, value: T, options?: SetOptions) => {
      if (room === null) return Promise.reject(new Error("useRoomState: no room"));
      return client.set(room, key, value, options);
    },
    [client, room],
  );
  const remove = useCallback(
    (key: string, options?: DeleteOptions) => {
      if (room === null) return Promise.reject(new Error("useRoomState: no room"));
      return client.delete(room, key, options);
    },
    [client, room],
  );
  return { state: state ?? (EMPTY_MAP as RoomStateMap<T>), ready: state !== undefined, set, remove };
}

/** What `usePresence` returns. */
export interface UsePresenceResult<Info = unknown> {
  /** Member connections, ordered by client id (a user with two tabs appears twice). */
  members: Member<Info>[];
  /** Distinct users among the members, in order of first appearance. */
  users: string[];
  /** Whether the list reflects the server's (false until the first `presence` reply). */
  ready: boolean;
}

/**
 * The live member list of `room`: subscribes with `presence: true`, loads the list with
 * `presence` on every (re)subscribe and applies join/leave pushes on top — idempotently,
 * since pushes and the reply can cross (protocol §12). A `presence_resync` push (the edge
 * re-attached after a broker failover) replaces the list.
 */
export function usePresence<Info = unknown>(room: string | null): UsePresenceResult<Info> {
  const client = usePlaza();
  const [result, setResult] = useState<UsePresenceResult<Info>>({ members: [], users: [], ready: false });
  useEffect(() => {
    if (room === null) return;
    const sub = client.subscribe(room, { presence: true });
    let members = new Map<string, Member<Info>>();
    let ready = false;
    let syncing: { events: [kind: "join" | "leave", member: Member<Info>][] } | null = null;
    let stopped = false;
    const publishState = () => {
      const list = [...members.values()].sort((a, b) => (a.client < b.client ? -1 : a.client > b.client ? 1 : 0));
      const users: string[] = [];
      for (const m of list) if (!users.includes(m.user)) users.push(m.user);
      setResult({ members: list, users, ready });
    };
    const apply = (kind: "join" | "leave", member: Member<Info>) => {
      if (kind === "join") members.set(member.client, member);
      else members.delete(member.client);
    };
    const sync = async () => {
      const batch: { events: [kind: "join" | "leave", member: Member<Info>][] } = { events: [] };
      syncing = batch;
      try {
        const list = (await client.presence(room)) as Member<Info>[];
        if (stopped || syncing !== batch) return;
        members = new Map(list.map((m) => [m.client, m]));
        // Pushes that arrived while the reply was on its way happened after the snapshot or
        // are already in it; applying them again is harmless.
        for (const [kind, m] of batch.events) apply(kind, m);
        ready = true;
        syncing = null;
        publishState();
      } catch {
        if (syncing === batch) syncing = null;
      }
    };
    const onEvent = (kind: "join" | "leave") => (member: Member) => {
      const m = member as Member<Info>;
      if (syncing) syncing.events.push([kind, m]);
      apply(kind, m);
      if (!syncing) publishState();
    };
    const onResync = (resync: PresenceResync) => {
      // The edge may have missed join/leave pushes (broker failover): its list replaces ours.
      members = new Map(resync.members.map((m) => [m.client, m as Member<Info>]));
      if (resync.next !== undefined) {
        void sync(); // a large room: read every page
      } else {
        syncing = null; // a load in flight is older than this list: its reply is dropped
        ready = true;
        publishState();
      }
    };
    const offs = [
      sub.on("join", onEvent("join")),
      sub.on("leave", onEvent("leave")),
      sub.on("update", onEvent("join")), // replaces the member by client id
      sub.on("presenceResync", onResync),
      sub.on("subscribed", () => void sync()),
    ];
    return () => {
      stopped = true;
      for (const off of offs) off();
      sub.unsubscribe();
      setResult({ members: [], users: [], ready: false });
    };
  }, [client, room]);
  return result;
}

/** What `usePresenceUsers` returns. */
export interface UsePresenceUsersResult<Info = unknown> {
  /**
   * One entry per present user, with their connection count, ordered by user id. The server
   * keeps the list (protocol §12.1), so entries carry no `clients` (use `usePresence` for the
   * connections).
   */
  users: PresenceUserEntry<Info>[];
  /** Whether the list reflects the server's (false until the first `presence` reply). */
  ready: boolean;
}

/** Callbacks of `usePresenceUsers`. */
export interface UsePresenceUsersOptions {
  /** A user's first connection joined (not called for the initial list). */
  onUserJoined?: (user: string) => void;
  /** A user's last connection left (debounced by the server: a reload is not a leave). */
  onUserLeft?: (user: string) => void;
}

/**
 * User-level presence of `room`, kept by the server (`subscribe` with `presence: "users"`,
 * protocol §12.1): one entry per user with their connection count, so a user with three tabs
 * is one person. `onUserJoined`/`onUserLeft` fire on a user's first and last connection only,
 * and a page reload (leave and join again within `client.user_presence_debounce`, 2 s) fires
 * nothing. Loads the list with `presence` (`mode: "users"`) on every (re)subscribe and applies
 * the `user_*` pushes on top, idempotently.
 */
export function usePresenceUsers<Info = unknown>(
  room: string | null,
  options: UsePresenceUsersOptions = {},
): UsePresenceUsersResult<Info> {
  const client = usePlaza();
  const [result, setResult] = useState<UsePresenceUsersResult<Info>>({ users: [], ready: false });
  const callbacks = useRef(options);
  callbacks.current = options;
  useEffect(() => {
    if (room === null) return;
    const sub = client.subscribe(room, { presence: "users" });
    type Kind = "join" | "leave";
    let users = new Map<string, PresenceUserEntry<Info>>();
    let ready = false;
    let syncing: { events: [kind: Kind, user: PresenceUserEntry<Info>][] } | null = null;
    let stopped = false;
    const publishState = () => {
      const list = [...users.values()].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0));
      setResult({ users: list, ready });
    };
    const apply = (kind: Kind, user: PresenceUserEntry<Info>) => {
      if (kind === "join") users.set(user.user, user);
      else users.delete(user.user);
    };
    const sync = async () => {
      const batch: { events: [kind: Kind, user: PresenceUserEntry<Info>][] } = { events: [] };
      syncing = batch;
      try {
        const list = (await client.presenceUsers(room)) as PresenceUserEntry<Info>[];
        if (stopped || syncing !== batch) return;
        users = new Map(list.map((u) => [u.user, u]));
        // Pushes that crossed the reply happened after it or are already in it.
        for (const [kind, u] of batch.events) apply(kind, u);
        ready = true;
        syncing = null;
        publishState();
      } catch {
        if (syncing === batch) syncing = null;
      }
    };
    const onEvent = (kind: Kind) => (entry: PresenceUserEntry) => {
      const u = entry as PresenceUserEntry<Info>;
      const had = users.has(u.user);
      if (syncing) syncing.events.push([kind, u]);
      apply(kind, u);
      if (syncing) return;
      publishState();
      if (!ready) return;
      if (kind === "join" && !had) callbacks.current.onUserJoined?.(u.user);
      if (kind === "leave" && had) callbacks.current.onUserLeft?.(u.user);
    };
    const offs = [
      sub.on("userJoin", onEvent("join")),
      sub.on("userUpdate", onEvent("join")), // replaces the user
      sub.on("userLeave", onEvent("leave")),
      sub.on("subscribed", () => void sync()),
    ];
    return () => {
      stopped = true;
      for (const off of offs) off();
      sub.unsubscribe();
      setResult({ users: [], ready: false });
    };
  }, [client, room]);
  return result;
}
