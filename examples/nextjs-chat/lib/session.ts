// A deliberately trivial sign-in: the user picks a name, kept in an HMAC-signed cookie.
// Replace with your real auth (Kinde, Auth0, Clerk, NextAuth…): all the rest of the app
// needs is `currentUser()`.
import { createHmac, timingSafeEqual } from "node:crypto";
import { cookies } from "next/headers";
import { plazaSecret } from "./config";

const COOKIE = "chat_user";

export interface User {
  /** Stable id: becomes the token's `sub` (presence groups tabs by it). */
  id: string;
  /** Display name: goes into the token's presence `info`. */
  name: string;
}

function sign(value: string): string {
  // A key derived for this purpose only, so a session signature is never a valid token part.
  return createHmac("sha256", `session:${plazaSecret()}`).update(value).digest("base64url");
}

/** Normalises a chosen name into a user id (1–32 chars of a-z 0-9 _ -). */
export function userIdFor(name: string): string | null {
  const id = name.trim().toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 32);
  return id === "" ? null : id;
}

export async function currentUser(): Promise<User | null> {
  const raw = (await cookies()).get(COOKIE)?.value;
  if (!raw) return null;
  const dot = raw.lastIndexOf(".");
  if (dot < 0) return null;
  const value = raw.slice(0, dot);
  const given = Buffer.from(raw.slice(dot + 1));
  const expected = Buffer.from(sign(value));
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  try {
    const user = JSON.parse(Buffer.from(value, "base64url").toString()) as User;
    return typeof user.id === "string" && typeof user.name === "string" ? user : null;
  } catch {
    return null;
  }
}

export async function setCurrentUser(user: User | null): Promise<void> {
  const jar = await cookies();
  if (!user) {
    jar.delete(COOKIE);
    return;
  }
  const value = Buffer.from(JSON.stringify(user)).toString("base64url");
  jar.set(COOKIE, `${value}.${sign(value)}`, { httpOnly: true, sameSite: "lax", path: "/", maxAge: 60 * 60 * 24 * 7 });
}
