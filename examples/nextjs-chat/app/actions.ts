"use server";
// Server actions: sign in/out, and post a chat message through the edge's HTTP API. This is the
// room's only writer: clients' tokens do not grant `publish`, so what a message says about its
// sender (`user`, `name`) comes from the signed session cookie checked here, never from the
// browser. Server actions are public endpoints: every argument is untrusted input.
import { randomUUID } from "node:crypto";
import { revalidatePath } from "next/cache";
import { publish } from "@/lib/plaza";
import { currentUser, setCurrentUser, userIdFor } from "@/lib/session";

import { MAX_NAME, MAX_TEXT, clipped, type ChatMessage } from "./message";
import { ROOM_NAME as ROOM } from "./room";

export async function signIn(formData: FormData): Promise<void> {
  const name = clipped(String(formData.get("name") ?? "").trim(), MAX_NAME);
  const id = userIdFor(name);
  if (!id) return;
  await setCurrentUser({ id, name });
  revalidatePath("/");
}

export async function signOut(): Promise<void> {
  await setCurrentUser(null);
  revalidatePath("/");
}

export type SendResult = { ok: true; offset: number } | { ok: false; error: string };

/** A browser-chosen idempotency key: a UUID-like token, or none (a fresh one is used). */
const IDEM = /^[A-Za-z0-9-]{8,64}$/;

export async function sendMessage(text: unknown, idem?: unknown): Promise<SendResult> {
  const user = await currentUser();
  if (!user) return { ok: false, error: "sign in first" };
  if (typeof text !== "string") return { ok: false, error: "a message is text" };
  const body = clipped(text.trim(), MAX_TEXT);
  if (!body) return { ok: false, error: "empty message" };
  // Idempotency keys are per room, so scope the browser's key to this user: one user's key can
  // never make another user's message count as a duplicate.
  const key = `${user.id}:${typeof idem === "string" && IDEM.test(idem) ? idem : randomUUID()}`;
  const message: ChatMessage = { text: body, user: user.id, name: user.name, at: Date.now() };
  // Store the message in your database here, then publish; `idem` makes a retried action safe.
  try {
    const r = await publish(ROOM, message, key);
    return { ok: true, offset: r.offset };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}
