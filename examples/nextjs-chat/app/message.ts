// What a chat message is, and the one place that decides whether a publication is one. Shared
// by the server action (which builds messages) and the client (which renders them).
//
// Every publication is untrusted input until it passes `chatMessageFrom`: `data` is whatever
// JSON the publisher sent (`null`, a number, an array, an object with fields of any type or
// size), and one bad message must not break the page for everyone in the room.
import type { Member, Publication } from "@plaza/client";

/** Longest message text the server action accepts and the page renders (characters). */
export const MAX_TEXT = 2000;
/** Longest display name the sign-in accepts and the page renders (characters). */
export const MAX_NAME = 40;

/** The `data` of a chat publication, as the `sendMessage` server action publishes it. */
export interface ChatMessage {
  text: string;
  /** The sender's user id, from the server-side session (never from the browser). */
  user: string;
  /** The sender's display name, from the same session. */
  name: string;
  /** When the server accepted it, ms since the epoch. */
  at: number;
}

/** `s` cut to at most `max` characters (code points: never half an emoji). */
export function clipped(s: string, max: number): string {
  if (s.length <= max) return s;
  const points = Array.from(s);
  return points.length <= max ? s : points.slice(0, max).join("");
}

/** `s` cut to at most `max` characters, ending with an ellipsis when cut (for display). */
export function capped(s: string, max: number): string {
  const c = clipped(s, max);
  return c === s ? s : `${clipped(c, max - 1)}…`;
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The chat message a publication carries, or `null` if it is not one this page shows:
 *
 * - Only **server-side** publications (`from === null`: published with the API key, by the
 *   `sendMessage` server action after it checked the session) are messages. The tokens this app
 *   mints do not grant `publish`, so a publication with a `from` means some other token does
 *   (a misconfigured provider claim, the edge's `--dev` tokens); its `data` says whatever that
 *   client wanted, so its `user`/`name` prove nothing and it is not shown.
 * - `data` must be an object with string `text`, `user` and `name`; anything else is dropped.
 * - Strings are capped so a huge one cannot flood the page. React escapes them when rendering.
 */
export function chatMessageFrom(p: Publication): ChatMessage | null {
  if (p.from !== null) return null;
  const d = p.data;
  if (!isRecord(d)) return null;
  const { text, user, name, at } = d;
  if (typeof text !== "string" || typeof user !== "string" || typeof name !== "string") return null;
  if (text === "" || user === "") return null;
  return {
    text: capped(text, MAX_TEXT),
    user,
    name: capped(name, MAX_NAME),
    at: typeof at === "number" && Number.isFinite(at) ? at : 0,
  };
}

/**
 * The name to show for a presence member. `info` comes from the member's token: signed, but
 * not necessarily minted by this app (another issuer, a provider claim the user can edit), so
 * it is checked like any other input; without a usable `info.name` the user id is shown.
 */
export function memberName(m: Member): string {
  const name = isRecord(m.info) ? m.info.name : undefined;
  return capped(typeof name === "string" && name.trim() !== "" ? name : m.user, MAX_NAME);
}
