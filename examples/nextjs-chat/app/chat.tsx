"use client";
// The chat UI: one PlazaProvider (one WebSocket), the room's messages via useRoom, the member
// list via usePresence, "… is typing" via useTyping (ephemeral publications in TYPING_ROOM),
// a live counter via useRoomState (a live-state room, COUNTER_ROOM, incremented with a
// compare-and-set), the connection badge via useConnectionState. Sending goes through the
// `sendMessage` server action, which publishes with the edge's HTTP API: this page's token only
// lets it read the room. Everything that arrives is checked by app/message.ts before rendering.
import { useCallback, useRef, useState, type FormEvent } from "react";
import type { Member, Publication } from "@plaza/client";
import { ErrorCode, PlazaError } from "@plaza/client";
import { PlazaProvider, useConnectionState, usePresence, useRoom, useRoomState, useTyping } from "@plaza/client/react";
import { COUNTER_ROOM, ROOM_NAME, TYPING_ROOM } from "./room";
import { sendMessage } from "./actions";
import { MAX_TEXT, chatMessageFrom, memberName, type ChatMessage } from "./message";

/** A message the page shows: checked and capped, keyed by its offset in the room. */
interface Shown extends ChatMessage {
  offset: number;
}

/** The publications that are chat messages (see `chatMessageFrom`), checked and capped. */
function toShown(publications: Publication[]): Shown[] {
  const out: Shown[] = [];
  for (const p of publications) {
    const m = chatMessageFrom(p);
    if (m) out.push({ ...m, offset: p.offset });
  }
  return out;
}

async function getToken(): Promise<string> {
  const res = await fetch("/api/plaza-token", { cache: "no-store" });
  if (!res.ok) throw new Error(`token endpoint: ${res.status}`);
  return (await res.json()).token;
}

export function Chat({ wsUrl, me }: { wsUrl: string; me: string }) {
  return (
    <PlazaProvider url={wsUrl} getToken={getToken} name="nextjs-chat">
      <ConnectionBadge />
      <div className="layout">
        <Messages me={me} />
        <aside>
          <Members me={me} />
          <Counter />
        </aside>
      </div>
    </PlazaProvider>
  );
}

function ConnectionBadge() {
  const state = useConnectionState();
  return (
    <p className={`badge ${state}`} data-testid="connection">
      {state}
    </p>
  );
}

function Messages({ me }: { me: string }) {
  const [messages, setMessages] = useState<Shown[]>([]);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  // Whether the room's recent messages are in (until then the list may grow from the past).
  const [loaded, setLoaded] = useState(false);
  const seen = useRef(new Set<number>());
  const { typing, notifyTyping, stopTyping } = useTyping(TYPING_ROOM);
  const { members } = usePresence(ROOM_NAME);

  const add = useCallback((p: Publication) => {
    if (seen.current.has(p.offset)) return;
    seen.current.add(p.offset);
    const [m] = toShown([p]);
    if (m) setMessages((list) => [...list, m].slice(-200));
  }, []);

  const { history } = useRoom(ROOM_NAME, add, {
    // First subscribe, or a reconnect that could not recover (history window exceeded, edge
    // restarted): reload the last messages instead of showing a gap.
    onSubscribed: (event) => {
      if (event.recovered) {
        setLoaded(true);
        return;
      }
      void history({ limit: 50 }).then((h) => {
        seen.current = new Set(h.publications.map((p) => p.offset));
        setMessages(toShown(h.publications));
        setLoaded(true);
      });
    },
  });

  async function onSubmit(e: FormEvent) {
    e.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft("");
    stopTyping();
    const r = await sendMessage(text, crypto.randomUUID ? crypto.randomUUID() : undefined);
    setError(r.ok ? null : r.error);
  }

  return (
    <section className="messages">
      <ol data-testid="messages" data-loaded={loaded} aria-busy={!loaded}>
        {messages.map((m) => (
          <li key={m.offset} className={m.user === me ? "mine" : ""} data-testid="message">
            <b>{m.name}</b> <span>{m.text}</span>
          </li>
        ))}
      </ol>
      <form onSubmit={onSubmit}>
        <input
          value={draft}
          onChange={(e) => {
            setDraft(e.target.value);
            if (e.target.value) notifyTyping();
            else stopTyping();
          }}
          placeholder="Say something"
          data-testid="draft"
          maxLength={MAX_TEXT}
        />
        <button type="submit" data-testid="send">Send</button>
      </form>
      <p className="typing" data-testid="typing">
        {typingLine(typing, members)}
      </p>
      {error && <p className="error">{error}</p>}
    </section>
  );
}

/** "Ann is typing…" for the users in `typing`, named from their presence info (checked). */
function typingLine(typing: string[], members: Member[]): string {
  if (typing.length === 0) return "";
  const names = typing.map((user) => {
    const m = members.find((x) => x.user === user);
    return m ? memberName(m) : user;
  });
  return `${names.slice(0, 3).join(", ")}${names.length > 3 ? " and others" : ""} ${names.length === 1 ? "is" : "are"} typing…`;
}

function Members({ me }: { me: string }) {
  const { members, ready } = usePresence(ROOM_NAME);
  // One entry per user (a user with two tabs is two members, one person). `info` comes from
  // each member's token: checked by memberName like any other input.
  const people = new Map<string, string>();
  for (const m of members) people.set(m.user, memberName(m));
  return (
    <aside className="members">
      <h2>Here now {ready ? `(${people.size})` : ""}</h2>
      <ul data-testid="members">
        {[...people].map(([id, name]) => (
          <li key={id} data-testid="member">
            {name}
            {id === me ? " (you)" : ""}
          </li>
        ))}
      </ul>
    </aside>
  );
}

/**
 * A shared counter: one key of a live-state room. "+1" sets count + 1 on condition that the
 * count is still at the version this page saw (compare-and-set); when another page won the race
 * (error 119), it retries with the value its map has by then, so no click is lost.
 */
function Counter() {
  const { state, set, ready } = useRoomState<number>(COUNTER_ROOM);
  const [busy, setBusy] = useState(false);
  const entry = state.get("count");
  const count = typeof entry?.value === "number" ? entry.value : 0;
  const latest = useRef(state);
  latest.current = state;
  async function increment() {
    setBusy(true);
    try {
      for (let attempt = 0; attempt < 20; attempt++) {
        const current = latest.current.get("count");
        const value = typeof current?.value === "number" ? current.value : 0;
        try {
          await set("count", value + 1, { version: current?.version ?? 0 });
          return;
        } catch (err) {
          if (!(err instanceof PlazaError) || err.code !== ErrorCode.stateConflict) throw err;
          await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
        }
      }
    } finally {
      setBusy(false);
    }
  }
  return (
    <section className="counter">
      <h2>Counter</h2>
      <p data-testid="counter">{ready ? count : "…"}</p>
      <button type="button" data-testid="increment" disabled={!ready || busy} onClick={() => void increment()}>
        +1
      </button>
    </section>
  );
}
