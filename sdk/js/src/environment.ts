/**
 * Browser signals that a connection deserves attention now: the `online` event, and a hidden
 * tab becoming visible (its timers were throttled, so nothing time-based can be trusted).
 */

import type { EventSourceLike, PlazaEnvironment } from "./options.js";

/**
 * Calls `onWake` on `online` (window) and on `visibilitychange` to visible (document). Uses
 * `environment`'s sources when given (`null` disables one), else the browser globals if any.
 * Returns the function that stops watching.
 */
export function watchEnvironment(environment: PlazaEnvironment | undefined, onWake: () => void): () => void {
  const g = globalThis as { window?: EventSourceLike; document?: EventSourceLike & { visibilityState: string } };
  const win = environment?.window !== undefined ? environment.window : (g.window ?? null);
  const doc = environment?.document !== undefined ? environment.document : (g.document ?? null);
  const onOnline = () => onWake();
  const onVisibility = () => {
    if (doc?.visibilityState === "visible") onWake();
  };
  win?.addEventListener("online", onOnline);
  doc?.addEventListener("visibilitychange", onVisibility);
  return () => {
    win?.removeEventListener("online", onOnline);
    doc?.removeEventListener("visibilitychange", onVisibility);
  };
}
