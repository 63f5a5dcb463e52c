"use server";
// Server actions: sign in/out, and post a chat message through the edge's HTTP API (the
// server decides what goes into the room; clients only read it over the WebSocket).
import { randomUUID } from "node:crypto";
import { revalidatePath } from "next/cache";
import { publish } from "@/lib/plaza";
import { currentUser, setCurrentUser, userIdFor } from "@/lib/session";

import { ROOM_NAME as ROOM } from "./room";

export async function signIn(formData: FormData): Promise<void> {
  const name = String(formData.get("name") ?? "").trim().slice(0, 40);
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

export async function sendMessage(text: string, idem: string = randomUUID()): Promise<SendResult> {
  const user = await currentUser();
  if (!user) return { ok: false, error: "sign in first" };
  const body = text.trim().slice(0, 2000);
  if (!body) return { ok: false, error: "empty message" };
  // Store the message in your database here, then publish; `idem` makes a retried action safe.
  try {
    const r = await publish(ROOM, { text: body, user: user.id, name: user.name, at: Date.now() }, idem);
    return { ok: true, offset: r.offset };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}
