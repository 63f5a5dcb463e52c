// Small async helpers for tests: wait for a condition or an event, with a deadline.

/** Resolves once `predicate()` is truthy; rejects after `timeoutMs` naming `what`. */
export async function waitFor(predicate, what, timeoutMs = 10_000) {
  const start = Date.now();
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next `event` of `emitter` passing `filter`. */
export function nextEvent(emitter, event, filter = () => true, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for event ${event}`));
    }, timeoutMs);
    const off = emitter.on(event, (v) => {
      if (!filter(v)) return;
      clearTimeout(timer);
      off();
      resolve(v);
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
