import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff } from "../../dist/index.js";

test("windows double from the base up to the cap", () => {
  const b = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0.999999 });
  const delays = Array.from({ length: 7 }, () => b.next());
  assert.deepEqual(delays, [99, 199, 399, 799, 999, 999, 999]);
  assert.equal(b.attempts, 7);
});

test("full jitter: the delay is random over the whole window, down to zero", () => {
  const values = [0, 0.5, 0.25];
  const b = new Backoff({ baseMs: 400, maxMs: 10_000, random: () => values.shift() });
  assert.equal(b.next(), 0); // window 400
  assert.equal(b.next(), 400); // window 800
  assert.equal(b.next(), 400); // window 1600
});

test("with Math.random every delay stays within its window", () => {
  const b = new Backoff({ baseMs: 50, maxMs: 3000 });
  for (let i = 0; i < 200; i++) {
    const w = b.window();
    const d = b.next();
    assert.ok(d >= 0 && d < w, `delay ${d} outside [0, ${w})`);
  }
  assert.equal(b.window(), 3000, "huge attempt counts stay at the cap");
});

test("reset starts over", () => {
  const b = new Backoff({ baseMs: 100, maxMs: 1000, random: () => 0.5 });
  b.next();
  b.next();
  b.reset();
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 50);
});

test("defaults are 500 ms doubling to 30 s", () => {
  const b = new Backoff({ random: () => 0.999999 });
  assert.equal(b.window(), 500);
  for (let i = 0; i < 20; i++) b.next();
  assert.equal(b.window(), 30_000);
});

test("nonsense settings are refused", () => {
  assert.throws(() => new Backoff({ baseMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ baseMs: 100, maxMs: 50 }), RangeError);
});
