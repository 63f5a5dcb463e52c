// POST /api/plaza-events: the webhook endpoint for Plaza's lifecycle events. Configure the
// edges with
//   [webhooks] secret = "<PLAZA_WEBHOOK_SECRET>"
//   [[webhooks.endpoints]] name = "last-seen", url = "https://<this app>/api/plaza-events",
//                          types = ["user.offline"]
// Each delivery is verified (HMAC-SHA256 over timestamp + raw body, 5-minute replay window),
// then every `user.offline` sets the user's "last seen". Answering 2xx acknowledges the
// batch; anything else makes Plaza retry it with backoff. GET ?user=<id> reads it back.
import { verifyWebhook, WebhookVerificationError } from "@plaza/client/webhooks";

import { lastSeenOf, recordOffline } from "@/lib/last-seen";

export const dynamic = "force-dynamic";

export async function POST(request: Request): Promise<Response> {
  const secret = process.env.PLAZA_WEBHOOK_SECRET;
  if (!secret) return Response.json({ error: "PLAZA_WEBHOOK_SECRET is not set" }, { status: 500 });
  const body = await request.text();
  try {
    const batch = await verifyWebhook({
      secret,
      body,
      signature: request.headers.get("plaza-signature"),
      timestamp: request.headers.get("plaza-timestamp"),
    });
    for (const event of batch.events) {
      if (event.type === "user.offline" && event.user) {
        recordOffline(event.user, event.time_ms, event.id);
      }
    }
    return new Response(null, { status: 204 });
  } catch (e) {
    if (e instanceof WebhookVerificationError) {
      return Response.json({ error: e.message }, { status: 401 });
    }
    throw e;
  }
}

export async function GET(request: Request): Promise<Response> {
  const user = new URL(request.url).searchParams.get("user");
  if (!user) return Response.json({ error: "?user= is required" }, { status: 400 });
  return Response.json({ user, lastSeen: lastSeenOf(user) ?? null });
}
