"use client";
// The chat UI: one PlazaProvider (one WebSocket), the room's messages via useRoom, the member
// list via usePresence, the connection badge via useConnectionState. Sending goes through the
// `sendMessage` server action, which publishes with the edge's HTTP API.
import { useCallback, useRef, useState, type FormEvent } from "react";
import type { Publication } from "@plaza/client";
import { PlazaProvider, useConnectionState, usePresence, useRoom } from "@plaza/client/react";
import { ROOM_NAME } from "./room";
import { sendMessage } from "./actions";

interface ChatMessage {
  text: string;
  user: string;
  name: string;
  at: number;
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
        <Members me={me} />
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
  const [messages, setMessages] = useState<Publication<ChatMessage>[]>([]);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  const seen = useRef(new Set<number>());

  const add = useCallback((p: Publication) => {
    if (seen.current.has(p.offset)) return;
    seen.current.add(p.offset);
    setMessages((list) => [...list, p as Publication<ChatMessage>].slice(-200));
  }, []);

  const { history } = useRoom(ROOM_NAME, add, {
    // First subscribe, or a reconnect that could not recover (history window exceeded, edge
    // restarted): reload the last messages instead of showing a gap.
    onSubscribed: (event) => {
      if (event.recovered) return;
      void history({ limit: 50 }).then((h) => {
        seen.current = new Set(h.publications.map((p) => p.offset));
        setMessages(h.publications as Publication<ChatMessage>[]);
      });
    },
  });

  async function onSubmit(e: FormEvent) {
    e.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setDraft("");
    const r = await sendMessage(text, crypto.randomUUID ? crypto.randomUUID() : undefined);
    setError(r.ok ? null : r.error);
  }

  return (
    <section className="messages">
      <ol data-testid="messages">
        {messages.map((m) => (
          <li key={m.offset} className={m.data.user === me ? "mine" : ""} data-testid="message">
            <b>{m.data.name}</b> <span>{m.data.text}</span>
          </li>
        ))}
      </ol>
      <form onSubmit={onSubmit}>
        <input
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="Say something"
          data-testid="draft"
          maxLength={2000}
        />
        <button type="submit" data-testid="send">Send</button>
      </form>
      {error && <p className="error">{error}</p>}
    </section>
  );
}

function Members({ me }: { me: string }) {
  const { members, ready } = usePresence<{ name: string }>(ROOM_NAME);
  // One entry per user (a user with two tabs is two members, one person).
  const people = new Map<string, string>();
  for (const m of members) people.set(m.user, m.info?.name ?? m.user);
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
