import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { test } from "node:test";
import { signWebhook, verifyWebhook, WebhookVerificationError } from "../../dist/webhooks.js";

const secret = "webhook-secret-0123456789";
const body = JSON.stringify({
  endpoint: "presence",
  events: [{ id: "e:7", type: "user.offline", epoch: "e", seq: 7, time_ms: 1, user: "ann" }],
});

test("the signature is HMAC-SHA256 over timestamp.body, as the edge computes it", async () => {
  // The same vector as the edge's unit test (edge/src/webhooks/post.rs).
  assert.equal(
    await signWebhook("Jefe", "0", "what do ya want for nothing?"),
    "v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc",
  );
  const node = "v1=" + createHmac("sha256", secret).update(`123.${body}`).digest("hex");
  assert.equal(await signWebhook(secret, "123", body), node);
});

test("a valid delivery is parsed; tampering, other secrets and old timestamps are refused", async () => {
  const now = 1_733_350_000;
  const timestamp = String(now - 10);
  const signature = await signWebhook(secret, timestamp, body);
  const batch = await verifyWebhook({ secret, body, signature, timestamp, now });
  assert.equal(batch.events[0].type, "user.offline");
  const refused = (options) =>
    assert.rejects(verifyWebhook({ secret, body, signature, timestamp, now, ...options }), WebhookVerificationError);
  await refused({ body: body.replace("ann", "bob") });
  await refused({ secret: "another-secret-0123456789" });
  await refused({ now: now + 1000 });
  await refused({ signature: null });
  await refused({ timestamp: "12e3" });
});
