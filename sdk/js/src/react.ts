"use client";
/**
 * React bindings for @plaza/client: `PlazaProvider`, `useRoom`, `usePresence`,
 * `useConnectionState`, `usePlaza`.
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
import type { SubscribedEvent, Subscription, SubscriptionState } from "./subscription.js";
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
 * since pushes and the reply can cross (protocol §12).
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
    const offs = [
      sub.on("join", onEvent("join")),
      sub.on("leave", onEvent("leave")),
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
